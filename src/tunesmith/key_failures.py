"""Failed key checks, per client address: each is logged (never the key; a short hash prefix
tells repeated guesses apart) and an address with too many in a window is answered 429 with
``retry-after`` until the window passes, so keys cannot be guessed at request speed.

In this process's memory and bounded: at most ``max_clients`` addresses are remembered (the
least recently failing are forgotten first) and at most ``max_failures`` times per address.
A caller that never fails costs one dictionary lookup."""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict, deque

MAX_FAILURES = 30
WINDOW_SECONDS = 60.0
MAX_CLIENTS = 10_000


class KeyFailures:
    def __init__(
        self,
        *,
        max_failures: int = MAX_FAILURES,
        window_seconds: float = WINDOW_SECONDS,
        max_clients: int = MAX_CLIENTS,
    ) -> None:
        self.max_failures = max_failures
        self.window_seconds = window_seconds
        self.max_clients = max_clients
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    def retry_after(self, client: str, now: float | None = None) -> int | None:
        """Seconds until ``client`` may try again; None when it is not throttled."""
        now = time.monotonic() if now is None else now
        with self._lock:
            times = self._failures.get(client)
            if times is None or len(times) < self.max_failures:
                return None
            wait = times[0] + self.window_seconds - now
            if wait <= 0:
                return None
            return max(1, math.ceil(wait))

    def record(self, client: str, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        with self._lock:
            times = self._failures.pop(client, None)
            if times is None:
                times = deque(maxlen=self.max_failures)
            while times and times[0] + self.window_seconds <= now:
                times.popleft()
            times.append(now)
            self._failures[client] = times  # most recent last
            while len(self._failures) > self.max_clients:
                self._failures.popitem(last=False)
