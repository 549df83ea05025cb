"""``/v1/uploads``: large files in parts (create, add part, complete, cancel)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from tunesmith import uploads
from tunesmith.api.body import CappedRoute
from tunesmith.api.deps import Contributor, RuntimeDep, SessionDep, now
from tunesmith.api.multipart import receive_form
from tunesmith.api.openapi import multipart_body
from tunesmith.api.routes.files import DISCONNECTED
from tunesmith.errors import InvalidRequest
from tunesmith.protocol.files import CompleteUploadRequest, CreateUploadRequest, Upload, UploadPart
from tunesmith.store.db import transaction

router = APIRouter(prefix="/v1/uploads", tags=["uploads"], route_class=CappedRoute)


@router.post("", response_model=Upload)
def create_upload(
    body: CreateUploadRequest, principal: Contributor, session: SessionDep, runtime: RuntimeDep
) -> Upload:
    settings = runtime.settings
    row = uploads.create_upload(
        session,
        project_id=principal.project_id,
        filename=body.filename,
        purpose=body.purpose,
        size=body.bytes,
        mime_type=body.mime_type,
        max_bytes=settings.max_upload_bytes,
        ttl_seconds=settings.upload_ttl_seconds,
        now=now(),
    )
    return uploads.upload_to_protocol(row)


@router.post(
    "/{upload_id}/parts",
    response_model=UploadPart,
    openapi_extra=multipart_body(required=["data"], binary=["data"], text={}),
)
async def add_part(
    upload_id: str, request: Request, principal: Contributor, runtime: RuntimeDep
) -> UploadPart:
    def check() -> None:
        with transaction(runtime.sessions) as session:
            row = uploads.get_upload(session, principal.project_id, upload_id)
            uploads.require_pending(row, now=now())

    await run_in_threadpool(check)
    with runtime.blobs.temporary() as (tmp, handle):
        try:
            form = await receive_form(
                request,
                file_field="data",
                sink=handle,
                max_bytes=runtime.settings.max_part_bytes,
                limit_name="TUNESMITH_MAX_PART_BYTES",
            )
        except ClientDisconnect:
            raise InvalidRequest(DISCONNECTED) from None

        def store() -> UploadPart:
            part_id = uploads.new_part_id()
            with transaction(runtime.sessions) as session:
                row = uploads.get_upload(session, principal.project_id, upload_id)
                uploads.require_pending(row, now=now())
                part = uploads.add_part(session, row, part_id=part_id, size=form.size, now=now())
                runtime.blobs.commit(tmp, uploads.part_path(runtime.blobs, upload_id, part_id))
                return uploads.part_to_protocol(part)

        return await run_in_threadpool(store)


@router.post("/{upload_id}/complete", response_model=Upload)
def complete_upload(
    upload_id: str,
    body: CompleteUploadRequest,
    principal: Contributor,
    runtime: RuntimeDep,
) -> Upload:
    with transaction(runtime.sessions) as session:
        row = uploads.get_upload(session, principal.project_id, upload_id)
        file = uploads.assemble(
            session,
            runtime.blobs,
            row,
            part_ids=body.part_ids,
            validate=runtime.validate,
            now=now(),
        )
        result = uploads.upload_to_protocol(row, file)
    runtime.blobs.delete_parts(upload_id)
    return result


@router.post("/{upload_id}/cancel", response_model=Upload)
def cancel_upload(
    upload_id: str, principal: Contributor, session: SessionDep, runtime: RuntimeDep
) -> Upload:
    row = uploads.get_upload(session, principal.project_id, upload_id)
    uploads.cancel(session, row, now=now())
    session.flush()
    return uploads.upload_to_protocol(row)
