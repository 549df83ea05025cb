"""``/v1/models``: base models of the catalog, and the project's fine-tuned models and
checkpoints (list, retrieve, delete)."""

from __future__ import annotations

import shutil

from fastapi import APIRouter, BackgroundTasks

from tunesmith import fine_tuned
from tunesmith.api.body import CappedRoute
from tunesmith.api.deps import Owner, Reader, RuntimeDep, SessionDep
from tunesmith.protocol.models import Model, ModelDeleted
from tunesmith.protocol.pages import ListPage

router = APIRouter(prefix="/v1/models", tags=["models"], route_class=CappedRoute)


@router.get("", response_model=ListPage[Model])
def list_models(principal: Reader, session: SessionDep) -> ListPage[Model]:
    models = fine_tuned.list_models(session, principal.project_id)
    return ListPage.of(models, has_more=False, ids=[m.id for m in models])


@router.get("/{model_id}", response_model=Model)
def retrieve_model(
    model_id: str, principal: Reader, session: SessionDep, runtime: RuntimeDep
) -> Model:
    return fine_tuned.get_model(
        session, principal.project_id, model_id, cache_dir=runtime.settings.model_cache_dir()
    )


@router.delete("/{model_id}", response_model=ModelDeleted)
def delete_model(
    model_id: str, principal: Owner, session: SessionDep, background: BackgroundTasks
) -> ModelDeleted:
    folder = fine_tuned.delete_model(session, principal.project_id, model_id)
    # The folder goes once the response (and so the transaction) is done.
    background.add_task(shutil.rmtree, folder, ignore_errors=True)
    return ModelDeleted(id=model_id)
