"""Usage metering: served requests summed by ``GET /v1/usage``, time windows, grouping by
deployment, hosting hours of deleted and live deployments, trained tokens of finished jobs
(succeeded ones by the validation report's estimate, cancelled and failed ones by what they
trained before they stopped), and the cost arithmetic of a custom price table. Times are passed
to the services, never slept."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import (
    ADMIN_KEY,
    TOY_BASE,
    LiveServer,
    jobs_settings_for,
    register_toy_base,
    run_live,
)
from tests.helpers import all_events, training_file, wait_for_job
from tests.test_jobs_api import (
    create,
    project_key,
    upload,
    wait_for_message,
    wait_for_metrics,
)
from tests.test_jobs_faults import job_row
from tunesmith import usage
from tunesmith.api.app import create_app
from tunesmith.auth import authenticate
from tunesmith.catalog.spec import BUNDLED
from tunesmith.deployments.routing import resolve_target
from tunesmith.deployments.service import create_deployment, delete_deployment
from tunesmith.ratelimits import RateLimits
from tunesmith.settings import Prices
from tunesmith.store.db import transaction

HOUR = 3600
PRICES = Prices(
    currency="EUR",
    input_per_million_tokens=2.0,
    output_per_million_tokens=10.0,
    training_per_million_tokens=5.0,
    hosting_per_hour=0.5,
)
DEFAULTS = RateLimits(requests_per_minute=100, tokens_per_minute=10_000, max_concurrent_requests=4)


def priced_server(
    tmp_path: Path, toy_model_dir: Path, *, worker: bool, **overrides: object
) -> Iterator[LiveServer]:
    settings = jobs_settings_for(
        tmp_path / "home", toy_model_dir, prices=PRICES, embedded_worker=worker, **overrides
    )
    app = create_app(settings)
    register_toy_base(app, toy_model_dir)
    yield from run_live(app, settings)


@pytest.fixture
def priced(tmp_path: Path, toy_model_dir: Path) -> Iterator[LiveServer]:
    yield from priced_server(tmp_path, toy_model_dir, worker=False)


@pytest.fixture
def priced_jobs(tmp_path: Path, toy_model_dir: Path) -> Iterator[LiveServer]:
    yield from priced_server(tmp_path, toy_model_dir, worker=True)


def report(http: httpx.Client, **params: Any) -> dict[str, Any]:
    response = http.get("/v1/usage", params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def by_name(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {d["deployment"]: d for d in body["deployments"]}


def deploy_at(live: LiveServer, name: str, model: str, now: int) -> str:
    with transaction(live.app.state.runtime.sessions) as session:
        row = create_deployment(
            session,
            project_id="proj_default",
            name=name,
            model=model,
            rate_limits=None,
            content_filter=True,
            defaults=DEFAULTS,
            sealer=live.app.state.runtime.sealer,
            now=now,
        )
        return row.id


def serve(live: LiveServer, model: str, prompt: int, completion: int, now: int, kind: Any) -> None:
    """What the chat endpoint does after answering: resolve, then record."""
    runtime = live.app.state.runtime
    with transaction(runtime.sessions) as session:
        principal = authenticate(session, ADMIN_KEY, admin_key_hash=runtime.admin_key_hash, now=now)
        target = resolve_target(session, principal, model, now=now)
        usage.record_request(
            session,
            deployment=target.deployment,
            kind=kind,
            prompt_tokens=prompt,
            completion_tokens=completion,
            now=now,
        )


@pytest.fixture
def history(priced: LiveServer) -> tuple[LiveServer, int, dict[str, str]]:
    """alpha (live since T), beta (from T+1h to T+3h, then deleted), and four requests."""
    t = int(time.time()) - 100 * HOUR
    ids = {"alpha": deploy_at(priced, "alpha", TOY_BASE, t)}
    ids["beta"] = deploy_at(priced, "beta", BUNDLED.id, t + HOUR)
    serve(priced, "alpha", 100, 20, t + 10, "chat")
    serve(priced, TOY_BASE, 50, 5, t + 20, "completion")  # by the model's id
    serve(priced, "beta", 10, 1, t + HOUR + 100, "chat")
    serve(priced, "alpha", 1000, 200, t + 2 * HOUR, "chat")
    with transaction(priced.app.state.runtime.sessions) as session:
        delete_deployment(session, project_id="proj_default", name="beta", now=t + 3 * HOUR)
    return priced, t, ids


def test_requests_are_summed_per_deployment(
    history: tuple[LiveServer, int, dict[str, str]],
) -> None:
    live, t, ids = history
    body = report(live.http())
    assert body["object"] == "usage.report" and body["project_id"] == "proj_default"
    assert body["start_time"] == 0 and body["deployment"] is None
    assert body["end_time"] >= t + 100 * HOUR
    totals = body["totals"]
    assert (totals["requests"], totals["prompt_tokens"], totals["completion_tokens"]) == (
        4,
        1160,
        226,
    )
    assert totals["total_tokens"] == 1386
    entries = by_name(body)
    assert [d["deployment"] for d in body["deployments"]] == ["alpha", "beta"]
    alpha, beta = entries["alpha"], entries["beta"]
    assert (alpha["deployment_id"], alpha["model"], alpha["deleted"]) == (
        ids["alpha"],
        TOY_BASE,
        False,
    )
    assert (alpha["requests"], alpha["prompt_tokens"], alpha["completion_tokens"]) == (
        3,
        1150,
        225,
    )
    assert alpha["total_tokens"] == 1375
    assert (beta["deployment_id"], beta["model"], beta["deleted"]) == (
        ids["beta"],
        BUNDLED.id,
        True,
    )
    assert (beta["requests"], beta["prompt_tokens"], beta["completion_tokens"]) == (1, 10, 1)
    # beta was hosted two hours; alpha since T, up to now (a few seconds of slack)
    assert beta["hosting_seconds"] == 2 * HOUR and beta["hosting_hours"] == 2.0
    assert 100 * HOUR <= alpha["hosting_seconds"] <= 100 * HOUR + 120
    assert totals["hosting_seconds"] == alpha["hosting_seconds"] + beta["hosting_seconds"]
    assert body["fine_tuning"] == []


def test_windows_cut_requests_and_hosting_time(
    history: tuple[LiveServer, int, dict[str, str]],
) -> None:
    live, t, _ = history
    http = live.http()
    first_hour = report(http, start_time=t, end_time=t + HOUR)
    assert [d["deployment"] for d in first_hour["deployments"]] == ["alpha"]
    alpha = by_name(first_hour)["alpha"]
    assert (alpha["requests"], alpha["prompt_tokens"], alpha["hosting_seconds"]) == (2, 150, HOUR)
    assert alpha["hosting_hours"] == 1.0
    assert (first_hour["start_time"], first_hour["end_time"]) == (t, t + HOUR)

    # [T+1h, T+2h]: the boundary request of T+2h is in, the one of T+20 s out
    later = report(http, start_time=t + HOUR, end_time=t + 2 * HOUR + 1)
    entries = by_name(later)
    assert entries["alpha"]["requests"] == 1 and entries["alpha"]["prompt_tokens"] == 1000
    assert entries["beta"]["requests"] == 1
    assert entries["alpha"]["hosting_seconds"] == HOUR + 1
    assert entries["beta"]["hosting_seconds"] == HOUR + 1
    assert later["totals"]["requests"] == 2

    # after beta was deleted only alpha was hosted
    after = report(http, start_time=t + 3 * HOUR, end_time=t + 4 * HOUR)
    assert [d["deployment"] for d in after["deployments"]] == ["alpha"]
    assert by_name(after)["alpha"]["requests"] == 0
    assert after["totals"]["hosting_seconds"] == HOUR

    before = report(http, end_time=t)  # before anything was deployed
    assert before["deployments"] == [] and before["totals"]["requests"] == 0
    assert before["totals"]["cost"]["total"] == 0.0


def test_a_deployment_filter_limits_the_report(
    history: tuple[LiveServer, int, dict[str, str]],
) -> None:
    live, _, ids = history
    beta = report(live.http(), deployment="beta")  # deleted, but its use is still there
    assert beta["deployment"] == "beta"
    assert [d["deployment_id"] for d in beta["deployments"]] == [ids["beta"]]
    assert beta["totals"]["requests"] == 1 and beta["totals"]["hosting_seconds"] == 2 * HOUR
    assert beta["fine_tuning"] == []


def test_costs_follow_the_price_table(history: tuple[LiveServer, int, dict[str, str]]) -> None:
    live, t, _ = history
    body = report(live.http(), start_time=t + HOUR, end_time=t + 2 * HOUR + 1)
    assert body["prices"] == {
        "currency": "EUR",
        "input_per_million_tokens": 2.0,
        "output_per_million_tokens": 10.0,
        "training_per_million_tokens": 5.0,
        "hosting_per_hour": 0.5,
    }
    prompt, completion, hosted = 1010, 201, 2 * (HOUR + 1)
    cost = body["totals"]["cost"]
    assert cost["currency"] == "EUR"
    assert cost["input"] == pytest.approx(prompt * 2.0 / 1e6)
    assert cost["output"] == pytest.approx(completion * 10.0 / 1e6)
    assert cost["hosting"] == pytest.approx(hosted / HOUR * 0.5, abs=1e-6)
    assert cost["training"] == 0.0
    assert cost["total"] == pytest.approx(
        cost["input"] + cost["output"] + cost["hosting"], abs=2e-6
    )
    alpha = by_name(body)["alpha"]["cost"]
    assert alpha["input"] == pytest.approx(1000 * 2.0 / 1e6)
    assert alpha["output"] == pytest.approx(200 * 10.0 / 1e6)
    assert alpha["hosting"] == pytest.approx((HOUR + 1) / HOUR * 0.5, abs=1e-6)


def test_projects_see_only_their_own_usage(
    history: tuple[LiveServer, int, dict[str, str]],
) -> None:
    live, _, _ = history
    with live.http(project_key(live, "reader")) as stranger:
        body = report(stranger)
        assert body["deployments"] == [] and body["totals"]["requests"] == 0
        assert stranger.get("/v1/usage", params={"deployment": "alpha"}).status_code == 404


@pytest.mark.parametrize(
    ("params", "status", "param"),
    [
        ({"start_time": 100, "end_time": 100}, 400, "end_time"),
        ({"start_time": 200, "end_time": 100}, 400, "end_time"),
        ({"start_time": -1}, 400, "start_time"),
        ({"start_time": 10**20}, 400, "start_time"),
        ({"end_time": 10**20}, 400, "end_time"),
        ({"start_time": 2**63 - 1, "end_time": 2**63}, 400, "start_time"),
        ({"start_time": 0, "end_time": 2**62}, 400, "end_time"),
        ({"end_time": "yesterday"}, 400, "end_time"),
        ({"deployment": "never-deployed"}, 404, "deployment"),
    ],
)
def test_bad_windows_and_filters_name_the_param(
    priced: LiveServer, params: dict[str, Any], status: int, param: str
) -> None:
    response = priced.http().get("/v1/usage", params=params)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["param"] == param
    assert set(error) == {"message", "type", "param", "code"}


def test_negative_token_counts_are_a_programming_error(
    history: tuple[LiveServer, int, dict[str, str]],
) -> None:
    live, t, _ = history
    with pytest.raises(ValueError, match="negative"):
        serve(live, "alpha", -1, 0, t + 30, "chat")


def billable_tokens(live: LiveServer, file_id: str) -> int:
    """The file's tokens as its validation report counts them: one epoch's trained tokens."""
    stats = live.http().get(f"/v1/files/{file_id}/validation").json()["statistics"]
    return int(stats["billable_tokens"])


def trained_by_step(client: Any, job_id: str) -> dict[int, int]:
    """The job's running count of trained tokens, from its metrics events."""
    events = all_events(client, job_id)
    return {e.data["step"]: e.data["trained_tokens"] for e in events if e.type == "metrics"}


def test_trained_tokens_of_finished_jobs_are_counted_and_priced(priced_jobs: LiveServer) -> None:
    client = priced_jobs.client()
    training = upload(client, training_file(12))
    job = wait_for_job(client, create(client, training).id, {"succeeded"})
    assert job.finished_at
    # two epochs (FAST): exactly the validation report's estimate for two epochs
    assert job.trained_tokens == 2 * billable_tokens(priced_jobs, training)
    body = report(priced_jobs.http())
    (trained,) = body["fine_tuning"]
    assert trained == {
        "fine_tuning_job": job.id,
        "model": TOY_BASE,
        "fine_tuned_model": job.fine_tuned_model,
        "status": "succeeded",
        "finished_at": job.finished_at,
        "trained_tokens": job.trained_tokens,
        "cost": pytest.approx(job.trained_tokens * 5.0 / 1e6),
    }
    assert body["totals"]["trained_tokens"] == job.trained_tokens
    assert body["totals"]["cost"]["training"] == pytest.approx(job.trained_tokens * 5.0 / 1e6)
    assert body["totals"]["cost"]["total"] == body["totals"]["cost"]["training"]
    assert report(priced_jobs.http(), end_time=job.finished_at)["fine_tuning"] == []
    window = report(priced_jobs.http(), start_time=job.finished_at, end_time=job.finished_at + 1)
    assert [j["fine_tuning_job"] for j in window["fine_tuning"]] == [job.id]


def assert_metered(live: LiveServer, job: Any) -> None:
    """The job is the report's one fine-tuning row, by what it trained, priced."""
    body = report(live.http())
    (row,) = body["fine_tuning"]
    assert row["fine_tuning_job"] == job.id and row["status"] == job.status
    assert row["finished_at"] == job.finished_at
    assert row["trained_tokens"] == job.trained_tokens
    assert row["cost"] == pytest.approx(job.trained_tokens * 5.0 / 1e6)
    assert body["totals"]["trained_tokens"] == job.trained_tokens
    assert body["totals"]["cost"]["training"] == pytest.approx(job.trained_tokens * 5.0 / 1e6)


def test_a_cancelled_job_counts_what_it_trained_before_it_stopped(
    priced_jobs: LiveServer,
) -> None:
    client = priced_jobs.client()
    training = upload(client, training_file(12))
    billable = billable_tokens(priced_jobs, training)
    job = create(client, training, hyperparameters={"n_epochs": 50, "batch_size": 1})
    wait_for_metrics(client, job.id, 14)  # into the second epoch
    client.fine_tuning.jobs.cancel(job.id)
    wait_for_message(client, job.id, "Training stopped at step")
    cancelled = client.fine_tuning.jobs.retrieve(job.id)
    assert cancelled.status == "cancelled"
    counts = trained_by_step(client, job.id)
    assert counts[12] == billable  # one epoch: the file's tokens
    assert cancelled.trained_tokens == counts[cancelled.model_extra["step"]] > billable
    assert_metered(priced_jobs, cancelled)


def test_a_failed_job_counts_what_it_trained_before_it_died(
    tmp_path: Path, toy_model_dir: Path
) -> None:
    for live in priced_server(tmp_path, toy_model_dir, worker=True, job_max_restarts=0):
        client = live.client()
        training = upload(client, training_file(12))
        billable = billable_tokens(live, training)
        job = create(client, training, hyperparameters={"n_epochs": 50, "batch_size": 1})
        wait_for_metrics(client, job.id, 14)
        pid = job_row(live.settings, job.id).process_id
        assert pid is not None
        os.kill(pid, signal.SIGKILL)  # mid-step: what it trained is what it reported
        failed = wait_for_job(client, job.id, {"failed"})
        assert failed.error.code == "job_process_died"
        counts = trained_by_step(client, job.id)
        assert counts[12] == billable
        assert failed.trained_tokens == counts[failed.model_extra["step"]] > billable
        assert_metered(live, failed)
