"""Small builders for test data."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")


def chat_example(i: int, *, system: bool = True) -> dict[str, Any]:
    messages = [
        {"role": "user", "content": f"What is {i} plus {i}?"},
        {"role": "assistant", "content": f"{i} plus {i} is {2 * i}."},
    ]
    if system:
        messages.insert(0, {"role": "system", "content": "You answer arithmetic briefly."})
    return {"messages": messages}


def jsonl(rows: list[dict[str, Any]]) -> bytes:
    return ("\n".join(json.dumps(r) for r in rows) + "\n").encode()


def training_file(n: int = 12) -> bytes:
    return jsonl([chat_example(i) for i in range(n)])


def wait_for_job(client: Any, job_id: str, statuses: set[str], *, timeout: float = 120.0) -> Any:
    """Polls a job until its status is one of ``statuses``; fails on a timeout or on reaching
    another final status."""
    import time

    deadline = time.monotonic() + timeout
    final = {"succeeded", "failed", "cancelled"}
    while True:
        job = client.fine_tuning.jobs.retrieve(job_id)
        if job.status in statuses:
            return job
        if job.status in final:
            raise AssertionError(f"job {job_id} ended {job.status} ({job.error}), not {statuses}")
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} still {job.status} after {timeout} s")
        time.sleep(0.05)


def all_events(client: Any, job_id: str) -> list[Any]:
    """Every event of a job, oldest first (the API pages newest first)."""
    events: list[Any] = []
    after = None
    while True:
        page = client.fine_tuning.jobs.list_events(job_id, limit=100, after=after)
        events.extend(page.data)
        if not page.has_more:
            return list(reversed(events))
        after = page.data[-1].id


def wait_for_deployment(http: Any, name: str, *, timeout: float = 120.0) -> dict[str, Any]:
    """Polls a deployment (``GET /v1/deployments/{name}`` through an ``httpx`` client) until it
    is no longer ``creating``; returns it."""
    deadline = time.monotonic() + timeout
    while True:
        response = http.get(f"/v1/deployments/{name}")
        assert response.status_code == 200, response.text
        deployment: dict[str, Any] = response.json()
        if deployment["status"] != "creating":
            return deployment
        if time.monotonic() > deadline:
            raise AssertionError(f"deployment {name} still creating after {timeout} s")
        time.sleep(0.05)


def run_coroutine(coroutine: Coroutine[Any, Any, T]) -> T:
    """Runs ``coroutine`` to its end on an event loop of its own, in a thread of its own: a
    session fixture (Playwright's sync API) may keep a loop running in the test's thread, where
    ``asyncio.run`` refuses to start."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


def wait_registered(http: Any, model_id: str, timeout: float = 60.0) -> dict[str, Any]:
    """Polls a base model (through an ``httpx`` client) until its registration has ended."""
    deadline = time.monotonic() + timeout
    while True:
        response = http.get(f"/v1/base_models/{model_id}")
        assert response.status_code == 200, response.text
        entry: dict[str, Any] = response.json()
        if entry["status"] != "registering":
            return entry
        assert time.monotonic() < deadline, f"{model_id} still registering: {entry['progress']}"
        time.sleep(0.05)
