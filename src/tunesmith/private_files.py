"""Files at rest: private and durable, whatever the process umask.

Everything tunesmith keeps under its data directory (the database, file bytes, upload parts,
job logs, checkpoints, models, keys) holds someone's training data, weights or secrets, so
every folder it makes is ``0700`` and every file ``0600``: modes are set explicitly, never left
to the umask. Folders that libraries write (``save_pretrained``, ``torch.save``) are built in a
staging folder, made private as a whole and published by one rename (:func:`publish_dir`).

Publishing is durable: a file or folder reaches the disk before the rename that makes it
visible, and the folder that holds it is flushed after, so a power cut leaves the old object or
the new one, never a name pointing at missing bytes. This module is the one place these rules
live; it imports nothing of tunesmith and no third-party package.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

DIR_MODE = 0o700
FILE_MODE = 0o600
_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
# libraries that hide the errno: torch ("file write failed", the OSError as its context),
# safetensors ("I/O error: No space left on device (os error 28)")
_FULL_TEXTS = ("No space left on device", "Disk quota exceeded", "File too large")


def private_dir(path: Path) -> Path:
    """Makes ``path`` and any missing parents as private folders; an existing ``path`` is made
    private too (parents that exist are left as they are). Returns ``path``."""
    missing = []
    for folder in (path, *path.parents):
        if folder.exists():
            break
        missing.append(folder)
    for folder in reversed(missing):
        with contextlib.suppress(FileExistsError):  # made by another process meanwhile
            folder.mkdir(mode=DIR_MODE)
    os.chmod(path, DIR_MODE)
    for folder in missing[1:]:
        os.chmod(folder, DIR_MODE)
    return path


def open_private(path: Path, mode: str = "ab") -> IO[Any]:
    """Opens ``path`` for writing (``mode`` ``"ab"``, ``"a"``, ``"wb"`` or ``"w"``), created
    ``0600`` if absent and made ``0600`` if not."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if mode.startswith("a") else os.O_TRUNC)
    fd = os.open(path, flags | os.O_CLOEXEC, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)
        return os.fdopen(fd, mode, newline=None if "b" in mode else "")
    except BaseException:
        os.close(fd)
        raise


def private_file(path: Path) -> Path:
    """Creates ``path`` empty and ``0600`` if absent (for a file another library fills, such as
    SQLite's database, whose journal files take its mode); makes it ``0600`` if present.

    An existing file is never opened: closing any descriptor of a file drops every POSIX lock
    this process holds on it, SQLite's included."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE)
    except FileExistsError:
        os.chmod(path, FILE_MODE)
        return path
    try:
        os.fchmod(fd, FILE_MODE)
    finally:
        os.close(fd)
    return path


@contextlib.contextmanager
def writing(path: Path, mode: str = "wb") -> Iterator[IO[Any]]:
    """Writes ``path`` whole or not at all: into a private temporary file beside it, flushed to
    disk, then renamed over ``path`` and the folder flushed. An exception leaves ``path`` as it
    was and no temporary file."""
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, FILE_MODE)
        with os.fdopen(fd, mode, newline=None if "b" in mode else "") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    fsync_dir(path.parent)


def write_private(path: Path, data: bytes | str) -> None:
    """Writes ``data`` to ``path`` privately and atomically (see :func:`writing`)."""
    with writing(path, "wb" if isinstance(data, bytes) else "w") as handle:
        handle.write(data)


def fsync_dir(path: Path) -> None:
    """Flushes a folder's entries (the names a rename just changed) to disk."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_private(folder: Path, *, flush: bool = True) -> None:
    """Makes a folder that other code wrote private: every folder in it ``0700``, every file
    ``0600``; with ``flush``, each file and folder flushed to disk."""
    os.chmod(folder, DIR_MODE)
    for root, dirs, files in os.walk(folder):
        for name in dirs:
            os.chmod(os.path.join(root, name), DIR_MODE)
        for name in files:
            fd = os.open(os.path.join(root, name), os.O_RDONLY | os.O_CLOEXEC)
            try:
                os.fchmod(fd, FILE_MODE)
                if flush:
                    os.fsync(fd)
            finally:
                os.close(fd)
        if flush:
            fsync_dir(Path(root))


def staging_dir(target: Path, prefix: str | None = None) -> Path:
    """A fresh private folder beside ``target`` (hidden: its name starts with a dot), to build
    ``target`` in before :func:`publish_dir`."""
    private_dir(target.parent)
    return Path(tempfile.mkdtemp(prefix=prefix or f".{target.name}-", dir=target.parent))


def publish_dir(staging: Path, target: Path) -> None:
    """Puts the folder built in ``staging`` in place as ``target`` in one rename: made private
    and flushed first, the parent folder flushed after. ``target`` must not exist (or be an
    empty folder); see :func:`replace_dir` for one that does."""
    make_private(staging)
    os.replace(staging, target)
    fsync_dir(target.parent)


def replace_dir(staging: Path, target: Path) -> None:
    """Like :func:`publish_dir` for a ``target`` that may exist: the old folder is renamed aside
    (never deleted before the new one is in place), the new one renamed in, the old removed.
    A crash in between leaves the old folder under a hidden name beside ``target``."""
    make_private(staging)
    aside = None
    if target.exists():
        aside = Path(tempfile.mkdtemp(prefix=f".{target.name}-old-", dir=target.parent))
        os.replace(target, aside / target.name)
    try:
        os.replace(staging, target)
    except BaseException:
        if aside is not None:
            os.replace(aside / target.name, target)
            shutil.rmtree(aside, ignore_errors=True)
        raise
    fsync_dir(target.parent)
    if aside is not None:
        shutil.rmtree(aside, ignore_errors=True)


def is_disk_full(exc: BaseException) -> bool:
    """Did ``exc`` (or what caused it) fail for want of space: a full disk (ENOSPC), a quota
    (EDQUOT) or a file size limit (EFBIG)?"""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in _FULL_ERRNOS:
            return True
        if any(text in str(current) for text in _FULL_TEXTS):
            return True
        current = current.__cause__ or current.__context__
    return False


def clear_unpublished(folder: Path, prefix: str) -> None:
    """Cleans up after a writer killed while it published into ``folder`` an object whose name
    starts with ``prefix``: a folder :func:`replace_dir` had renamed aside goes back in place
    when nothing replaced it, and staging folders are removed. Only for objects one writer
    owns at a time (a job's checkpoints, its model), before that writer publishes again."""
    if not folder.is_dir():
        return
    for entry in sorted(folder.iterdir()):
        if not entry.name.startswith(f".{prefix}") or not entry.is_dir():
            continue
        inside = list(entry.iterdir())
        kept = inside[0] if len(inside) == 1 else None
        aside = kept is not None and entry.name.startswith(f".{kept.name}-old-")
        if kept is not None and aside and not (folder / kept.name).exists():
            os.replace(kept, folder / kept.name)
            fsync_dir(folder)
        shutil.rmtree(entry, ignore_errors=True)
