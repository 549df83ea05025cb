"""Projects, API keys and roles: 401 for a wrong key, 403 for a weak role, 404 across projects."""

from __future__ import annotations

import os
import re
import stat
import time
from pathlib import Path

import openai
import pytest

from tests.conftest import ADMIN_KEY, LiveServer, run_live
from tests.helpers import training_file
from tunesmith.api.app import create_app
from tunesmith.key_failures import KeyFailures
from tunesmith.settings import Settings


def make_key(live: LiveServer, project_id: str, role: str) -> str:
    response = live.http().post(
        f"/v1/projects/{project_id}/api_keys", json={"name": f"{role} key", "role": role}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["role"] == role
    assert body["value"].startswith("tsk-")
    return str(body["value"])


def make_project(live: LiveServer, name: str) -> str:
    response = live.http().post("/v1/projects", json={"name": name})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["object"] == "organization.project"
    assert body["status"] == "active"
    return str(body["id"])


def test_missing_and_wrong_keys_answer_401(live: LiveServer) -> None:
    anonymous = live.http(key=None).get("/v1/files")
    assert anonymous.status_code == 401
    assert anonymous.json()["error"]["code"] == "missing_api_key"
    with pytest.raises(openai.AuthenticationError) as err:
        live.client("tsk-not-a-real-key").files.list()
    assert err.value.body["code"] == "invalid_api_key"  # type: ignore[index]
    assert err.value.body["type"] == "invalid_request_error"  # type: ignore[index]
    assert "tsk-not-a-real-key" not in err.value.message  # the key is redacted


def test_azure_api_key_header_is_accepted(live: LiveServer) -> None:
    response = live.http(key=None).get("/v1/files", headers={"api-key": ADMIN_KEY})
    assert response.status_code == 200
    assert response.json()["object"] == "list"


def test_azure_v1_paths_serve_the_same_api(live: LiveServer) -> None:
    azure = openai.OpenAI(
        base_url=f"{live.url}/openai/v1",
        api_key="unused",
        default_headers={"api-key": ADMIN_KEY, "Authorization": ""},
        max_retries=0,
    )
    created = azure.files.create(file=("t.jsonl", training_file()), purpose="fine-tune")
    assert live.client().files.retrieve(created.id).id == created.id


def test_health_and_docs_need_no_key(live: LiveServer) -> None:
    http = live.http(key=None)
    assert http.get("/health").json() == {"status": "ok"}
    page = http.get("/docs")
    assert page.status_code == 200
    # Everything the page loads comes from this server: no CDN.
    sources = re.findall(r'(?:src|href|url)\s*[=:]\s*["\']([^"\']+)', page.text)
    assert sources and all(s.startswith("/") for s in sources), sources
    for source in sources:
        assert http.get(source).status_code == 200, source
    assert "/v1/files" in http.get("/openapi.json").json()["paths"]


def test_projects_are_isolated(live: LiveServer) -> None:
    alpha, beta = make_project(live, "alpha"), make_project(live, "beta")
    alpha_client = live.client(make_key(live, alpha, "contributor"))
    beta_client = live.client(make_key(live, beta, "owner"))
    mine = alpha_client.files.create(file=("a.jsonl", training_file()), purpose="fine-tune")

    assert [f.id for f in alpha_client.files.list().data] == [mine.id]
    assert beta_client.files.list().data == []
    assert live.client().files.list().data == []  # the admin acts in the default project
    for call in (
        lambda: beta_client.files.retrieve(mine.id),
        lambda: beta_client.files.content(mine.id),
        lambda: beta_client.files.delete(mine.id),
    ):
        with pytest.raises(openai.NotFoundError) as err:
            call()
        assert err.value.body == {
            "message": f"No such File object: {mine.id}",
            "type": "invalid_request_error",
            "param": "file_id",
            "code": None,
        }
    nowhere = live.http(key=None).get(
        f"/v1/files/{mine.id}/validation", headers={"Authorization": f"Bearer {ADMIN_KEY}"}
    )
    assert nowhere.status_code == 404
    assert alpha_client.files.retrieve(mine.id).id == mine.id


def test_roles(live: LiveServer) -> None:
    project = make_project(live, "team")
    owner = live.client(make_key(live, project, "owner"))
    reader = live.client(make_key(live, project, "reader"))
    created = owner.files.create(file=("a.jsonl", training_file()), purpose="fine-tune")

    assert [f.id for f in reader.files.list().data] == [created.id]
    assert reader.files.content(created.id).read() == training_file()
    with pytest.raises(openai.PermissionDeniedError) as err:
        reader.files.create(file=("b.jsonl", training_file()), purpose="fine-tune")
    assert "'reader'" in err.value.message and "'contributor'" in err.value.message
    with pytest.raises(openai.PermissionDeniedError):
        reader.files.delete(created.id)
    # Only the admin manages projects and keys.
    owner_http = live.http(key=owner.api_key)
    assert owner_http.get("/v1/projects").status_code == 403
    assert owner_http.post(f"/v1/projects/{project}/api_keys", json={}).status_code == 403
    assert owner.files.delete(created.id).deleted is True


def test_key_lifecycle(live: LiveServer) -> None:
    project = make_project(live, "lifecycle")
    secret = make_key(live, project, "contributor")
    keys = live.http().get(f"/v1/projects/{project}/api_keys").json()
    assert len(keys["data"]) == 1
    listed = keys["data"][0]
    assert listed["value"] is None  # shown only once, at creation
    assert listed["redacted_value"].startswith(secret[:8])
    assert secret not in str(keys)

    assert live.client(secret).files.list().object == "list"
    used = live.http().get(f"/v1/projects/{project}/api_keys").json()["data"][0]
    assert used["last_used_at"] is not None

    revoked = live.http().delete(f"/v1/projects/{project}/api_keys/{listed['id']}")
    assert revoked.json() == {
        "id": listed["id"],
        "object": "organization.project.api_key.deleted",
        "deleted": True,
    }
    with pytest.raises(openai.AuthenticationError):
        live.client(secret).files.list()
    again = live.http().delete(f"/v1/projects/{project}/api_keys/{listed['id']}")
    assert again.status_code == 404


def test_archived_project_keys_stop_working(live: LiveServer) -> None:
    project = make_project(live, "old")
    secret = make_key(live, project, "owner")
    archived = live.http().post(f"/v1/projects/{project}/archive").json()
    assert archived["status"] == "archived"
    with pytest.raises(openai.AuthenticationError) as err:
        live.client(secret).files.list()
    assert "archived" in err.value.message
    listed = live.http().get("/v1/projects").json()["data"]
    assert project not in [p["id"] for p in listed]
    with_archived = live.http().get("/v1/projects", params={"include_archived": True}).json()
    assert project in [p["id"] for p in with_archived["data"]]
    refused = live.http().post(f"/v1/projects/{project}/api_keys", json={"role": "reader"})
    assert refused.status_code == 400


def test_me_names_the_admin_key_and_its_project(live: LiveServer) -> None:
    me = live.http().get("/v1/me")
    assert me.status_code == 200, me.text
    body = me.json()
    assert body["object"] == "identity"
    assert (body["key_id"], body["role"]) == ("admin", "admin")
    assert body["project"] == live.http().get("/v1/projects/proj_default").json()
    assert body["project"]["name"] == "default"
    assert live.http().get("/openai/v1/me").json() == body  # Azure's v1 layout too


def test_me_names_a_project_key_and_its_role(live: LiveServer) -> None:
    project = make_project(live, "support team")
    secret = make_key(live, project, "reader")
    (listed,) = live.http().get(f"/v1/projects/{project}/api_keys").json()["data"]
    body = live.http(secret).get("/v1/me").json()
    assert body == {
        "object": "identity",
        "key_id": listed["id"],
        "role": "reader",
        "project": live.http().get(f"/v1/projects/{project}").json(),
    }
    assert body["project"]["name"] == "support team"
    assert body["project"]["status"] == "active"
    owner = live.http(make_key(live, project, "owner")).get("/v1/me").json()
    assert (owner["role"], owner["project"]["id"]) == ("owner", project)


def test_me_needs_a_working_key(live: LiveServer) -> None:
    anonymous = live.http(key=None).get("/v1/me")
    assert anonymous.status_code == 401
    assert anonymous.json()["error"]["code"] == "missing_api_key"
    wrong = live.http("tsk-not-a-real-key").get("/v1/me")
    assert wrong.status_code == 401
    assert set(wrong.json()["error"]) == {"message", "type", "param", "code"}
    assert wrong.json()["error"]["code"] == "invalid_api_key"
    project = make_project(live, "gone")
    secret = make_key(live, project, "owner")
    live.http().post(f"/v1/projects/{project}/archive")
    archived = live.http(secret).get("/v1/me")
    assert archived.status_code == 401
    assert "archived" in archived.json()["error"]["message"]


@pytest.mark.parametrize(
    ("path", "body", "status", "param"),
    [
        ("/v1/projects", {"name": ""}, 400, "name"),
        ("/v1/projects", {}, 400, "name"),
        ("/v1/projects/proj_default/api_keys", {"role": "superuser"}, 400, "role"),
        ("/v1/projects/proj_nope/api_keys", {"role": "reader"}, 404, "project_id"),
        ("/v1/projects/proj_default/archive", None, 400, "project_id"),
    ],
)
def test_bad_admin_requests(
    live: LiveServer, path: str, body: dict[str, str] | None, status: int, param: str
) -> None:
    response = live.http().post(path, json=body)
    assert response.status_code == status
    error = response.json()["error"]
    assert error["param"] == param
    assert set(error) == {"message", "type", "param", "code"}


def test_admin_key_is_generated_once_and_kept_private(tmp_path: Path, toy_model_dir: Path) -> None:
    settings = Settings(home=tmp_path / "home", validation_model_dir=toy_model_dir)
    first = create_app(settings)
    secret = first.state.generated_admin_key
    assert secret is not None and secret.startswith("tsk-")
    key_file = settings.admin_key_path()
    assert key_file.read_text().strip() == secret
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
    second = create_app(settings)
    assert second.state.generated_admin_key is None
    for live in run_live(second, settings):
        assert [p["name"] for p in live.http(secret).get("/v1/projects").json()["data"]] == [
            "default"
        ]
        assert live.http("tsk-wrong").get("/v1/projects").status_code == 401


def test_configured_admin_key_replaces_the_generated_one(
    tmp_path: Path, toy_model_dir: Path
) -> None:
    home = tmp_path / "home"
    generated = create_app(Settings(home=home, validation_model_dir=toy_model_dir))
    old_secret = generated.state.generated_admin_key
    settings = Settings(
        home=home, validation_model_dir=toy_model_dir, admin_key="tsk-from-env-5Rb7Kc3Xz9Mw2Qv8Ld4"
    )
    app = create_app(settings)
    assert app.state.generated_admin_key is None
    for live in run_live(app, settings):
        assert live.http("tsk-from-env-5Rb7Kc3Xz9Mw2Qv8Ld4").get("/v1/projects").status_code == 200
        assert live.http(old_secret).get("/v1/projects").status_code == 401


@pytest.mark.parametrize("weak", ["tsk-test-admin-key", "a" * 64, "tsk-" + "ab" * 20])
def test_a_weak_configured_admin_key_is_refused_at_startup(
    weak: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("TUNESMITH_ADMIN_KEY", weak)
    with pytest.raises(ValueError) as err:
        create_app(Settings(home=tmp_path / "home"))
    assert not (tmp_path / "home").exists()  # refused before anything is made
    assert "TUNESMITH_ADMIN_KEY is too weak" in str(err.value)
    assert weak not in str(err.value)


def test_wrong_keys_are_logged_and_throttled_per_address(
    live: LiveServer, caplog: pytest.LogCaptureFixture
) -> None:
    failures = live.app.state.runtime.key_failures
    wrong = "tsk-guess-" + "x" * 30
    with caplog.at_level("WARNING", logger="tunesmith.api.deps"):
        for _ in range(failures.max_failures):
            assert live.http(wrong).get("/v1/files").status_code == 401
    logged = [r.getMessage() for r in caplog.records if "failed key check" in r.getMessage()]
    assert len(logged) == failures.max_failures
    assert all(wrong not in line and "key sha256" in line for line in logged)

    throttled = live.http(wrong).get("/v1/files")
    assert throttled.status_code == 429
    assert int(throttled.headers["retry-after"]) >= 1
    assert throttled.json()["error"]["code"] == "too_many_failed_keys"
    # Another address is not throttled, and the window passing lets this one in again.
    assert failures.retry_after("198.51.100.7") is None
    assert failures.retry_after("127.0.0.1", now=time.monotonic() + 61) is None


def test_the_failure_memory_is_bounded() -> None:
    failures = KeyFailures(max_failures=2, window_seconds=60, max_clients=3)
    for i in range(10):
        failures.record(f"10.0.0.{i}", now=0)
        failures.record(f"10.0.0.{i}", now=0)
    assert len(failures._failures) == 3
    assert failures.retry_after("10.0.0.9", now=1) == 59
    assert failures.retry_after("10.0.0.0", now=1) is None  # forgotten, oldest first
