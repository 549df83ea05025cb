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
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
import torch

from tests.conftest import TOY_BASE, LiveServer, jobs_settings_for, register_toy_base, run_live
from tests.helpers import all_events, training_file, wait_for_job
from tests.test_jobs_faults import job_row, spawn, wait_for_checkpoint, wait_gone
from tunesmith.api.app import create_app
from tunesmith.private_files import private_dir
from tunesmith.settings import Settings
from tunesmith.training.checkpoint import MANIFEST, TRAINER_STATE, list_checkpoints

LONG = {"n_epochs": 25, "batch_size": 1}  # 12 examples: 300 steps, a checkpoint every 12


@pytest.fixture
def separate_settings(tmp_path: Path, toy_model_dir: Path) -> Settings:
    return jobs_settings_for(tmp_path / "home", toy_model_dir, embedded_worker=False)


@pytest.fixture
def api_only(separate_settings: Settings, toy_model_dir: Path) -> Iterator[LiveServer]:
    app = create_app(separate_settings)
    register_toy_base(app, toy_model_dir)
    yield from run_live(app, separate_settings)


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
    job_id = create_job(client, SHORT)
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
