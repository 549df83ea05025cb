"""Projects and their API keys (admin only). Every resource belongs to one project."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from tunesmith.auth import DEFAULT_PROJECT_ID, hash_key, new_secret, redact
from tunesmith.errors import InvalidRequest, NotFound
from tunesmith.ids import new_id
from tunesmith.protocol.projects import Project, ProjectApiKey, Role
from tunesmith.store.pagination import page
from tunesmith.store.tables import ApiKeyRow, ProjectRow


def project_to_protocol(row: ProjectRow) -> Project:
    return Project(
        id=row.id,
        name=row.name,
        created_at=row.created_at,
        archived_at=row.archived_at,
        status="archived" if row.archived_at is not None else "active",
    )


def key_to_protocol(row: ApiKeyRow, secret: str | None = None) -> ProjectApiKey:
    return ProjectApiKey(
        id=row.id,
        name=row.name,
        role=row.role,
        redacted_value=row.redacted_value,
        created_at=row.created_at,
        last_used_at=row.last_used_at,
        project_id=row.project_id,
        value=secret,
    )


def create_project(session: Session, *, name: str, now: int) -> ProjectRow:
    row = ProjectRow(id=new_id("proj_"), name=name, created_at=now)
    session.add(row)
    return row


def get_project(session: Session, project_id: str) -> ProjectRow:
    row = session.get(ProjectRow, project_id)
    if row is None:
        raise NotFound(f"No project found with id '{project_id}'.", param="project_id")
    return row


def list_projects(
    session: Session, *, after: str | None, limit: int, include_archived: bool
) -> tuple[list[ProjectRow], bool]:
    stmt = select(ProjectRow)
    if not include_archived:
        stmt = stmt.where(ProjectRow.archived_at.is_(None))
    return page(session, stmt, ProjectRow, after=after, limit=limit, order="asc")


def archive_project(session: Session, project_id: str, *, now: int) -> ProjectRow:
    row = get_project(session, project_id)
    if row.id == DEFAULT_PROJECT_ID:
        raise InvalidRequest("The default project cannot be archived.", param="project_id")
    if row.archived_at is None:
        row.archived_at = now
    return row


def create_key(
    session: Session, project_id: str, *, name: str, role: Role, now: int
) -> tuple[ApiKeyRow, str]:
    project = get_project(session, project_id)
    if project.archived_at is not None:
        raise InvalidRequest(
            f"Project '{project_id}' is archived; keys cannot be added to it.", param="project_id"
        )
    secret = new_secret()
    row = ApiKeyRow(
        id=new_id("key_"),
        project_id=project_id,
        name=name,
        role=role,
        key_hash=hash_key(secret),
        redacted_value=redact(secret),
        created_at=now,
    )
    session.add(row)
    return row, secret


def list_keys(
    session: Session, project_id: str, *, after: str | None, limit: int
) -> tuple[list[ApiKeyRow], bool]:
    get_project(session, project_id)
    stmt = select(ApiKeyRow).where(ApiKeyRow.project_id == project_id, ApiKeyRow.role != "admin")
    return page(session, stmt, ApiKeyRow, after=after, limit=limit, order="asc")


def revoke_key(session: Session, project_id: str, key_id: str) -> None:
    row = session.get(ApiKeyRow, key_id)
    if row is None or row.project_id != project_id or row.role == "admin":
        raise NotFound(f"No API key '{key_id}' in project '{project_id}'.", param="key_id")
    session.delete(row)
