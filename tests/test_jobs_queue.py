"""The durable queue and the transition table, on SQLite and on a real PostgreSQL server (each
database-backed test runs on both): atomic claims under racing workers, priority then
first-in-first-out order, leases that expire, dead workers detected at once, and the guards that
keep a job's files and base model in place while it runs."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from tunesmith.auth import DEFAULT_PROJECT_ID, ensure_default_project
from tunesmith.data.split import split_indices
from tunesmith.errors import Conflict
from tunesmith.jobs import queue
from tunesmith.jobs.states import TRANSITIONS, next_status
from tunesmith.store.db import make_engine, make_session_factory, transaction
from tunesmith.store.migrate import upgrade_to_head
from tunesmith.store.tables import JobRow, ProjectRow

NOW = 1_700_000_000.0
CEILING = 10  # the settings' job_priority_ceiling: above it (admins only) runs across projects


@pytest.fixture(params=["sqlite", "postgresql"])
def sessions(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    """The queue on both databases it runs on: SQLite (one machine) and a real PostgreSQL
    server (workers on several machines), each fresh per test."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    else:
        url = request.getfixturevalue("postgres_url")
    engine = make_engine(url)
    upgrade_to_head(engine)
    factory = make_session_factory(engine)
    with transaction(factory) as session:
        ensure_default_project(session, int(NOW))
    yield factory
    engine.dispose()


def add_job(
    sessions: sessionmaker[Session],
    job_id: str,
    *,
    project: str = DEFAULT_PROJECT_ID,
    status: str = "queued",
    priority: int = 0,
    queued_at: float = NOW,
    owner: str | None = None,
    expires: float | None = None,
) -> None:
    with transaction(sessions) as session:
        session.add(
            JobRow(
                id=job_id,
                project_id=project,
                created_at=int(NOW),
                model="m",
                base_model="m",
                training_file="file-x",
                seed=0,
                requested={"hyperparameters": {}, "param": "hyperparameters"},
                status=status,
                priority=priority,
                queued_at=queued_at,
                lease_owner=owner,
                lease_expires_at=expires,
                attempt=0,
                restarts=0,
                step=0,
                result_files=[],
            )
        )


def claim(
    sessions: sessionmaker[Session], owner: str = "host:1:a", now: float = NOW
) -> queue.Claim | None:
    return queue.claim(
        sessions,
        owner=owner,
        statuses=("queued", "running"),
        lease_seconds=30,
        now=now,
        start=True,
        priority_ceiling=CEILING,
    )


def add_project(sessions: sessionmaker[Session], project_id: str) -> None:
    with transaction(sessions) as session:
        session.add(ProjectRow(id=project_id, name=project_id, created_at=int(NOW)))


def finish(sessions: sessionmaker[Session], job_id: str) -> None:
    with transaction(sessions) as session:
        job = session.get(JobRow, job_id)
        assert job is not None
        job.status, job.lease_owner, job.lease_expires_at = "succeeded", None, None


def test_higher_priority_first_then_first_in_first_out(sessions: sessionmaker[Session]) -> None:
    add_job(sessions, "late", queued_at=NOW + 2)
    add_job(sessions, "early", queued_at=NOW + 1)
    add_job(sessions, "urgent", queued_at=NOW + 3, priority=5)
    order = [c.job_id for c in iter(lambda: claim(sessions), None)]
    assert order == ["urgent", "early", "late"]
    with transaction(sessions) as session:
        job = session.get(JobRow, "urgent")
        assert job is not None
        assert (job.status, job.attempt, job.lease_owner) == ("running", 1, "host:1:a")
        assert job.lease_expires_at == NOW + 30


def test_a_project_with_one_job_is_served_within_the_first_two_claims(
    sessions: sessionmaker[Session],
) -> None:
    """Five jobs of one project, queued first and at a higher priority, do not hold back the
    one job another project queued after them: priority orders a project's own jobs."""
    add_project(sessions, "proj_busy")
    add_project(sessions, "proj_small")
    for i in range(5):
        add_job(sessions, f"busy-{i}", project="proj_busy", priority=CEILING, queued_at=NOW + i)
    add_job(sessions, "small", project="proj_small", queued_at=NOW + 10)
    first_two = [c.job_id for c in (claim(sessions, owner=f"host:{n}:w") for n in (1, 2)) if c]
    assert first_two == ["busy-0", "small"]


def test_one_slot_takes_projects_in_turn(sessions: sessionmaker[Session]) -> None:
    """One worker slot, each job finishing before the next claim: the project served least
    recently goes next, so the projects alternate while both have work."""
    add_project(sessions, "proj_a")
    add_project(sessions, "proj_b")
    for i in range(3):
        add_job(sessions, f"a-{i}", project="proj_a", queued_at=NOW + i)
    for i in range(2):
        add_job(sessions, f"b-{i}", project="proj_b", queued_at=NOW + 10 + i)
    order = []
    for step in range(6):
        won = claim(sessions, now=NOW + 100 * (step + 1))
        if won is None:
            break
        order.append(won.job_id)
        finish(sessions, won.job_id)
    assert order == ["a-0", "b-0", "a-1", "b-1", "a-2"]


def test_priority_above_the_ceiling_goes_before_other_projects(
    sessions: sessionmaker[Session],
) -> None:
    add_project(sessions, "proj_other")
    add_job(sessions, "running", status="running", owner="elsewhere:1:x", expires=NOW + 60)
    add_job(sessions, "other", project="proj_other", queued_at=NOW)
    add_job(sessions, "urgent", priority=CEILING + 1, queued_at=NOW + 5)
    add_job(sessions, "normal", priority=CEILING, queued_at=NOW + 1)
    order = [c.job_id for c in iter(lambda: claim(sessions), None)]
    assert order == ["urgent", "other", "normal"]


def test_leases_held_elsewhere_never_crowd_out_a_free_job(sessions: sessionmaker[Session]) -> None:
    """More jobs running under live leases than a claim looks at, all ahead in priority order:
    the one free job is still found."""
    for i in range(queue.CANDIDATES + 4):
        add_job(
            sessions,
            f"held-{i}",
            status="running",
            priority=5,
            owner=f"elsewhere:{i}:x",
            expires=NOW + 60,
        )
    add_job(sessions, "free", queued_at=NOW + 1)
    won = claim(sessions)
    assert won is not None and won.job_id == "free"


def test_a_job_is_claimed_by_exactly_one_of_many_workers(sessions: sessionmaker[Session]) -> None:
    jobs, workers = 6, 12  # separate connections racing on PostgreSQL's row locks
    for i in range(jobs):
        add_job(sessions, f"job-{i}", queued_at=NOW + i)
    won: list[tuple[str, str]] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(workers)

    def work(n: int) -> None:
        owner = f"host:{n}:w"
        try:
            barrier.wait()
            result = claim(sessions, owner=owner)
        except BaseException as error:  # surfaced below: a thread's failure must fail the test
            errors.append(error)
            return
        if result is not None:
            won.append((result.job_id, owner))

    threads = [threading.Thread(target=work, args=(n,)) for n in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(job for job, _ in won) == [f"job-{i}" for i in range(jobs)]  # each once
    assert len({owner for _, owner in won}) == jobs  # no worker won two
    with transaction(sessions) as session:
        rows = {row.id: row for row in session.query(JobRow)}
    for job_id, owner in won:  # the database agrees with what each winner was told
        assert (rows[job_id].lease_owner, rows[job_id].attempt) == (owner, 1)
        assert rows[job_id].status == "running"


def test_a_held_lease_blocks_until_it_expires(sessions: sessionmaker[Session]) -> None:
    add_job(sessions, "busy", status="running", owner="elsewhere:1:x", expires=NOW + 10)
    assert claim(sessions) is None
    later = queue.claim(
        sessions,
        owner="me:2:y",
        statuses=("running",),
        lease_seconds=30,
        now=NOW + 11,
        start=True,
        priority_ceiling=CEILING,
    )
    assert later is not None
    assert (later.job_id, later.from_status, later.restarts) == ("busy", "running", 1)
    assert later.previous_owner == "elsewhere:1:x"
    with transaction(sessions) as session:
        job = session.get(JobRow, "busy")
        assert job is not None
        assert (job.lease_owner, job.lease_expires_at) == ("me:2:y", NOW + 41)


def test_a_worker_never_claims_its_own_job_again(sessions: sessionmaker[Session]) -> None:
    """Its lease lapsed (a slow heartbeat), but the job is still the worker's own, running in
    its process: claiming it again would start a second trainer."""
    add_job(sessions, "mine", status="running", owner="host:1:a", expires=NOW - 1)
    assert claim(sessions, owner="host:1:a") is None
    other = claim(sessions, owner="host:2:b")
    assert other is not None and other.job_id == "mine"


def test_renew_extends_only_the_owners_leases(sessions: sessionmaker[Session]) -> None:
    add_job(sessions, "mine", status="running", owner="me:1:a", expires=NOW + 1)
    add_job(sessions, "theirs", status="running", owner="them:1:b", expires=NOW + 1)
    queue.renew(sessions, owner="me:1:a", job_ids=["mine", "theirs"], until=NOW + 99)
    with transaction(sessions) as session:
        assert session.get(JobRow, "mine").lease_expires_at == NOW + 99  # type: ignore[union-attr]
        assert session.get(JobRow, "theirs").lease_expires_at == NOW + 1  # type: ignore[union-attr]


def test_a_dead_worker_on_this_host_is_detected_at_once(sessions: sessionmaker[Session]) -> None:
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    dead_owner = f"{queue.new_worker_id().split(':')[0]}:{gone.stdout.strip()}:zz"
    add_job(sessions, "orphan", status="running", owner=dead_owner, expires=NOW + 1000)
    assert queue.owner_is_dead(dead_owner)
    assert not queue.owner_is_dead(queue.new_worker_id())  # this very process
    result = claim(sessions)
    assert result is not None and result.job_id == "orphan"


def test_transition_table_refuses_illegal_moves() -> None:
    assert next_status("j", "running", "pause") == "paused"
    assert next_status("j", "paused", "resume") == "queued"
    for status in ("succeeded", "failed", "cancelled"):
        for action in ("cancel", "pause", "resume", "claim"):
            with pytest.raises(Conflict) as raised:
                next_status("j", status, action)  # type: ignore[arg-type]
            assert raised.value.status_code == 409
            assert raised.value.code == "invalid_job_state"
    with pytest.raises(Conflict, match="only a job that is paused can be resumed"):
        next_status("j", "running", "resume")
    assert all(target != source for (source, _), target in TRANSITIONS.items())


def test_validation_split_is_deterministic_by_seed() -> None:
    kept, held = split_indices(20, 0.2, seed=1)
    assert len(held) == 4 and sorted(kept + held) == list(range(20))
    assert split_indices(20, 0.2, seed=1) == (kept, held)
    assert split_indices(20, 0.2, seed=2) != (kept, held)
    assert split_indices(3, 0.01, seed=0)[1] != []  # at least one held out


def test_an_expired_file_waits_for_the_unfinished_job_that_reads_it(
    sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    from tunesmith import housekeeping
    from tunesmith.store.blobs import BlobStore
    from tunesmith.store.tables import FileRow

    blobs = BlobStore(tmp_path / "blobs")
    with transaction(sessions) as session:
        session.add(
            FileRow(
                id="file-x",
                project_id=DEFAULT_PROJECT_ID,
                filename="t.jsonl",
                purpose="fine-tune",
                bytes=3,
                created_at=int(NOW),
                expires_at=int(NOW) + 10,
                status="processed",
            )
        )
    blobs.write_file("file-x", [b"abc"])
    add_job(sessions, "reader", status="paused")
    assert housekeeping.sweep(sessions, blobs, now=int(NOW) + 20).files == []
    assert blobs.file_path("file-x").exists()
    with transaction(sessions) as session:
        session.get(JobRow, "reader").status = "cancelled"  # type: ignore[union-attr]
    assert housekeeping.sweep(sessions, blobs, now=int(NOW) + 20).files == ["file-x"]
    assert not blobs.file_path("file-x").exists()


def test_a_base_model_in_use_cannot_leave_the_catalog(
    sessions: sessionmaker[Session], tmp_path: Path, toy_model_dir: Path
) -> None:
    from tunesmith.catalog import registration
    from tunesmith.catalog.base_models import register_base_model, remove_base_model
    from tunesmith.deployments.service import create_deployment, delete_deployment
    from tunesmith.ratelimits import RateLimits
    from tunesmith.sealing import Sealer
    from tunesmith.settings import Settings
    from tunesmith.store.tables import ModelRow

    with transaction(sessions) as session:
        register_base_model(
            session,
            model_id="toy",
            source=str(toy_model_dir),
            cache_dir=tmp_path / "models",
            now=int(NOW),
        )
    registration.complete(sessions, Settings(home=tmp_path / "home"), "toy")
    add_job(sessions, "trainer", status="running")
    with transaction(sessions) as session:
        session.get(JobRow, "trainer").base_model = "toy"  # type: ignore[union-attr]
    with pytest.raises(Conflict, match="Job trainer fine-tunes toy"), transaction(sessions) as s:
        remove_base_model(s, "toy")
    with transaction(sessions) as session:
        session.get(JobRow, "trainer").status = "succeeded"  # type: ignore[union-attr]
        session.add(
            ModelRow(
                id="ft:toy:default::trainer",
                project_id=DEFAULT_PROJECT_ID,
                job_id="trainer",
                created_at=int(NOW),
                base_model="toy",
                kind="lora",
                weights_of="toy",
                path=str(tmp_path / "ft"),
            )
        )
    with pytest.raises(Conflict, match="is built on toy"), transaction(sessions) as s:
        remove_base_model(s, "toy")
    with transaction(sessions) as session:
        session.delete(session.get(ModelRow, "ft:toy:default::trainer"))
        create_deployment(
            session,
            project_id=DEFAULT_PROJECT_ID,
            name="toy-live",
            model="toy",
            rate_limits=None,
            content_filter=True,
            defaults=RateLimits(60, 1000, 4),
            sealer=Sealer(bytes(32)),
            now=int(NOW),
        )
    with pytest.raises(Conflict, match="deployed as 'toy-live'"), transaction(sessions) as s:
        remove_base_model(s, "toy")
    with transaction(sessions) as session:
        delete_deployment(session, project_id=DEFAULT_PROJECT_ID, name="toy-live", now=int(NOW))
    with transaction(sessions) as session:
        remove_base_model(session, "toy")  # nothing uses it any more
