"""Crash safety: a job process, a worker and a whole server killed with SIGKILL mid-run. Each
time the job is claimed again, resumes from its last checkpoint (not from step 0), reports every
step exactly once and succeeds; a restarted server has lost no job, event, file or model."""

from __future__ import annotations

import csv
import io
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai

from tests.conftest import ADMIN_KEY, TOY_BASE, LiveServer, jobs_settings_for, register_toy_base
from tests.helpers import all_events, training_file, wait_for_job
from tunesmith.api.app import create_app
from tunesmith.settings import Settings
from tunesmith.store.db import make_engine, make_session_factory, transaction
from tunesmith.store.tables import JobRow

LONG = {"n_epochs": 25, "batch_size": 1}  # 12 examples: 300 steps, a checkpoint every 12


def start_job(client: openai.OpenAI) -> str:
    training = client.files.create(file=("t.jsonl", training_file(12)), purpose="fine-tune").id
    job = client.fine_tuning.jobs.create(
        model=TOY_BASE,
        training_file=training,
        method={"type": "supervised", "supervised": {"hyperparameters": LONG}},
    )
    return job.id


def job_row(settings: Settings, job_id: str) -> JobRow:
    engine = make_engine(settings.resolved_database_url())
    try:
        with transaction(make_session_factory(engine)) as session:
            row = session.get(JobRow, job_id)
            assert row is not None
            return row
    finally:
        engine.dispose()


def wait_for_checkpoint(client: openai.OpenAI, job_id: str, timeout: float = 90) -> int:
    """Waits until the job has a checkpoint and has trained past it; returns that step."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        steps = [c.step_number for c in client.fine_tuning.jobs.checkpoints.list(job_id)]
        job = client.fine_tuning.jobs.retrieve(job_id)
        if steps and job.model_extra["step"] > max(steps) + 2:
            return max(steps)
        time.sleep(0.05)
    raise AssertionError("no checkpoint was written")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (killed, not yet reaped by its parent) counts as gone
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def wait_gone(pid: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while alive(pid):
        assert time.monotonic() < deadline, f"process {pid} is still running"
        time.sleep(0.05)


def assert_resumed_and_complete(client: openai.OpenAI, job_id: str, checkpoint: int) -> None:
    done = wait_for_job(client, job_id, {"succeeded"}, timeout=180)
    events = all_events(client, job_id)
    resumed = [e.message for e in events if e.message.startswith("Resuming from checkpoint")]
    assert resumed, [e.message for e in events]
    resumed_step = int(resumed[0].split("ckpt-step-")[1].split(" ")[0])
    assert resumed_step >= checkpoint > 0  # not from step 0
    metrics = [e.data for e in events if e.type == "metrics"]
    assert [m["step"] for m in metrics] == list(range(1, 301))  # every step reported once
    # the steps trained again after the crash are counted once: 25 epochs of the file
    billable = billable_tokens(client, done.training_file)
    assert [m["trained_tokens"] for m in metrics][11::12] == [billable * k for k in range(1, 26)]
    assert done.trained_tokens == 25 * billable
    rows = list(csv.DictReader(io.StringIO(client.files.content(done.result_files[0]).text)))
    assert [int(r["step"]) for r in rows] == list(range(1, 301))
    assert done.fine_tuned_model in [m.id for m in client.models.list().data]


def billable_tokens(client: openai.OpenAI, file_id: str) -> int:
    """One epoch's trained tokens: the file's tokens as its validation report counts them."""
    response = httpx.get(
        f"{client.base_url}files/{file_id}/validation",
        headers={"Authorization": f"Bearer {client.api_key}"},
    )
    return int(response.json()["statistics"]["billable_tokens"])


def test_a_killed_job_process_resumes_from_its_checkpoint(jobs_live: LiveServer) -> None:
    client = jobs_live.client()
    job_id = start_job(client)
    checkpoint = wait_for_checkpoint(client, job_id)
    pid = job_row(jobs_live.settings, job_id).process_id
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    assert_resumed_and_complete(client, job_id, checkpoint)
    messages = [e.message for e in all_events(client, job_id)]
    assert any("was killed (SIGKILL)" in m for m in messages)


def test_a_job_whose_process_keeps_dying_fails_after_its_restarts(
    tmp_path: Path, toy_model_dir: Path
) -> None:
    from tests.conftest import run_live

    settings = jobs_settings_for(tmp_path / "home", toy_model_dir, job_max_restarts=1)
    app = create_app(settings)
    register_toy_base(app, toy_model_dir)
    for live in run_live(app, settings):
        client = live.client()
        job_id = start_job(client)
        killed: set[int] = set()
        deadline = time.monotonic() + 120
        while len(killed) < 2:  # the first run and its one restart
            assert time.monotonic() < deadline, "the job process did not come back"
            row = job_row(settings, job_id)
            if row.process_id and row.process_id not in killed and row.step > 0:
                os.kill(row.process_id, signal.SIGKILL)
                killed.add(row.process_id)
            time.sleep(0.02)
        failed = wait_for_job(client, job_id, {"failed"})
        assert failed.error.code == "job_process_died"
        assert "was killed (SIGKILL) 2 time(s)" in failed.error.message
        events = all_events(client, job_id)
        assert sum("the job goes back to the queue" in e.message for e in events) == 1
        # it keeps what it trained before it died: the count of its last reported step
        last = [e.data for e in events if e.type == "metrics"][-1]
        assert failed.trained_tokens == last["trained_tokens"] > 0
        assert last["step"] == failed.model_extra["step"]


def environment(settings: Settings) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        TUNESMITH_HOME=str(settings.home),
        TUNESMITH_ADMIN_KEY=ADMIN_KEY,
        TUNESMITH_VALIDATION_MODEL_DIR=str(settings.validation_model_dir),
        TUNESMITH_WORKER_POLL_SECONDS="0.05",
        TUNESMITH_JOB_LEASE_SECONDS="3",
        TUNESMITH_DEVICE="cpu",
    )
    return env


def spawn(args: list[str], settings: Settings, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "tunesmith", *args],
            env=environment(settings),
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def test_a_killed_worker_loses_only_the_steps_since_the_checkpoint(
    api_only: LiveServer, separate_settings: Settings, tmp_path: Path
) -> None:
    client = api_only.client()
    first = spawn(["worker"], separate_settings, tmp_path / "worker1.log")
    try:
        job_id = start_job(client)
        checkpoint = wait_for_checkpoint(client, job_id)
        child = job_row(separate_settings, job_id).process_id
        assert child is not None
        first.kill()
        first.wait()
        wait_gone(child)  # the job process dies with its worker: no two trainers on one job
        assert client.fine_tuning.jobs.retrieve(job_id).status == "running"
        second = spawn(["worker"], separate_settings, tmp_path / "worker2.log")
        try:
            assert_resumed_and_complete(client, job_id, checkpoint)
        finally:
            second.send_signal(signal.SIGTERM)
            assert second.wait(timeout=30) == 0
    finally:
        if first.poll() is None:
            first.kill()
    messages = [e.message for e in all_events(client, job_id)]
    assert any("stopped responding; resuming from the last checkpoint" in m for m in messages)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(settings: Settings, port: int, log: Path) -> subprocess.Popen[bytes]:
    server = spawn(["serve", "--port", str(port)], settings, log)
    deadline = time.monotonic() + 60
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return server
        except OSError:
            assert server.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.1)


def test_a_server_killed_mid_job_restarts_without_losing_anything(
    tmp_path: Path, toy_model_dir: Path
) -> None:
    settings = jobs_settings_for(tmp_path / "home", toy_model_dir)
    register_toy_base(create_app(settings), toy_model_dir)  # the catalog, before the server
    port = free_port()
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=ADMIN_KEY, max_retries=0)
    server = start_server(settings, port, tmp_path / "server1.log")
    try:
        job_id = start_job(client)
        checkpoint = wait_for_checkpoint(client, job_id)
        child = job_row(settings, job_id).process_id
        assert child is not None
        before_files = {f.id for f in client.files.list()}
        before_events = all_events(client, job_id)
        server.kill()
        server.wait()
        wait_gone(child)
        server = start_server(settings, port, tmp_path / "server2.log")
        assert {f.id for f in client.files.list()} >= before_files
        assert_resumed_and_complete(client, job_id, checkpoint)
        kept = {e.id for e in all_events(client, job_id)}
        lost = [e for e in before_events if e.id not in kept]
        # only the metrics of steps trained again after the checkpoint were replaced
        assert all(e.type == "metrics" and e.data["step"] > checkpoint for e in lost)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
