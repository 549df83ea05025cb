"""Per-deployment rate limits: requests per minute, tokens per minute, requests in flight.

In memory, per server process, thread-safe, with no database: a limit protects the process that
serves the requests (several servers each enforce the full limit). The chat endpoint calls
:meth:`RateLimiter.admit` before it generates, with the request's token estimate (prompt tokens
plus ``max_tokens``, as Azure counts it), and :meth:`Admission.finish` when the answer is done,
with the tokens actually used.

**A sliding one-minute window, not a token bucket.** Each admitted request is logged with its
time and tokens; a request is admitted when the requests and tokens logged within the last 60 s,
plus its own, stay within the limits. So a limit means exactly what its name says — at most N
requests and T tokens in *any* 60 s — where a bucket lets a full minute's burst through and then
refills, admitting up to twice the limit within a minute. The log also lets ``finish`` replace a
request's estimate by its actual count in place: the correction leaves the window at the moment
the estimate would have, and the headers stay exact. Memory is one small entry per request
within the minute, at most ``requests_per_minute`` per deployment; keys idle for a minute are
dropped.

Headers follow OpenAI's ``x-ratelimit-*``: ``remaining`` is what is left in the window now, and
``reset`` the time until the window's whole capacity is back (when the newest logged request
leaves it). A refusal (:class:`~tunesmith.errors.RateLimited`, 429) names every limit that was
hit, and ``retry-after`` (whole seconds, at least 1) says when this request would fit.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections import deque
from dataclasses import dataclass, field

from tunesmith.errors import RateLimited

WINDOW_SECONDS = 60.0
WAIT_POLL_SECONDS = 0.02
"""How often a request waiting for a slot looks again (an in-memory check of microseconds)."""
CONCURRENCY_RETRY_SECONDS = 1
"""A request refused for concurrency is told to retry after this: slots free as answers end."""


@dataclass(frozen=True, slots=True)
class RateLimits:
    requests_per_minute: int
    tokens_per_minute: int
    max_concurrent_requests: int


@dataclass(slots=True, eq=False)  # identity: an entry is found and removed as itself
class _Entry:
    at: float
    tokens: int
    counted: bool = True  # False once it has left the window


@dataclass(slots=True)
class _Window:
    """One key's log of the last minute and its requests in flight."""

    entries: deque[_Entry] = field(default_factory=deque)
    tokens: int = 0  # the sum of the entries' tokens
    in_flight: int = 0

    def prune(self, now: float) -> None:
        while self.entries and self.entries[0].at + WINDOW_SECONDS <= now:
            gone = self.entries.popleft()
            gone.counted = False
            self.tokens -= gone.tokens

    def reset_requests(self, now: float) -> float:
        return self.entries[-1].at + WINDOW_SECONDS - now if self.entries else 0.0

    def reset_tokens(self, now: float) -> float:
        for entry in reversed(self.entries):
            if entry.tokens > 0:
                return entry.at + WINDOW_SECONDS - now
        return 0.0

    def headers(self, limits: RateLimits, now: float) -> dict[str, str]:
        return {
            "x-ratelimit-limit-requests": str(limits.requests_per_minute),
            "x-ratelimit-limit-tokens": str(limits.tokens_per_minute),
            "x-ratelimit-remaining-requests": str(
                max(0, limits.requests_per_minute - len(self.entries))
            ),
            "x-ratelimit-remaining-tokens": str(max(0, limits.tokens_per_minute - self.tokens)),
            "x-ratelimit-reset-requests": format_duration(self.reset_requests(now)),
            "x-ratelimit-reset-tokens": format_duration(self.reset_tokens(now)),
        }


def format_duration(seconds: float) -> str:
    """A wait as OpenAI writes it: ``"0s"``, ``"20ms"``, ``"1.5s"``, ``"60s"`` (rounded up)."""
    millis = math.ceil(round(seconds * 1000, 6))
    if millis <= 0:
        return "0s"
    if millis < 1000:
        return f"{millis}ms"
    return f"{millis / 1000:.3f}".rstrip("0").rstrip(".") + "s"


class Admission:
    """An admitted request. ``headers`` go out with its response; call :meth:`finish` once it
    is answered (or has failed) to free its concurrency slot and record its actual tokens."""

    __slots__ = ("_done", "_entry", "_limits", "_lock", "_window", "headers")

    def __init__(
        self,
        lock: threading.Lock,
        window: _Window,
        entry: _Entry,
        limits: RateLimits,
        headers: dict[str, str],
    ) -> None:
        self._lock = lock
        self._window = window
        self._entry = entry
        self._limits = limits
        self._done = False
        self.headers = headers

    def charge(self, tokens: int, *, now: float) -> None:
        """Adds the request's token estimate to an admission of :meth:`RateLimiter.reserve`, or
        raises :class:`RateLimited` (429) when it would exceed ``tokens_per_minute``: then the
        request is taken out of the window (a refused request is not counted) and its slot is
        freed."""
        if tokens < 0:
            raise ValueError(f"a request's token estimate cannot be negative; got {tokens}")
        with self._lock:
            window, entry = self._window, self._entry
            window.prune(now)
            problems, wait = _token_refusals(window, self._limits, tokens, now)
            if problems:
                self._withdraw_locked()
                raise _refused(problems, wait, window, self._limits, now)
            if entry.counted:
                window.tokens += tokens
            entry.tokens += tokens
            self.headers = window.headers(self._limits, now)

    def withdraw(self) -> None:
        """Takes a request refused before it was served out of the window, as if it had never
        been admitted (a refused request is not counted), and frees its slot; after
        :meth:`finish` it does nothing."""
        with self._lock:
            self._withdraw_locked()

    def _withdraw_locked(self) -> None:
        if self._done:
            return
        self._done = True
        self._window.in_flight -= 1
        entry = self._entry
        if entry.counted:
            self._window.entries.remove(entry)
            self._window.tokens -= entry.tokens
            entry.counted = False

    def finish(self, actual_tokens: int, *, now: float) -> None:
        """Frees the slot and replaces the estimate by ``actual_tokens``; later calls do nothing."""
        with self._lock:
            if self._done:
                return
            self._done = True
            self._window.in_flight -= 1
            self._window.prune(now)
            actual = max(0, actual_tokens)
            if self._entry.counted:  # a request older than a minute no longer counts at all
                self._window.tokens += actual - self._entry.tokens
            self._entry.tokens = actual


class RateLimiter:
    """The limits of every deployment of one server process, keyed by deployment id."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._windows: dict[str, _Window] = {}
        self._waiting: dict[str, int] = {}
        """Requests waiting for a slot (``wait_for_room``), by key."""
        self._collected_at = -math.inf

    def admit(self, key: str, limits: RateLimits, tokens: int, *, now: float) -> Admission:
        """Admits a request estimated at ``tokens``, or raises :class:`RateLimited` (429)."""
        if tokens < 0:
            raise ValueError(f"a request's token estimate cannot be negative; got {tokens}")
        with self._lock:
            self._collect(now)
            window = self._windows.setdefault(key, _Window())
            window.prune(now)
            problems, wait = _request_refusals(window, limits, now)
            more, token_wait = _token_refusals(window, limits, tokens, now)
            problems += more
            if problems:
                busy = len(problems) == 1 and window.in_flight >= limits.max_concurrent_requests
                raise _refused(problems, max(wait, token_wait), window, limits, now, busy=busy)
            entry = _Entry(now, tokens)
            window.entries.append(entry)
            window.tokens += tokens
            window.in_flight += 1
            return Admission(self._lock, window, entry, limits, window.headers(limits, now))

    def reserve(self, key: str, limits: RateLimits, *, now: float) -> Admission:
        """Admits a request whose tokens are not known yet, by its count and concurrency alone,
        or raises :class:`RateLimited` (429); :meth:`Admission.charge` adds its tokens once
        known. A request is refused this way before any work is spent on it (rendering its
        prompt, waiting for its model to load)."""
        return self.admit(key, limits, 0, now=now)

    async def wait_for_room(
        self, key: str, limits: RateLimits, *, wait_seconds: float
    ) -> Admission:
        """:meth:`reserve`, waiting while the deployment's requests in flight are at their
        limit: for up to ``wait_seconds``, and with at most as many waiting as may be in flight
        (one more is refused at once). A refusal for another limit is never waited out. The
        wait holds no thread: a crowd is admitted in turn as answers end, instead of retrying
        in a storm of refusals that would take the engine's time."""
        deadline = time.monotonic() + wait_seconds
        waiting = False
        try:
            while True:
                if waiting and time.monotonic() < deadline and not self._has_room(key, limits):
                    await asyncio.sleep(WAIT_POLL_SECONDS)  # a read of one count: no refusal built
                    continue
                try:
                    return self.reserve(key, limits, now=time.time())
                except RateLimited as refused:
                    if not refused.busy or time.monotonic() >= deadline:
                        raise
                    if not waiting:
                        with self._lock:
                            if self._waiting.get(key, 0) >= limits.max_concurrent_requests:
                                raise
                            self._waiting[key] = self._waiting.get(key, 0) + 1
                        waiting = True
                await asyncio.sleep(WAIT_POLL_SECONDS)
        finally:
            if waiting:
                with self._lock:
                    self._waiting[key] -= 1
                    if not self._waiting[key]:
                        del self._waiting[key]

    def _has_room(self, key: str, limits: RateLimits) -> bool:
        with self._lock:
            window = self._windows.get(key)
            return window is None or window.in_flight < limits.max_concurrent_requests

    def _collect(self, now: float) -> None:
        """Drops keys with nothing in their window and nothing in flight, once a minute."""
        if now - self._collected_at < WINDOW_SECONDS:
            return
        self._collected_at = now
        for key, window in list(self._windows.items()):
            window.prune(now)
            if not window.entries and window.in_flight == 0:
                del self._windows[key]


def _refused(
    problems: list[str],
    wait: float,
    window: _Window,
    limits: RateLimits,
    now: float,
    *,
    busy: bool = False,
) -> RateLimited:
    retry_after = max(1, math.ceil(round(wait, 6)))
    headers = {"retry-after": str(retry_after), **window.headers(limits, now)}
    return RateLimited(
        "Rate limit reached for this deployment: "
        + "; ".join(problems)
        + f". Retry after {retry_after} s, or ask the project's owner to raise the "
        "limit (PATCH /v1/deployments/<deployment> with rate_limits).",
        headers=headers,
        busy=busy,
    )


def _request_refusals(window: _Window, limits: RateLimits, now: float) -> tuple[list[str], float]:
    """Which of the request limits one more request would exceed, and how long until it fits."""
    problems: list[str] = []
    wait = 0.0
    count = len(window.entries)
    if count + 1 > limits.requests_per_minute:
        oldest_to_leave = window.entries[count - limits.requests_per_minute]
        until = oldest_to_leave.at + WINDOW_SECONDS - now
        wait = max(wait, until)
        problems.append(
            f"requests_per_minute is {limits.requests_per_minute} and {count} request(s) were "
            f"made in the last minute (the next one is allowed in {format_duration(until)})"
        )
    if window.in_flight + 1 > limits.max_concurrent_requests:
        wait = max(wait, float(CONCURRENCY_RETRY_SECONDS))
        problems.append(
            f"max_concurrent_requests is {limits.max_concurrent_requests} and "
            f"{window.in_flight} request(s) are in flight; retry when one has finished"
        )
    return problems, wait


def _token_refusals(
    window: _Window, limits: RateLimits, tokens: int, now: float
) -> tuple[list[str], float]:
    """Whether ``tokens`` more would exceed ``tokens_per_minute``, and how long until they fit."""
    problems: list[str] = []
    wait = 0.0
    if tokens > limits.tokens_per_minute:
        wait = max(wait, WINDOW_SECONDS)
        problems.append(
            f"this request is estimated at {tokens} tokens (prompt + max_tokens), more than the "
            f"whole tokens_per_minute limit of {limits.tokens_per_minute}; lower max_tokens or "
            "shorten the prompt"
        )
    elif window.tokens + tokens > limits.tokens_per_minute:
        excess = window.tokens + tokens - limits.tokens_per_minute
        until = 0.0
        for entry in window.entries:  # oldest first: the order they leave the window
            excess -= entry.tokens
            if excess <= 0:
                until = entry.at + WINDOW_SECONDS - now
                break
        wait = max(wait, until)
        problems.append(
            f"tokens_per_minute is {limits.tokens_per_minute}, {window.tokens} were used in the "
            f"last minute and this request is estimated at {tokens} (prompt + max_tokens); "
            f"it fits in {format_duration(until)}"
        )
    return problems, wait
