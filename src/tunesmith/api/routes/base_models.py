"""``/v1/base_models`` (extension): the catalog of base models. Any key lists and reads it (users
pick from it); the admin key registers, changes and removes models. A registration's checks run
in the request; the long part (copy, hashes, conversion) runs in the server's background
(``catalog.registration``), and the answer shows ``status: registering`` with its progress."""

from __future__ import annotations

import shutil

from fastapi import APIRouter, BackgroundTasks

from tunesmith.api.body import CappedRoute
from tunesmith.api.deps import Admin, PageLimit, Reader, RuntimeDep, SessionDep, now
from tunesmith.catalog import base_models
from tunesmith.catalog.entries import base_model_to_protocol
from tunesmith.catalog.spec import TASKS
from tunesmith.protocol.base_models import (
    BaseModelDeleted,
    BaseModelObject,
    CreateBaseModelRequest,
    UpdateBaseModelRequest,
)
from tunesmith.protocol.pages import ListPage

router = APIRouter(prefix="/v1/base_models", tags=["base models"], route_class=CappedRoute)


@router.post("", response_model=BaseModelObject)
def register_base_model(
    body: CreateBaseModelRequest,
    _admin: Admin,
    session: SessionDep,
    runtime: RuntimeDep,
    background: BackgroundTasks,
) -> BaseModelObject:
    spec = base_models.register_base_model(
        session,
        model_id=body.id,
        source=body.source,
        tasks=TASKS if body.tasks is None else body.tasks,
        context_length=body.context_length,
        lora_target_modules=body.lora_target_modules,
        lora_learning_rate=body.lora_learning_rate,
        full_learning_rate=body.full_learning_rate,
        license=body.license,
        copy=body.copy_,
        cache_dir=runtime.settings.model_cache_dir(),
        now=now(),
    )
    # After the commit (SessionDep commits before the response), so the registrar finds the row.
    background.add_task(runtime.registrar.submit, spec.id)
    return base_model_to_protocol(spec, runtime.settings.model_cache_dir())


@router.get("", response_model=ListPage[BaseModelObject])
def list_base_models(
    _principal: Reader,
    session: SessionDep,
    runtime: RuntimeDep,
    limit: PageLimit = 20,
    after: str | None = None,
    task: str | None = None,
) -> ListPage[BaseModelObject]:
    specs, has_more = base_models.page_of(
        base_models.list_base_models(session, task=task), after=after, limit=limit
    )
    cache_dir = runtime.settings.model_cache_dir()
    return ListPage.of(
        [base_model_to_protocol(spec, cache_dir) for spec in specs],
        has_more=has_more,
        ids=[spec.id for spec in specs],
    )


@router.get("/{model_id}", response_model=BaseModelObject)
def retrieve_base_model(
    model_id: str, _principal: Reader, session: SessionDep, runtime: RuntimeDep
) -> BaseModelObject:
    spec = base_models.get_base_model(session, model_id)
    return base_model_to_protocol(spec, runtime.settings.model_cache_dir())


@router.patch("/{model_id}", response_model=BaseModelObject)
def update_base_model(
    model_id: str,
    body: UpdateBaseModelRequest,
    _admin: Admin,
    session: SessionDep,
    runtime: RuntimeDep,
) -> BaseModelObject:
    cache_dir = runtime.settings.model_cache_dir()
    spec = base_models.update_base_model(
        session, model_id, body.model_dump(exclude_unset=True), cache_dir=cache_dir, now=now()
    )
    return base_model_to_protocol(spec, cache_dir)


@router.delete("/{model_id}", response_model=BaseModelDeleted)
def delete_base_model(
    model_id: str,
    _admin: Admin,
    session: SessionDep,
    runtime: RuntimeDep,
    background: BackgroundTasks,
) -> BaseModelDeleted:
    base_models.remove_base_model(session, model_id)
    # tunesmith's copy (registered with copy) goes once the response, and so the transaction,
    # is done; the folder is the model's own, named by its id.
    copy = runtime.settings.base_model_copy_dir(model_id)
    background.add_task(shutil.rmtree, copy, ignore_errors=True)
    return BaseModelDeleted(id=model_id)
