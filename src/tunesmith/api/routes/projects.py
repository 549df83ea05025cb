"""``/v1/projects`` and their API keys: the admin's administration API; and ``/v1/me``, which
tells any project key who it is."""

from __future__ import annotations

from fastapi import APIRouter

from tunesmith import projects
from tunesmith.api.body import CappedRoute
from tunesmith.api.deps import Admin, PageLimit, Reader, SessionDep, now
from tunesmith.protocol.pages import ListPage
from tunesmith.protocol.projects import (
    CreateApiKeyRequest,
    CreateProjectRequest,
    Identity,
    Project,
    ProjectApiKey,
    ProjectApiKeyDeleted,
)

router = APIRouter(prefix="/v1/projects", tags=["projects"], route_class=CappedRoute)
identity = APIRouter(prefix="/v1/me", tags=["projects"], route_class=CappedRoute)


@router.post("", response_model=Project)
def create_project(body: CreateProjectRequest, _admin: Admin, session: SessionDep) -> Project:
    row = projects.create_project(session, name=body.name, now=now())
    return projects.project_to_protocol(row)


@router.get("", response_model=ListPage[Project])
def list_projects(
    _admin: Admin,
    session: SessionDep,
    limit: PageLimit = 20,
    after: str | None = None,
    include_archived: bool = False,
) -> ListPage[Project]:
    rows, has_more = projects.list_projects(
        session, after=after, limit=limit, include_archived=include_archived
    )
    return ListPage.of(
        [projects.project_to_protocol(r) for r in rows],
        has_more=has_more,
        ids=[r.id for r in rows],
    )


@router.get("/{project_id}", response_model=Project)
def retrieve_project(project_id: str, _admin: Admin, session: SessionDep) -> Project:
    return projects.project_to_protocol(projects.get_project(session, project_id))


@router.post("/{project_id}/archive", response_model=Project)
def archive_project(project_id: str, _admin: Admin, session: SessionDep) -> Project:
    return projects.project_to_protocol(projects.archive_project(session, project_id, now=now()))


@router.post("/{project_id}/api_keys", response_model=ProjectApiKey)
def create_api_key(
    project_id: str, body: CreateApiKeyRequest, _admin: Admin, session: SessionDep
) -> ProjectApiKey:
    row, secret = projects.create_key(
        session, project_id, name=body.name, role=body.role, now=now()
    )
    return projects.key_to_protocol(row, secret)


@router.get("/{project_id}/api_keys", response_model=ListPage[ProjectApiKey])
def list_api_keys(
    project_id: str,
    _admin: Admin,
    session: SessionDep,
    limit: PageLimit = 20,
    after: str | None = None,
) -> ListPage[ProjectApiKey]:
    rows, has_more = projects.list_keys(session, project_id, after=after, limit=limit)
    return ListPage.of(
        [projects.key_to_protocol(r) for r in rows], has_more=has_more, ids=[r.id for r in rows]
    )


@router.delete("/{project_id}/api_keys/{key_id}", response_model=ProjectApiKeyDeleted)
def revoke_api_key(
    project_id: str, key_id: str, _admin: Admin, session: SessionDep
) -> ProjectApiKeyDeleted:
    projects.revoke_key(session, project_id, key_id)
    return ProjectApiKeyDeleted(id=key_id)


@identity.get("", response_model=Identity)
def who_am_i(principal: Reader, session: SessionDep) -> Identity:
    project = projects.get_project(session, principal.project_id)
    return Identity(
        key_id=principal.key_id,
        role=principal.role,
        project=projects.project_to_protocol(project),
    )
