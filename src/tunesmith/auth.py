"""API keys and roles: who is calling, in which project, allowed to do what.

A key is ``tsk-`` plus 43 random characters, shown once and stored only as its SHA-256 (the
keys are random, so a slow hash adds nothing). The admin key manages projects and keys and acts
as owner in the ``default`` project. Roles rank ``reader < contributor < owner < admin``.

A deployment key (``tsd-…``, ``deployments/keys.py``) authenticates too, by its SHA-256 alone (its
sealed copy, for ``GET …/keys``, is never read here), as a principal bound to its deployment: it
may call chat completions on that deployment and nothing else, which :meth:`Principal.require`
(the gate of every other route) enforces once.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from sqlalchemy import select
from sqlalchemy.orm import Session

from tunesmith.errors import AuthenticationError, PermissionDenied
from tunesmith.ids import new_id
from tunesmith.private_files import private_dir, write_private
from tunesmith.store.tables import ApiKeyRow, DeploymentRow, ProjectRow

Role = Literal["reader", "contributor", "owner", "admin"]
RANK: dict[str, int] = {"reader": 0, "contributor": 1, "owner": 2, "admin": 3}
DEFAULT_PROJECT_ID = "proj_default"
KEY_PREFIX = "tsk-"
LAST_USED_RESOLUTION = 60  # seconds; `last_used_at` is written at most this often per key


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller: a key, acting in one project, with one role. ``deployment_id`` is set for a
    deployment key, which only calls chat completions on that deployment."""

    key_id: str
    project_id: str
    role: Role
    deployment_id: str | None = None

    def require(self, role: Role) -> None:
        if self.deployment_id is not None:
            name = self.key_id.split(":")[1]
            raise PermissionDenied(
                f"This is a key of the deployment '{name}': deployment keys only call chat "
                f"completions for their deployment (POST /v1/chat/completions with model "
                f"'{name}'). Use a project API key for anything else."
            )
        if RANK[self.role] < RANK[role]:
            raise PermissionDenied(
                f"This key has the role '{self.role}', but this action needs '{role}' or higher. "
                "Ask the project's owner or the admin for a key with that role."
            )


def hash_key(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def new_secret() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def redact(secret: str) -> str:
    return f"{secret[:8]}…{secret[-4:]}"


def authenticate(
    session: Session, secret: str | None, *, admin_key_hash: str | None, now: int
) -> Principal:
    """The principal behind a bearer secret. ``admin_key_hash`` is the configured admin key's
    hash (``TUNESMITH_ADMIN_KEY``); when set, it is the only admin credential."""
    if not secret:
        raise AuthenticationError(
            "No API key provided. Send it as 'Authorization: Bearer <key>' (or 'api-key: <key>').",
            code="missing_api_key",
        )
    digest = hash_key(secret)
    if admin_key_hash is not None and hmac.compare_digest(digest, admin_key_hash):
        return Principal("admin", DEFAULT_PROJECT_ID, "admin")
    row = session.scalar(select(ApiKeyRow).where(ApiKeyRow.key_hash == digest))
    if row is None:
        return _deployment_principal(session, secret, digest)
    if row.role == "admin" and admin_key_hash is not None:
        raise AuthenticationError(f"Incorrect API key provided: {redact(secret)}.")
    _check_project(session, row.project_id)
    if row.last_used_at is None or now - row.last_used_at >= LAST_USED_RESOLUTION:
        row.last_used_at = now
    return Principal(row.id, row.project_id, row.role)  # type: ignore[arg-type]


def _deployment_principal(session: Session, secret: str, digest: str) -> Principal:
    """A deployment key's principal: role reader, bound to its deployment. (The deployment's
    ``last_used_at`` is touched when it serves, by ``deployments.routing.resolve_target``.)"""
    deployment = session.scalar(
        select(DeploymentRow).where(
            (DeploymentRow.primary_key_hash == digest)
            | (DeploymentRow.secondary_key_hash == digest)
        )
    )
    if deployment is None:
        raise AuthenticationError(f"Incorrect API key provided: {redact(secret)}.")
    _check_project(session, deployment.project_id)
    which = "primary" if deployment.primary_key_hash == digest else "secondary"
    return Principal(
        f"deployment:{deployment.name}:{which}",
        deployment.project_id,
        "reader",
        deployment_id=deployment.id,
    )


def _check_project(session: Session, project_id: str) -> None:
    project = session.get(ProjectRow, project_id)
    if project is None or project.archived_at is not None:
        raise AuthenticationError(
            f"The project of this API key ({project_id}) is archived; use another key."
        )


def ensure_default_project(session: Session, now: int) -> None:
    if session.get(ProjectRow, DEFAULT_PROJECT_ID) is None:
        session.add(ProjectRow(id=DEFAULT_PROJECT_ID, name="default", created_at=now))


def bootstrap_admin_key(session: Session, key_file: Path, now: int) -> str | None:
    """Creates the admin key on first start: stored hashed, written to ``key_file`` (0600).

    Returns the new secret (for the caller to print once), or None if one already exists."""
    if session.scalar(select(ApiKeyRow.id).where(ApiKeyRow.role == "admin")) is not None:
        return None
    secret = new_secret()
    session.add(
        ApiKeyRow(
            id=new_id("key_"),
            project_id=DEFAULT_PROJECT_ID,
            name="admin",
            role="admin",
            key_hash=hash_key(secret),
            redacted_value=redact(secret),
            created_at=now,
        )
    )
    private_dir(key_file.parent)
    write_private(key_file, secret + "\n")
    return secret
