"""Folders built once in the model cache: whole or absent, never rebuilt, and safe when threads
or processes race to build the same one."""

from __future__ import annotations

import multiprocessing
import os
import threading
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


def test_racing_threads_end_with_one_complete_folder(tmp_path: Path) -> None:
    barrier = threading.Barrier(2)
    target = tmp_path / "model"
    results: dict[str, Path] = {}

    def run(label: str) -> None:
        results[label] = build_once(target, _writer(label, barrier))

    threads = [threading.Thread(target=run, args=(label,)) for label in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert results == {"a": target, "b": target}
    assert is_complete(target)
    assert (target / "weights.bin").read_text() in {"a", "b"}  # one whole build, not a mixture
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no staging left


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
