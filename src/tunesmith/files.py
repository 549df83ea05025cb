"""The files service: stores uploaded bytes, validates training data, lists and deletes.

An upload arrives as a temporary file in the blob store. :func:`check_upload` validates it (a
file that is not JSONL is refused with the line that breaks it, and nothing is kept), with no
transaction open and on the file threads (``api/file_work.py``); :func:`store_file` then moves
the bytes into place and inserts the row. Files are scoped to a project; another project's file, or
an expired one, is simply not found.

A file is a row and its bytes, and the two orders are crash-safe. Storing: the bytes come into
place first and the row commits after, so no row lacks its bytes; if the transaction rolls back
the bytes are removed, and if the process dies first the housekeeping sweep removes bytes that
have had no row for an hour. Deleting: the row goes in the transaction, the bytes only once it
has committed (a crash in between leaves bytes the sweep removes). A file an unfinished job uses
cannot be deleted or expire: deletion locks the file's row before it looks for such a job, and
job creation locks it (shared) before it checks the file, so the two never both succeed.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from tunesmith.data.jsonl import JsonlFormatError
from tunesmith.data.validate import ValidationReport
from tunesmith.errors import Conflict, InvalidRequest, NotFound
from tunesmith.ids import new_id
from tunesmith.protocol.files import UPLOADABLE_PURPOSES, FileObject, FileValidation
from tunesmith.protocol.jobs import ACTIVE
from tunesmith.store.blobs import BlobStore
from tunesmith.store.db import after_commit, after_rollback, locked
from tunesmith.store.pagination import page
from tunesmith.store.tables import FileRow, JobRow

Validator = Callable[[Path], ValidationReport]
"""Validates a training file on disk (bound to a tokenizer by the app)."""

MIN_EXPIRY_SECONDS = 3600
MAX_EXPIRY_SECONDS = 30 * 24 * 3600
_UNSAFE = re.compile(r"[\x00-\x1f\x7f/\\]")


def sanitize_filename(name: str | None) -> str:
    """The last path component, without control characters, at most 255 characters."""
    name = unicodedata.normalize("NFC", name or "")
    name = re.split(r"[/\\]", name)[-1]
    name = _UNSAFE.sub("", name).strip().lstrip(".")
    return name[:255] or "upload"


def check_purpose(purpose: str | None, filename: str) -> str:
    if not purpose:
        raise InvalidRequest("The 'purpose' field is required.", param="purpose")
    if purpose not in UPLOADABLE_PURPOSES:
        raise InvalidRequest(
            f"Invalid purpose {purpose!r}; use one of {', '.join(UPLOADABLE_PURPOSES)}.",
            param="purpose",
        )
    if purpose == "fine-tune" and not filename.lower().endswith(".jsonl"):
        raise InvalidRequest(
            f"Invalid file format for fine-tuning: {filename!r}. Fine-tuning takes .jsonl files, "
            "one JSON example per line.",
            param="file",
        )
    return purpose


def expiry(anchor: str | None, seconds: str | int | None, *, now: int) -> int | None:
    """``expires_at`` from OpenAI's ``expires_after`` (anchor ``created_at``, 1 h to 30 days)."""
    if anchor is None and seconds is None:
        return None
    if anchor != "created_at":
        raise InvalidRequest(
            "expires_after[anchor] must be 'created_at'.", param="expires_after[anchor]"
        )
    try:
        value = int(seconds)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        value = -1
    if not MIN_EXPIRY_SECONDS <= value <= MAX_EXPIRY_SECONDS:
        raise InvalidRequest(
            f"expires_after[seconds] must be an integer from {MIN_EXPIRY_SECONDS} to "
            f"{MAX_EXPIRY_SECONDS}, not {seconds!r}.",
            param="expires_after[seconds]",
        )
    return now + value


def file_to_protocol(row: FileRow) -> FileObject:
    return FileObject(
        id=row.id,
        bytes=row.bytes,
        created_at=row.created_at,
        expires_at=row.expires_at,
        filename=row.filename,
        purpose=row.purpose,
        status=row.status,
        status_details=row.status_details,
    )


def validation_to_protocol(row: FileRow) -> FileValidation:
    if row.validation is None:
        raise InvalidRequest(
            f"File '{row.id}' has purpose '{row.purpose}'; only fine-tune files are validated.",
            param="file_id",
        )
    return FileValidation(file_id=row.id, **row.validation)


def check_fine_tune_file(path: Path, validate: Validator) -> dict[str, Any]:
    """The validation report of a fine-tune file, without storing it."""
    return _validate(path, validate).to_dict()


def _validate(path: Path, validate: Validator) -> ValidationReport:
    try:
        return validate(path)
    except JsonlFormatError as exc:
        raise InvalidRequest(exc.message, param="file", code=exc.code) from None


@dataclass(frozen=True, slots=True)
class Checked:
    """What validation found in a received file, for :func:`store_file`."""

    status: str = "processed"
    details: str | None = None
    report: dict[str, Any] | None = None


def check_upload(tmp: Path, purpose: str, validate: Validator) -> Checked:
    """Validates a received fine-tune file (other purposes are stored as they are). Slow for a
    large file: run it on the file threads, with no transaction open."""
    if purpose != "fine-tune":
        return Checked()
    result = _validate(tmp, validate)
    if not result.valid:
        return Checked("error", result.summary(), result.to_dict())
    return Checked(report=result.to_dict())


def store_file(
    session: Session,
    blobs: BlobStore,
    *,
    tmp: Path,
    size: int,
    project_id: str,
    filename: str,
    purpose: str,
    expires_at: int | None,
    checked: Checked,
    now: int,
) -> FileRow:
    """Stores a received temporary file, checked by :func:`check_upload`, as a new file."""
    status, details, report = checked.status, checked.details, checked.report
    row = FileRow(
        id=new_id("file-"),
        project_id=project_id,
        filename=filename,
        purpose=purpose,
        bytes=size,
        created_at=now,
        expires_at=expires_at,
        status=status,
        status_details=details,
        validation=report,
    )
    # Bytes first, then the row: a row never lacks its bytes. They go again if the row never
    # commits; a crash before the commit leaves them to the sweep.
    blobs.commit(tmp, blobs.file_path(row.id))
    after_rollback(session, lambda: blobs.delete_file(row.id))
    session.add(row)
    session.flush()
    return row


Lock = Literal["share", "update"]


def get_file(
    session: Session, project_id: str, file_id: str, *, now: int, lock: Lock | None = None
) -> FileRow:
    """The project's live file, or :class:`NotFound`. ``lock`` keeps it as read until the
    transaction ends: ``share`` (it may not change or go: a job is about to read it) or
    ``update`` (this transaction alone may change or delete it)."""
    if lock is None:
        row = session.get(FileRow, file_id)
    else:
        statement = select(FileRow).where(FileRow.id == file_id)
        statement = locked(session, statement, shared=lock == "share")
        row = session.scalars(statement.execution_options(populate_existing=True)).first()
    if (
        row is None
        or row.project_id != project_id
        or (row.expires_at is not None and row.expires_at <= now)
    ):
        raise NotFound(f"No such File object: {file_id}", param="file_id")
    return row


def list_files(
    session: Session,
    project_id: str,
    *,
    purpose: str | None,
    after: str | None,
    limit: int,
    order: Literal["asc", "desc"],
    now: int,
) -> tuple[list[FileRow], bool]:
    stmt = select(FileRow).where(
        FileRow.project_id == project_id,
        (FileRow.expires_at.is_(None)) | (FileRow.expires_at > now),
    )
    if purpose is not None:
        stmt = stmt.where(FileRow.purpose == purpose)
    return page(session, stmt, FileRow, after=after, limit=limit, order=order)


def file_in_use(session: Session, file_id: str) -> str | None:
    """The id of an unfinished job that reads ``file_id``, if any."""
    return session.scalars(
        select(JobRow.id).where(
            (JobRow.training_file == file_id) | (JobRow.validation_file == file_id),
            JobRow.status.in_(ACTIVE),
        )
    ).first()


def delete_file(
    session: Session, blobs: BlobStore, project_id: str, file_id: str, *, now: int
) -> None:
    """Deletes the project's file: its row now, its bytes once the transaction has committed.
    :class:`Conflict` (``file_in_use``) while an unfinished job reads it."""
    row = get_file(session, project_id, file_id, now=now, lock="update")
    job = file_in_use(session, row.id)  # after the lock: a job created meanwhile is seen
    if job is not None:
        raise Conflict(
            f"File {file_id} is used by fine-tuning job {job}, which has not finished; cancel "
            "the job or wait for it to end before deleting the file.",
            param="file_id",
            code="file_in_use",
        )
    session.delete(row)
    session.flush()
    after_commit(session, lambda: blobs.delete_file(row.id))


def expire_files(session: Session, *, now: int) -> list[str]:
    """Deletes the rows of expired files and returns their ids; the caller removes their bytes
    once the transaction has committed. A file an unfinished job still reads waits for it."""
    expired = (FileRow.expires_at.is_not(None), FileRow.expires_at <= now)
    if session.scalars(select(FileRow.id).where(*expired).limit(1)).first() is None:
        return []  # the usual case, with no lock taken
    # Locked before the jobs are read, as a deletion does; a file that a job creation holds
    # right now is left for the next sweep.
    candidates = session.scalars(
        locked(session, select(FileRow.id).where(*expired), skip_locked=True)
    ).all()
    in_use = (
        select(JobRow.training_file)
        .where(JobRow.status.in_(ACTIVE))
        .union(
            select(JobRow.validation_file).where(
                JobRow.status.in_(ACTIVE), JobRow.validation_file.is_not(None)
            )
        )
    )
    busy = set(session.scalars(select(in_use.subquery().c[0])))
    ids = [file_id for file_id in candidates if file_id not in busy]
    if ids:
        session.execute(delete(FileRow).where(FileRow.id.in_(ids)))
    return ids


def stranded_blobs(session: Session, blobs: BlobStore, *, older_than: float) -> list[str]:
    """The stored bytes older than ``older_than`` (a Unix time) that no file row owns: left by a
    process that died between placing them and committing their row, or between committing a
    deletion and removing them. A store in flight placed its bytes moments ago: too new."""
    candidates = blobs.file_ids_older_than(older_than)
    owned: set[str] = set()
    for start in range(0, len(candidates), 500):
        batch = candidates[start : start + 500]
        owned.update(session.scalars(select(FileRow.id).where(FileRow.id.in_(batch))))
    return [file_id for file_id in candidates if file_id not in owned]
