"""At rest: the data directory and everything tunesmith writes under it are private (folders
0700, files 0600) whatever the process umask, so no other local user can read training data,
models, logs or keys."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import TOY_BASE, jobs_settings_for, register_toy_base, run_live
from tests.helpers import training_file, wait_for_job
from tunesmith.api.app import create_app


@pytest.fixture
def loose_umask() -> Iterator[None]:
    previous = os.umask(0o022)  # the common default: everything readable by everyone
    try:
        yield
    finally:
        os.umask(previous)


def loose_paths(home: Path) -> list[str]:
    """Every path under ``home`` (itself included) that its group or others may use."""
    found = []
    for path in [home, *home.rglob("*")]:
        info = path.lstat()
        if stat.S_ISLNK(info.st_mode):
            continue
        if stat.S_IMODE(info.st_mode) & 0o077:
            found.append(f"{oct(stat.S_IMODE(info.st_mode))} {path.relative_to(home.parent)}")
    return found


def test_everything_a_server_and_its_jobs_write_is_private(
    loose_umask: None, tmp_path: Path, toy_model_dir: Path
) -> None:
    settings = jobs_settings_for(tmp_path / "home", toy_model_dir, admin_key=None)
    app = create_app(settings)
    register_toy_base(app, toy_model_dir)
    admin_key = settings.admin_key_path().read_text().strip()
    for live in run_live(app, settings):
        client = live.client(admin_key)
        training = client.files.create(file=("t.jsonl", training_file(12)), purpose="fine-tune")
        pending = client.uploads.create(
            bytes=100, filename="u.jsonl", mime_type="application/jsonl", purpose="fine-tune"
        )
        client.uploads.parts.create(upload_id=pending.id, data=b"x" * 50)  # a part at rest
        job = client.fine_tuning.jobs.create(
            model=TOY_BASE,
            training_file=training.id,
            method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 2}}},
        )
        done = wait_for_job(client, job.id, {"succeeded"})
        assert done.fine_tuned_model
        home = settings.home
        assert (home / "tunesmith.db-wal").exists()
        assert list((home / "jobs" / job.id / "checkpoints").iterdir())
        assert (home / "fine-tuned" / job.id).is_dir()
        assert (home / "jobs" / job.id / "process.log").exists()
        assert (home / "key-encryption.key").exists()
        assert loose_paths(home) == []
