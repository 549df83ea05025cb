"""Webhook delivery: the deliveries :func:`tunesmith.webhooks.enqueue` made, sent.

:class:`Dispatcher`, run in a loop by the server, sends due deliveries signed by the Standard
Webhooks scheme and retries any answer other than 2xx with exponential backoff until
``max_attempts``; :func:`deliver_due` is one pass that waits for its attempts.

Invariants: a delivery is sent by one process at a time (it is claimed by an atomic UPDATE
that pushes ``next_attempt_at`` ahead before the request goes out); no transaction is open
during a request; a result is recorded only by the claim that made the attempt; one deadline
covers each attempt, and the host is checked again (and connected to as checked) every time.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import ssl
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import httpx
from sqlalchemy import CursorResult, func, select, update
from sqlalchemy.orm import Session, sessionmaker

from tunesmith import __version__
from tunesmith.store.db import transaction
from tunesmith.store.tables import WebhookDeliveryRow, WebhookRow
from tunesmith.webhook_targets import NOTHING_ALLOWED, Allow, RefusedTarget, check_target
from tunesmith.webhooks import port_of, sign

log = logging.getLogger(__name__)

T = TypeVar("T")
USER_AGENT = f"tunesmith/{__version__} webhooks"
MAX_RETRY_SECONDS = 3600.0  # the cap of the exponential backoff
# A claimed delivery is not due again for this long, so no other process sends it meanwhile;
# far beyond one attempt (TUNESMITH_WEBHOOK_TIMEOUT_SECONDS is at most 60 s). A process that
# dies mid-request leaves it to be retried once this has passed.
CLAIM_SECONDS = 600.0
# Deliveries in flight at once, and per project: one slow receiver holds at most its
# project's share, so other projects' events go out meanwhile.
DELIVERY_WORKERS = 16
PER_PROJECT_IN_FLIGHT = 2


@dataclass(frozen=True, slots=True)
class _Claim:
    delivery_id: str
    attempt: int  # the delivery's attempts after this claim; fences the result
    event_id: str
    payload: str
    url: str
    secret: str


def deliver_due(
    factory: sessionmaker[Session],
    *,
    now: float,
    timeout_seconds: float,
    max_attempts: int,
    retry_base_seconds: float,
    allow: Allow = NOTHING_ALLOWED,
) -> int:
    """Makes one attempt at every delivery due at ``now`` and waits for them; returns how many
    were attempted (a :class:`Dispatcher` pass, for tests and one-off runs)."""
    dispatcher = Dispatcher()
    try:
        lanes = dispatcher.start(
            factory,
            now=now,
            timeout_seconds=timeout_seconds,
            max_attempts=max_attempts,
            retry_base_seconds=retry_base_seconds,
            allow=allow,
        )
        return sum(lane.result() for lane in lanes)
    finally:
        dispatcher.close()


class Dispatcher:
    """Sends due deliveries on its own threads, in passes that do not wait for each other.

    2xx delivers; any other answer, a connection error or a timeout schedules the next attempt
    ``retry_base_seconds * 2**(attempt-1)`` later (at most an hour), or fails the delivery once
    it has had ``max_attempts``. Deliveries another process claimed are skipped.

    Attempts run concurrently (``DELIVERY_WORKERS`` threads), each project's deliveries in at
    most ``PER_PROJECT_IN_FLIGHT`` lanes at a time, counted across passes, and started
    round-robin across projects: a slow receiver holds only its own project's lanes, and the
    next pass starts the other projects' deliveries while it is still in flight."""

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=DELIVERY_WORKERS, thread_name_prefix="webhook")
        self._lock = threading.Lock()
        self._lanes: dict[str, int] = defaultdict(int)
        """Lanes started and not yet ended, by project."""

    def close(self) -> None:
        """Stops starting lanes; attempts in flight end at their deadline."""
        self._pool.shutdown(wait=False, cancel_futures=True)

    def start(
        self,
        factory: sessionmaker[Session],
        *,
        now: float,
        timeout_seconds: float,
        max_attempts: int,
        retry_base_seconds: float,
        allow: Allow = NOTHING_ALLOWED,
    ) -> list[Future[int]]:
        """Starts lanes for the deliveries due at ``now``; each lane's future says how many
        attempts it made."""
        due = _due(factory, now=now, max_attempts=max_attempts)
        with self._lock:
            free = {p: PER_PROJECT_IN_FLIGHT - self._lanes[p] for _, p in due}
        lanes: dict[str, list[list[str]]] = {p: [[] for _ in range(n)] for p, n in free.items()}
        counts: dict[str, int] = defaultdict(int)
        for delivery_id, project_id in due:
            if free[project_id] > 0:
                lanes[project_id][counts[project_id] % free[project_id]].append(delivery_id)
                counts[project_id] += 1
        # Round-robin: every project's first lane before any project's second.
        ordered = [
            (project, lane)
            for rank in range(PER_PROJECT_IN_FLIGHT)
            for project, project_lanes in lanes.items()
            if rank < len(project_lanes)
            for lane in [project_lanes[rank]]
            if lane
        ]

        def run_lane(lane: list[str]) -> int:
            attempted = 0
            for delivery_id in lane:
                claim = _claim(factory, delivery_id, now=now, max_attempts=max_attempts)
                if claim is None:
                    continue
                status_code, error = _send(claim, allow, timeout_seconds)
                _record(
                    factory,
                    claim,
                    status_code=status_code,
                    error=error,
                    now=now,
                    max_attempts=max_attempts,
                    retry_base_seconds=retry_base_seconds,
                )
                attempted += 1
            return attempted

        started = []
        for project, lane in ordered:
            with self._lock:
                self._lanes[project] += 1
            future = self._pool.submit(run_lane, lane)
            future.add_done_callback(functools.partial(self._ended, project))
            started.append(future)
        return started

    def _ended(self, project: str, _lane: Future[int]) -> None:
        with self._lock:
            self._lanes[project] -= 1
            if self._lanes[project] <= 0:
                del self._lanes[project]


def _due(factory: sessionmaker[Session], *, now: float, max_attempts: int) -> list[Any]:
    """The deliveries due at ``now`` (id, project), oldest first; those a process that died
    during their last attempt left pending are failed: nothing more is owed."""
    with transaction(factory) as session:
        session.execute(
            update(WebhookDeliveryRow)
            .where(
                WebhookDeliveryRow.status == "pending",
                WebhookDeliveryRow.next_attempt_at <= now,
                WebhookDeliveryRow.attempts >= max_attempts,
            )
            .values(
                status="failed",
                next_attempt_at=None,
                last_error=func.coalesce(WebhookDeliveryRow.last_error, "no_answer_recorded"),
            )
            .execution_options(synchronize_session=False)
        )
        return list(
            session.execute(
                select(WebhookDeliveryRow.id, WebhookRow.project_id)
                .join(WebhookRow, WebhookRow.id == WebhookDeliveryRow.webhook_id)
                .where(
                    WebhookDeliveryRow.status == "pending",
                    WebhookDeliveryRow.next_attempt_at <= now,
                )
                .order_by(WebhookDeliveryRow.next_attempt_at, WebhookDeliveryRow.id)
            ).all()
        )


def _claim(
    factory: sessionmaker[Session], delivery_id: str, *, now: float, max_attempts: int
) -> _Claim | None:
    with transaction(factory) as session:
        result = session.execute(
            update(WebhookDeliveryRow)
            .where(
                WebhookDeliveryRow.id == delivery_id,
                WebhookDeliveryRow.status == "pending",
                WebhookDeliveryRow.next_attempt_at <= now,
                WebhookDeliveryRow.attempts < max_attempts,
            )
            .values(
                attempts=WebhookDeliveryRow.attempts + 1,
                next_attempt_at=now + CLAIM_SECONDS,
                last_attempt_at=int(now),
            )
            .execution_options(synchronize_session=False)
        )
        if cast("CursorResult[Any]", result).rowcount != 1:  # another process claimed it
            return None
        row = session.execute(
            select(
                WebhookDeliveryRow.attempts,
                WebhookDeliveryRow.event_id,
                WebhookDeliveryRow.payload,
                WebhookRow.url,
                WebhookRow.secret,
            )
            .join(WebhookRow, WebhookRow.id == WebhookDeliveryRow.webhook_id)
            .where(WebhookDeliveryRow.id == delivery_id)
        ).one()
    return _Claim(delivery_id, row.attempts, row.event_id, row.payload, row.url, row.secret)


def _caused_by(exc: BaseException, kind: type[BaseException]) -> bool:
    seen: BaseException | None = exc
    for _ in range(10):  # the chain httpx → httpcore → OSError is short
        if seen is None:
            return False
        if isinstance(seen, kind):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def error_category(exc: BaseException) -> str:
    """What the delivery log records for a failed attempt: a category, never the exception's
    text (which would echo the network's internals to the endpoint's owner)."""
    if isinstance(exc, RefusedTarget):
        return exc.category
    if isinstance(exc, httpx.TimeoutException):
        return "timeout"
    if _caused_by(exc, ssl.SSLError):
        return "tls_error"
    if _caused_by(exc, ConnectionRefusedError):
        return "connection_refused"
    if isinstance(exc, httpx.ConnectError) and "refused" in str(exc).lower():
        return "connection_refused"
    if isinstance(exc, httpx.ConnectError):
        return "connection_error"
    return "request_error"


def _send(claim: _Claim, allow: Allow, timeout_seconds: float) -> tuple[int | None, str | None]:
    """One POST to the address checked now; the status code (None without an answer) and an
    error category, if it failed. Redirects are not followed (a 3xx is a failed attempt).

    One deadline, ``timeout_seconds``, covers the whole attempt: resolving the host,
    connecting, TLS, sending and the answer's headers. A receiver that trickles its answer a
    byte at a time, or a resolver that never answers, is cut off there, not at each read."""
    deadline = time.monotonic() + timeout_seconds
    # Signed at sending time: receivers refuse timestamps more than five minutes old.
    timestamp = int(time.time())
    headers = {
        "content-type": "application/json",
        "user-agent": USER_AGENT,
        "webhook-id": claim.event_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(
            claim.secret, event_id=claim.event_id, timestamp=timestamp, body=claim.payload
        ),
    }
    try:
        url = httpx.URL(claim.url)
        port = port_of(url.port, url.scheme)
        ip = _within(timeout_seconds, lambda: check_target(url.host, port, allow))
        # Connect to the checked address; Host and TLS (SNI and certificate check, which
        # httpcore takes from ``sni_hostname``) still name the host.
        headers["host"] = url.netloc.decode("ascii")
        target = url.copy_with(host=str(ip))
        sni = {"sni_hostname": url.host} if url.scheme == "https" else {}
        status_code = asyncio.run(
            _post(target, headers, claim.payload.encode(), sni, deadline - time.monotonic())
        )
    except (RefusedTarget, httpx.HTTPError, httpx.InvalidURL, ValueError) as exc:
        return None, error_category(exc)
    except TimeoutError:
        return None, "timeout"
    if 200 <= status_code < 300:
        return status_code, None
    return status_code, f"http_{status_code}"


async def _post(
    url: httpx.URL, headers: dict[str, str], body: bytes, extensions: dict[str, Any], seconds: float
) -> int:
    """The receiver's status code, within ``seconds`` (``TimeoutError`` past them); its body
    is never read: only its status counts."""
    async with asyncio.timeout(max(seconds, 0.0)):
        async with httpx.AsyncClient(timeout=None, follow_redirects=False) as client:
            request = client.build_request(
                "POST", url, content=body, headers=headers, extensions=extensions
            )
            response = await client.send(request, stream=True)
            await response.aclose()
            return response.status_code


def _within(seconds: float, work: Callable[[], T]) -> T:
    """``work()`` on a thread of its own, waited for ``seconds`` at most (``TimeoutError``):
    a name lookup cannot be interrupted, but the attempt need not wait for it."""
    result: Future[T] = Future()

    def run() -> None:
        try:
            result.set_result(work())
        except BaseException as exc:
            result.set_exception(exc)

    threading.Thread(target=run, name="webhook-resolve", daemon=True).start()
    return result.result(timeout=seconds)


def _record(
    factory: sessionmaker[Session],
    claim: _Claim,
    *,
    status_code: int | None,
    error: str | None,
    now: float,
    max_attempts: int,
    retry_base_seconds: float,
) -> None:
    values: dict[str, Any] = {"last_status_code": status_code, "last_error": error}
    if error is None:
        values |= {"status": "delivered", "next_attempt_at": None}
    elif claim.attempt >= max_attempts:
        values |= {"status": "failed", "next_attempt_at": None}
        log.warning(
            "webhook delivery %s failed after %d attempts: %s",
            claim.delivery_id,
            claim.attempt,
            error,
        )
    else:
        delay = min(retry_base_seconds * 2 ** (claim.attempt - 1), MAX_RETRY_SECONDS)
        values["next_attempt_at"] = now + delay
    with transaction(factory) as session:
        # Only the claim that made this attempt may record it (the delivery may also have
        # been deleted with its endpoint meanwhile: then nothing is updated).
        session.execute(
            update(WebhookDeliveryRow)
            .where(
                WebhookDeliveryRow.id == claim.delivery_id,
                WebhookDeliveryRow.attempts == claim.attempt,
            )
            .values(**values)
            .execution_options(synchronize_session=False)
        )
