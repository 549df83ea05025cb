"""Deployments against a live server: create, list, retrieve, update, delete and events; one
deployment per model and per name; keys, their regeneration and what a deployment key may
call; roles and project isolation; bad bodies; resolving a chat request's ``model``; deployed
models that cannot be deleted; and the idle sweep."""

from __future__ import annotations

import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from sqlalchemy import select

from tests.conftest import (
    ADMIN_KEY,
    TOY_BASE,
    LiveServer,
    jobs_settings_for,
    register_toy_base,
    run_live,
)
from tests.helpers import training_file, wait_for_deployment, wait_for_job
from tests.test_chat_api import adapter_model
from tests.test_jobs_api import add_key, create, upload
from tunesmith import housekeeping
from tunesmith.api.app import create_app
from tunesmith.auth import Principal, authenticate
from tunesmith.catalog.spec import BUNDLED
from tunesmith.deployments.routing import resolve_target
from tunesmith.deployments.service import create_deployment
from tunesmith.deployments.status import record_load
from tunesmith.errors import AuthenticationError, NotFound
from tunesmith.ratelimits import RateLimits
from tunesmith.store.db import transaction
from tunesmith.store.tables import DeploymentRow, JobRow, UsageRow

DAY = 86400
HELLO = [{"role": "user", "content": "What is the capital of France?"}]


OTHER_BASE = "toy-llama-b"
"""A second base model, the toy under another id. (Deploying the bundled SmolLM2 instead starts
its half-minute conversion in the background, which outlives the test and slows the suite.)"""


@pytest.fixture
def other_base(jobs_api: LiveServer, toy_model_dir: Path) -> None:
    register_toy_base(jobs_api.app, toy_model_dir, OTHER_BASE)


def deploy(
    http: httpx.Client, name: str, model: str, *, wait: bool = True, **fields: Any
) -> dict[str, Any]:
    """Deploys ``model`` as ``name``; with ``wait``, returns the deployment once its model has
    loaded (or failed to), else the ``creating`` deployment the create call answered."""
    response = http.post("/v1/deployments", json={"name": name, "model": model, **fields})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    assert body["status"] == "creating" and body["error"] is None, body
    return wait_for_deployment(http, name) if wait else body


def refused_model(live: LiveServer, toy_model_dir: Path, seed: int) -> str:
    """A fine-tuned model the engine refuses: an adapter that also trains ``lm_head``
    (``modules_to_save``), which serving does not support."""
    model = adapter_model(live, toy_model_dir, seed)
    config = live.settings.home / f"adapters/{seed}/adapter_config.json"
    config.write_text(
        config.read_text().replace('"modules_to_save": null', '"modules_to_save": ["lm_head"]')
    )
    return model


def events(http: httpx.Client, name: str) -> list[dict[str, Any]]:
    response = http.get(f"/v1/deployments/{name}/events", params={"order": "asc"})
    assert response.status_code == 200, response.text
    data: list[dict[str, Any]] = response.json()["data"]
    return data


def error_of(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    return error


def other_project(live: LiveServer, role: str = "owner") -> tuple[str, str]:
    with live.http() as http:
        project = http.post("/v1/projects", json={"name": "elsewhere"}).json()["id"]
        key = http.post(
            f"/v1/projects/{project}/api_keys", json={"name": "k", "role": role}
        ).json()["value"]
    return project, key


def sign_in(live: LiveServer, secret: str) -> Principal:
    runtime = live.app.state.runtime
    with transaction(runtime.sessions) as session:
        return authenticate(
            session, secret, admin_key_hash=runtime.admin_key_hash, now=int(time.time())
        )


def resolve(live: LiveServer, principal: Principal, model: str, now: int | None = None) -> Any:
    with transaction(live.app.state.runtime.sessions) as session:
        return resolve_target(
            session, principal, model, now=int(time.time()) if now is None else now
        )


def test_a_deployment_lives_and_dies_with_its_events(jobs_api: LiveServer) -> None:
    http = jobs_api.http()
    created = deploy(http, "toy", TOY_BASE)
    assert created["id"].startswith("dep_")
    assert created["object"] == "deployment"
    assert (created["name"], created["model"], created["model_id"]) == ("toy", TOY_BASE, TOY_BASE)
    assert created["rate_limits"] == {
        "requests_per_minute": 1000,
        "tokens_per_minute": 200000,
        "max_concurrent_requests": 32,
    }
    assert created["content_filter"] is True
    assert created["status"] == "succeeded" and created["error"] is None
    assert created["last_used_at"] is None
    assert created["created_at"] == created["updated_at"]
    base = jobs_api.settings.resolved_public_base_url()  # tests/test_scoring_uri.py calls it
    assert created["scoring_uri"] == f"{base}/endpoints/proj_default/toy"
    assert not any("key" in field for field in created)  # keys only at GET …/keys

    assert http.get("/v1/deployments/toy").json() == created
    assert http.get("/openai/v1/deployments/toy").json()["id"] == created["id"]
    listed = http.get("/v1/deployments").json()
    assert listed["object"] == "list" and [d["id"] for d in listed["data"]] == [created["id"]]

    patched = http.patch(
        "/v1/deployments/toy",
        json={"rate_limits": {"tokens_per_minute": 5000}, "content_filter": False},
    ).json()
    assert patched["rate_limits"] == {
        "requests_per_minute": 1000,
        "tokens_per_minute": 5000,
        "max_concurrent_requests": 32,
    }
    assert patched["content_filter"] is False
    unchanged = http.patch("/v1/deployments/toy", json={"content_filter": False}).json()
    assert unchanged == patched  # nothing changed: no event either

    deleted = http.delete("/v1/deployments/toy")
    assert deleted.json() == {
        "id": created["id"],
        "object": "deployment",
        "name": "toy",
        "deleted": True,
    }
    error = error_of(http.get("/v1/deployments/toy"), 404)
    assert error["code"] == "deployment_not_found" and error["param"] == "deployment_name"
    error_of(http.delete("/v1/deployments/toy"), 404)
    assert http.get("/v1/deployments").json()["data"] == []
    assert http.get(f"/v1/models/{TOY_BASE}").status_code == 200  # the model stays

    history = events(http, "toy")  # still readable after the deletion
    assert [e["type"] for e in history] == ["created", "succeeded", "updated", "deleted"]
    assert all(e["deployment_id"] == created["id"] for e in history)
    assert all(e["object"] == "deployment.event" and e["id"].startswith("depevt_") for e in history)
    assert history[0]["message"] == (
        f"Deployed {TOY_BASE} as 'toy': 1000 requests and 200000 tokens per minute, 32 at once, "
        "content filter on."
    )
    assert history[2]["message"] == (
        "Updated: tokens_per_minute 200000 → 5000; content filter on → off."
    )
    assert "the model toy-llama is kept" in history[3]["message"]
    error_of(http.get("/v1/deployments/never/events"), 404)

    again = deploy(http, "toy", TOY_BASE, rate_limits={"requests_per_minute": 7})
    assert again["id"] != created["id"]  # the name and the model are free again
    assert again["rate_limits"]["requests_per_minute"] == 7
    assert again["rate_limits"]["tokens_per_minute"] == 200000


def test_a_deployment_is_creating_until_its_model_is_loaded(jobs_api: LiveServer) -> None:
    http = jobs_api.http()
    created = deploy(http, "toy", TOY_BASE, wait=False)
    assert created["status"] == "creating" and created["error"] is None
    ready = wait_for_deployment(http, "toy")
    assert ready == {**created, "status": "succeeded"}
    assert http.get("/v1/deployments").json()["data"] == [ready]
    history = events(http, "toy")
    assert [e["type"] for e in history] == ["created", "succeeded"]
    assert history[1]["message"] == f"Ready: {TOY_BASE} is loaded and serving."
    answer = jobs_api.client().chat.completions.create(model="toy", messages=HELLO, max_tokens=4)
    assert answer.choices[0].finish_reason == "length"


def test_a_model_the_engine_refuses_fails_with_the_reason_and_a_retry_loads_it_again(
    jobs_api: LiveServer, toy_model_dir: Path
) -> None:
    http, client = jobs_api.http(), jobs_api.client()
    model = refused_model(jobs_api, toy_model_dir, 7)
    assert deploy(http, "odd", model, wait=False)["status"] == "creating"
    failed = wait_for_deployment(http, "odd")
    assert failed["status"] == "failed"
    error = failed["error"]
    assert set(error) == {"code", "message"} and error["code"] == "model_not_servable"
    assert model in error["message"] and "modules_to_save" in error["message"]
    assert http.get("/v1/deployments").json()["data"] == [failed]
    history = events(http, "odd")
    assert [e["type"] for e in history] == ["created", "failed"]
    assert error["message"] in history[1]["message"]
    assert "model_not_servable" in history[1]["message"]
    assert "PATCH /v1/deployments/odd" in history[1]["message"]

    # Chat answers the same reason, as it did before deployments had a status.
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model="odd", messages=HELLO, max_tokens=4)
    assert refused.value.body == {  # type: ignore[comparison-overlap]
        "message": error["message"],
        "type": "invalid_request_error",
        "param": "model",
        "code": "model_not_servable",
    }

    # Fixed, and retried with an update: creating again, then loaded.
    config = jobs_api.settings.home / "adapters/7/adapter_config.json"
    config.write_text(config.read_text().replace('["lm_head"]', "null"))
    retried = http.patch("/v1/deployments/odd", json={})
    assert retried.status_code == 200, retried.text
    assert retried.json()["status"] == "creating" and retried.json()["error"] is None
    ready = wait_for_deployment(http, "odd")
    assert ready["status"] == "succeeded" and ready["error"] is None
    history = events(http, "odd")
    assert [e["type"] for e in history] == ["created", "failed", "retried", "succeeded"]
    assert "model_not_servable" in history[2]["message"]
    answer = client.chat.completions.create(model="odd", messages=HELLO, max_tokens=4)
    assert answer.model == model
    # An update of a deployment that did not fail loads nothing again.
    unchanged = http.patch("/v1/deployments/odd", json={}).json()
    assert unchanged["status"] == "succeeded"
    assert len(events(http, "odd")) == 4


def test_a_restarted_server_loads_the_deployments_it_left_creating(
    tmp_path: Path, toy_model_dir: Path
) -> None:
    settings = jobs_settings_for(tmp_path / "home", toy_model_dir, embedded_worker=False)
    first = create_app(settings)
    register_toy_base(first, toy_model_dir)
    register_toy_base(first, toy_model_dir, OTHER_BASE)
    with contextmanager(run_live)(first, settings) as live:
        http = live.http()
        done = deploy(http, "done", OTHER_BASE)
        assert done["status"] == "succeeded"
        # The process dies right after "cut" was created, before its model was loaded.
        with transaction(first.state.runtime.sessions) as session:
            create_deployment(
                session,
                project_id="proj_default",
                name="cut",
                model=TOY_BASE,
                rate_limits=None,
                content_filter=True,
                defaults=RateLimits(1000, 200000, 32),
                now=int(time.time()),
                sealer=first.state.runtime.sealer,
            )
        assert http.get("/v1/deployments/cut").json()["status"] == "creating"

    with contextmanager(run_live)(create_app(settings), settings) as again:
        http = again.http()
        assert wait_for_deployment(http, "cut")["status"] == "succeeded"
        assert [e["type"] for e in events(http, "cut")] == ["created", "succeeded"]
        assert http.get("/v1/deployments/done").json() == done  # loaded lazily, as before
        assert [e["type"] for e in events(http, "done")] == ["created", "succeeded"]


def test_a_failed_deployment_goes_when_idle_and_a_late_outcome_records_nothing(
    jobs_api: LiveServer, toy_model_dir: Path
) -> None:
    http = jobs_api.http()
    failed = deploy(http, "odd", refused_model(jobs_api, toy_model_dir, 8))
    assert failed["status"] == "failed"
    runtime = jobs_api.app.state.runtime
    later = failed["created_at"] + 16 * DAY
    swept = housekeeping.sweep(
        runtime.sessions, runtime.blobs, now=later, deployment_idle_seconds=15 * DAY
    )
    assert swept.deployments == [failed["id"]]
    # A warm-up that ends after its deployment went (started before, or after) records nothing.
    with transaction(runtime.sessions) as session:
        late = record_load(session, deployment_id=failed["id"], error=None, now=later)
    assert late is None
    runtime.serving.models.warm(failed["id"])
    assert [e["type"] for e in events(http, "odd")] == ["created", "failed", "deleted_idle"]


@pytest.mark.usefixtures("other_base")
def test_lists_page_newest_first(jobs_api: LiveServer) -> None:
    http = jobs_api.http()
    first = deploy(http, "one", TOY_BASE)
    second = deploy(http, "two", OTHER_BASE)
    page = http.get("/v1/deployments", params={"limit": 1}).json()
    assert [d["name"] for d in page["data"]] == ["two"] and page["has_more"]
    rest = http.get("/v1/deployments", params={"limit": 1, "after": second["id"]}).json()
    assert [d["id"] for d in rest["data"]] == [first["id"]] and not rest["has_more"]
    error_of(http.get("/v1/deployments", params={"after": "dep_nope"}), 404)


def test_one_deployment_per_model_and_per_name(jobs_api: LiveServer) -> None:
    http = jobs_api.http()
    deploy(http, "toy", TOY_BASE)
    twice = error_of(http.post("/v1/deployments", json={"name": "toy-2", "model": TOY_BASE}), 409)
    assert twice["code"] == "model_already_deployed" and twice["param"] == "model"
    assert "already deployed as 'toy'" in twice["message"]
    taken = error_of(http.post("/v1/deployments", json={"name": "toy", "model": BUNDLED.id}), 409)
    assert taken["code"] == "deployment_exists" and taken["param"] == "name"
    assert [d["name"] for d in http.get("/v1/deployments").json()["data"]] == ["toy"]


@pytest.mark.usefixtures("other_base")
def test_keys_authenticate_their_deployment_only(jobs_api: LiveServer) -> None:
    http = jobs_api.http()
    deploy(http, "toy", TOY_BASE)
    other = deploy(http, "smol", OTHER_BASE)
    keys = http.get("/v1/deployments/toy/keys").json()
    assert set(keys) == {"primary_key", "secondary_key"}
    assert keys["primary_key"].startswith("tsd-") and keys["secondary_key"].startswith("tsd-")
    assert keys["primary_key"] != keys["secondary_key"]
    assert http.get("/v1/deployments/toy/keys").json() == keys  # shown again, as Azure does

    principal = sign_in(jobs_api, keys["secondary_key"])
    assert principal.key_id == "deployment:toy:secondary"
    assert principal.role == "reader" and principal.project_id == "proj_default"
    assert principal.deployment_id is not None
    assert resolve(jobs_api, principal, "toy").deployment.id == principal.deployment_id
    assert resolve(jobs_api, principal, TOY_BASE).deployment.name == "toy"  # by its model
    for model in ("smol", OTHER_BASE, "no-such-model"):
        with pytest.raises(AuthenticationError, match="belongs to the deployment 'toy'"):
            resolve(jobs_api, principal, model)

    # A deployment key calls nothing but chat: every other route refuses it.
    with jobs_api.http(keys["primary_key"]) as as_deployment:
        for method, path in (
            ("GET", "/v1/files"),
            ("GET", "/v1/models"),
            ("GET", "/v1/deployments"),
            ("GET", "/v1/deployments/toy/keys"),
            ("POST", "/v1/deployments/toy/keys/regenerate"),
            ("GET", "/v1/usage"),
            ("GET", "/v1/me"),
        ):
            error = error_of(as_deployment.request(method, path, json={}), 403)
            assert "deployment keys only call chat completions" in error["message"]
            assert "'toy'" in error["message"]

    old_primary = keys["primary_key"]
    regenerated = http.post("/v1/deployments/toy/keys/regenerate", json={"key_name": "primary"})
    new_keys = regenerated.json()
    assert new_keys["secondary_key"] == keys["secondary_key"]
    assert new_keys["primary_key"] != old_primary and new_keys["primary_key"].startswith("tsd-")
    assert http.get("/v1/deployments/toy/keys").json() == new_keys
    with pytest.raises(AuthenticationError, match="Incorrect API key"):
        sign_in(jobs_api, old_primary)
    assert error_of(jobs_api.http(old_primary).get("/v1/files"), 401)["code"] == "invalid_api_key"
    assert sign_in(jobs_api, new_keys["primary_key"]).key_id == "deployment:toy:primary"
    assert [e["type"] for e in events(http, "toy")] == ["created", "succeeded", "keys_regenerated"]
    assert "primary key was regenerated" in events(http, "toy")[2]["message"]

    http.delete("/v1/deployments/toy")
    with pytest.raises(AuthenticationError):  # a deleted deployment's keys die with it
        sign_in(jobs_api, new_keys["secondary_key"])
    assert other["name"] == "smol"


def test_resolving_a_chat_requests_model(jobs_api: LiveServer) -> None:
    http = jobs_api.http()
    created = deploy(http, "toy", TOY_BASE, rate_limits={"max_concurrent_requests": 3})
    admin = sign_in(jobs_api, ADMIN_KEY)
    start = int(time.time())
    target = resolve(jobs_api, admin, "toy", now=start)
    assert target.deployment.id == created["id"]
    assert target.base.id == TOY_BASE and target.model is None
    assert target.limits.max_concurrent_requests == 3
    assert target.limits.requests_per_minute == 1000
    assert resolve(jobs_api, admin, TOY_BASE, now=start + 10).deployment.name == "toy"
    # last_used_at is written at most once a minute
    assert http.get("/v1/deployments/toy").json()["last_used_at"] == start
    resolve(jobs_api, admin, "toy", now=start + 60)
    assert http.get("/v1/deployments/toy").json()["last_used_at"] == start + 60

    with pytest.raises(NotFound) as undeployed:
        resolve(jobs_api, admin, BUNDLED.id)
    assert undeployed.value.code == "model_not_deployed" and undeployed.value.param == "model"
    assert "is not deployed" in undeployed.value.message
    assert f'POST /v1/deployments {{"name": "<a name>", "model": "{BUNDLED.id}"}}' in (
        undeployed.value.message
    )
    with pytest.raises(NotFound) as unknown:
        resolve(jobs_api, admin, "no-such-model")
    assert unknown.value.code == "model_not_found" and unknown.value.param == "model"

    _, key = other_project(jobs_api)
    stranger = sign_in(jobs_api, key)
    with pytest.raises(NotFound):  # another project's deployment is not there
        resolve(jobs_api, stranger, "toy")


def test_roles_and_projects(jobs_api: LiveServer) -> None:
    http = jobs_api.http()
    deploy(http, "toy", TOY_BASE)
    for role in ("reader", "contributor"):
        with jobs_api.http(add_key(jobs_api, role)) as weak:
            error = error_of(
                weak.post("/v1/deployments", json={"name": "x", "model": TOY_BASE}), 403
            )
            assert f"'{role}'" in error["message"] and "'owner'" in error["message"]
            assert weak.get("/v1/deployments/toy").status_code == 200
            assert weak.get("/v1/deployments/toy/events").status_code == 200
            error_of(weak.get("/v1/deployments/toy/keys"), 403)
            error_of(
                weak.post("/v1/deployments/toy/keys/regenerate", json={"key_name": "primary"}), 403
            )
            error_of(weak.patch("/v1/deployments/toy", json={"content_filter": False}), 403)
            error_of(weak.delete("/v1/deployments/toy"), 403)

    project, key = other_project(jobs_api)
    with jobs_api.http(key) as stranger:
        assert stranger.get("/v1/deployments").json()["data"] == []
        for method, path in (
            ("GET", "/v1/deployments/toy"),
            ("PATCH", "/v1/deployments/toy"),
            ("DELETE", "/v1/deployments/toy"),
            ("GET", "/v1/deployments/toy/keys"),
            ("GET", "/v1/deployments/toy/events"),
            ("POST", "/v1/deployments/toy/keys/regenerate"),
        ):
            body = {"key_name": "primary"} if path.endswith("regenerate") else {}
            error_of(stranger.request(method, path, json=body), 404)
        # the same name is free in another project
        theirs = deploy(stranger, "toy", TOY_BASE)
        their_key = stranger.get("/v1/deployments/toy/keys").json()["primary_key"]
    assert http.get("/v1/deployments/toy").json()["id"] != theirs["id"]
    assert sign_in(jobs_api, their_key).project_id == project
    jobs_api.http().post(f"/v1/projects/{project}/archive")
    with pytest.raises(AuthenticationError, match="archived"):
        sign_in(jobs_api, their_key)


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        ({"name": "x", "model": TOY_BASE, "colour": "red"}, 400, "colour"),
        ({"model": TOY_BASE}, 400, "name"),
        ({"name": "x"}, 400, "model"),
        ({"name": "a/b", "model": TOY_BASE}, 400, "name"),
        ({"name": "ft:x", "model": TOY_BASE}, 400, "name"),
        ({"name": "", "model": TOY_BASE}, 400, "name"),
        ({"name": 5, "model": TOY_BASE}, 400, "name"),
        ({"name": "x", "model": "no-such-model"}, 404, "model"),
        ({"name": BUNDLED.id, "model": TOY_BASE}, 400, "name"),
        ({"name": "x", "model": TOY_BASE, "content_filter": "yes"}, 400, "content_filter"),
        (
            {"name": "x", "model": TOY_BASE, "rate_limits": {"requests_per_minute": -1}},
            400,
            "rate_limits.requests_per_minute",
        ),
        (
            {"name": "x", "model": TOY_BASE, "rate_limits": {"tokens_per_minute": 0}},
            400,
            "rate_limits.tokens_per_minute",
        ),
        (
            {"name": "x", "model": TOY_BASE, "rate_limits": {"max_concurrent_requests": "8"}},
            400,
            "rate_limits.max_concurrent_requests",
        ),
        (
            {"name": "x", "model": TOY_BASE, "rate_limits": {"requests_per_minute": 10**9}},
            400,
            "rate_limits.requests_per_minute",
        ),
        (
            {"name": "x", "model": TOY_BASE, "rate_limits": {"rpm": 10}},
            400,
            "rate_limits.rpm",
        ),
        ({"name": "x", "model": TOY_BASE, "rate_limits": 10}, 400, "rate_limits"),
    ],
)
def test_bad_bodies_name_the_param_and_create_nothing(
    jobs_api: LiveServer, body: dict[str, Any], status: int, param: str
) -> None:
    with jobs_api.http() as http:
        error = error_of(http.post("/v1/deployments", json=body), status)
        assert error["param"] == param, error
        assert http.get("/v1/deployments").json()["data"] == []


def test_a_name_that_is_another_models_is_refused_as_ambiguous(jobs_api: LiveServer) -> None:
    with jobs_api.http() as http:
        error = error_of(
            http.post("/v1/deployments", json={"name": BUNDLED.id, "model": TOY_BASE}), 400
        )
        assert error["code"] == "ambiguous_name"
        assert f"already names the model {BUNDLED.id}" in error["message"]
        assert deploy(http, TOY_BASE, TOY_BASE)["name"] == TOY_BASE  # its own model's name is fine


@pytest.mark.parametrize(
    ("method", "path", "body", "param"),
    [
        ("PATCH", "/v1/deployments/toy", {"colour": "red"}, "colour"),
        ("PATCH", "/v1/deployments/toy", {"name": "renamed"}, "name"),
        ("PATCH", "/v1/deployments/toy", {"content_filter": 1}, "content_filter"),
        (
            "PATCH",
            "/v1/deployments/toy",
            {"rate_limits": {"requests_per_minute": 0}},
            "rate_limits.requests_per_minute",
        ),
        ("POST", "/v1/deployments/toy/keys/regenerate", {"key_name": "tertiary"}, "key_name"),
        ("POST", "/v1/deployments/toy/keys/regenerate", {}, "key_name"),
    ],
)
def test_bad_updates_name_the_param_and_change_nothing(
    jobs_api: LiveServer, method: str, path: str, body: dict[str, Any], param: str
) -> None:
    with jobs_api.http() as http:
        deploy(http, "toy", TOY_BASE)
        keys = http.get("/v1/deployments/toy/keys").json()
        before = http.get("/v1/deployments/toy").json()
        error = error_of(http.request(method, path, json=body), 400)
        assert error["param"] == param, error
        assert http.get("/v1/deployments/toy").json() == before
        assert http.get("/v1/deployments/toy/keys").json() == keys
        assert [e["type"] for e in events(http, "toy")] == ["created", "succeeded"]


@pytest.mark.usefixtures("other_base")
def test_idle_deployments_are_swept_with_an_event_and_their_hosting_time(
    jobs_api: LiveServer,
) -> None:
    http = jobs_api.http()
    idle = deploy(http, "idle", TOY_BASE)
    busy = deploy(http, "busy", OTHER_BASE)
    runtime = jobs_api.app.state.runtime
    limit = jobs_api.settings.deployment_idle_seconds
    assert limit == 15 * DAY
    later = idle["created_at"] + int(limit) + 60
    resolve(jobs_api, sign_in(jobs_api, ADMIN_KEY), "busy", now=later - DAY)  # used a day ago

    untouched = housekeeping.sweep(runtime.sessions, runtime.blobs, now=later)
    assert untouched.deployments == []  # without the setting, deployments are left alone
    swept = housekeeping.sweep(
        runtime.sessions, runtime.blobs, now=later, deployment_idle_seconds=limit
    )
    assert swept.deployments == [idle["id"]]
    assert [d["name"] for d in http.get("/v1/deployments").json()["data"]] == ["busy"]
    history = events(http, "idle")
    assert [e["type"] for e in history] == ["created", "succeeded", "deleted_idle"]
    assert history[2]["created_at"] == later
    assert "without a request" in history[2]["message"]
    assert "TUNESMITH_DEPLOYMENT_IDLE_SECONDS" in history[2]["message"]
    with transaction(runtime.sessions) as session:
        rows = session.scalars(select(UsageRow).where(UsageRow.kind == "hosting")).all()
        assert [(r.deployment_id, r.deployment_name, r.model) for r in rows] == [
            (idle["id"], "idle", TOY_BASE)
        ]
        assert rows[0].hosting_seconds == later - idle["created_at"]
        assert rows[0].created_at == later
    assert busy["name"] == "busy"
    # a used deployment is measured from its last use, not its creation
    assert (
        housekeeping.sweep(
            runtime.sessions, runtime.blobs, now=later + 2 * DAY, deployment_idle_seconds=limit
        ).deployments
        == []
    )


def test_deployed_fine_tuned_models_and_checkpoints(jobs_live: LiveServer) -> None:
    client = jobs_live.client()
    named = {"registered_model": {"name": "support-bot"}}
    job = wait_for_job(
        client,
        create(client, upload(client, training_file(12)), extra_body=named).id,
        {"succeeded"},
    )
    model = job.fine_tuned_model
    http = jobs_live.http()
    created = deploy(http, "bot", "support-bot")
    assert (created["model"], created["model_id"]) == ("support-bot", model)
    again = error_of(http.post("/v1/deployments", json={"name": "bot-2", "model": model}), 409)
    assert again["code"] == "model_already_deployed"  # the same model by its id

    admin = sign_in(jobs_live, ADMIN_KEY)
    for asked in ("bot", model, "support-bot", "support-bot:1"):
        target = resolve(jobs_live, admin, asked)
        assert target.deployment.id == created["id"]
        assert target.model is not None and target.model.id == model
        assert target.base.id == TOY_BASE

    refused = error_of(http.delete(f"/v1/models/{model}"), 409)
    assert refused["code"] == "model_in_use" and refused["param"] == "model"
    assert "deployed as 'bot'" in refused["message"]
    assert "DELETE /v1/deployments/bot" in refused["message"]

    checkpoint = f"{model}:ckpt-step-6"
    runtime = jobs_live.app.state.runtime
    with transaction(runtime.sessions) as session:  # as if the job were still training
        row = session.get(JobRow, job.id)
        assert row is not None
        row.status = "running"
    busy = error_of(http.post("/v1/deployments", json={"name": "ckpt", "model": checkpoint}), 409)
    assert busy["code"] == "model_in_use" and job.id in busy["message"]
    with transaction(runtime.sessions) as session:
        row = session.get(JobRow, job.id)
        assert row is not None
        row.status = "succeeded"
    assert deploy(http, "ckpt", checkpoint)["model_id"] == checkpoint
    assert resolve(jobs_live, admin, "ckpt").model.checkpoint_step == 6

    http.delete("/v1/deployments/bot")
    assert http.delete(f"/v1/models/{model}").json()["deleted"] is True
    with transaction(runtime.sessions) as session:
        assert session.scalars(select(DeploymentRow.name)).all() == ["ckpt"]
