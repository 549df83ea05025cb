"""What a caller may ask of the job queue, against a live server (no worker: the jobs stay
where they are put): a priority above the ceiling only with the admin key, a cap on each
project's active jobs (429 ``rate_limit_exceeded``, for creating and for resuming), and the
operator's bounds on the options that size a job's memory, each refusal naming its field."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import (
    ADMIN_KEY,
    TOY_BASE,
    LiveServer,
    jobs_settings_for,
    register_toy_base,
    run_live,
)
from tests.helpers import training_file
from tunesmith.api.app import create_app
from tunesmith.store.db import transaction
from tunesmith.store.tables import JobRow

CAP = 3


@pytest.fixture
def server(tmp_path: Path, toy_model_dir: Path) -> Iterator[LiveServer]:
    settings = jobs_settings_for(
        tmp_path / "home",
        toy_model_dir,
        embedded_worker=False,
        job_max_active_per_project=CAP,
    )
    app = create_app(settings)
    register_toy_base(app, toy_model_dir)
    yield from run_live(app, settings)


def key_for(live: LiveServer, role: str, project: str = "proj_default") -> str:
    with live.http() as http:
        key = http.post(f"/v1/projects/{project}/api_keys", json={"name": role, "role": role})
        assert key.status_code == 200, key.text
    return str(key.json()["value"])


def new_project(live: LiveServer) -> str:
    with live.http() as http:
        return str(http.post("/v1/projects", json={"name": "other team"}).json()["id"])


def upload(live: LiveServer, key: str) -> str:
    client = live.client(key)
    return client.files.create(file=("t.jsonl", training_file(12)), purpose="fine-tune").id


def post_job(live: LiveServer, key: str, training: str, **fields: Any) -> httpx.Response:
    with live.http(key) as http:
        return http.post(
            "/v1/fine_tuning/jobs", json={"model": TOY_BASE, "training_file": training, **fields}
        )


def assert_refused(response: httpx.Response, status: int, param: str | None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["param"] == param, error
    return error


def test_only_the_admin_sets_a_priority_above_the_ceiling(server: LiveServer) -> None:
    ceiling = server.settings.job_priority_ceiling
    for role in ("contributor", "owner"):
        key = key_for(server, role)
        training = upload(server, key)
        error = assert_refused(post_job(server, key, training, priority=100), 403, "priority")
        assert error["code"] == "insufficient_permissions"
        assert f"above {ceiling}" in error["message"] and role in error["message"]
        with pytest.raises(openai.PermissionDeniedError):  # the official client sees a 403
            server.client(key).fine_tuning.jobs.create(
                model=TOY_BASE, training_file=training, extra_body={"priority": ceiling + 1}
            )
        allowed = post_job(server, key, training, priority=ceiling)
        assert allowed.status_code == 200, allowed.text
        assert allowed.json()["priority"] == ceiling
        server.client(key).fine_tuning.jobs.cancel(allowed.json()["id"])
    admin = server.client()
    urgent = admin.fine_tuning.jobs.create(
        model=TOY_BASE, training_file=upload(server, ADMIN_KEY), extra_body={"priority": 100}
    )
    assert urgent.priority == 100  # type: ignore[attr-defined]
    with server.http() as http:
        listed = http.get("/v1/fine_tuning/jobs").json()["data"]
    assert [j["priority"] for j in listed if j["status"] != "cancelled"] == [100]


def test_a_project_has_at_most_its_cap_of_active_jobs(server: LiveServer) -> None:
    key = key_for(server, "contributor")
    training = upload(server, key)
    jobs = [post_job(server, key, training).json()["id"] for _ in range(CAP)]
    refused = post_job(server, key, training)
    error = assert_refused(refused, 429, None)
    assert error["code"] == "rate_limit_exceeded"
    assert f"limit of {CAP} active fine-tuning jobs" in error["message"]
    assert refused.headers["retry-after"].isdigit()
    assert refused.headers["x-should-retry"] == "false"  # the official client fails at once
    with pytest.raises(openai.RateLimitError):
        server.client(key).fine_tuning.jobs.create(model=TOY_BASE, training_file=training)
    with server.http(key) as http:
        assert len(http.get("/v1/fine_tuning/jobs").json()["data"]) == CAP  # nothing created

    other = new_project(server)  # another project has its own room
    other_key = key_for(server, "contributor", other)
    assert post_job(server, other_key, upload(server, other_key)).status_code == 200

    server.client(key).fine_tuning.jobs.cancel(jobs[0])  # a finished job frees its place
    assert post_job(server, key, training).status_code == 200
    assert_refused(post_job(server, key, training), 429, None)


def test_racing_creates_never_pass_the_cap(server: LiveServer) -> None:
    """Eight creates at once, two places left: the project's row lock lets exactly two in."""
    key = key_for(server, "contributor")
    training = upload(server, key)
    assert post_job(server, key, training).status_code == 200
    barrier = threading.Barrier(8)
    statuses: list[int] = []

    def create() -> None:
        barrier.wait()
        statuses.append(post_job(server, key, training).status_code)

    threads = [threading.Thread(target=create) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(statuses) == [200] * (CAP - 1) + [429] * (8 - CAP + 1)
    with server.http(key) as http:
        assert len(http.get("/v1/fine_tuning/jobs").json()["data"]) == CAP


def test_resuming_a_paused_job_needs_room_too(server: LiveServer) -> None:
    key = key_for(server, "contributor")
    training = upload(server, key)
    paused = post_job(server, key, training).json()["id"]
    with transaction(server.app.state.runtime.sessions) as session:
        job = session.get(JobRow, paused)
        assert job is not None
        job.status = "paused"  # as after a pause in the queue: it holds no place
    others = [post_job(server, key, training) for _ in range(CAP)]
    assert [r.status_code for r in others] == [200] * CAP
    with server.http(key) as http:
        error = assert_refused(http.post(f"/v1/fine_tuning/jobs/{paused}/resume"), 429, None)
        assert error["code"] == "rate_limit_exceeded"
        assert http.get(f"/v1/fine_tuning/jobs/{paused}").json()["status"] == "paused"
        http.post(f"/v1/fine_tuning/jobs/{others[0].json()['id']}/cancel")
        resumed = http.post(f"/v1/fine_tuning/jobs/{paused}/resume")
        assert resumed.status_code == 200 and resumed.json()["status"] == "queued"


WHERE = "method.supervised.hyperparameters"


@pytest.mark.parametrize(
    ("options", "param", "needle"),
    [
        ({"lora_rank": 1024}, f"{WHERE}.lora_rank", "at most 256"),
        ({"tokens_per_micro_batch": 1 << 24}, f"{WHERE}.tokens_per_micro_batch", "at most 32768"),
        (
            {"target_modules": [f"m{i}" for i in range(1000)]},
            f"{WHERE}.target_modules",
            "at most 64 module names",
        ),
    ],
    ids=["lora_rank", "tokens_per_micro_batch", "target_modules"],
)
def test_options_that_size_memory_are_bounded(
    server: LiveServer, options: dict[str, Any], param: str, needle: str
) -> None:
    key = key_for(server, "contributor")
    training = upload(server, key)
    method = {"type": "supervised", "supervised": {"hyperparameters": options}}
    error = assert_refused(post_job(server, key, training, method=method), 400, param)
    assert error["type"] == "invalid_request_error" and needle in error["message"]
    at_bound = {"lora_rank": 256, "tokens_per_micro_batch": 32768}
    for name, value in at_bound.items():
        method = {"type": "supervised", "supervised": {"hyperparameters": {name: value}}}
        assert post_job(server, key, training, method=method).status_code == 200
    with server.http(key) as http:
        for job in http.get("/v1/fine_tuning/jobs").json()["data"]:
            http.post(f"/v1/fine_tuning/jobs/{job['id']}/cancel")
