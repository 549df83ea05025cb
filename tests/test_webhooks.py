"""Webhooks: endpoints managed with the official client's ``client.webhooks``, events signed so
that ``client.webhooks.unwrap`` verifies them, retries with backoff, giving up, one sender per
delivery, subscriptions, roles and project isolation."""

from __future__ import annotations

import base64
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import openai
import pytest
from openai.types.webhooks import (
    DeletedWebhookEndpoint,
    FineTuningJobFailedWebhookEvent,
    FineTuningJobSucceededWebhookEvent,
    WebhookEndpoint,
    WebhookEndpointWithSecret,
)
from sqlalchemy.orm import Session, sessionmaker

from tests.conftest import LiveServer
from tests.test_auth import make_key, make_project
from tunesmith import webhook_delivery, webhooks
from tunesmith.auth import DEFAULT_PROJECT_ID, ensure_default_project
from tunesmith.settings import Settings
from tunesmith.store.db import make_engine, make_session_factory, transaction
from tunesmith.store.migrate import upgrade_to_head
from tunesmith.store.tables import WebhookDeliveryRow
from tunesmith.webhook_targets import Allow

DEADLINE = 10.0  # seconds; generous, each wait normally ends within a few polls
MAX_ATTEMPTS = 3
LOOPBACK = Allow.parse("127.0.0.1")
EVERY = list(webhooks.EVENT_TYPES)


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(
        update={
            "webhook_retry_base_seconds": 0.02,
            "webhook_poll_seconds": 0.05,
            "webhook_max_attempts": MAX_ATTEMPTS,
            # The receivers here listen on loopback; example.com is never delivered to.
            "webhook_allow": "127.0.0.1, example.com",
        }
    )


@dataclass
class Received:
    body: bytes
    headers: dict[str, str]


class Receiver:
    """A webhook receiver on a free loopback port: answers ``fail_status`` to the first
    ``failures`` requests, then 200, after ``delay`` seconds each (and, given ``hold``, only
    once it is set: a receiver that hangs until the test lets it go)."""

    def __init__(
        self,
        *,
        failures: int = 0,
        fail_status: int = 500,
        delay: float = 0,
        hold: threading.Event | None = None,
    ) -> None:
        self.requests: list[Received] = []
        self._arrived = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                time.sleep(delay)
                with receiver._arrived:
                    receiver.requests.append(Received(body, dict(self.headers.items())))
                    failing = len(receiver.requests) <= failures
                    receiver._arrived.notify_all()
                if hold is not None:
                    hold.wait(DEADLINE)
                self.send_response(fail_status if failing else 200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *_args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/hooks"
        threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()

    def wait_for(self, count: int) -> list[Received]:
        with self._arrived:
            if not self._arrived.wait_for(lambda: len(self.requests) >= count, DEADLINE):
                raise AssertionError(f"{len(self.requests)} of {count} webhook requests arrived")
            return list(self.requests)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def receiver() -> Iterator[Callable[..., Receiver]]:
    started: list[Receiver] = []

    def start(**kwargs: Any) -> Receiver:
        started.append(Receiver(**kwargs))
        return started[-1]

    yield start
    for one in started:
        one.close()


def emit(
    factory: sessionmaker[Session],
    event_type: str,
    *,
    job_id: str = "ftjob-test",
    project_id: str = DEFAULT_PROJECT_ID,
    now: int | None = None,
) -> None:
    """What the jobs code does when a job ends."""
    with transaction(factory) as session:
        webhooks.enqueue(
            session,
            project_id=project_id,
            event_type=event_type,
            data={"id": job_id},
            now=int(time.time()) if now is None else now,
        )


def deliveries(live: LiveServer, webhook_id: str, key: str | None = None) -> list[dict[str, Any]]:
    http = live.http(key) if key else live.http()
    response = http.get(f"/v1/webhook_endpoints/{webhook_id}/deliveries")
    assert response.status_code == 200, response.text
    return list(response.json()["data"])


def wait_until(check: Callable[[], Any]) -> Any:
    deadline = time.monotonic() + DEADLINE
    while not (result := check()):
        if time.monotonic() > deadline:
            raise AssertionError("the condition did not hold before the deadline")
        time.sleep(0.02)
    return result


def test_event_arrives_signed_and_unwraps_with_the_openai_client(
    live: LiveServer, receiver: Callable[..., Receiver]
) -> None:
    client, rx = live.client(), receiver()
    created = client.webhooks.create(
        name="ci", url=rx.url, event_types=["fine_tuning.job.succeeded"]
    )
    assert isinstance(created, WebhookEndpointWithSecret)
    assert created.id.startswith("wh_")
    assert (created.name, created.url) == ("ci", rx.url)
    assert created.event_types == ["fine_tuning.job.succeeded"]
    secret = created.signing_secret
    assert secret.startswith("whsec_") and len(base64.b64decode(secret[6:])) == 32
    assert created.signing_secret_hint and secret.startswith(created.signing_secret_hint[:-1])
    # The secret is shown once only.
    retrieved = client.webhooks.retrieve(created.id)
    assert isinstance(retrieved, WebhookEndpoint)
    assert retrieved.id == created.id
    assert live.http().get(f"/v1/webhook_endpoints/{created.id}").json()["signing_secret"] is None
    assert [w.id for w in client.webhooks.list()] == [created.id]

    emit(live.app.state.runtime.sessions, "fine_tuning.job.succeeded", job_id="ftjob-abc")
    (request,) = rx.wait_for(1)
    event = client.webhooks.unwrap(request.body, request.headers, secret=secret)
    assert isinstance(event, FineTuningJobSucceededWebhookEvent)
    assert (event.object, event.type, event.data.id) == (
        "event",
        "fine_tuning.job.succeeded",
        "ftjob-abc",
    )
    assert event.id.startswith("evt_")
    assert request.headers["webhook-id"] == event.id
    assert request.headers["content-type"] == "application/json"
    with pytest.raises(openai.InvalidWebhookSignatureError):
        tampered = request.body.replace(b"ftjob-abc", b"ftjob-xyz")
        client.webhooks.unwrap(tampered, request.headers, secret=secret)
    with pytest.raises(openai.InvalidWebhookSignatureError):
        client.webhooks.unwrap(request.body, request.headers, secret=webhooks.new_signing_secret())

    (delivery,) = wait_until(
        lambda: [d for d in deliveries(live, created.id) if d["status"] == "delivered"]
    )
    assert delivery["event_id"] == event.id
    assert delivery["event_type"] == "fine_tuning.job.succeeded"
    assert (delivery["attempts"], delivery["last_status_code"]) == (1, 200)
    assert delivery["last_error"] is None and delivery["next_attempt_at"] is None


def test_failed_answers_are_retried_until_delivered(
    live: LiveServer, receiver: Callable[..., Receiver]
) -> None:
    client, rx = live.client(), receiver(failures=MAX_ATTEMPTS - 1)
    created = client.webhooks.create(name="", url=rx.url, event_types=["fine_tuning.job.failed"])
    emit(live.app.state.runtime.sessions, "fine_tuning.job.failed", job_id="ftjob-bad")

    requests = rx.wait_for(MAX_ATTEMPTS)
    events = [
        client.webhooks.unwrap(r.body, r.headers, secret=created.signing_secret) for r in requests
    ]
    assert all(isinstance(e, FineTuningJobFailedWebhookEvent) for e in events)
    # Every attempt carries the same event (receivers deduplicate by webhook-id), signed anew.
    assert len({r.headers["webhook-id"] for r in requests}) == 1
    assert len({r.body for r in requests}) == 1
    stamps = [int(r.headers["webhook-timestamp"]) for r in requests]
    assert stamps == sorted(stamps)

    (delivery,) = wait_until(
        lambda: [d for d in deliveries(live, created.id) if d["status"] == "delivered"]
    )
    assert (delivery["attempts"], delivery["last_status_code"]) == (MAX_ATTEMPTS, 200)


def test_a_delivery_gives_up_after_max_attempts(
    live: LiveServer, receiver: Callable[..., Receiver]
) -> None:
    rx = receiver(failures=1000, fail_status=503)
    created = live.client().webhooks.create(
        name="down", url=rx.url, event_types=["fine_tuning.job.cancelled"]
    )
    emit(live.app.state.runtime.sessions, "fine_tuning.job.cancelled")

    (delivery,) = wait_until(
        lambda: [d for d in deliveries(live, created.id) if d["status"] == "failed"]
    )
    assert (delivery["attempts"], delivery["last_status_code"]) == (MAX_ATTEMPTS, 503)
    assert delivery["last_error"] == "http_503"
    assert delivery["next_attempt_at"] is None
    assert len(rx.requests) == MAX_ATTEMPTS


@pytest.fixture
def store(tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    """A database without a server, so the test alone decides when deliveries run."""
    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    upgrade_to_head(engine)
    factory = make_session_factory(engine)
    with transaction(factory) as session:
        ensure_default_project(session, 0)
    yield factory
    engine.dispose()


def add_webhook(factory: sessionmaker[Session], url: str) -> None:
    with transaction(factory) as session:
        webhooks.create_webhook(
            session,
            project_id=DEFAULT_PROJECT_ID,
            name="",
            url=url,
            event_types=None,
            now=0,
            allow=LOOPBACK,
        )


def unused_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def the_delivery(factory: sessionmaker[Session]) -> WebhookDeliveryRow:
    with factory() as session:
        (row,) = session.query(WebhookDeliveryRow).all()
        return row


def test_retries_back_off_exponentially_then_fail(store: sessionmaker[Session]) -> None:
    add_webhook(store, f"http://127.0.0.1:{unused_port()}/gone")
    emit(store, "fine_tuning.job.succeeded", now=1000)

    def attempt(now: float) -> int:
        return webhook_delivery.deliver_due(
            store,
            now=now,
            timeout_seconds=2,
            max_attempts=4,
            retry_base_seconds=10,
            allow=LOOPBACK,
        )

    assert attempt(999.0) == 0  # not due yet
    schedule = []
    for now in (1000.0, 1010.0, 1030.0):
        assert attempt(now - 0.5) == 0
        assert attempt(now) == 1
        row = the_delivery(store)
        assert row.status == "pending"
        assert row.last_status_code is None and row.last_error == "connection_refused"
        assert row.next_attempt_at is not None
        schedule.append(row.next_attempt_at - now)
    assert schedule == [10.0, 20.0, 40.0]
    assert attempt(1070.0) == 1
    row = the_delivery(store)
    assert (row.status, row.attempts, row.next_attempt_at) == ("failed", 4, None)
    assert attempt(10_000.0) == 0


def test_a_delivery_is_sent_by_one_process_at_a_time(
    store: sessionmaker[Session], receiver: Callable[..., Receiver]
) -> None:
    rx = receiver(delay=0.3)
    add_webhook(store, rx.url)
    emit(store, "fine_tuning.job.succeeded", now=1000)
    start = threading.Barrier(4)
    attempted: list[int] = []

    def deliver() -> None:
        start.wait()
        attempted.append(
            webhook_delivery.deliver_due(
                store,
                now=1000,
                timeout_seconds=5,
                max_attempts=3,
                retry_base_seconds=1,
                allow=LOOPBACK,
            )
        )

    threads = [threading.Thread(target=deliver) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(attempted) == [0, 0, 0, 1]
    assert len(rx.requests) == 1
    row = the_delivery(store)
    assert (row.status, row.attempts, row.last_status_code) == ("delivered", 1, 200)


def test_events_reach_only_subscribed_endpoints_of_the_project(
    live: LiveServer, receiver: Callable[..., Receiver]
) -> None:
    http = live.http()
    failed_rx, all_rx, other_rx = receiver(), receiver(), receiver()
    failed_only = http.post(
        "/v1/webhook_endpoints",
        json={"url": failed_rx.url, "event_types": ["fine_tuning.job.failed"]},
    ).json()
    everything = http.post("/v1/webhook_endpoints", json={"url": all_rx.url}).json()
    assert everything["event_types"] == [
        "fine_tuning.job.succeeded",
        "fine_tuning.job.failed",
        "fine_tuning.job.cancelled",
    ]
    other_key = make_key(live, make_project(live, "other"), "owner")
    other = live.client(other_key).webhooks.create(
        name="other", url=other_rx.url, event_types=["fine_tuning.job.succeeded"]
    )

    sessions = live.app.state.runtime.sessions
    emit(sessions, "fine_tuning.job.succeeded")
    (first,) = all_rx.wait_for(1)
    assert b'"fine_tuning.job.succeeded"' in first.body
    assert deliveries(live, failed_only["id"]) == []
    assert deliveries(live, other.id, key=other_key) == []

    emit(sessions, "fine_tuning.job.failed")
    (request,) = failed_rx.wait_for(1)
    assert b'"fine_tuning.job.failed"' in request.body
    assert len(all_rx.wait_for(2)) == 2
    assert other_rx.requests == []


BAD_ENDPOINTS: list[tuple[dict[str, Any], str, str]] = [
    ({"url": "ftp://example.com/hook"}, "url", "must start with http:// or https://"),
    ({"url": "example.com/hook"}, "url", "must start with http:// or https://"),
    ({"url": "https://"}, "url", "has no host"),
    ({"url": "https://exa mple.com/"}, "url", "spaces or control characters"),
    ({"url": "https://example.com:99999/"}, "url", "Port out of range"),
    ({}, "url", "Field required"),
    (
        {"url": "https://example.com/", "event_types": ["batch.completed"]},
        "event_types",
        "Unknown event type(s) 'batch.completed'; tunesmith sends",
    ),
    ({"url": "https://example.com/", "event_types": []}, "event_types", "at least one"),
]


def test_bad_endpoints_answer_400_naming_the_param(live: LiveServer) -> None:
    http = live.http()
    for body, param, message in BAD_ENDPOINTS:  # one server for all cases keeps this fast
        response = http.post("/v1/webhook_endpoints", json=body)
        assert response.status_code == 400, body
        error = response.json()["error"]
        assert set(error) == {"message", "type", "param", "code"}
        assert (error["type"], error["param"]) == ("invalid_request_error", param), body
        assert message in error["message"], body
    assert http.get("/v1/webhook_endpoints").json()["data"] == []


def test_owners_manage_readers_look_and_other_projects_see_nothing(live: LiveServer) -> None:
    team = make_project(live, "team")
    owner = live.client(make_key(live, team, "owner"))
    reader = live.client(make_key(live, team, "reader"))
    other_key = make_key(live, make_project(live, "other"), "owner")
    other = live.client(other_key)
    created = owner.webhooks.create(
        name="team", url="https://example.com/hook", event_types=["fine_tuning.job.succeeded"]
    )

    with pytest.raises(openai.PermissionDeniedError) as err:
        reader.webhooks.create(
            name="no", url="https://example.com/x", event_types=["fine_tuning.job.failed"]
        )
    assert err.value.status_code == 403
    assert err.value.code == "insufficient_permissions"
    assert [w.id for w in reader.webhooks.list()] == [created.id]
    assert reader.webhooks.retrieve(created.id).url == "https://example.com/hook"
    with pytest.raises(openai.PermissionDeniedError):
        reader.webhooks.delete(created.id)

    for call in (other.webhooks.retrieve, other.webhooks.delete):
        with pytest.raises(openai.NotFoundError) as missing:
            call(created.id)
        assert missing.value.body["param"] == "webhook_endpoint_id"  # type: ignore[index]
    assert other.webhooks.list().data == []
    gone = live.http(other_key).get(f"/v1/webhook_endpoints/{created.id}/deliveries")
    assert gone.status_code == 404
    assert live.client().webhooks.list().data == []  # the admin acts in the default project

    deleted = owner.webhooks.delete(created.id)
    assert isinstance(deleted, DeletedWebhookEndpoint)
    assert (deleted.id, deleted.deleted, deleted.object) == (
        created.id,
        True,
        "webhook_endpoint.deleted",
    )
    with pytest.raises(openai.NotFoundError):
        owner.webhooks.retrieve(created.id)


def test_a_hanging_receiver_does_not_delay_other_projects(
    live: LiveServer, receiver: Callable[..., Receiver]
) -> None:
    release = threading.Event()
    stuck_rx, other_rx = receiver(hold=release), receiver()
    stuck_project, other_project = make_project(live, "stuck"), make_project(live, "other")
    stuck_key = make_key(live, stuck_project, "owner")
    other_key = make_key(live, other_project, "owner")
    stuck = live.client(stuck_key).webhooks.create(name="", url=stuck_rx.url, event_types=EVERY)
    other = live.client(other_key).webhooks.create(name="", url=other_rx.url, event_types=EVERY)
    sessions = live.app.state.runtime.sessions
    try:
        emit(sessions, "fine_tuning.job.succeeded", project_id=stuck_project)
        stuck_rx.wait_for(1)  # from here the stuck receiver holds its request open
        emit(sessions, "fine_tuning.job.succeeded", project_id=other_project)
        other_rx.wait_for(1)
        wait_until(lambda: deliveries(live, other.id, other_key)[0]["status"] == "delivered")
        assert deliveries(live, stuck.id, stuck_key)[0]["status"] == "pending"
    finally:
        release.set()
    wait_until(lambda: deliveries(live, stuck.id, stuck_key)[0]["status"] == "delivered")


def _trickling_receiver() -> tuple[socket.socket, threading.Event]:
    """A receiver that answers one header byte every 0.2 s, for ever: each read is quick, so
    only a deadline for the whole attempt ends it."""
    server = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                connection, _ = server.accept()
            except OSError:
                return
            with connection:
                connection.recv(65536)
                connection.sendall(b"HTTP/1.1 200 OK\r\n")
                while not stop.wait(0.2):
                    try:
                        connection.sendall(b"x")
                    except OSError:
                        break

    threading.Thread(target=serve, daemon=True).start()
    return server, stop


def test_a_trickling_receiver_is_cut_off_at_the_attempts_deadline(
    store: sessionmaker[Session],
) -> None:
    """Finding 5 of issue 15: a receiver that keeps each read short but never finishes its
    answer held its delivery lane for ever; one deadline now covers the whole attempt."""
    server, stop = _trickling_receiver()
    add_webhook(store, f"http://127.0.0.1:{server.getsockname()[1]}/hook")
    emit(store, "fine_tuning.job.succeeded", now=1000)
    done: list[int] = []

    def attempt() -> None:
        done.append(
            webhook_delivery.deliver_due(
                store,
                now=1000,
                timeout_seconds=1.0,
                max_attempts=3,
                retry_base_seconds=1,
                allow=LOOPBACK,
            )
        )

    thread = threading.Thread(target=attempt, daemon=True)
    thread.start()
    thread.join(timeout=20)  # generous: the deadline is 1 s
    stop.set()
    server.close()
    assert done == [1], "the attempt did not end at its deadline"
    delivery = the_delivery(store)
    assert (delivery.status, delivery.last_error) == ("pending", "timeout")
