"""Deployment keys: a deployment's primary and secondary key (``tsd-…``), which authenticate
chat calls to it alone.

A key is stored as its SHA-256 hash, which authenticates (``auth.py``), and as a copy sealed
under the installation's key-encryption key (``sealing.py``), which :func:`keys_to_protocol`
opens for ``GET …/keys``; a copy that does not open (another key-encryption key) is a clear 500
there and nowhere else. Regenerating one key (:func:`regenerate_key`) invalidates it at once, so
clients can rotate without downtime, and makes an unreadable key readable again.
"""

from __future__ import annotations

import secrets
from typing import Literal

from sqlalchemy.orm import Session

from tunesmith.auth import hash_key
from tunesmith.deployments.events import add_event
from tunesmith.errors import ServerError
from tunesmith.protocol.deployments import DeploymentKeys, RegeneratedKeys
from tunesmith.sealing import Sealer, Unsealable, slot
from tunesmith.store.tables import DeploymentRow

KEY_PREFIX = "tsd-"
KeyName = Literal["primary", "secondary"]


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def seal(row: DeploymentRow, key_name: KeyName, secret: str, sealer: Sealer) -> None:
    """Stores ``secret`` as ``key_name``: its hash and its sealed copy, never itself."""
    sealed = sealer.seal(secret, where=_slot(row, key_name))
    if key_name == "primary":
        row.primary_key_sealed, row.primary_key_hash = sealed, hash_key(secret)
    else:
        row.secondary_key_sealed, row.secondary_key_hash = sealed, hash_key(secret)


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


def regenerate_key(
    session: Session, *, row: DeploymentRow, key_name: KeyName, sealer: Sealer, now: int
) -> RegeneratedKeys:
    """Replaces one key; the old one stops authenticating when the transaction commits. Returns
    the new key and the other one, or None for the other when its stored copy does not open
    (so that regenerating both keys recovers from a lost key-encryption key)."""
    secret = new_key()
    seal(row, key_name, secret, sealer)
    other: KeyName = "secondary" if key_name == "primary" else "primary"
    try:
        kept: str | None = open_key(row, other, sealer)
    except ServerError:
        kept = None
    add_event(
        session,
        row,
        "keys_regenerated",
        f"The {key_name} key was regenerated; the previous {key_name} key no longer works.",
        now=now,
    )
    keys = {f"{key_name}_key": secret, f"{other}_key": kept}
    return RegeneratedKeys(primary_key=keys["primary_key"], secondary_key=keys["secondary_key"])


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
