"""The threads that assemble uploads and validate files, apart from every other thread.

Validating a training file or concatenating an 8 GB upload takes seconds to minutes of a thread.
Run in the default thread pool (where authentication, the store and every sync route run) a few
of them would leave requests waiting for a thread; here they queue for ``file_workers`` threads
of their own instead. One :class:`FileWork` per app, shut down with it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import anyio

T = TypeVar("T")


class FileWork:
    def __init__(self, workers: int) -> None:
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="tunesmith-files")

    async def run(self, fn: Callable[[], T]) -> T:
        """``fn()`` on one of the file threads (after those ahead of it). A cancelled caller
        still waits for a call that has started: its temporary files must outlive the call."""
        future = self._pool.submit(fn)
        with anyio.CancelScope(shield=True):
            result = await asyncio.wrap_future(future)
        return result

    def shutdown(self) -> None:
        """Drops the calls not yet started and waits for those running."""
        self._pool.shutdown(wait=True, cancel_futures=True)
