"""``/v1/deployments`` (extension): deploy a model under a name, list, retrieve, update, delete,
its events, and its keys (get, regenerate)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, BackgroundTasks, Depends

from tunesmith import endpoints
from tunesmith.api.body import CappedRoute
from tunesmith.api.deps import Owner, PageLimit, Reader, Runtime, RuntimeDep, SessionDep, now
from tunesmith.deployments import events, keys, service, status
from tunesmith.protocol.deployments import (
    CreateDeploymentRequest,
    Deployment,
    DeploymentDeleted,
    DeploymentEvent,
    DeploymentKeys,
    RegeneratedKeys,
    RegenerateKeyRequest,
    UpdateDeploymentRequest,
)
from tunesmith.protocol.pages import ListPage
from tunesmith.ratelimits import RateLimits
from tunesmith.store.tables import DeploymentRow

router = APIRouter(prefix="/v1/deployments", tags=["deployments"], route_class=CappedRoute)


def owned_deployment(deployment_name: str, principal: Reader, session: SessionDep) -> DeploymentRow:
    return service.get_deployment(session, project_id=principal.project_id, name=deployment_name)


def owner_deployment(deployment_name: str, principal: Owner, session: SessionDep) -> DeploymentRow:
    return service.get_deployment(session, project_id=principal.project_id, name=deployment_name)


OwnedDeployment = Annotated[DeploymentRow, Depends(owned_deployment)]
OwnersDeployment = Annotated[DeploymentRow, Depends(owner_deployment)]


def _out(row: DeploymentRow, runtime: Runtime) -> Deployment:
    public = runtime.settings.resolved_public_base_url()
    return service.deployment_to_protocol(row, scoring_uri=endpoints.scoring_uri(public, row))


@router.post("", response_model=Deployment)
def create_deployment(
    body: CreateDeploymentRequest,
    principal: Owner,
    session: SessionDep,
    runtime: RuntimeDep,
    background: BackgroundTasks,
) -> Deployment:
    settings = runtime.settings
    row = service.create_deployment(
        session,
        project_id=principal.project_id,
        name=body.name,
        model=body.model,
        rate_limits=body.rate_limits,
        content_filter=body.content_filter,
        defaults=RateLimits(
            requests_per_minute=settings.default_requests_per_minute,
            tokens_per_minute=settings.default_tokens_per_minute,
            max_concurrent_requests=settings.default_max_concurrent_requests,
        ),
        sealer=runtime.sealer,
        now=now(),
    )
    if runtime.serving is not None:  # weights and adapter loaded before the first request
        background.add_task(runtime.serving.models.warm, row.id)
    return _out(row, runtime)


@router.get("", response_model=ListPage[Deployment])
def list_deployments(
    principal: Reader,
    session: SessionDep,
    runtime: RuntimeDep,
    limit: PageLimit = 20,
    order: Literal["asc", "desc"] = "desc",
    after: str | None = None,
) -> ListPage[Deployment]:
    rows, has_more = service.list_deployments(
        session, project_id=principal.project_id, after=after, limit=limit, order=order
    )
    return ListPage.of(
        [_out(r, runtime) for r in rows], has_more=has_more, ids=[r.id for r in rows]
    )


@router.get("/{deployment_name}", response_model=Deployment)
def retrieve_deployment(row: OwnedDeployment, runtime: RuntimeDep) -> Deployment:
    return _out(row, runtime)


@router.patch("/{deployment_name}", response_model=Deployment)
def update_deployment(
    body: UpdateDeploymentRequest,
    row: OwnersDeployment,
    session: SessionDep,
    runtime: RuntimeDep,
    background: BackgroundTasks,
) -> Deployment:
    service.update_deployment(
        session,
        row=row,
        rate_limits=body.rate_limits,
        content_filter=body.content_filter,
        now=now(),
    )
    if status.retry(session, row=row, now=now()) and runtime.serving is not None:
        background.add_task(runtime.serving.models.warm, row.id)
    return _out(row, runtime)


@router.delete("/{deployment_name}", response_model=DeploymentDeleted)
def delete_deployment(
    deployment_name: str, principal: Owner, session: SessionDep
) -> DeploymentDeleted:
    row = service.delete_deployment(
        session, project_id=principal.project_id, name=deployment_name, now=now()
    )
    return DeploymentDeleted(id=row.id, name=row.name)


@router.get("/{deployment_name}/events", response_model=ListPage[DeploymentEvent])
def list_deployment_events(
    deployment_name: str,
    principal: Reader,
    session: SessionDep,
    limit: PageLimit = 20,
    order: Literal["asc", "desc"] = "desc",
    after: str | None = None,
) -> ListPage[DeploymentEvent]:
    rows, has_more = events.list_events(
        session,
        project_id=principal.project_id,
        name=deployment_name,
        after=after,
        limit=limit,
        order=order,
    )
    return ListPage.of(
        [events.event_to_protocol(r) for r in rows],
        has_more=has_more,
        ids=[r.id for r in rows],
    )


@router.get("/{deployment_name}/keys", response_model=DeploymentKeys)
def get_deployment_keys(row: OwnersDeployment, runtime: RuntimeDep) -> DeploymentKeys:
    return keys.keys_to_protocol(row, runtime.sealer)


@router.post("/{deployment_name}/keys/regenerate", response_model=RegeneratedKeys)
def regenerate_deployment_key(
    body: RegenerateKeyRequest, row: OwnersDeployment, session: SessionDep, runtime: RuntimeDep
) -> RegeneratedKeys:
    return keys.regenerate_key(
        session, row=row, key_name=body.key_name, sealer=runtime.sealer, now=now()
    )
