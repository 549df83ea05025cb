"""``/v1/uploads``: large files in parts (create, add part, complete, cancel)."""

from __future__ import annotations

import os
from pathlib import Path

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from tunesmith import files, uploads
from tunesmith.api.body import CappedRoute
from tunesmith.api.deps import Contributor, RuntimeDep, SessionDep, now
from tunesmith.api.multipart import receive_form
from tunesmith.api.openapi import multipart_body
from tunesmith.api.routes.files import DISCONNECTED
from tunesmith.errors import InvalidRequest, PayloadTooLarge
from tunesmith.protocol.files import CompleteUploadRequest, CreateUploadRequest, Upload, UploadPart
from tunesmith.store.db import transaction
from tunesmith.store.tables import UploadRow

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
    settings = runtime.settings

    def check() -> tuple[UploadRow, int]:
        with transaction(runtime.sessions) as session:
            row = uploads.get_upload(session, principal.project_id, upload_id)
            uploads.require_pending(row, now=now())
            allowance = uploads.part_allowance(session, row, max_parts=settings.max_upload_parts)
            session.expunge(row)
            return row, allowance

    # The part is refused before its body is read when the upload is full or has all its parts,
    # and cut off as soon as it passes what is left of the declared size.
    row, allowance = await run_in_threadpool(check)
    limit = min(settings.max_part_bytes, allowance)
    with runtime.blobs.temporary() as (tmp, handle):
        try:
            form = await receive_form(
                request,
                file_field="data",
                sink=handle,
                max_bytes=limit,
                limit_name="TUNESMITH_MAX_PART_BYTES",
            )
        except ClientDisconnect:
            raise InvalidRequest(DISCONNECTED) from None
        except PayloadTooLarge as exc:
            if exc.code == "file_too_large" and limit < settings.max_part_bytes:
                raise uploads.beyond_declared(row, size=None, allowance=allowance) from None
            raise

        def store() -> UploadPart:
            part_id = uploads.new_part_id()
            # On disk before the upload's row is locked (on SQLite, the database's write lock),
            # so the lock is not held through the sync of up to a part's size.
            os.fsync(handle.fileno())
            with transaction(runtime.sessions) as session:
                row = uploads.get_upload(session, principal.project_id, upload_id, lock=True)
                uploads.require_pending(row, now=now())
                part = uploads.add_part(
                    session,
                    row,
                    part_id=part_id,
                    size=form.size,
                    max_parts=settings.max_upload_parts,
                    now=now(),
                )
                runtime.blobs.commit(tmp, uploads.part_path(runtime.blobs, upload_id, part_id))
                return uploads.part_to_protocol(part)

        return await run_in_threadpool(store)


@router.post("/{upload_id}/complete", response_model=Upload)
async def complete_upload(
    upload_id: str,
    body: CompleteUploadRequest,
    principal: Contributor,
    runtime: RuntimeDep,
) -> Upload:
    def plan() -> tuple[list[Path], int, str]:
        with transaction(runtime.sessions) as session:
            row = uploads.get_upload(session, principal.project_id, upload_id)
            paths, total = uploads.plan_assembly(
                session, runtime.blobs, row, part_ids=body.part_ids, now=now()
            )
            return paths, total, row.purpose

    paths, total, purpose = await run_in_threadpool(plan)
    with runtime.blobs.temporary() as (tmp, handle):

        def assemble() -> files.Checked:
            uploads.concatenate(paths, handle, upload_id=upload_id)
            return files.check_upload(tmp, purpose, runtime.validate)

        # Minutes for 8 GB: on the file threads, with no transaction open.
        checked = await runtime.file_work.run(assemble)

        def store() -> Upload:
            with transaction(runtime.sessions) as session:
                row = uploads.get_upload(session, principal.project_id, upload_id, lock=True)
                file = uploads.complete(
                    session, runtime.blobs, row, tmp=tmp, size=total, checked=checked, now=now()
                )
                return uploads.upload_to_protocol(row, file)

        result = await run_in_threadpool(store)
    await run_in_threadpool(runtime.blobs.delete_parts, upload_id)
    return result


@router.post("/{upload_id}/cancel", response_model=Upload)
def cancel_upload(
    upload_id: str, principal: Contributor, session: SessionDep, runtime: RuntimeDep
) -> Upload:
    row = uploads.get_upload(session, principal.project_id, upload_id)
    uploads.cancel(session, row, now=now())
    session.flush()
    return uploads.upload_to_protocol(row)
