"""The durable queue: jobs are rows, a claim is a lease on a row.

A worker claims a job with one conditional ``UPDATE`` (compare-and-set on the lease columns), so
two workers, on one machine or many sharing the database, never both win the same job. The lease
is renewed by the worker's heartbeat; a job whose lease expired, or whose lease belongs to a
worker process on this machine that no longer exists, is free to claim again: a ``running`` job
found that way is resumed from its last checkpoint.

Order, fair between projects (one project's pile of jobs never holds back another's):

1. resumes: a ``running`` job whose worker died goes first, it already had its turn;
2. a job above the priority ceiling (``job_priority_ceiling``; only an admin may set one) goes
   before every other project's jobs, higher first;
3. otherwise the project with the fewest jobs running now goes first, then the project that
   started a job least recently (``max(started_at)``; never is earliest), so projects take turns
   on a worker's slots;
4. within a project, higher ``priority`` first, then first in, first out by ``queued_at``.

A claim looks at the first :data:`CANDIDATES` free rows in that order (no lease, or an expired
one), plus the rows held by worker processes on this machine, which may be dead; rows held
under live leases elsewhere are never read, so they cannot crowd out a free job.
"""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, case, func, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from tunesmith.store.db import transaction
from tunesmith.store.tables import JobRow

CANDIDATES = 16  # rows looked at per claim; a lost race moves on to the next


@dataclass(frozen=True, slots=True)
class Claim:
    job_id: str
    from_status: str  # "running" when the job's previous worker died
    attempt: int
    restarts: int
    previous_owner: str | None


def new_worker_id() -> str:
    """``host:pid:random``: the host and pid let a restarted server reclaim its jobs at once."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


def owner_is_dead(owner: str) -> bool:
    """True when ``owner`` was a worker process on this machine that has exited."""
    host, _, rest = owner.partition(":")
    pid_text = rest.partition(":")[0]
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def claim(
    factory: sessionmaker[Session],
    *,
    owner: str,
    statuses: Collection[str],
    lease_seconds: float,
    now: float,
    start: bool,
    priority_ceiling: int,
) -> Claim | None:
    """Claims the first free job in ``statuses``, in the fair order of the module docstring;
    ``start`` moves a queued job to ``running``, counts an attempt (the fence a job process
    writes under) and marks the job started. ``priority_ceiling``: the priority above which a
    job goes before other projects' jobs."""
    with transaction(factory) as session:
        orphans = [
            row
            for row in session.execute(_held_here(statuses, owner, now))
            if owner_is_dead(row[2])
        ]
        candidates = [*orphans, *session.execute(_free(statuses, owner, now, priority_ceiling))]
    for job_id, status, held_by in candidates:
        values: dict[str, object] = {"lease_owner": owner, "lease_expires_at": now + lease_seconds}
        if start:
            values["attempt"] = JobRow.attempt + 1
            values["status"] = "running"
            values["started_at"] = func.coalesce(JobRow.started_at, int(now))
            if status == "running":  # its worker died: a restart, counted against the job
                values["restarts"] = JobRow.restarts + 1
        with transaction(factory) as session:
            won = session.execute(
                update(JobRow)
                .where(
                    JobRow.id == job_id,
                    JobRow.status == status,
                    JobRow.lease_owner.is_(None)
                    if held_by is None
                    else JobRow.lease_owner == held_by,
                )
                .values(**values)
            )
            if won.rowcount == 1:  # type: ignore[attr-defined]
                row = session.get(JobRow, job_id)
                assert row is not None
                return Claim(job_id, status, row.attempt, row.restarts, held_by)
    return None


def _held_here(statuses: Collection[str], owner: str, now: float) -> Any:
    """Rows under live leases of other worker processes on this machine (bounded by its job
    slots): the candidates to resume at once if their process is gone."""
    return (
        select(JobRow.id, JobRow.status, JobRow.lease_owner)
        .where(
            JobRow.status.in_(list(statuses)),
            JobRow.lease_owner.startswith(socket.gethostname() + ":", autoescape=True),
            JobRow.lease_owner != owner,
            JobRow.lease_expires_at > now,
        )
        .order_by(JobRow.priority.desc(), JobRow.queued_at.asc(), JobRow.id.asc())
    )


def _free(statuses: Collection[str], owner: str, now: float, priority_ceiling: int) -> Any:
    """The first :data:`CANDIDATES` rows without a live lease, in the fair order; never the
    claimer's own (being validated or run by it right now, even if its lease lapsed)."""
    free = (
        select(
            JobRow.id,
            JobRow.project_id,
            JobRow.status,
            JobRow.lease_owner,
            JobRow.priority,
            JobRow.queued_at,
            JobRow.created_at,
            func.row_number()
            .over(
                partition_by=JobRow.project_id,
                order_by=(
                    JobRow.priority.desc(),
                    JobRow.queued_at.asc(),
                    JobRow.created_at.asc(),
                    JobRow.id.asc(),
                ),
            )
            .label("place"),
        )
        .where(
            JobRow.status.in_(list(statuses)),
            or_(
                JobRow.lease_owner.is_(None),
                JobRow.lease_expires_at.is_(None),
                JobRow.lease_expires_at <= now,
            ),
            or_(JobRow.lease_owner.is_(None), JobRow.lease_owner != owner),
        )
        .subquery()
    )
    running = and_(JobRow.status == "running", JobRow.lease_owner.is_not(None))
    load = (
        select(
            JobRow.project_id,
            func.coalesce(func.sum(case((running, 1), else_=0)), 0).label("running"),
            func.coalesce(func.max(JobRow.started_at), -1).label("last_start"),
        )
        .where(JobRow.project_id.in_(select(free.c.project_id)))
        .group_by(JobRow.project_id)
        .subquery()
    )
    return (
        select(free.c.id, free.c.status, free.c.lease_owner)
        .join(load, load.c.project_id == free.c.project_id)
        .order_by(
            case((free.c.status == "running", 0), else_=1),
            case(
                (free.c.priority > priority_ceiling, free.c.priority), else_=priority_ceiling
            ).desc(),
            load.c.running.asc(),
            load.c.last_start.asc(),
            free.c.place.asc(),
            free.c.priority.desc(),
            free.c.queued_at.asc(),
            free.c.created_at.asc(),
            free.c.id.asc(),
        )
        .limit(CANDIDATES)
    )


def renew(
    factory: sessionmaker[Session], *, owner: str, job_ids: Collection[str], until: float
) -> None:
    if not job_ids:
        return
    with transaction(factory) as session:
        session.execute(
            update(JobRow)
            .where(JobRow.id.in_(list(job_ids)), JobRow.lease_owner == owner)
            .values(lease_expires_at=until)
        )


def release(session: Session, job: JobRow, owner: str) -> None:
    if job.lease_owner == owner:
        job.lease_owner = None
        job.lease_expires_at = None
        job.process_id = None
