"""Request bodies (issue 15, finding 1): the key is checked before a body is read, and every JSON
body is read through one capped reader that refuses a body over its limit with 413 in the OpenAI
envelope: from ``Content-Length`` before reading, and while reading a chunked body."""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
from fastapi.routing import APIRoute, RouteContext, iter_route_contexts

from tests.conftest import ADMIN_KEY, LiveServer, run_live
from tunesmith.api.app import create_app
from tunesmith.api.body import CappedRoute
from tunesmith.settings import Settings

FIVE_GB = 5 * 1024**3
PROMPT = 20.0
"""Seconds a refusal may take: generous, far below what reading 5 GB would take."""


def _routes(live: LiveServer) -> list[RouteContext]:
    """Every API route of the app, as served (with its router's prefix)."""
    return [
        r for r in iter_route_contexts(live.app.routes) if isinstance(r.original_route, APIRoute)
    ]


def _posts(live: LiveServer) -> list[str]:
    """Every POST, PUT or PATCH path of the app, path parameters filled in."""
    paths = set()
    for route in _routes(live):
        if route.methods and route.methods & {"POST", "PATCH", "PUT"}:
            path = re.sub(r"\{[^}]+\}", "x", route.path or "")
            if path.startswith("/openai/") and not path.startswith("/openai/v1/"):
                path += "?api-version=2024-10-21"
            for method in sorted(route.methods & {"POST", "PATCH", "PUT"}):
                paths.add(f"{method} {path}")
    return sorted(paths)


def _raw(live: LiveServer, head: str, body: bytes = b"") -> tuple[int, bytes]:
    """Sends a request head and the start of its body over a raw socket, and reads the answer
    (its status and body) without ever sending the rest."""
    parts = urlsplit(live.url)
    with socket.create_connection((parts.hostname, parts.port), timeout=PROMPT) as sock:
        sock.sendall(head.encode() + body)
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
        header, _, rest = answer.partition(b"\r\n\r\n")
        status = int(header.split(b" ", 2)[1])
        length = re.search(rb"(?i)content-length: *(\d+)", header)
        if length is not None:
            while len(rest) < int(length.group(1)):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                rest += chunk
        return status, rest


def _head(method_path: str, *, length: int, key: str | None = None) -> str:
    method, path = method_path.split(" ", 1)
    auth = f"Authorization: Bearer {key}\r\n" if key else ""
    return (
        f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"{auth}Content-Length: {length}\r\n\r\n"
    )


def test_every_route_reads_bodies_through_the_capped_route(live: LiveServer) -> None:
    routes = _routes(live)
    assert len(routes) > 40
    plain = [r.path for r in routes if not isinstance(r.original_route, CappedRoute)]
    plain = [p for p in plain if p != "/"]  # the portal's redirect, which reads nothing
    assert plain == []


def test_without_a_key_a_huge_body_is_refused_before_it_is_read(live: LiveServer) -> None:
    """A 5 GB body declared and a few bytes sent: every route answers 401 at once, where it used
    to wait for the body (FastAPI reads a declared body before any dependency runs)."""
    routes = _posts(live)
    assert len(routes) > 20
    for route in routes:
        status, body = _raw(live, _head(route, length=FIVE_GB), b'{"name": "x')
        assert status == 401, (route, status, body[:200])
        assert b'"invalid_request_error"' in body, route
    # The server still serves.
    assert live.http().get("/v1/projects").status_code == 200


def test_a_wrong_key_is_refused_before_the_body_is_read(live: LiveServer) -> None:
    status, _ = _raw(live, _head("POST /v1/projects", length=FIVE_GB, key="tsk-wrong"), b"{")
    assert status == 401


@pytest.mark.parametrize(
    ("route", "setting"),
    [
        ("POST /v1/projects", "max_json_bytes"),
        ("POST /v1/fine_tuning/jobs", "max_json_bytes"),
        ("POST /v1/uploads", "max_json_bytes"),
        ("POST /v1/uploads/x/complete", "max_json_bytes"),
        ("POST /v1/chat/completions", "max_request_bytes"),
        ("POST /v1/moderations", "max_request_bytes"),
        ("POST /endpoints/x/y/v1/chat/completions", "max_request_bytes"),
    ],
)
def test_a_declared_length_over_the_cap_answers_413_before_reading(
    live: LiveServer, route: str, setting: str
) -> None:
    status, body = _raw(live, _head(route, length=FIVE_GB, key=ADMIN_KEY), b"{")
    assert status == 413, body[:300]
    limit = getattr(live.settings, setting)
    assert f"{limit} bytes".encode() in body
    assert f"TUNESMITH_{setting.upper()}".encode() in body
    assert b'"code":"request_too_large"' in body
    assert live.http().get("/v1/projects").status_code == 200


@pytest.fixture
def small_live(settings: Settings) -> Iterator[LiveServer]:
    small = settings.model_copy(update={"max_json_bytes": 4096, "max_request_bytes": 8192})
    yield from run_live(create_app(small), small)


def _chunked(total: int) -> Iterator[bytes]:
    """A project's body, chunked, padded to ``total`` bytes with spaces."""
    yield b'{"name": "chunked"'
    sent = 0
    while sent < total:
        yield b" " * 1024
        sent += 1024
    yield b"}"


def test_a_chunked_body_is_cut_at_the_cap(small_live: LiveServer) -> None:
    """No Content-Length to trust: the body is counted as it arrives and cut at the cap."""
    http = small_live.http()
    response = http.post(
        "/v1/projects", content=_chunked(5000), headers={"content-type": "application/json"}
    )
    assert response.status_code == 413, response.text
    error: Any = response.json()["error"]
    assert error["code"] == "request_too_large"
    assert "4096 bytes" in error["message"]
    assert "TUNESMITH_MAX_JSON_BYTES" in error["message"]
    # Under the cap, chunked or not, the same route serves.
    fine = http.post(
        "/v1/projects", content=_chunked(2000), headers={"content-type": "application/json"}
    )
    assert fine.status_code == 200, fine.text
    assert http.post("/v1/projects", json={"name": "normal"}).status_code == 200


def test_a_body_over_the_cap_is_refused_but_validation_errors_still_name_fields(
    small_live: LiveServer,
) -> None:
    http = small_live.http()
    big = http.post("/v1/projects", json={"name": "x" * 5000})
    assert big.status_code == 413
    assert big.json()["error"]["code"] == "request_too_large"
    invalid = http.post("/v1/projects", json={"nam": "x"})
    assert invalid.status_code == 400
    assert invalid.json()["error"]["param"] == "name"
    # The chat limit is its own: 6000 bytes pass the JSON cap's 4096 but not the chat one's 8192.
    moderated = http.post("/v1/moderations", json={"input": "x" * 6000})
    assert moderated.status_code == 200, moderated.text
