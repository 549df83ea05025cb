"""Deployment events: what happened to a deployment (created, updated, its status, its keys,
deleted), in its owner's words. Events are kept by the deployment's name and outlive it, so a
deleted deployment's history stays readable."""

from __future__ import annotations

from typing import Literal

from sqlalchemy import select
from sqlalchemy.orm import Session

from tunesmith.errors import NotFound
from tunesmith.ids import new_id
from tunesmith.protocol.deployments import DeploymentEvent, DeploymentEventType
from tunesmith.store.pagination import page
from tunesmith.store.tables import DeploymentEventRow, DeploymentRow


def add_event(
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


def event_to_protocol(row: DeploymentEventRow) -> DeploymentEvent:
    return DeploymentEvent(
        id=row.id,
        deployment_id=row.deployment_id,
        deployment_name=row.deployment_name,
        created_at=row.created_at,
        type=row.type,
        message=row.message,
    )


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
