"""The fingerprints of a base model's files, taken at registration and checked before a job trains.

A registered folder or GGUF file lives outside tunesmith's control: someone may overwrite the
weights, or move the folder. Registration records every file's size, modification time and
SHA-256; before a job trains on the model, :func:`verify` compares them with the files as they are.
A file whose size and modification time are unchanged is trusted (rehashing gigabytes before every
job would cost minutes); any other is hashed again. A missing or different file fails the job with
:class:`BaseModelChanged`, naming the file and the fix. :func:`check_sizes` is the cheap part alone,
for job creation.

Keys are paths relative to the source folder (a GGUF source: the file's name), with ``/``.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from tunesmith.catalog.spec import BaseModelSpec

CHUNK = 4 * 1024 * 1024
"""Bytes read at a time while hashing: large enough to be fast, small enough to report often."""

Progress = Callable[[int], None]
"""Called with the bytes handled so far."""


class BaseModelChanged(RuntimeError):
    """A base model's files differ from what registration recorded; the message names the file
    and the fix. ``code`` is the job error code."""

    code = "base_model_changed"


def source_files(root: Path) -> Iterator[tuple[str, Path]]:
    """``(key, path)`` of every regular file of a source, in a stable order: the files of a
    folder (recursively, links followed as transformers would; hidden ones such as ``.git`` or
    ``.cache``, which tools rewrite and models never read, left out), or a single file."""
    if root.is_file():
        yield root.name, root
        return
    for path in sorted(root.rglob("*")):
        key = path.relative_to(root)
        if path.is_file() and not any(part.startswith(".") for part in key.parts):
            yield key.as_posix(), path


def total_bytes(root: Path) -> int:
    return sum(path.stat().st_size for _, path in source_files(root))


def file_sha256(path: Path, progress: Progress | None = None, done: int = 0) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
            done += len(chunk)
            if progress is not None:
                progress(done)
    return digest.hexdigest()


def take(root: Path, progress: Progress | None = None) -> dict[str, dict[str, Any]]:
    """The checksums of every file of ``root`` (a folder or a file); ``progress`` gets the bytes
    hashed so far."""
    checksums: dict[str, dict[str, Any]] = {}
    done = 0
    for key, path in source_files(root):
        stat = path.stat()
        checksums[key] = {
            "size": stat.st_size,
            "mtime_ns": stat.st_mtime_ns,
            "sha256": file_sha256(path, progress, done),
        }
        done += stat.st_size
    return checksums


def _root(spec: BaseModelSpec) -> Path:
    path = Path(spec.source)
    return path.parent if path.suffix == ".gguf" else path


def _changed(spec: BaseModelSpec, key: str, why: str) -> BaseModelChanged:
    return BaseModelChanged(
        f"Base model {spec.id}: {_root(spec) / key} {why} since the model was registered, so "
        "jobs cannot trust its weights. Put the original file back, or remove the model from the "
        f"catalog and register it again (`tunesmith models register {spec.source} --id "
        f"{spec.id}`)."
    )


def check_sizes(spec: BaseModelSpec) -> None:
    """Every recorded file is there with its recorded size (no hashing): the cheap check."""
    _verify(spec, rehash=False)


def verify(spec: BaseModelSpec, progress: Progress | None = None) -> None:
    """The source's files are the ones registration hashed: unchanged size and modification time,
    or, failing that, the same SHA-256. Raises :class:`BaseModelChanged`. A model without
    checksums (bundled, hub, registered before checksums were taken) passes."""
    _verify(spec, rehash=True, progress=progress)


def _verify(spec: BaseModelSpec, *, rehash: bool, progress: Progress | None = None) -> None:
    recorded: Mapping[str, Any] | None = spec.checksums
    if not recorded:
        return
    root = _root(spec)
    for key, facts in recorded.items():
        path = root / key
        try:
            stat = os.stat(path)
        except OSError:
            raise _changed(spec, key, "is missing") from None
        if stat.st_size != facts["size"]:
            raise _changed(
                spec, key, f"has changed size ({stat.st_size} bytes, was {facts['size']})"
            )
        if not rehash or stat.st_mtime_ns == facts["mtime_ns"]:
            continue
        if file_sha256(path, progress) != facts["sha256"]:
            raise _changed(spec, key, "has different contents")
