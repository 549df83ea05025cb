"""The blob folder: file bytes, upload parts and in-flight temporary files.

Layout under ``root`` (nothing is ever named after user input, only after generated ids)::

    files/<file-id>                     a stored file, written once, atomically
    parts/<upload-id>/<part-id>         one part of an Upload in progress
    tmp/<random>                        bytes being received; renamed into place or removed

Every folder is ``0700`` and every file ``0600`` (``private_files``). A write goes to ``tmp/``
first, reaches the disk and is renamed into place only when complete (the folder flushed after),
so a reader never sees half a file and a crash leaves at most a temporary file, which
:meth:`sweep_tmp` removes. A file's modification time is the moment it came into place (not
when its upload began), which the sweep of bytes whose row never committed counts its grace
period from.
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, cast

from tunesmith.private_files import fsync_dir, open_private, private_dir


class BlobStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        for sub in ("files", "parts", "tmp"):
            private_dir(root / sub)

    def file_path(self, file_id: str) -> Path:
        return self.root / "files" / file_id

    def part_dir(self, upload_id: str) -> Path:
        return self.root / "parts" / upload_id

    @contextmanager
    def temporary(self) -> Iterator[tuple[Path, BinaryIO]]:
        """A fresh temporary file opened for writing; removed on exit unless it was moved away."""
        path = self.root / "tmp" / uuid.uuid4().hex
        try:
            with open_private(path, "wb") as handle:
                yield path, cast(BinaryIO, handle)
        finally:
            path.unlink(missing_ok=True)

    def commit(self, tmp: Path, destination: Path) -> None:
        """Atomically move a finished temporary file to its final place."""
        with tmp.open("rb") as handle:
            os.fsync(handle.fileno())
        os.utime(tmp)  # placed now, however long ago the upload began
        private_dir(destination.parent)
        os.replace(tmp, destination)
        fsync_dir(destination.parent)

    def write_file(self, file_id: str, chunks: Iterable[bytes]) -> int:
        """Write a whole file from chunks; returns its size."""
        with self.temporary() as (tmp, handle):
            size = 0
            for chunk in chunks:
                handle.write(chunk)
                size += len(chunk)
            handle.flush()
            self.commit(tmp, self.file_path(file_id))
        return size

    def delete_file(self, file_id: str) -> None:
        self.file_path(file_id).unlink(missing_ok=True)

    def delete_parts(self, upload_id: str) -> None:
        shutil.rmtree(self.part_dir(upload_id), ignore_errors=True)

    def file_ids_older_than(self, cutoff: float) -> list[str]:
        """The stored files placed before ``cutoff`` (a Unix time)."""
        found = []
        with os.scandir(self.root / "files") as entries:
            for entry in entries:
                try:
                    if entry.stat().st_mtime < cutoff:
                        found.append(entry.name)
                except FileNotFoundError:  # deleted meanwhile
                    continue
        return sorted(found)

    def upload_ids_with_parts(self) -> list[str]:
        return sorted(p.name for p in (self.root / "parts").iterdir())

    def sweep_tmp(self, older_than_seconds: float) -> int:
        """Remove temporary files abandoned by a crashed process; returns how many."""
        cutoff = time.time() - older_than_seconds
        removed = 0
        for path in (self.root / "tmp").iterdir():
            if path.stat().st_mtime < cutoff:
                path.unlink(missing_ok=True)
                removed += 1
        return removed
