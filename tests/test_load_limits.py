"""Load (issue 15, finding 0): a crowd of requests is answered 429 or 503 with ``retry-after``,
never 500, and never waits on the database longer than the pool's timeout. The pool is sized
from the settings: as many connections as the threads that run blocking request work, plus
the server's own background threads.

The load itself (64 streamed clients, goodput under overload) is measured by ``bench/load.py``;
these tests pin the rules it relies on."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine

from tests.conftest import ADMIN_KEY, TOY_BASE, LiveServer, run_live
from tests.test_chat_api import HELLO, deploy
from tunesmith.api.app import create_app
from tunesmith.settings import Settings


@pytest.fixture
def small(tmp_path: Path, toy_model_dir: Path) -> Iterator[LiveServer]:
    settings = Settings(
        home=tmp_path / "home",
        admin_key=ADMIN_KEY,
        validation_model_dir=toy_model_dir,
        embedded_worker=False,
        request_threads=4,
        database_pool_timeout_seconds=0.5,
    )
    yield from run_live(create_app(settings), settings)


def _engine(live: LiveServer) -> Engine:
    bind = live.app.state.runtime.sessions.kw["bind"]
    assert isinstance(bind, Engine)
    return bind


def test_the_pool_is_sized_from_the_request_threads(small: LiveServer) -> None:
    assert small.settings.database_pool_size() == 4 + 8
    assert _engine(small).pool.size() == small.settings.database_pool_size()  # type: ignore[attr-defined]


def test_a_database_with_no_free_connection_answers_503_with_retry_after(
    small: LiveServer,
) -> None:
    engine = _engine(small)
    held = [engine.connect() for _ in range(small.settings.database_pool_size())]
    try:
        with small.http() as http:
            busy = http.get("/v1/files")
        assert busy.status_code == 503, busy.text
        assert busy.headers["retry-after"] == "1"
        error = busy.json()["error"]
        assert error["type"] == "server_error"
        assert error["code"] == "server_busy"
        assert "TUNESMITH_REQUEST_THREADS" in error["message"]
    finally:
        for connection in held:
            connection.close()
    with small.http() as http:  # a connection is free again: served at once
        assert http.get("/v1/files").status_code == 200


def test_a_crowd_on_a_new_deployment_is_answered_in_turn_never_500(jobs_api: LiveServer) -> None:
    """The load of finding 0, in small: 24 streamed clients at once on a deployment created a
    moment before (its model not loaded yet) with 4 places in flight. Each request is answered
    200 after waiting its turn, or 429 with ``retry-after`` once the waiting places are taken;
    none answers 5xx or fails to connect, and a normal request is served after."""
    deploy(jobs_api, "crowded", TOY_BASE, rate_limits={"max_concurrent_requests": 4})
    body = {"model": "crowded", "messages": HELLO, "max_tokens": 8, "stream": True}
    statuses: list[int] = []
    refusals: list[httpx.Headers] = []

    def one() -> None:
        with jobs_api.http() as http, http.stream("POST", "/v1/chat/completions", json=body) as r:
            lines = list(r.iter_lines())
            statuses.append(r.status_code)
            if r.status_code == 200:
                assert "data: [DONE]" in lines
            if r.status_code == 429:
                refusals.append(r.headers)

    with ThreadPoolExecutor(max_workers=24) as pool:
        for future in [pool.submit(one) for _ in range(24)]:
            future.result()
    assert len(statuses) == 24
    assert set(statuses) <= {200, 429}, statuses
    assert statuses.count(200) >= 8  # 4 in flight and 4 waiting, at the least
    assert all("retry-after" in h and "x-ratelimit-limit-requests" in h for h in refusals)
    with jobs_api.http() as http:
        after = http.post("/v1/chat/completions", json={**body, "stream": False})
    assert after.status_code == 200, after.text
