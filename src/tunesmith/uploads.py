"""The Uploads API: a large file sent in parts (each at most 64 MB), then assembled.

The parts never add up to more than the ``bytes`` the upload was created with, and an upload has
at most ``max_upload_parts`` of them: :func:`part_allowance` says how much the next part may
carry before its body is read (which bounds the read), and :func:`add_part` checks it again with
the upload's row locked, so parts sent in parallel cannot together pass it.

Parts are stored under ``parts/<upload-id>/`` as they arrive; completing checks the part ids and
the byte count (:func:`plan_assembly`), concatenates the parts in the order the client names and
validates the result with no transaction open, on the file threads (:func:`concatenate`,
:func:`tunesmith.files.check_upload`), then stores it like any other file with the upload's row
locked (:func:`complete`).
"""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from tunesmith.errors import Conflict, InvalidRequest, NotFound
from tunesmith.files import (
    Checked,
    check_purpose,
    file_to_protocol,
    sanitize_filename,
    store_file,
)
from tunesmith.ids import new_id
from tunesmith.protocol.files import Upload, UploadPart
from tunesmith.store.blobs import BlobStore
from tunesmith.store.db import locked
from tunesmith.store.tables import FileRow, UploadPartRow, UploadRow

COPY_CHUNK = 8 << 20  # bytes per read while assembling


def upload_to_protocol(row: UploadRow, file: FileRow | None = None) -> Upload:
    return Upload(
        id=row.id,
        bytes=row.bytes,
        created_at=row.created_at,
        expires_at=row.expires_at,
        filename=row.filename,
        purpose=row.purpose,
        status=row.status,
        file=file_to_protocol(file) if file is not None else None,
    )


def part_to_protocol(row: UploadPartRow) -> UploadPart:
    return UploadPart(id=row.id, created_at=row.created_at, upload_id=row.upload_id)


def create_upload(
    session: Session,
    *,
    project_id: str,
    filename: str,
    purpose: str,
    size: int,
    mime_type: str,
    max_bytes: int,
    ttl_seconds: int,
    now: int,
) -> UploadRow:
    name = sanitize_filename(filename)
    check_purpose(purpose, name)
    if not 0 < size <= max_bytes:
        raise InvalidRequest(f"bytes must be between 1 and {max_bytes}, not {size}.", param="bytes")
    row = UploadRow(
        id=new_id("upload_"),
        project_id=project_id,
        filename=name,
        purpose=purpose,
        bytes=size,
        mime_type=mime_type,
        status="pending",
        created_at=now,
        expires_at=now + ttl_seconds,
    )
    session.add(row)
    return row


def get_upload(
    session: Session, project_id: str, upload_id: str, *, lock: bool = False
) -> UploadRow:
    """The project's upload, or :class:`NotFound`; ``lock`` holds its row until the transaction
    ends (no other transaction adds a part or completes it meanwhile)."""
    if lock:
        statement = locked(session, select(UploadRow).where(UploadRow.id == upload_id))
        row = session.scalars(statement.execution_options(populate_existing=True)).first()
    else:
        row = session.get(UploadRow, upload_id)
    if row is None or row.project_id != project_id:
        raise NotFound(f"No such Upload object: {upload_id}", param="upload_id")
    return row


def require_pending(row: UploadRow, *, now: int) -> None:
    if row.status == "pending" and row.expires_at <= now:
        row.status = "expired"
    if row.status != "pending":
        raise Conflict(
            f"Upload {row.id} is {row.status}; parts can only be added to a pending upload.",
            param="upload_id",
        )


def part_allowance(session: Session, row: UploadRow, *, max_parts: int) -> int:
    """The most bytes the upload's next part may carry: what its parts so far leave of its
    declared ``bytes``. Refuses (400, param ``data``) an upload that already has ``max_parts``
    parts, or whose parts already add up to its size."""
    count, total = session.execute(
        select(func.count(), func.coalesce(func.sum(UploadPartRow.bytes), 0)).where(
            UploadPartRow.upload_id == row.id
        )
    ).one()
    if count >= max_parts:
        raise InvalidRequest(
            f"Upload {row.id} already has {count} parts, the most one upload may have "
            f"(TUNESMITH_MAX_UPLOAD_PARTS={max_parts}); send the data in fewer, larger parts.",
            param="data",
            code="too_many_parts",
        )
    remaining = int(row.bytes) - int(total)
    if remaining <= 0:
        raise InvalidRequest(
            f"The parts of upload {row.id} already add up to the {row.bytes} bytes it was "
            "created with; complete it, or create a new upload for more data.",
            param="data",
            code="upload_bytes_exceeded",
        )
    return remaining


def beyond_declared(row: UploadRow, *, size: int | None, allowance: int) -> InvalidRequest:
    """The refusal of a part larger than what is left of the upload's declared size."""
    which = f"This part of {size} bytes" if size is not None else "This part"
    return InvalidRequest(
        f"{which} is larger than the {allowance} bytes left of the {row.bytes} bytes upload "
        f"{row.id} was created with; parts may not add up to more than the upload's bytes.",
        param="data",
        code="upload_bytes_exceeded",
    )


def add_part(
    session: Session, row: UploadRow, *, part_id: str, size: int, max_parts: int, now: int
) -> UploadPartRow:
    """Records a part whose bytes the caller moves to ``part_dir(upload)/part_id`` in the same
    transaction. ``row`` must be locked (:func:`get_upload` with ``lock``): the allowance is
    checked again here, and holds until the transaction ends."""
    allowance = part_allowance(session, row, max_parts=max_parts)
    if size > allowance:
        raise beyond_declared(row, size=size, allowance=allowance)
    part = UploadPartRow(id=part_id, upload_id=row.id, bytes=size, created_at=now)
    session.add(part)
    return part


def new_part_id() -> str:
    return new_id("part_")


def plan_assembly(
    session: Session, blobs: BlobStore, row: UploadRow, *, part_ids: list[str], now: int
) -> tuple[list[Path], int]:
    """The part files to concatenate, in the order ``part_ids`` names them, and their total,
    which must be the upload's ``bytes``."""
    require_pending(row, now=now)
    if not part_ids:
        raise InvalidRequest("part_ids must list the upload's parts in order.", param="part_ids")
    if len(set(part_ids)) != len(part_ids):
        raise InvalidRequest("part_ids lists a part more than once.", param="part_ids")
    parts = {
        p.id: p
        for p in session.scalars(select(UploadPartRow).where(UploadPartRow.upload_id == row.id))
    }
    unknown = [p for p in part_ids if p not in parts]
    if unknown:
        raise InvalidRequest(
            f"part_ids names parts that are not in upload {row.id}: {', '.join(unknown)}.",
            param="part_ids",
        )
    total = sum(parts[p].bytes for p in part_ids)
    if total != row.bytes:
        raise InvalidRequest(
            f"The parts add up to {total} bytes, but the upload was created with bytes="
            f"{row.bytes}. Send the missing parts or create the upload with the right size.",
            param="part_ids",
        )
    part_dir = blobs.part_dir(row.id)
    return [part_dir / part_id for part_id in part_ids], total


def concatenate(paths: list[Path], handle: BinaryIO, *, upload_id: str) -> None:
    """Copies the parts into ``handle`` in order (on the file threads: up to 8 GB)."""
    for path in paths:
        try:
            source = path.open("rb")
        except FileNotFoundError:  # cancelled or expired meanwhile, and swept
            raise Conflict(
                f"Upload {upload_id} is no longer pending; its parts are gone.",
                param="upload_id",
            ) from None
        with source:
            while chunk := source.read(COPY_CHUNK):
                handle.write(chunk)
    handle.flush()


def complete(
    session: Session,
    blobs: BlobStore,
    row: UploadRow,
    *,
    tmp: Path,
    size: int,
    checked: Checked,
    now: int,
) -> FileRow:
    """Stores the assembled, checked file; the upload becomes ``completed``. ``row`` must be
    locked (:func:`get_upload` with ``lock``), so that of two completions only one succeeds."""
    require_pending(row, now=now)
    file = store_file(
        session,
        blobs,
        tmp=tmp,
        size=size,
        project_id=row.project_id,
        filename=row.filename,
        purpose=row.purpose,
        expires_at=None,
        checked=checked,
        now=now,
    )
    row.status = "completed"
    row.file_id = file.id
    return file


def cancel(session: Session, row: UploadRow, *, now: int) -> None:
    require_pending(row, now=now)
    row.status = "cancelled"


def expire_uploads(session: Session, *, now: int) -> list[str]:
    """Marks overdue pending uploads expired; returns their ids (their parts can go)."""
    ids = list(
        session.scalars(
            select(UploadRow.id).where(UploadRow.status == "pending", UploadRow.expires_at <= now)
        )
    )
    if ids:
        session.execute(update(UploadRow).where(UploadRow.id.in_(ids)).values(status="expired"))
    return ids


def part_path(blobs: BlobStore, upload_id: str, part_id: str) -> Path:
    return blobs.part_dir(upload_id) / part_id
