"""``/v1/fine_tuning/jobs``: create, list, retrieve, cancel, pause, resume, events, checkpoints."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, BackgroundTasks, Body, Depends, Request
from sqlalchemy.orm import Session

from tunesmith.api.body import CappedRoute
from tunesmith.api.deps import Contributor, PageLimit, Reader, Runtime, RuntimeDep, SessionDep, now
from tunesmith.auth import Principal
from tunesmith.errors import InvalidRequest
from tunesmith.jobs import service
from tunesmith.jobs.limits import JobLimits
from tunesmith.jobs.spec import check_metadata, parse_job_request
from tunesmith.protocol.jobs import Job, JobCheckpoint, JobEvent
from tunesmith.protocol.pages import ListPage
from tunesmith.store.tables import JobRow

router = APIRouter(prefix="/v1/fine_tuning/jobs", tags=["fine-tuning"], route_class=CappedRoute)

_METADATA_KEY = re.compile(r"^metadata\[(.+)\]$")


def owned_job(job_id: str, principal: Reader, session: SessionDep) -> JobRow:
    return service.get_job(session, principal.project_id, job_id)


OwnedJob = Annotated[JobRow, Depends(owned_job)]


@router.post("", response_model=Job)
def create_job(
    body: Annotated[dict[str, Any], Body()],
    principal: Contributor,
    session: SessionDep,
    background: BackgroundTasks,
    runtime: RuntimeDep,
) -> Job:
    request = parse_job_request(body)
    limits = JobLimits.from_settings(runtime.settings)
    limits.check_request(request, principal.role)
    job = service.create_job(session, principal.project_id, request, now=now(), limits=limits)
    background.add_task(runtime.wake_worker)  # after the commit, so the worker sees it
    return service.job_to_protocol(job)


@router.get("", response_model=ListPage[Job])
def list_jobs(
    request: Request,
    principal: Reader,
    session: SessionDep,
    limit: PageLimit = 20,
    after: str | None = None,
) -> ListPage[Job]:
    metadata = {}
    for key, value in request.query_params.multi_items():
        match = _METADATA_KEY.match(key)
        if match:
            metadata[match.group(1)] = value
        elif key.startswith("metadata"):
            raise InvalidRequest(
                f"Filter by metadata as metadata[KEY]=VALUE; got {key!r}.", param=key
            )
    check_metadata(metadata)
    rows, has_more = service.list_jobs(
        session, principal.project_id, after=after, limit=limit, metadata=metadata
    )
    return ListPage.of(
        [service.job_to_protocol(r) for r in rows], has_more=has_more, ids=[r.id for r in rows]
    )


@router.get("/{job_id}", response_model=Job)
def retrieve_job(job: OwnedJob) -> Job:
    return service.job_to_protocol(job)


@router.post("/{job_id}/cancel", response_model=Job)
def cancel_job(
    job_id: str,
    principal: Contributor,
    session: SessionDep,
    background: BackgroundTasks,
    runtime: RuntimeDep,
) -> Job:
    return _change(service.cancel_job, job_id, principal, session, background, runtime)


@router.post("/{job_id}/pause", response_model=Job)
def pause_job(
    job_id: str,
    principal: Contributor,
    session: SessionDep,
    background: BackgroundTasks,
    runtime: RuntimeDep,
) -> Job:
    return _change(service.pause_job, job_id, principal, session, background, runtime)


@router.post("/{job_id}/resume", response_model=Job)
def resume_job(
    job_id: str,
    principal: Contributor,
    session: SessionDep,
    background: BackgroundTasks,
    runtime: RuntimeDep,
) -> Job:
    limits = JobLimits.from_settings(runtime.settings)
    resume = functools.partial(service.resume_job, limits=limits)
    return _change(resume, job_id, principal, session, background, runtime)


def _change(
    change: Callable[..., JobRow],
    job_id: str,
    principal: Principal,
    session: Session,
    background: BackgroundTasks,
    runtime: Runtime,
) -> Job:
    """Applies a lifecycle change and wakes the worker once it has committed."""
    job = change(session, principal.project_id, job_id, now=now())
    background.add_task(runtime.wake_worker)
    return service.job_to_protocol(job)


@router.get("/{job_id}/events", response_model=ListPage[JobEvent])
def list_events(
    job: OwnedJob, session: SessionDep, limit: PageLimit = 20, after: str | None = None
) -> ListPage[JobEvent]:
    rows, has_more = service.list_events(session, job, after=after, limit=limit)
    return ListPage.of(
        [service.event_to_protocol(r) for r in rows], has_more=has_more, ids=[r.id for r in rows]
    )


@router.get("/{job_id}/checkpoints", response_model=ListPage[JobCheckpoint])
def list_checkpoints(
    job: OwnedJob, session: SessionDep, limit: PageLimit = 10, after: str | None = None
) -> ListPage[JobCheckpoint]:
    rows, has_more = service.list_checkpoints(session, job, after=after, limit=limit)
    return ListPage.of(
        [service.checkpoint_to_protocol(r) for r in rows],
        has_more=has_more,
        ids=[r.id for r in rows],
    )
