"""Periodic clean-up: expired files lose their rows and bytes, overdue uploads expire and lose
their parts, temporary files abandoned by a crash are removed, bytes that no file row owns (a
crash between placing them and committing, or between a deletion's commit and their removal)
are removed once older than ``ORPHAN_GRACE_SECONDS``, and deployments idle for longer than the
server allows are deleted (``deployments.service.remove_idle``)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from tunesmith.deployments.service import remove_idle
from tunesmith.files import expire_files, stranded_blobs
from tunesmith.store.blobs import BlobStore
from tunesmith.store.db import transaction
from tunesmith.store.tables import UploadRow
from tunesmith.uploads import expire_uploads

STALE_TMP_SECONDS = 24 * 3600  # no upload legitimately takes a day
ORPHAN_GRACE_SECONDS = 3600
"""Bytes without a row are left this long: a store places its bytes moments before its row
commits, and an hour covers any wait for a lock in between."""


@dataclass(frozen=True, slots=True)
class Swept:
    files: list[str]
    uploads: list[str]
    deployments: list[str] = field(default_factory=list)
    stranded: list[str] = field(default_factory=list)
    """Bytes removed because no file row owned them."""


def sweep(
    factory: sessionmaker[Session],
    blobs: BlobStore,
    *,
    now: int,
    deployment_idle_seconds: float | None = None,
) -> Swept:
    """One pass. ``deployment_idle_seconds`` (the server passes its setting) removes the
    deployments unused for that long; None leaves deployments alone."""
    deployments: list[str] = []
    if deployment_idle_seconds is not None:
        with transaction(factory) as session:
            deployments = remove_idle(session, now=now, idle_seconds=deployment_idle_seconds)
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
    with transaction(factory) as session:
        stranded = stranded_blobs(session, blobs, older_than=time.time() - ORPHAN_GRACE_SECONDS)
    for file_id in stranded:
        blobs.delete_file(file_id)
    return Swept(files, uploads, deployments, stranded)
