"""``/v1/files``: upload (streamed, validated), list, retrieve, content, delete, validation, and
a dry-run validation that stores nothing."""

from __future__ import annotations

from functools import partial
from typing import Annotated, BinaryIO, Literal

from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from tunesmith import files
from tunesmith.api.body import CappedRoute
from tunesmith.api.deps import Contributor, FilePageLimit, Reader, RuntimeDep, SessionDep, now
from tunesmith.api.multipart import ReceivedForm, receive_form
from tunesmith.api.openapi import multipart_body
from tunesmith.errors import InvalidRequest
from tunesmith.protocol.files import (
    UPLOADABLE_PURPOSES,
    FileDeleted,
    FileObject,
    FileValidation,
)
from tunesmith.protocol.pages import ListPage
from tunesmith.settings import Settings
from tunesmith.store.db import transaction
from tunesmith.store.tables import FileRow

router = APIRouter(prefix="/v1/files", tags=["files"], route_class=CappedRoute)

DISCONNECTED = "The client disconnected before the upload finished; nothing was stored."


def owned_file(file_id: str, principal: Reader, session: SessionDep) -> FileRow:
    return files.get_file(session, principal.project_id, file_id, now=now())


OwnedFile = Annotated[FileRow, Depends(owned_file)]


async def _receive_file(request: Request, settings: Settings, sink: BinaryIO) -> ReceivedForm:
    """The multipart body, its ``file`` part streamed into ``sink`` up to the file size limit."""
    try:
        return await receive_form(
            request,
            file_field="file",
            sink=sink,
            max_bytes=settings.max_file_bytes,
            limit_name="TUNESMITH_MAX_FILE_BYTES",
        )
    except ClientDisconnect:
        raise InvalidRequest(DISCONNECTED) from None


@router.post(
    "",
    response_model=FileObject,
    openapi_extra=multipart_body(
        required=["file", "purpose"],
        binary=["file"],
        text={
            "purpose": "one of " + ", ".join(UPLOADABLE_PURPOSES),
            "expires_after[anchor]": "created_at",
            "expires_after[seconds]": "seconds after the anchor",
        },
    ),
)
async def create_file(request: Request, runtime: RuntimeDep, principal: Contributor) -> FileObject:
    with runtime.blobs.temporary() as (tmp, handle):
        form = await _receive_file(request, runtime.settings, handle)
        filename = files.sanitize_filename(form.filename)
        purpose = files.check_purpose(form.fields.get("purpose"), filename)
        created = now()
        expires_at = files.expiry(
            form.fields.get("expires_after[anchor]"),
            form.fields.get("expires_after[seconds]"),
            now=created,
        )
        checked = await runtime.file_work.run(
            partial(files.check_upload, tmp, purpose, runtime.validate)
        )

        def store() -> FileObject:
            with transaction(runtime.sessions) as session:
                row = files.store_file(
                    session,
                    runtime.blobs,
                    tmp=tmp,
                    size=form.size,
                    project_id=principal.project_id,
                    filename=filename,
                    purpose=purpose,
                    expires_at=expires_at,
                    checked=checked,
                    now=created,
                )
                return files.file_to_protocol(row)

        return await run_in_threadpool(store)


@router.post(
    "/validate",
    response_model=FileValidation,
    openapi_extra=multipart_body(required=["file"], binary=["file"], text={}),
)
async def validate_file(
    request: Request, runtime: RuntimeDep, _principal: Contributor
) -> FileValidation:
    """Checks a fine-tune file as an upload would, and stores nothing: the portal's wizard shows
    the report at once and uploads the file only when the job starts."""
    with runtime.blobs.temporary() as (tmp, handle):
        await _receive_file(request, runtime.settings, handle)
        report = await runtime.file_work.run(
            partial(files.check_fine_tune_file, tmp, runtime.validate)
        )
    return FileValidation(file_id=None, **report)


@router.get("", response_model=ListPage[FileObject])
def list_files(
    principal: Reader,
    session: SessionDep,
    purpose: str | None = None,
    limit: FilePageLimit = 10_000,
    order: Literal["asc", "desc"] = "desc",
    after: str | None = None,
) -> ListPage[FileObject]:
    rows, has_more = files.list_files(
        session,
        principal.project_id,
        purpose=purpose,
        after=after,
        limit=limit,
        order=order,
        now=now(),
    )
    return ListPage.of(
        [files.file_to_protocol(r) for r in rows], has_more=has_more, ids=[r.id for r in rows]
    )


@router.get("/{file_id}", response_model=FileObject)
def retrieve_file(row: OwnedFile) -> FileObject:
    return files.file_to_protocol(row)


@router.get("/{file_id}/content")
def file_content(row: OwnedFile, runtime: RuntimeDep) -> FileResponse:
    return FileResponse(
        runtime.blobs.file_path(row.id),
        media_type="application/octet-stream",
        filename=row.filename,
    )


@router.get("/{file_id}/validation", response_model=FileValidation)
def file_validation(row: OwnedFile) -> FileValidation:
    return files.validation_to_protocol(row)


@router.delete("/{file_id}", response_model=FileDeleted)
def delete_file(
    file_id: str, principal: Contributor, session: SessionDep, runtime: RuntimeDep
) -> FileDeleted:
    files.delete_file(session, runtime.blobs, principal.project_id, file_id, now=now())
    return FileDeleted(id=file_id)
