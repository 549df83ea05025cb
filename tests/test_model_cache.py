"""Folders built once in the model cache: whole or absent, never rebuilt, and safe when threads
or processes race to build the same one."""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tunesmith.catalog.cache import MARKER, build_once, is_complete


def _writer(label: str, barrier: threading.Barrier | None = None) -> Callable[[Path], None]:
    def build(staging: Path) -> None:
        (staging / "weights.bin").write_text(label)
        (staging / "config.json").write_text("{}")
        if barrier is not None:
            barrier.wait(timeout=30)  # both builders are done before either publishes

    return build


def test_a_folder_is_built_once_and_then_only_read(tmp_path: Path) -> None:
    calls: list[Path] = []

    def build(staging: Path) -> None:
        calls.append(staging)
        (staging / "weights.bin").write_text("one")

    target = tmp_path / "model"
    assert build_once(target, build, stamp="from x.gguf") == target
    assert build_once(target, build) == target
    assert len(calls) == 1
    assert (target / "weights.bin").read_text() == "one"
    assert (target / MARKER).read_text() == "from x.gguf\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_a_failed_build_leaves_nothing(tmp_path: Path) -> None:
    def build(staging: Path) -> None:
        (staging / "weights.bin").write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        build_once(tmp_path / "model", build)
    assert list(tmp_path.iterdir()) == []


class Gated:
    """A build that waits for the test to let it finish, then writes a folder or fails."""

    def __init__(self, error: BaseException | None = None) -> None:
        self.started = threading.Event()
        self.release = threading.Event()
        self.calls = 0
        self.error = error

    def __call__(self, staging: Path) -> None:
        self.calls += 1
        self.started.set()
        assert self.release.wait(30)
        if self.error is not None:
            raise self.error
        (staging / "weights.bin").write_text("built")


def in_thread(target: Path, build: Callable[[Path], None]) -> tuple[threading.Thread, list[object]]:
    """``build_once`` on a thread of its own; the list receives its result or its error."""
    outcome: list[object] = []

    def run() -> None:
        try:
            outcome.append(build_once(target, build))
        except BaseException as exc:  # handed to the test
            outcome.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, outcome


def wait_until_waiting(caplog: pytest.LogCaptureFixture, count: int) -> None:
    """Until ``count`` callers have said they wait for another caller's build."""
    deadline = time.monotonic() + 30
    while sum("which another caller is building" in r.getMessage() for r in caplog.records) < count:
        assert time.monotonic() < deadline, "no caller waited for the running build"
        time.sleep(0.01)


def test_threads_asking_at_once_share_one_build(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="tunesmith.catalog.cache")
    target = tmp_path / "model"
    build = Gated()
    first, first_outcome = in_thread(target, build)
    assert build.started.wait(30)
    waiters = [in_thread(target, build) for _ in range(2)]
    wait_until_waiting(caplog, 2)  # both asked while the first build ran
    build.release.set()
    for thread, _ in [(first, first_outcome), *waiters]:
        thread.join(timeout=30)
    assert build.calls == 1
    assert [first_outcome, *(outcome for _, outcome in waiters)] == [[target]] * 3
    assert (target / "weights.bin").read_text() == "built"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no staging left


def test_a_failed_build_reaches_every_waiter_and_the_next_caller_builds_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="tunesmith.catalog.cache")
    target = tmp_path / "model"
    failing = Gated(OSError("disk full"))
    first, first_outcome = in_thread(target, failing)
    assert failing.started.wait(30)
    waiter, waiter_outcome = in_thread(target, failing)
    wait_until_waiting(caplog, 1)
    failing.release.set()
    first.join(timeout=30)
    waiter.join(timeout=30)
    assert failing.calls == 1  # the waiter got the failure, it did not build again
    for outcome in (first_outcome, waiter_outcome):
        (error,) = outcome
        assert isinstance(error, OSError) and str(error) == "disk full"
    assert list(tmp_path.iterdir()) == []
    retry = Gated()
    retry.release.set()
    assert build_once(target, retry) == target  # the failure is not remembered
    assert retry.calls == 1 and is_complete(target)


def _build_in_process(target: str, label: str, barrier: threading.Barrier) -> None:
    build_once(Path(target), _writer(label, barrier))


def test_racing_processes_end_with_one_complete_folder(tmp_path: Path) -> None:
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(2)
    target = tmp_path / "model"
    processes = [
        context.Process(target=_build_in_process, args=(str(target), label, barrier))
        for label in ("a", "b")
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=60)
    assert [p.exitcode for p in processes] == [0, 0]
    assert is_complete(target)
    assert (target / "weights.bin").read_text() in {"a", "b"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_staging_left_by_a_killed_build_is_swept(tmp_path: Path) -> None:
    stale = tmp_path / ".model.staging-dead"
    stale.mkdir()
    (stale / "weights.bin").write_text("half")
    os.utime(stale, (0, 0))
    running = tmp_path / ".model.staging-running"  # a build in progress right now
    running.mkdir()
    build_once(tmp_path / "model", _writer("new"))
    assert sorted(p.name for p in tmp_path.iterdir()) == [".model.staging-running", "model"]


def test_a_foreign_folder_in_the_way_is_reported(tmp_path: Path) -> None:
    target = tmp_path / "model"
    target.mkdir()
    (target / "something.txt").write_text("not ours")
    with pytest.raises(RuntimeError, match="delete that folder"):
        build_once(target, _writer("new"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
