"""The durable queue: jobs are rows, a claim is a lease on a row.

A worker claims a job with one conditional ``UPDATE`` (compare-and-set on the lease columns), so
two workers, on one machine or many sharing the database, never both win the same job. The lease
is renewed by the worker's heartbeat; a job whose lease expired, or whose lease belongs to a
worker process on this machine that no longer exists, is free to claim again: a ``running`` job
found that way is resumed from its last checkpoint.

Order: higher ``priority`` first, then first in, first out by ``queued_at``.
"""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Collection
from dataclasses import dataclass

from sqlalchemy import select, update
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
) -> Claim | None:
    """Claims the first free job in ``statuses``; ``start`` moves a queued job to ``running``
    and counts an attempt (the fence a job process writes under)."""
    with transaction(factory) as session:
        candidates = session.execute(
            select(JobRow.id, JobRow.status, JobRow.lease_owner, JobRow.lease_expires_at)
            .where(JobRow.status.in_(list(statuses)))
            .order_by(JobRow.priority.desc(), JobRow.queued_at.asc(), JobRow.created_at.asc())
            .limit(CANDIDATES)
        ).all()
    for job_id, status, held_by, expires in candidates:
        if held_by == owner:  # ours already: being validated or run right now
            continue
        if (
            held_by is not None
            and expires is not None
            and expires > now
            and not owner_is_dead(held_by)
        ):
            continue
        values: dict[str, object] = {"lease_owner": owner, "lease_expires_at": now + lease_seconds}
        if start:
            values["attempt"] = JobRow.attempt + 1
            values["status"] = "running"
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
