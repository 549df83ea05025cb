"""Periodic clean-up: expired files lose their rows and bytes, overdue uploads expire and lose
their parts, and temporary files abandoned by a crash are removed."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from tunesmith.files import expire_files
from tunesmith.store.blobs import BlobStore
from tunesmith.store.db import transaction
from tunesmith.store.tables import UploadRow
from tunesmith.uploads import expire_uploads

STALE_TMP_SECONDS = 24 * 3600  # no upload legitimately takes a day


@dataclass(frozen=True, slots=True)
class Swept:
    files: list[str]
    uploads: list[str]


def sweep(factory: sessionmaker[Session], blobs: BlobStore, *, now: int) -> Swept:
    with transaction(factory) as session:
        files = expire_files(session, now=now)
        uploads = expire_uploads(session, now=now)
        with_parts = blobs.upload_ids_with_parts()
        pending = set(
            session.scalars(
                select(UploadRow.id).where(
                    UploadRow.id.in_(with_parts), UploadRow.status == "pending"
                )
            )
        )
    # Bytes go only after the rows are gone for good.
    for file_id in files:
        blobs.delete_file(file_id)
    for upload_id in set(with_parts) - pending:
        blobs.delete_parts(upload_id)
    blobs.sweep_tmp(STALE_TMP_SECONDS)
    return Swept(files, uploads)
