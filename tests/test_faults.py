"""Faults at every point of a job's life, on the toy model: a disk that fills, a job process or a
server killed with SIGKILL while it uploads, validates, trains, writes a checkpoint or publishes
the model, and a database another connection keeps locked. Each ends with the job resumed or
failed with a clear error, no half-written file in view and no row without its bytes.

(``test_jobs_faults.py`` covers a job process, a worker and a server killed mid-training, and a
job whose process keeps dying.)"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai
import pytest
import torch

from tests.conftest import (
    ADMIN_KEY,
    TOY_BASE,
    LiveServer,
    jobs_settings_for,
    register_toy_base,
    run_live,
)
from tests.helpers import all_events, training_file, wait_for_job
from tests.test_jobs_faults import (
    free_port,
    job_row,
    spawn,
    start_server,
    wait_for_checkpoint,
    wait_gone,
)
from tunesmith.api.app import create_app
from tunesmith.private_files import private_dir
from tunesmith.settings import Settings
from tunesmith.training.checkpoint import MANIFEST, TRAINER_STATE, list_checkpoints

LONG = {"n_epochs": 25, "batch_size": 1}  # 12 examples: 300 steps, a checkpoint every 12


def create_job(client: openai.OpenAI, hyperparameters: dict[str, object] = LONG) -> str:
    training = client.files.create(file=("t.jsonl", training_file(12)), purpose="fine-tune").id
    job = client.fine_tuning.jobs.create(
        model=TOY_BASE,
        training_file=training,
        method={"type": "supervised", "supervised": {"hyperparameters": hyperparameters}},
    )
    return job.id


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MB tmpfs, mounted for the test (needs root: CAP_SYS_ADMIN)."""
    mount = tmp_path / "small-disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m,mode=0700", "tmpfs", str(mount)],
        capture_output=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(disk: Path) -> None:
    """Writes to ``disk`` until nothing more fits."""
    with (disk / "filler").open("wb", buffering=0) as handle:
        try:
            while True:
                handle.write(b"\0" * 4096)
        except OSError:
            pass


def assert_complete_checkpoints_only(root: Path, client: openai.OpenAI, job_id: str) -> None:
    """Every checkpoint folder is complete, no staging folder is left, and each checkpoint the
    API lists has its folder."""
    staging = [p.name for p in root.iterdir() if p.name.startswith(".")]
    assert staging == []
    for folder in list_checkpoints(root):
        assert (folder / MANIFEST).stat().st_size > 0
        assert (folder / "adapter_model.safetensors").stat().st_size > 0
        if (folder / TRAINER_STATE).exists():
            torch.load(folder / TRAINER_STATE, weights_only=True)
    listed = {c.step_number for c in client.fine_tuning.jobs.checkpoints.list(job_id)}
    assert listed
    assert listed <= {int(p.name.removeprefix("ckpt-step-")) for p in list_checkpoints(root)}


def test_a_full_disk_fails_the_job_clearly_and_keeps_the_last_checkpoint(
    api_only: LiveServer, separate_settings: Settings, small_disk: Path, tmp_path: Path
) -> None:
    client = api_only.client()
    job_id = create_job(client)  # no worker yet: the job waits in validating_files
    checkpoints = separate_settings.job_dir(job_id) / "checkpoints"
    checkpoints.parent.mkdir(parents=True)
    checkpoints.symlink_to(small_disk)  # the job's checkpoints go to the small disk
    worker = spawn(["worker"], separate_settings, tmp_path / "worker.log")
    try:
        wait_for_checkpoint(client, job_id)
        fill(small_disk)
        failed = wait_for_job(client, job_id, {"failed"})
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=30)
    assert failed.error.code == "disk_full", failed.error
    assert "disk is full" in failed.error.message
    assert str(checkpoints) in failed.error.message
    (small_disk / "filler").unlink()
    assert_complete_checkpoints_only(small_disk, client, job_id)


# --- SIGKILL at chosen points, by strace's fault injection -------------------------------------


@contextlib.contextmanager
def killed_at(pid: int, syscall: str, *, path: Path | None = None, when: int = 1) -> Iterator[None]:
    """SIGKILLs process ``pid`` (all its threads) as it enters its ``when``-th ``syscall`` from
    now on; with ``path``, only calls on that path (a path argument or a descriptor of it)
    count. The kernel delivers the signal at the call, before it runs: strace's fault
    injection, not a timer that might miss the moment."""
    if shutil.which("strace") is None:
        pytest.skip("strace is not installed")
    command = ["strace", "-qq", "-f", "-p", str(pid), "-o", os.devnull]
    command += ["-e", f"trace={syscall}", "-e", f"inject={syscall}:signal=SIGKILL:when={when}"]
    if path is not None:
        command += ["-P", str(path)]
    tracer = subprocess.Popen(command, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 10
    while tracer_of(pid) == 0:
        if tracer.poll() is not None:
            pytest.skip(f"strace cannot attach here: {tracer.stderr.read().decode().strip()}")  # type: ignore[union-attr]
        assert time.monotonic() < deadline, "strace did not attach"
        time.sleep(0.01)
    try:
        yield
    finally:
        if tracer.poll() is None:
            tracer.terminate()
        try:
            tracer.wait(timeout=5)
        except subprocess.TimeoutExpired:
            tracer.kill()
            tracer.wait()


def tracer_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("TracerPid:"):
            return int(line.split()[1])
    return 0


def job_process(settings: Settings, job_id: str) -> int:
    deadline = time.monotonic() + 60
    while True:
        row = job_row(settings, job_id)
        if row.process_id is not None and row.status == "running":
            return row.process_id
        assert time.monotonic() < deadline, f"job {job_id} never ran ({row.status})"
        time.sleep(0.02)


def assert_no_staging(folder: Path) -> None:
    """Nothing half-written is left where objects are published: no hidden staging folder."""
    assert [p.name for p in folder.iterdir() if p.name.startswith(".")] == []


def assert_models_have_their_folders(
    client: openai.OpenAI, job_id: str, settings: Settings
) -> None:
    """Every checkpoint the API lists, and the fine-tuned model, has its complete folder."""
    root = settings.job_dir(job_id) / "checkpoints"
    on_disk = {int(p.name.removeprefix("ckpt-step-")) for p in list_checkpoints(root)}
    listed = {c.step_number for c in client.fine_tuning.jobs.checkpoints.list(job_id)}
    assert listed and listed <= on_disk, (listed, on_disk)
    model = settings.fine_tuned_dir(job_id)
    assert (model / MANIFEST).stat().st_size > 0
    assert (model / "adapter_model.safetensors").stat().st_size > 0


SHORT = {"n_epochs": 2, "batch_size": 1}  # 24 steps, a checkpoint every 12


@pytest.mark.parametrize(
    "point",
    ["while its files are flushed", "after its rename, before its row"],
)
def test_a_job_process_killed_while_it_writes_a_checkpoint_resumes(
    jobs_live: LiveServer, point: str
) -> None:
    client = jobs_live.client()
    settings = jobs_live.settings
    # Checkpoints at steps 12, 24, 36 and 48: the one after the first is well before the end,
    # so the kill meets it however fast the machine (with 24 steps a fast one could finish
    # the job before the tracer's second fsync came, and nothing was killed).
    job_id = create_job(client, {"n_epochs": 4, "batch_size": 1})
    pid = job_process(settings, job_id)
    checkpoints = settings.job_dir(job_id) / "checkpoints"
    wait_for_checkpoint(client, job_id)  # the next checkpoint is the one interrupted
    if point == "while its files are flushed":
        injection = killed_at(pid, "fsync", when=2)  # its second file reaches the disk
    else:  # the folder's entry is flushed after the rename that publishes it
        injection = killed_at(pid, "fsync", path=checkpoints)
    with injection:
        wait_gone(pid, timeout=60)
    done = wait_for_job(client, job_id, {"succeeded"}, timeout=180)
    messages = [e.message for e in all_events(client, job_id)]
    assert any(m.startswith("Resuming from checkpoint") for m in messages), messages
    assert any("was killed (SIGKILL)" in m for m in messages)
    assert_no_staging(checkpoints)
    assert_models_have_their_folders(client, job_id, settings)
    assert done.fine_tuned_model in [m.id for m in client.models.list().data]


@pytest.mark.parametrize(
    "point",
    ["while its folder is linked", "after its rename, before its row"],
)
def test_a_job_process_killed_while_it_publishes_the_model_succeeds_on_resume(
    jobs_live: LiveServer, point: str
) -> None:
    client = jobs_live.client()
    settings = jobs_live.settings
    published = private_dir(settings.home / "fine-tuned")  # as after any earlier job
    job_id = create_job(client, SHORT)
    pid = job_process(settings, job_id)
    if point == "while its folder is linked":
        injection = killed_at(pid, "linkat,link", when=3)  # its third file of the model
    else:
        injection = killed_at(pid, "fsync", path=published)
    with injection:
        wait_gone(pid, timeout=90)
    assert client.fine_tuning.jobs.retrieve(job_id).status != "succeeded"
    done = wait_for_job(client, job_id, {"succeeded"}, timeout=180)
    messages = [e.message for e in all_events(client, job_id)]
    assert any("was killed (SIGKILL)" in m for m in messages), messages
    assert_no_staging(published)
    assert_models_have_their_folders(client, job_id, settings)
    assert done.fine_tuned_model in [m.id for m in client.models.list().data]
    assert len(done.result_files) == 1


# --- the server killed ---------------------------------------------------------------------------


def test_a_server_killed_during_an_upload_keeps_no_part_of_it(
    tmp_path: Path, toy_model_dir: Path
) -> None:
    settings = jobs_settings_for(tmp_path / "home", toy_model_dir, embedded_worker=False)
    port = free_port()
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=ADMIN_KEY, max_retries=0)
    server = start_server(settings, port, tmp_path / "server1.log")
    try:
        kept = client.files.create(file=("kept.jsonl", training_file(12)), purpose="fine-tune")
        boundary = "faults-boundary"
        line = training_file(1)
        lines_per_chunk = 65536 // len(line)

        def body() -> Iterator[bytes]:
            yield (
                f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\n'
                f'fine-tune\r\n--{boundary}\r\nContent-Disposition: form-data; name="file"; '
                'filename="big.jsonl"\r\nContent-Type: application/jsonl\r\n\r\n'
            ).encode()
            for sent in range(256):  # 16 MB, killed after the first 2
                yield line * lines_per_chunk
                if sent == 32:
                    time.sleep(0.5)  # the server has written what it received
                    server.kill()
                    server.wait()
            yield f"\r\n--{boundary}--\r\n".encode()

        headers = {
            "Authorization": f"Bearer {ADMIN_KEY}",
            "Content-Type": f"multipart/form-data; boundary={boundary}",
        }
        with pytest.raises(httpx.TransportError):
            httpx.post(f"{client.base_url}files", content=body(), headers=headers, timeout=30)
        in_flight = list((settings.blob_dir() / "tmp").iterdir())
        server = start_server(settings, port, tmp_path / "server2.log")
        assert [f.id for f in client.files.list()] == [kept.id]
        assert sorted(p.name for p in (settings.blob_dir() / "files").iterdir()) == [kept.id]
        assert client.files.content(kept.id).read() == training_file(12)
        # what was received lies only in tmp/, never published: the sweep removes it
        assert all(p.parent.name == "tmp" for p in in_flight)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)


def test_a_server_killed_while_it_validates_a_job_validates_it_again(
    tmp_path: Path, toy_model_dir: Path
) -> None:
    settings = jobs_settings_for(tmp_path / "home", toy_model_dir)
    register_toy_base(create_app(settings), toy_model_dir)
    port = free_port()
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=ADMIN_KEY, max_retries=0)
    server = start_server(settings, port, tmp_path / "server1.log")
    try:
        training = client.files.create(file=("t.jsonl", training_file(2000)), purpose="fine-tune")
        job_id = client.fine_tuning.jobs.create(
            model=TOY_BASE,
            training_file=training.id,
            method={
                "type": "supervised",
                "supervised": {"hyperparameters": {"n_epochs": 1, "batch_size": 8}},
            },
        ).id
        deadline = time.monotonic() + 30
        while (row := job_row(settings, job_id)).lease_owner is None:  # being validated
            assert row.status == "validating_files", "validation ended before the kill"
            assert time.monotonic() < deadline
            time.sleep(0.005)
        server.kill()
        server.wait()
        assert job_row(settings, job_id).status == "validating_files"
        server = start_server(settings, port, tmp_path / "server2.log")
        deadline = time.monotonic() + 120
        while (row := job_row(settings, job_id)).step < 1:  # validated again, and training
            assert row.status in ("validating_files", "queued", "running"), row.error
            assert time.monotonic() < deadline, f"the job is still {row.status}"
            time.sleep(0.1)
        client.fine_tuning.jobs.cancel(job_id)  # the rest is an ordinary job
        messages = [e.message for e in all_events(client, job_id)]
        assert messages.count("Files validated, moving job to queued state") == 1
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)


# --- the database locked -------------------------------------------------------------------------


def test_a_locked_database_delays_requests_and_loses_no_job(jobs_live: LiveServer) -> None:
    client = jobs_live.client()
    settings = jobs_live.settings
    job_id = create_job(client, SHORT)
    job_process(settings, job_id)
    database = settings.home / "tunesmith.db"
    holder = sqlite3.connect(database, timeout=0, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # SQLite's write lock, held for 3 s
    try:
        with ThreadPoolExecutor(4) as pool:
            listed = pool.submit(client.files.list)
            stored = pool.submit(
                client.files.create, file=("t.jsonl", training_file(12)), purpose="fine-tune"
            )
            second = pool.submit(create_job, client, SHORT)
            time.sleep(3)
            holder.rollback()
            assert listed.result().data  # a reader is not blocked (WAL)
            assert stored.result().status == "processed"
            second_id = second.result()
    finally:
        holder.close()
    assert wait_for_job(client, job_id, {"succeeded"}, timeout=180).fine_tuned_model
    assert wait_for_job(client, second_id, {"succeeded"}, timeout=180).fine_tuned_model


def test_a_database_locked_past_the_busy_timeout_answers_503_and_loses_no_job(
    tmp_path: Path, toy_model_dir: Path
) -> None:
    settings = jobs_settings_for(
        tmp_path / "home", toy_model_dir, database_busy_timeout_seconds=0.5
    )
    app = create_app(settings)
    register_toy_base(app, toy_model_dir)
    for live in run_live(app, settings):
        client = live.client()
        job_id = create_job(client, SHORT)
        job_process(settings, job_id)
        holder = sqlite3.connect(settings.home / "tunesmith.db", timeout=0, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")  # held for 3 s, six times the busy timeout
        try:
            refused = live.http().post(
                "/v1/files",
                files={"file": ("t.jsonl", training_file(12))},
                data={"purpose": "fine-tune"},
            )
            assert client.files.list().data  # readers go on (WAL)
            time.sleep(3)
        finally:
            holder.rollback()
            holder.close()
        assert refused.status_code == 503, refused.text
        assert int(refused.headers["retry-after"]) >= 1
        error = refused.json()["error"]
        assert error["code"] == "database_busy" and "try again" in error["message"]
        assert client.files.create(file=("t.jsonl", training_file(12)), purpose="fine-tune")
        assert wait_for_job(client, job_id, {"succeeded"}, timeout=180).fine_tuned_model


def test_a_job_process_killed_while_it_prunes_checkpoints_leaves_no_model_without_its_folder(
    jobs_live: LiveServer,
) -> None:
    client = jobs_live.client()
    settings = jobs_live.settings
    job_id = create_job(client, {"n_epochs": 5, "batch_size": 1})  # the 4th epoch prunes the 1st
    pid = job_process(settings, job_id)
    root = settings.job_dir(job_id) / "checkpoints"
    deadline = time.monotonic() + 120
    while 36 not in {c.step_number for c in client.fine_tuning.jobs.checkpoints.list(job_id)}:
        assert time.monotonic() < deadline, "no third checkpoint"
        time.sleep(0.02)
    # training removes no file; the next removals are ckpt-step-12's, at step 48: one goes
    with killed_at(pid, "unlinkat", when=2):
        wait_gone(pid, timeout=120)
    complete = {p.name for p in (root / "ckpt-step-48").iterdir()}
    for checkpoint in client.fine_tuning.jobs.checkpoints.list(job_id):
        folder = root / f"ckpt-step-{checkpoint.step_number}"
        assert folder.is_dir() and {p.name for p in folder.iterdir()} == complete, folder
    assert wait_for_job(client, job_id, {"succeeded"}, timeout=180).fine_tuned_model
    messages = [e.message for e in all_events(client, job_id)]
    assert any("was killed (SIGKILL)" in m for m in messages), messages
    assert_no_staging(root)
    assert_models_have_their_folders(client, job_id, settings)
