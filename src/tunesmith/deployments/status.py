"""A deployment's status: ``creating`` until its model has been loaded, off the request path
(the serving side's warm-up, ``served_models.ServedModels.warm``), then ``succeeded``, or
``failed`` with the error a chat request for it answers (:func:`record_load`).

Any update of a failed deployment sets it back to ``creating`` to be loaded again
(:func:`retry`); a server that starts loads those left ``creating`` (:func:`list_creating`).
Each change of status is an event.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from tunesmith.deployments.events import add_event
from tunesmith.protocol.deployments import DeploymentError
from tunesmith.store.db import locked
from tunesmith.store.tables import DeploymentRow


def error_of(row: DeploymentRow) -> DeploymentError | None:
    if row.error_code is None:
        return None
    return DeploymentError(code=row.error_code, message=row.error_message or "")


def retry(session: Session, *, row: DeploymentRow, now: int) -> bool:
    """Sets a failed deployment back to ``creating`` (the caller loads its model again, as on
    creation); True if it was failed. Any update of a failed deployment retries it."""
    if row.status != "failed":
        return False
    add_event(
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
        add_event(
            session, row, "succeeded", f"Ready: {row.model_id} is loaded and serving.", now=now
        )
        return row
    row.status, row.error_code, row.error_message = "failed", error.code, error.message
    add_event(
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
