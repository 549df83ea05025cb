"""Serverless endpoints as Azure AI Foundry's SDK users call them: every deployment reports an
absolute ``scoring_uri`` (from ``TUNESMITH_PUBLIC_BASE_URL``, by default the listening address),
and ``POST {scoring_uri}/v1/chat/completions`` answers with the deployment's key sent raw, as a
bearer or as ``api-key``; keys of other deployments and projects are 401 there, nothing served."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pydantic
import pytest
import requests

from tests.cli import Cli
from tests.conftest import (
    ADMIN_KEY,
    TOY_BASE,
    LiveServer,
    jobs_settings_for,
    loopback_socket,
    register_toy_base,
    run_live,
)
from tunesmith.api.app import create_app
from tunesmith.settings import Settings

OTHER_BASE = "toy-llama-b"
PAYLOAD: dict[str, Any] = {
    "messages": [{"role": "user", "content": "What is the capital of France?"}],
    "max_tokens": 8,
    "temperature": 0,
}


def endpoint_server(home: Path, toy_model_dir: Path, **overrides: Any) -> Iterator[LiveServer]:
    """A server without a worker whose settings know the port it listens on, with the toy model
    under two ids (a model has one deployment)."""
    sock = loopback_socket()
    settings = jobs_settings_for(
        home, toy_model_dir, embedded_worker=False, port=sock.getsockname()[1], **overrides
    )
    app = create_app(settings)
    register_toy_base(app, toy_model_dir)
    register_toy_base(app, toy_model_dir, OTHER_BASE)
    yield from run_live(app, settings, sock)


@pytest.fixture
def server(tmp_path: Path, toy_model_dir: Path) -> Iterator[LiveServer]:
    yield from endpoint_server(tmp_path / "home", toy_model_dir)


def deploy(live: LiveServer, name: str, model: str, key: str = ADMIN_KEY) -> dict[str, Any]:
    with live.http(key) as http:
        response = http.post("/v1/deployments", json={"name": name, "model": model})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def keys_of(live: LiveServer, name: str, key: str = ADMIN_KEY) -> dict[str, str]:
    with live.http(key) as http:
        keys: dict[str, str] = http.get(f"/v1/deployments/{name}/keys").json()
    return keys


def other_project_key(live: LiveServer) -> tuple[str, str]:
    with live.http() as http:
        project = http.post("/v1/projects", json={"name": "elsewhere"}).json()["id"]
        key = http.post(
            f"/v1/projects/{project}/api_keys", json={"name": "k", "role": "owner"}
        ).json()["value"]
    return project, key


def foundry_call(scoring_uri: str, headers: dict[str, str], **fields: Any) -> requests.Response:
    """The call as the Foundry's samples write it."""
    return requests.post(
        f"{scoring_uri}/v1/chat/completions",
        json={**PAYLOAD, **fields},
        headers={"Content-Type": "application/json", **headers},
        timeout=60,
    )


def test_every_deployment_reports_its_scoring_uri(server: LiveServer) -> None:
    created = deploy(server, "toy", TOY_BASE)
    uri = f"{server.url}/endpoints/proj_default/toy"  # the listening address, by default
    assert created["scoring_uri"] == uri
    with server.http() as http:
        assert http.get("/v1/deployments/toy").json()["scoring_uri"] == uri
        assert http.get("/v1/deployments").json()["data"][0]["scoring_uri"] == uri
        patched = http.patch("/v1/deployments/toy", json={"content_filter": False})
        assert patched.json()["scoring_uri"] == uri
    project, key = other_project_key(server)
    elsewhere = deploy(server, "toy", TOY_BASE, key=key)  # the same name in another project
    assert elsewhere["scoring_uri"] == f"{server.url}/endpoints/{project}/toy"


def test_the_foundry_call_takes_the_key_raw_as_a_bearer_or_as_api_key(server: LiveServer) -> None:
    scoring_uri = deploy(server, "toy", TOY_BASE)["scoring_uri"]
    deploy(server, "other", OTHER_BASE)
    keys = keys_of(server, "toy")
    auth_key = keys["primary_key"]

    raw = foundry_call(scoring_uri, {"Authorization": f"{auth_key}"})
    assert raw.status_code == 200, raw.text
    answer = raw.json()
    assert answer["object"] == "chat.completion" and answer["model"] == TOY_BASE
    text = answer["choices"][0]["message"]["content"]
    assert text
    for headers in (
        {"Authorization": f"Bearer {auth_key}"},
        {"api-key": auth_key},
        {"Authorization": keys["secondary_key"]},
        {"Authorization": ADMIN_KEY},  # a key of the deployment's project
    ):
        again = foundry_call(scoring_uri, headers)
        assert again.status_code == 200, (headers, again.text)
        assert again.json()["choices"][0]["message"]["content"] == text
    # The URI names the deployment: a `model` in the body does not send it elsewhere.
    elsewhere = foundry_call(scoring_uri, {"Authorization": ADMIN_KEY}, model="other")
    assert elsewhere.json()["model"] == TOY_BASE
    assert elsewhere.json()["choices"][0]["message"]["content"] == text
    with server.http() as http:  # the same answer as the deployment gives at /v1
        plain = http.post("/v1/chat/completions", json={**PAYLOAD, "model": "toy"}).json()
    assert plain["choices"][0]["message"]["content"] == text


def test_the_official_client_streams_and_completes_at_the_scoring_uri(server: LiveServer) -> None:
    scoring_uri = deploy(server, "toy", TOY_BASE)["scoring_uri"]
    with server.http() as http:
        http.patch("/v1/deployments/toy", json={"content_filter": False})
    key = keys_of(server, "toy")["primary_key"]
    client = openai.OpenAI(base_url=f"{scoring_uri}/v1", api_key=key, max_retries=0)
    whole = client.chat.completions.create(model="toy", **PAYLOAD)
    streamed = client.chat.completions.create(model="toy", stream=True, **PAYLOAD)
    text = "".join(c.choices[0].delta.content or "" for c in streamed if c.choices)
    assert text == whole.choices[0].message.content
    completion = client.completions.create(model="toy", prompt="The quick brown fox", max_tokens=6)
    assert completion.object == "text_completion" and completion.model == TOY_BASE
    # Azure AI model inference clients send the paths without /v1, with an api-version.
    for path, body in (
        ("/chat/completions", PAYLOAD),
        ("/completions", {"prompt": "The quick brown fox", "max_tokens": 6}),
    ):
        response = httpx.post(
            f"{scoring_uri}{path}?api-version=2024-05-01-preview",
            json=body,
            headers={"api-key": key},
            timeout=60,
        )
        assert response.status_code == 200, (path, response.text)
    bad = httpx.post(
        f"{scoring_uri}/chat/completions?api-version=someday",
        json=PAYLOAD,
        headers={"api-key": key},
    )
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "api-version"


def test_keys_that_do_not_open_the_endpoint_are_refused(server: LiveServer) -> None:
    scoring_uri = deploy(server, "toy", TOY_BASE)["scoring_uri"]
    deploy(server, "other", OTHER_BASE)
    other_key = keys_of(server, "other")["primary_key"]
    _project, stranger = other_project_key(server)

    wrong_deployment = foundry_call(scoring_uri, {"Authorization": other_key})
    assert wrong_deployment.status_code == 401
    error = wrong_deployment.json()["error"]
    assert error["code"] == "invalid_api_key"
    assert "'other'" in error["message"] and "'toy'" in error["message"]
    assert "GET /v1/deployments/toy/keys" in error["message"]

    other_project = foundry_call(scoring_uri, {"Authorization": f"Bearer {stranger}"})
    assert other_project.status_code == 401
    assert "another project" in other_project.json()["error"]["message"]

    missing = foundry_call(scoring_uri, {})
    assert missing.status_code == 401
    assert missing.json()["error"]["code"] == "missing_api_key"
    wrong = foundry_call(scoring_uri, {"Authorization": "tsd-not-a-key"})
    assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "invalid_api_key"
    basic = foundry_call(scoring_uri, {"Authorization": "Basic dXNlcjpwYXNz"})
    assert basic.status_code == 401 and "'Basic'" in basic.json()["error"]["message"]

    unknown = foundry_call(f"{server.url}/endpoints/proj_default/nothing", {"api-key": ADMIN_KEY})
    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == "deployment_not_found"
    with server.http() as http:  # none of them was served
        assert http.get("/v1/deployments/toy").json()["last_used_at"] is None
        assert http.get("/v1/usage").json()["totals"]["requests"] == 0

    own_key = keys_of(server, "toy")["primary_key"]
    with server.http() as http:
        http.delete("/v1/deployments/toy")
    gone = foundry_call(scoring_uri, {"Authorization": ADMIN_KEY})
    assert gone.status_code == 404 and gone.json()["error"]["code"] == "deployment_not_found"
    assert foundry_call(scoring_uri, {"Authorization": own_key}).status_code == 401
    assert foundry_call(scoring_uri, {"Authorization": other_key}).status_code == 401


def test_a_raw_key_authenticates_every_route(server: LiveServer) -> None:
    raw = httpx.get(f"{server.url}/v1/files", headers={"Authorization": ADMIN_KEY})
    assert raw.status_code == 200 and raw.json()["object"] == "list"
    lone_bearer = httpx.get(f"{server.url}/v1/files", headers={"Authorization": "Bearer"})
    assert lone_bearer.json()["error"]["code"] == "missing_api_key"
    basic = httpx.get(
        f"{server.url}/v1/files",
        headers={"Authorization": "Basic dXNlcjpwYXNz", "api-key": ADMIN_KEY},
    )
    assert basic.status_code == 200  # another scheme gives way to an api-key header


def test_the_public_base_url_setting_builds_the_uri(tmp_path: Path, toy_model_dir: Path) -> None:
    public = "https://ml.example.com/tunesmith/"
    for live in endpoint_server(tmp_path / "home", toy_model_dir, public_base_url=public):
        created = deploy(live, "toy", TOY_BASE)
        assert (
            created["scoring_uri"] == "https://ml.example.com/tunesmith/endpoints/proj_default/toy"
        )


def test_the_cli_shows_the_scoring_uri(
    server: LiveServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    uri = deploy(server, "toy", TOY_BASE)["scoring_uri"]
    shown = Cli(server, monkeypatch, capsys)("deployments", "show", "toy")
    assert shown.code == 0, shown.err
    assert uri in shown.out and "SCORING URI" in shown.out


@pytest.mark.parametrize(
    "value",
    [
        "ml.example.com",  # no scheme
        "ftp://ml.example.com",
        "http://",
        "https://user:secret@ml.example.com",
        "https://ml.example.com/?a=1",
        "https://ml.example.com/#top",
        "https://ml.example.com:99999",
        "https://ml example.com",
    ],
)
def test_a_bad_public_base_url_is_refused(tmp_path: Path, value: str) -> None:
    with pytest.raises(pydantic.ValidationError) as raised:
        Settings(home=tmp_path, public_base_url=value)
    (error,) = raised.value.errors()
    assert error["loc"] == ("public_base_url",) and error["type"] == "value_error"
    assert "https://ml.example.com" in error["msg"] or "password" in error["msg"]


def test_the_default_base_url_is_the_listening_address(tmp_path: Path) -> None:
    def base(**fields: Any) -> str:
        return Settings(home=tmp_path, **fields).resolved_public_base_url()

    assert base() == "http://127.0.0.1:8000"
    assert base(host="10.0.0.5", port=9000) == "http://10.0.0.5:9000"
    assert base(host="0.0.0.0") == "http://127.0.0.1:8000"  # every interface: this machine's
    assert base(host="::1") == "http://[::1]:8000"
    assert base(public_base_url="https://ml.example.com/") == "https://ml.example.com"
