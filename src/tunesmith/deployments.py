"""Deployments: a model made callable under a name, with its own keys, limits and filter switch.

The step between the models and the chat endpoint (``… ► fine_tuned ► deployment ► chat``). A
deployment names one concrete model of the project — a fine-tuned model, a checkpoint, or a
catalog base model — and a model has at most one deployment (as in Azure AI Foundry). Chat
requests name the deployment (Azure style) or its model; :func:`resolve_target` turns that into
a :class:`ServingTarget` for the engine, and refuses models that are not deployed.

Every deployment has a primary and a secondary key (``tsd-…``) that authenticate chat calls to
it alone; regenerating one invalidates it at once, so clients can rotate without downtime. A
key is stored as its SHA-256 hash, which authenticates (``auth.py``), and as a copy sealed under
the installation's key-encryption key (``sealing.py``), which :func:`keys_to_protocol` opens for
``GET …/keys``; a copy that does not open (another key-encryption key) is a clear 500 there and
nowhere else, and regenerating the key makes it readable again.
Deployments are removed by their owner or, once unused for ``deployment_idle_seconds``, by the
periodic sweep (:func:`remove_idle`). Either way an event records it and the hosting time is
metered (``usage.py``); the model itself is kept. Events outlive their deployment.

A deployment is ``creating`` until its model has been loaded, off the request path (the
serving side's warm-up, ``chat.Serving.warm``), then ``succeeded``, or ``failed`` with the error
a chat request for it answers (:func:`record_load`). Any update of a failed deployment sets it
back to ``creating`` to be loaded again (:func:`retry`); a server that starts loads those left
``creating`` (:func:`list_creating`). Each change of status is an event.

Invariants: one deployment per (project, name) and per (project, model_id), held by unique
constraints; a deployed model cannot be deleted (``fine_tuned.delete_model``); a deployment of a
checkpoint is only made once the job that wrote it has ended (a running job prunes checkpoints).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Literal, cast

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from tunesmith import usage
from tunesmith.auth import LAST_USED_RESOLUTION, Principal, hash_key
from tunesmith.catalog.base_models import get_base_model
from tunesmith.catalog.spec import BaseModelSpec
from tunesmith.errors import AuthenticationError, Conflict, InvalidRequest, NotFound, ServerError
from tunesmith.fine_tuned import check_name, resolve_model
from tunesmith.ids import new_id
from tunesmith.protocol.deployments import (
    Deployment,
    DeploymentError,
    DeploymentEvent,
    DeploymentEventType,
    DeploymentKeys,
    DeploymentStatus,
    RateLimitsObject,
    RateLimitsRequest,
    RegeneratedKeys,
)
from tunesmith.protocol.jobs import ACTIVE
from tunesmith.ratelimits import RateLimits
from tunesmith.sealing import Sealer, Unsealable, slot
from tunesmith.store.db import locked
from tunesmith.store.pagination import page
from tunesmith.store.tables import DeploymentEventRow, DeploymentRow, JobRow, ModelRow

KEY_PREFIX = "tsd-"
KeyName = Literal["primary", "secondary"]
LIMIT_FIELDS = ("requests_per_minute", "tokens_per_minute", "max_concurrent_requests")


@dataclass(frozen=True, slots=True)
class ServingTarget:
    """What a chat request runs on: the deployment, the catalog base model at the root, the
    deployed fine-tuned model or checkpoint (None for a base model), and the limits."""

    deployment: DeploymentRow
    base: BaseModelSpec
    model: ModelRow | None
    limits: RateLimits


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


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


def error_of(row: DeploymentRow) -> DeploymentError | None:
    if row.error_code is None:
        return None
    return DeploymentError(code=row.error_code, message=row.error_message or "")


def event_to_protocol(row: DeploymentEventRow) -> DeploymentEvent:
    return DeploymentEvent(
        id=row.id,
        deployment_id=row.deployment_id,
        deployment_name=row.deployment_name,
        created_at=row.created_at,
        type=row.type,
        message=row.message,
    )


def keys_to_protocol(row: DeploymentRow, sealer: Sealer) -> DeploymentKeys:
    """Both keys, opened; a :class:`~tunesmith.errors.ServerError` naming the first that does
    not open (sealed under another key-encryption key, or altered)."""
    return DeploymentKeys(
        primary_key=open_key(row, "primary", sealer),
        secondary_key=open_key(row, "secondary", sealer),
    )


def open_key(row: DeploymentRow, key_name: KeyName, sealer: Sealer) -> str:
    sealed = row.primary_key_sealed if key_name == "primary" else row.secondary_key_sealed
    try:
        return sealer.open(sealed, where=_slot(row, key_name))
    except Unsealable as exc:
        raise _unreadable(row, key_name, sealer, exc) from None


def _seal(row: DeploymentRow, key_name: KeyName, secret: str, sealer: Sealer) -> None:
    """Stores ``secret`` as ``key_name``: its hash and its sealed copy, never itself."""
    sealed = sealer.seal(secret, where=_slot(row, key_name))
    if key_name == "primary":
        row.primary_key_sealed, row.primary_key_hash = sealed, hash_key(secret)
    else:
        row.secondary_key_sealed, row.secondary_key_hash = sealed, hash_key(secret)


def _slot(row: DeploymentRow, key_name: KeyName) -> str:
    return slot("deployments", row.id, f"{key_name}_key_sealed")


def _unreadable(
    row: DeploymentRow, key_name: KeyName, sealer: Sealer, exc: Unsealable
) -> ServerError:
    regenerate = (
        f'regenerate it (POST /v1/deployments/{row.name}/keys/regenerate {{"key_name": '
        f'"{key_name}"}}) and give the new key to its clients'
    )
    if exc.other_key:
        return ServerError(
            f"The {key_name} key of the deployment '{row.name}' cannot be shown: it was sealed "
            f"under the key-encryption key {exc.sealed_with}, but this server's ({sealer.source}) "
            f"is {sealer.key_id}; the key-encryption key does not match. The key still "
            "authenticates. Start the server with the key-encryption key it was sealed with "
            f"(restore it from the backup of the data directory), or {regenerate}.",
            code="key_encryption_key_mismatch",
        )
    return ServerError(
        f"The {key_name} key of the deployment '{row.name}' cannot be shown: its stored copy "
        "does not open (it was altered, or copied from another row or column). The key still "
        f"authenticates; {regenerate}.",
        code="sealed_key_unreadable",
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
    model_id = resolved.row.id if resolved.row is not None else resolved.base.id
    if resolved.row is not None and resolved.row.checkpoint_step is not None:
        job = session.get(JobRow, resolved.row.job_id)
        if job is not None and job.status in ACTIVE:
            raise Conflict(
                f"{model_id} is a checkpoint of job {job.id}, which is {job.status}; a running "
                "job may replace or prune its checkpoints. Deploy it once the job has ended.",
                param="model",
                code="model_in_use",
            )
    existing = _by_name(session, project_id, name)
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
    _seal(row, "primary", new_key(), sealer)
    _seal(row, "secondary", new_key(), sealer)
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
    _add_event(
        session,
        row,
        "created",
        f"Deployed {model_id}{asked} as '{name}': {_describe(limits)}, content filter "
        f"{_on_off(content_filter)}.",
        now=now,
    )
    return row


def get_deployment(session: Session, *, project_id: str, name: str) -> DeploymentRow:
    row = _by_name(session, project_id, name)
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
    _add_event(session, row, "updated", "Updated: " + "; ".join(changes) + ".", now=now)
    return row


def retry(session: Session, *, row: DeploymentRow, now: int) -> bool:
    """Sets a failed deployment back to ``creating`` (the caller loads its model again, as on
    creation); True if it was failed. Any update of a failed deployment retries it."""
    if row.status != "failed":
        return False
    _add_event(
        session,
        row,
        "retried",
        f"Retrying: loading {row.model_id} again (it had failed with {row.error_code}).",
        now=now,
    )
    row.status, row.error_code, row.error_message = "creating", None, None
    return True


def record_load(
    session: Session, *, deployment_id: str, error: DeploymentError | None, now: int
) -> DeploymentRow | None:
    """Records how loading a ``creating`` deployment's model ended: ``succeeded``, or
    ``failed`` with ``error``, and an event saying so. A deployment that is no longer
    ``creating`` keeps its status (a late outcome); None: it is gone (deleted, or removed as
    idle, while its model was loading)."""
    row = session.scalar(
        locked(session, select(DeploymentRow).where(DeploymentRow.id == deployment_id))
    )
    if row is None or row.status != "creating":
        return row
    if error is None:
        row.status = "succeeded"
        _add_event(
            session, row, "succeeded", f"Ready: {row.model_id} is loaded and serving.", now=now
        )
        return row
    row.status, row.error_code, row.error_message = "failed", error.code, error.message
    _add_event(
        session,
        row,
        "failed",
        f"Failed ({error.code}): {error.message} Fix the cause, then retry with "
        f"PATCH /v1/deployments/{row.name}.",
        now=now,
    )
    return row


def list_creating(session: Session) -> list[DeploymentRow]:
    """Every deployment (of any project) whose model is still to be loaded, oldest first."""
    return list(
        session.scalars(
            select(DeploymentRow)
            .where(DeploymentRow.status == "creating")
            .order_by(DeploymentRow.created_at, DeploymentRow.id)
        )
    )


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


def regenerate_key(
    session: Session, *, row: DeploymentRow, key_name: KeyName, sealer: Sealer, now: int
) -> RegeneratedKeys:
    """Replaces one key; the old one stops authenticating when the transaction commits. Returns
    the new key and the other one, or None for the other when its stored copy does not open
    (so that regenerating both keys recovers from a lost key-encryption key)."""
    secret = new_key()
    _seal(row, key_name, secret, sealer)
    other: KeyName = "secondary" if key_name == "primary" else "primary"
    try:
        kept: str | None = open_key(row, other, sealer)
    except ServerError:
        kept = None
    _add_event(
        session,
        row,
        "keys_regenerated",
        f"The {key_name} key was regenerated; the previous {key_name} key no longer works.",
        now=now,
    )
    keys = {f"{key_name}_key": secret, f"{other}_key": kept}
    return RegeneratedKeys(primary_key=keys["primary_key"], secondary_key=keys["secondary_key"])


def list_events(
    session: Session,
    *,
    project_id: str,
    name: str,
    after: str | None,
    limit: int,
    order: Literal["asc", "desc"],
) -> tuple[list[DeploymentEventRow], bool]:
    """The events of every deployment that had this name, also after it was deleted."""
    stmt = select(DeploymentEventRow).where(
        DeploymentEventRow.project_id == project_id, DeploymentEventRow.deployment_name == name
    )
    if session.scalar(stmt.with_only_columns(DeploymentEventRow.id).limit(1)) is None:
        raise NotFound(
            f"No deployment named {name!r} ever existed in this project; list them with "
            "GET /v1/deployments.",
            param="deployment_name",
            code="deployment_not_found",
        )
    return page(session, stmt, DeploymentEventRow, after=after, limit=limit, order=order)


# -- serving -----------------------------------------------------------------------------------


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


def _by_name(session: Session, project_id: str, name: str) -> DeploymentRow | None:
    return session.scalar(
        select(DeploymentRow).where(
            DeploymentRow.project_id == project_id, DeploymentRow.name == name
        )
    )


def _deployment_for(session: Session, project_id: str, model: str) -> DeploymentRow:
    by_name = _by_name(session, project_id, model)
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
    _add_event(session, row, kind, message, now=now)
    session.delete(row)
    session.flush()  # the name and the model are free again within this transaction


def _add_event(
    session: Session, row: DeploymentRow, kind: DeploymentEventType, message: str, *, now: int
) -> None:
    session.add(
        DeploymentEventRow(
            id=new_id("depevt_"),
            project_id=row.project_id,
            deployment_id=row.id,
            deployment_name=row.name,
            created_at=now,
            type=kind,
            message=message,
        )
    )


def _describe(limits: RateLimits) -> str:
    return (
        f"{limits.requests_per_minute} requests and {limits.tokens_per_minute} tokens per "
        f"minute, {limits.max_concurrent_requests} at once"
    )


def _on_off(value: bool) -> str:
    return "on" if value else "off"
