"""tunesmith on a real PostgreSQL server, the database its workers share in production: the
migrations build the declared schema, and a job runs from upload to a registered model with the
whole service on PostgreSQL. (tests/test_jobs_queue.py runs every queue test on both databases.)"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, inspect, text

from tests.conftest import TOY_BASE, LiveServer, jobs_settings_for, register_toy_base, run_live
from tests.helpers import all_events, training_file, wait_for_job
from tunesmith.api.app import create_app
from tunesmith.auth import DEFAULT_PROJECT_ID
from tunesmith.store.db import make_engine, make_session_factory, transaction
from tunesmith.store.migrate import upgrade_to_head
from tunesmith.store.tables import Base, JobRow


@pytest.fixture
def engine(postgres_url: str) -> Iterator[Engine]:
    engine = make_engine(postgres_url)
    yield engine
    engine.dispose()


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


def _job_processes() -> list[int]:
    """This test process's children that run ``tunesmith.jobs.runner`` (the spare included)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:  # gone meanwhile
            continue
        parent = int(stat.rpartition(")")[2].split()[1])
        if parent == os.getpid() and b"tunesmith.jobs.runner" in cmdline:
            found.append(int(entry.name))
    return found


def test_a_job_process_shows_no_database_password_to_other_users(
    tmp_path: Path, toy_model_dir: Path, postgres_url: str
) -> None:
    """``ps`` shows every local user each process's command line: the job's settings, database
    URL and its password included, must reach the job process another way."""
    secret = f"pw-{secrets.token_hex(8)}"
    # The test server trusts loopback connections, so any password is accepted (and unread).
    url = postgres_url.replace("://postgres@", f"://postgres:{secret}@", 1)
    assert secret in url
    settings = jobs_settings_for(tmp_path / "home", toy_model_dir, database_url=url)
    app = create_app(settings)
    register_toy_base(app, toy_model_dir)
    for live in run_live(app, settings):
        client = live.client()
        training = client.files.create(file=("t.jsonl", training_file(12)), purpose="fine-tune")
        job = client.fine_tuning.jobs.create(
            model=TOY_BASE,
            training_file=training.id,
            method={
                "type": "supervised",
                "supervised": {"hyperparameters": {"n_epochs": 25, "batch_size": 1}},
            },
        )
        # The job process reports its steps to PostgreSQL: the URL reached it.
        deadline = time.monotonic() + 90
        while (client.fine_tuning.jobs.retrieve(job.id).model_extra or {}).get("step", 0) < 2:
            assert time.monotonic() < deadline, "the job never trained a step"
            time.sleep(0.05)
        engine = make_engine(postgres_url)
        try:
            with transaction(make_session_factory(engine)) as session:
                row = session.get(JobRow, job.id)
                assert row is not None and row.process_id is not None
                job_pid = row.process_id
        finally:
            engine.dispose()
        processes = _job_processes()
        assert job_pid in processes
        for pid in processes:
            proc = Path(f"/proc/{pid}")
            assert secret.encode() not in (proc / "cmdline").read_bytes()
            assert secret.encode() not in (proc / "environ").read_bytes()
            assert b"database_url" not in (proc / "cmdline").read_bytes()
        client.fine_tuning.jobs.cancel(job.id)
        wait_for_job(client, job.id, {"cancelled"})
