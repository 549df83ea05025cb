"""tunesmith on a real PostgreSQL server, the database its workers share in production: the
migrations build the declared schema, the queue's claims stay atomic under concurrent workers,
and a job runs from upload to a registered model with the whole service on PostgreSQL."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, inspect, text
from sqlalchemy.orm import Session, sessionmaker

from tests.conftest import TOY_BASE, LiveServer, jobs_settings_for, register_toy_base, run_live
from tests.helpers import all_events, training_file, wait_for_job
from tests.test_jobs_queue import NOW, add_job
from tunesmith.api.app import create_app
from tunesmith.auth import DEFAULT_PROJECT_ID, ensure_default_project
from tunesmith.jobs import queue
from tunesmith.store.db import make_engine, make_session_factory, transaction
from tunesmith.store.migrate import upgrade_to_head
from tunesmith.store.tables import Base, JobRow


@pytest.fixture
def engine(postgres_url: str) -> Iterator[Engine]:
    engine = make_engine(postgres_url)
    yield engine
    engine.dispose()


@pytest.fixture
def sessions(engine: Engine) -> sessionmaker[Session]:
    upgrade_to_head(engine)
    factory = make_session_factory(engine)
    with transaction(factory) as session:
        ensure_default_project(session, int(NOW))
    return factory


def claim(sessions: sessionmaker[Session], owner: str = "host:1:a") -> queue.Claim | None:
    return queue.claim(
        sessions, owner=owner, statuses=("queued", "running"), lease_seconds=30, now=NOW, start=True
    )


def test_migrations_build_exactly_the_declared_schema(engine: Engine) -> None:
    assert engine.dialect.name == "postgresql"
    upgrade_to_head(engine)
    with engine.connect() as connection:
        head = connection.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
        diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert diff == []
    tables = set(inspect(engine).get_table_names())
    assert tables == set(Base.metadata.tables) | {"alembic_version"}

    upgrade_to_head(engine)  # a restart finds the schema current and changes nothing
    with engine.connect() as connection:
        again = connection.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
        assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []
    assert again == head and len(head) == 1
    assert set(inspect(engine).get_table_names()) == tables


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
    )
    assert later is not None
    assert (later.job_id, later.from_status, later.restarts) == ("busy", "running", 1)
    assert later.previous_owner == "elsewhere:1:x"
    with transaction(sessions) as session:
        job = session.get(JobRow, "busy")
        assert job is not None
        assert (job.lease_owner, job.lease_expires_at) == ("me:2:y", NOW + 41)


def test_renew_extends_only_the_owners_leases(sessions: sessionmaker[Session]) -> None:
    add_job(sessions, "mine", status="running", owner="me:1:a", expires=NOW + 1)
    add_job(sessions, "theirs", status="running", owner="them:1:b", expires=NOW + 1)
    queue.renew(sessions, owner="me:1:a", job_ids=["mine", "theirs"], until=NOW + 99)
    with transaction(sessions) as session:
        assert session.get(JobRow, "mine").lease_expires_at == NOW + 99  # type: ignore[union-attr]
        assert session.get(JobRow, "theirs").lease_expires_at == NOW + 1  # type: ignore[union-attr]


@pytest.fixture
def pg_live(tmp_path: Path, toy_model_dir: Path, postgres_url: str) -> Iterator[LiveServer]:
    """A live server with an embedded worker, its metadata on PostgreSQL."""
    settings = jobs_settings_for(tmp_path / "home", toy_model_dir, database_url=postgres_url)
    app = create_app(settings)
    register_toy_base(app, toy_model_dir)
    yield from run_live(app, settings)


def test_a_job_runs_from_upload_to_a_registered_model_on_postgres(
    pg_live: LiveServer,
    postgres_url: str,
) -> None:
    assert pg_live.settings.resolved_database_url() == postgres_url
    assert not (pg_live.settings.home / "tunesmith.db").exists()  # no SQLite on the side
    client = pg_live.client()
    training = client.files.create(file=("train.jsonl", training_file(12)), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(
        model=TOY_BASE,
        training_file=training.id,
        suffix="pg",
        metadata={"team": "pg"},
        method={
            "type": "supervised",
            "supervised": {"hyperparameters": {"n_epochs": 2, "batch_size": 2}},
        },
    )
    assert job.metadata == {"team": "pg"}

    done = wait_for_job(client, job.id, {"succeeded"})
    assert done.fine_tuned_model == f"ft:{TOY_BASE}:default:pg:{job.id}"
    assert done.trained_tokens and done.trained_tokens > 0
    assert done.fine_tuned_model in [m.id for m in client.models.list().data]

    events = all_events(client, job.id)
    messages = [e.message for e in events if e.type == "message"]
    assert messages[-1] == "The job has successfully completed"
    steps = [e.data["step"] for e in events if e.type == "metrics"]
    assert steps == list(range(1, 13))  # 12 examples / batch 2 x 2 epochs, each step once

    checkpoints = client.fine_tuning.jobs.checkpoints.list(job.id).data
    assert [c.step_number for c in checkpoints] == [12, 6]  # newest first
    assert checkpoints[0].fine_tuned_model_checkpoint == f"{done.fine_tuned_model}:ckpt-step-12"

    # The metadata filter is a JSON operator, spelled differently on PostgreSQL than on SQLite.
    assert [j.id for j in client.fine_tuning.jobs.list(metadata={"team": "pg"}).data] == [job.id]
    assert client.fine_tuning.jobs.list(metadata={"team": "other"}).data == []

    # Everything above was written to PostgreSQL, by the server and by the job's own process;
    # the worker lets go of the job's lease once it has reaped that process.
    engine = make_engine(postgres_url)
    try:
        factory = make_session_factory(engine)
        deadline = time.monotonic() + 20
        while True:
            with transaction(factory) as session:
                row = session.get(JobRow, job.id)
                assert row is not None
                assert (row.status, row.project_id) == ("succeeded", DEFAULT_PROJECT_ID)
                if row.lease_owner is None:
                    break
            assert time.monotonic() < deadline, f"the lease of {row.lease_owner} was never freed"
            time.sleep(0.05)
    finally:
        engine.dispose()
