"""Faults at every point of a job's life, on the toy model: a disk that fills, a job process or a
server killed with SIGKILL while it uploads, validates, trains, writes a checkpoint or publishes
the model, and a database another connection keeps locked. Each ends with the job resumed or
failed with a clear error, no half-written file in view and no row without its bytes.

(``test_jobs_faults.py`` covers a job process, a worker and a server killed mid-training, and a
job whose process keeps dying.)"""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
import torch

from tests.conftest import TOY_BASE, LiveServer, jobs_settings_for, register_toy_base, run_live
from tests.helpers import training_file, wait_for_job
from tests.test_jobs_faults import spawn, wait_for_checkpoint
from tunesmith.api.app import create_app
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
