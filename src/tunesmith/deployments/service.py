"""Deployments: a model made callable under a name, with its own keys, limits and filter switch.

The step between the models and the chat endpoint (``… ► fine_tuned ► deployment ► chat``). A
deployment names one concrete model of the project — a fine-tuned model, a checkpoint, or a
catalog base model — and a model has at most one deployment (as in Azure AI Foundry). This
module creates, lists, updates and deletes them; a deployment's keys are :mod:`.keys`, its
status :mod:`.status`, its history :mod:`.events`, and :mod:`.routing` turns a chat request's
``model`` into the deployment it runs on.

Deployments are removed by their owner or, once unused for ``deployment_idle_seconds``, by the
periodic sweep (:func:`remove_idle`). Either way an event records it and the hosting time is
metered (``usage.py``); the model itself is kept. Events outlive their deployment.

Invariants: one deployment per (project, name) and per (project, model_id), held by unique
constraints; a deployed model cannot be deleted (``fine_tuned.delete_model``); a deployment of a
checkpoint is only made once the job that wrote it has ended (a running job prunes checkpoints).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, cast

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from tunesmith import usage
from tunesmith.catalog.base_models import require_ready
from tunesmith.catalog.families import serving_refusal
from tunesmith.catalog.spec import BaseModelSpec
from tunesmith.deployments.events import add_event
from tunesmith.deployments.keys import new_key, seal
from tunesmith.deployments.status import error_of
from tunesmith.errors import Conflict, InvalidRequest, NotFound
from tunesmith.fine_tuned import check_name, resolve_model
from tunesmith.ids import new_id
from tunesmith.protocol.deployments import (
    Deployment,
    DeploymentEventType,
    DeploymentStatus,
    RateLimitsObject,
    RateLimitsRequest,
)
from tunesmith.protocol.jobs import ACTIVE
from tunesmith.ratelimits import RateLimits
from tunesmith.sealing import Sealer
from tunesmith.store.pagination import page
from tunesmith.store.tables import DeploymentRow, JobRow

LIMIT_FIELDS = ("requests_per_minute", "tokens_per_minute", "max_concurrent_requests")


def limits_of(row: DeploymentRow) -> RateLimits:
    return RateLimits(
        requests_per_minute=row.requests_per_minute,
        tokens_per_minute=row.tokens_per_minute,
        max_concurrent_requests=row.max_concurrent_requests,
    )


def deployment_to_protocol(row: DeploymentRow, *, scoring_uri: str) -> Deployment:
    """``scoring_uri`` is the deployment's endpoint (``endpoints.scoring_uri``)."""
    return Deployment(
        id=row.id,
        name=row.name,
        model=row.model,
        model_id=row.model_id,
        created_at=row.created_at,
        updated_at=row.updated_at,
        last_used_at=row.last_used_at,
        rate_limits=RateLimitsObject(
            requests_per_minute=row.requests_per_minute,
            tokens_per_minute=row.tokens_per_minute,
            max_concurrent_requests=row.max_concurrent_requests,
        ),
        content_filter=row.content_filter,
        status=cast(DeploymentStatus, row.status),
        error=error_of(row),
        scoring_uri=scoring_uri,
    )


# -- create, read, update, delete --------------------------------------------------------------


def create_deployment(
    session: Session,
    *,
    project_id: str,
    name: str,
    model: str,
    rate_limits: RateLimitsRequest | None,
    content_filter: bool,
    defaults: RateLimits,
    sealer: Sealer,
    now: int,
) -> DeploymentRow:
    """Deploys ``model`` (any model string ``fine_tuned.resolve_model`` accepts) as ``name``;
    its two new keys are sealed with ``sealer``."""
    check_name(name, "name")
    resolved = resolve_model(session, project_id, model, param="model")
    require_ready(resolved.base)
    model_id = resolved.row.id if resolved.row is not None else resolved.base.id
    config = _known_config(resolved.base)
    refusal = serving_refusal(config) if config is not None else None
    if refusal is not None:
        raise InvalidRequest(
            f"{model_id} cannot be deployed: {refusal}", param="model", code="model_not_servable"
        )
    if resolved.row is not None and resolved.row.checkpoint_step is not None:
        job = session.get(JobRow, resolved.row.job_id)
        if job is not None and job.status in ACTIVE:
            raise Conflict(
                f"{model_id} is a checkpoint of job {job.id}, which is {job.status}; a running "
                "job may replace or prune its checkpoints. Deploy it once the job has ended.",
                param="model",
                code="model_in_use",
            )
    existing = find_deployment(session, project_id, name)
    if existing is not None:
        raise Conflict(
            f"A deployment named '{name}' already exists (of {existing.model_id}); choose "
            f"another name, or change it with PATCH /v1/deployments/{name}.",
            param="name",
            code="deployment_exists",
        )
    deployed = session.scalar(
        select(DeploymentRow).where(
            DeploymentRow.project_id == project_id, DeploymentRow.model_id == model_id
        )
    )
    if deployed is not None:
        raise Conflict(
            f"The model {model_id} is already deployed as '{deployed.name}' (one deployment per "
            f"model); call it through that deployment, or delete it first with "
            f"DELETE /v1/deployments/{deployed.name}.",
            param="model",
            code="model_already_deployed",
        )
    _check_unambiguous(session, project_id, name, model_id)
    limits = _merge(rate_limits, defaults)
    row = DeploymentRow(
        id=new_id("dep_"),
        project_id=project_id,
        name=name,
        model=model,
        model_id=model_id,
        created_at=now,
        updated_at=now,
        last_used_at=None,
        status="creating",
        requests_per_minute=limits.requests_per_minute,
        tokens_per_minute=limits.tokens_per_minute,
        max_concurrent_requests=limits.max_concurrent_requests,
        content_filter=content_filter,
    )
    seal(row, "primary", new_key(), sealer)
    seal(row, "secondary", new_key(), sealer)
    session.add(row)
    try:
        session.flush()
    except IntegrityError:  # a concurrent create won the unique constraint
        raise Conflict(
            f"A deployment named '{name}' or of {model_id} was created at the same moment; "
            "list the deployments (GET /v1/deployments) and retry if it is not there.",
            param="name",
            code="deployment_exists",
        ) from None
    asked = f" (asked for as {model})" if model != model_id else ""
    add_event(
        session,
        row,
        "created",
        f"Deployed {model_id}{asked} as '{name}': {_describe(limits)}, content filter "
        f"{_on_off(content_filter)}.",
        now=now,
    )
    return row


def find_deployment(session: Session, project_id: str, name: str) -> DeploymentRow | None:
    """The deployment named ``name`` in the project, if any."""
    return session.scalar(
        select(DeploymentRow).where(
            DeploymentRow.project_id == project_id, DeploymentRow.name == name
        )
    )


def get_deployment(session: Session, *, project_id: str, name: str) -> DeploymentRow:
    row = find_deployment(session, project_id, name)
    if row is None:
        raise NotFound(
            f"No deployment named {name!r} in this project; list them with GET /v1/deployments.",
            param="deployment_name",
            code="deployment_not_found",
        )
    return row


def list_deployments(
    session: Session,
    *,
    project_id: str,
    after: str | None,
    limit: int,
    order: Literal["asc", "desc"],
) -> tuple[list[DeploymentRow], bool]:
    stmt = select(DeploymentRow).where(DeploymentRow.project_id == project_id)
    return page(session, stmt, DeploymentRow, after=after, limit=limit, order=order)


def update_deployment(
    session: Session,
    *,
    row: DeploymentRow,
    rate_limits: RateLimitsRequest | None,
    content_filter: bool | None,
    now: int,
) -> DeploymentRow:
    """Changes the limits given and the filter switch; what is left out stays. A change is
    recorded as an ``updated`` event; a request that changes nothing records nothing."""
    before = limits_of(row)
    after = _merge(rate_limits, before)
    changes = [
        f"{field} {getattr(before, field)} → {getattr(after, field)}"
        for field in LIMIT_FIELDS
        if getattr(before, field) != getattr(after, field)
    ]
    if content_filter is not None and content_filter != row.content_filter:
        changes.append(f"content filter {_on_off(row.content_filter)} → {_on_off(content_filter)}")
        row.content_filter = content_filter
    if not changes:
        return row
    row.requests_per_minute = after.requests_per_minute
    row.tokens_per_minute = after.tokens_per_minute
    row.max_concurrent_requests = after.max_concurrent_requests
    row.updated_at = now
    add_event(session, row, "updated", "Updated: " + "; ".join(changes) + ".", now=now)
    return row


def delete_deployment(session: Session, *, project_id: str, name: str, now: int) -> DeploymentRow:
    """Removes the deployment (its keys stop working); the model stays."""
    row = get_deployment(session, project_id=project_id, name=name)
    hours = (now - row.created_at) / 3600
    _remove(
        session,
        row,
        "deleted",
        f"Deleted after {hours:.2f} hour(s) of hosting; the model {row.model_id} is kept.",
        now=now,
    )
    return row


def remove_idle(session: Session, *, now: int, idle_seconds: float) -> list[str]:
    """Deletes every deployment (of any project) that served nothing for longer than
    ``idle_seconds`` (counted from its creation if it never served); returns their ids."""
    last_activity = func.coalesce(DeploymentRow.last_used_at, DeploymentRow.created_at)
    rows = list(session.scalars(select(DeploymentRow).where(last_activity < now - idle_seconds)))
    for row in rows:
        idle = now - (row.last_used_at if row.last_used_at is not None else row.created_at)
        _remove(
            session,
            row,
            "deleted_idle",
            f"Deleted after {idle / 86400:.1f} day(s) without a request (the server removes "
            f"deployments idle for {idle_seconds / 86400:g} day(s), "
            f"TUNESMITH_DEPLOYMENT_IDLE_SECONDS); the model {row.model_id} is kept. Deploy it "
            "again to call it.",
            now=now,
        )
    return [row.id for row in rows]


# -- helpers -----------------------------------------------------------------------------------


def _known_config(base: BaseModelSpec) -> Mapping[str, Any] | None:
    """The base's ``config.json``: as read at registration, else from its local folder; ``None``
    where neither is known (a GGUF, a hub model registered before configs were kept), and the
    engine then refuses at load what it cannot run."""
    if base.config is not None:
        return base.config
    path = Path(base.source) / "config.json"
    if not Path(base.source).is_absolute() or not path.is_file():
        return None
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return config if isinstance(config, dict) else None


def _check_unambiguous(session: Session, project_id: str, name: str, model_id: str) -> None:
    """A deployment name that is also another model's id or registered name would make a chat
    request's ``model`` ambiguous (the deployment would win); naming it after its own model is
    fine."""
    try:
        other = resolve_model(session, project_id, name, param="name")
    except NotFound:
        return
    other_id = other.row.id if other.row is not None else other.base.id
    if other_id != model_id:
        raise InvalidRequest(
            f"The name '{name}' already names the model {other_id}; a chat request for "
            f"'{name}' would be ambiguous. Choose another deployment name.",
            param="name",
            code="ambiguous_name",
        )


def _merge(requested: RateLimitsRequest | None, base: RateLimits) -> RateLimits:
    if requested is None:
        return base
    return RateLimits(
        requests_per_minute=requested.requests_per_minute or base.requests_per_minute,
        tokens_per_minute=requested.tokens_per_minute or base.tokens_per_minute,
        max_concurrent_requests=requested.max_concurrent_requests or base.max_concurrent_requests,
    )


def _remove(
    session: Session, row: DeploymentRow, kind: DeploymentEventType, message: str, *, now: int
) -> None:
    usage.record_hosting(session, deployment=row, now=now)
    add_event(session, row, kind, message, now=now)
    session.delete(row)
    session.flush()  # the name and the model are free again within this transaction


def _describe(limits: RateLimits) -> str:
    return (
        f"{limits.requests_per_minute} requests and {limits.tokens_per_minute} tokens per "
        f"minute, {limits.max_concurrent_requests} at once"
    )


def _on_off(value: bool) -> str:
    return "on" if value else "off"
