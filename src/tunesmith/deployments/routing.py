"""Request routing: the deployment a chat request's ``model`` names, as the
:class:`ServingTarget` the engine runs it on.

A request names the deployment (Azure style) or its model — the id or registered name of a
deployed model; a deployment's name wins (``service.create_deployment`` refuses a name that
would make that ambiguous). A model that is not deployed is refused, and a deployment key
reaches its own deployment only.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from tunesmith.auth import LAST_USED_RESOLUTION, Principal
from tunesmith.catalog.base_models import get_base_model
from tunesmith.catalog.spec import BaseModelSpec
from tunesmith.deployments.service import find_deployment, limits_of
from tunesmith.errors import AuthenticationError, NotFound
from tunesmith.fine_tuned import resolve_model
from tunesmith.ratelimits import RateLimits
from tunesmith.store.tables import DeploymentRow, ModelRow


@dataclass(frozen=True, slots=True)
class ServingTarget:
    """What a chat request runs on: the deployment, the catalog base model at the root, the
    deployed fine-tuned model or checkpoint (None for a base model), and the limits."""

    deployment: DeploymentRow
    base: BaseModelSpec
    model: ModelRow | None
    limits: RateLimits


def resolve_target(
    session: Session, principal: Principal, model: str, *, now: int, touch: bool = True
) -> ServingTarget:
    """The deployment a chat request's ``model`` names: a deployment name, or the id (or
    registered name) of a deployed model. A deployment key reaches its own deployment only.
    ``touch=False`` (loading a new deployment ahead of use) leaves ``last_used_at`` alone."""
    try:
        deployment = _deployment_for(session, principal.project_id, model)
    except NotFound:
        if principal.deployment_id is not None:
            raise _wrong_deployment(principal, model) from None
        raise
    if principal.deployment_id is not None and deployment.id != principal.deployment_id:
        raise _wrong_deployment(principal, model)
    row = session.get(ModelRow, deployment.model_id)
    base = get_base_model(session, row.base_model if row is not None else deployment.model_id)
    stale = deployment.last_used_at is None or now - deployment.last_used_at >= LAST_USED_RESOLUTION
    if touch and stale:
        deployment.last_used_at = now
    return ServingTarget(deployment=deployment, base=base, model=row, limits=limits_of(deployment))


def _deployment_for(session: Session, project_id: str, model: str) -> DeploymentRow:
    by_name = find_deployment(session, project_id, model)
    if by_name is not None:
        return by_name
    resolved = resolve_model(session, project_id, model, param="model")
    model_id = resolved.row.id if resolved.row is not None else resolved.base.id
    row = session.scalar(
        select(DeploymentRow).where(
            DeploymentRow.project_id == project_id, DeploymentRow.model_id == model_id
        )
    )
    if row is None:
        raise NotFound(
            f"The model {model_id} exists but is not deployed; deploy it first with "
            f'POST /v1/deployments {{"name": "<a name>", "model": "{model}"}} and call it by '
            "that name.",
            param="model",
            code="model_not_deployed",
        )
    return row


def _wrong_deployment(principal: Principal, model: str) -> AuthenticationError:
    own = principal.key_id.split(":")[1]
    return AuthenticationError(
        f"This key belongs to the deployment '{own}' and calls only that deployment; "
        f"send model '{own}', or use a project API key (or that deployment's key) to call "
        f"{model!r}."
    )
