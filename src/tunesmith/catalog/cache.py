"""Folders in the model cache that are built once and then only read.

A converted model is expensive to build (tens of seconds) and is read by every later job, by the
server and by the worker, possibly at the same moment. So a folder is built in a private staging
folder next to its final place, its files are flushed to disk, a marker is written last, and the
staging folder is renamed into place in one ``os.replace``. A reader that finds the marker finds
the whole folder; two processes racing on an empty cache both build, one rename wins, the other
sees a complete folder, discards its own copy and uses the winner's. No lock file is needed,
so nothing can be left holding one. :func:`gguf_folder` names a GGUF file's converted folder.

Within one process a folder is built once however many threads ask for it at the same time (a
server's deployment warm-up, its first chat requests and its job validation all want the same
conversion): the first caller builds, the others wait for its result. A failed build is raised
to every caller that waited for it, and the next caller builds again.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path

from tunesmith.private_files import publish_dir, staging_dir

log = logging.getLogger(__name__)

MARKER = "tunesmith-complete"
"""Written last into a built folder: its presence means the folder is whole."""

STALE_STAGING_SECONDS = 24 * 3600
"""A staging folder this old belongs to a process that died mid-build; no build takes a day."""

_building: dict[str, Future[Path]] = {}
"""The builds running in this process, by target folder: what later callers wait on."""
_building_lock = threading.Lock()


def gguf_folder(cache_dir: Path, gguf: Path) -> Path:
    """Where a GGUF file's conversion lives in the model cache: named after the file and keyed
    by its path, size and modification time, so a file replaced in place is converted again
    instead of serving a stale copy."""
    stat = gguf.stat()
    key = f"{gguf}\0{stat.st_size}\0{stat.st_mtime_ns}".encode()
    return cache_dir / "gguf" / f"{gguf.stem}-{hashlib.sha256(key).hexdigest()[:12]}"


def is_complete(folder: Path) -> bool:
    return (folder / MARKER).is_file()


def staging_prefix(target: Path) -> str:
    return f".{target.name}.staging-"


def build_once(target: Path, build: Callable[[Path], None], *, stamp: str = "") -> Path:
    """``target``, built by ``build(staging_folder)`` unless a complete one is already there.

    If another thread of this process is building ``target``, waits for it and returns (or
    raises) what it does. ``stamp`` is written into the marker (what the folder was built from),
    for an operator who wonders where a cached folder came from.
    """
    if is_complete(target):
        return target
    key = os.path.abspath(target)
    with _building_lock:
        flight = _building.get(key)
        leading = flight is None
        if flight is None:
            flight = _building[key] = Future()
    if not leading:
        log.info("waiting for %s, which another caller is building", target)
        return flight.result()
    try:
        built = _build(target, build, stamp)
    except BaseException as exc:
        _landed(key)
        flight.set_exception(exc)
        raise
    _landed(key)
    flight.set_result(built)
    return built


def _landed(key: str) -> None:
    """Forgets a finished build, before its result is handed out: a caller that comes after a
    failure builds again instead of getting that failure."""
    with _building_lock:
        del _building[key]


def _build(target: Path, build: Callable[[Path], None], stamp: str) -> Path:
    if is_complete(target):  # finished by another caller since the first look
        return target
    _sweep_stale_staging(target)
    staging = staging_dir(target, staging_prefix(target))
    try:
        build(staging)
        (staging / MARKER).write_text(stamp + "\n")
        try:  # private and on disk before the rename, so a power cut cannot leave a marked,
            publish_dir(staging, target)  # truncated file
        except OSError:
            if not is_complete(target):  # not a lost race: something else is in the way
                raise RuntimeError(
                    f"{target} exists but is not a complete tunesmith build (no {MARKER} file); "
                    "delete that folder and try again."
                ) from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _sweep_stale_staging(target: Path) -> None:
    """Removes staging folders of ``target`` left by a process killed mid-build."""
    cutoff = time.time() - STALE_STAGING_SECONDS
    for path in target.parent.glob(staging_prefix(target) + "*"):
        try:
            if path.stat().st_mtime < cutoff:
                shutil.rmtree(path, ignore_errors=True)
        except FileNotFoundError:  # another process swept it first
            continue
