"""Every response of every operation tunesmith implements that OpenAI documents validates against
that operation's response schema in OpenAI's published OpenAPI document (``tests/openai_schema.py``
and ``tests/data/openai-openapi/``): files, uploads, fine-tuning jobs with their events and
checkpoints, models, chat completions and their stream chunks, completions, moderations, error
envelopes, and the same under Azure's ``/openai/...`` paths. The responses are recorded once,
against one live server that trains a toy job; each is checked by its own test. (Answers with
tool calls need a model trained on them: ``tests/test_tool_calls.py`` checks those.)

Also: a request the schema allows is served, never refused: a list ``limit`` above tunesmith's
page size is a full page."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
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
from tests.helpers import chat_example, jsonl, training_file
from tests.openai_schema import COMMIT, SPEC_DIR, OpenAISchema, parse_sse
from tunesmith.api.app import create_app

HELLO = [{"role": "user", "content": "What is the capital of France?"}]
AZURE = {"api-version": "2024-10-21"}


@dataclass
class Record:
    method: str
    path: str
    status: int
    body: Any
    """The JSON body, or a stream's text."""
    stream: bool = False


class Recorder:
    def __init__(self, http: httpx.Client) -> None:
        self.http = http
        self.records: dict[str, Record] = {}

    def __call__(
        self,
        name: str,
        method: str,
        path: str,
        *,
        status: int = 200,
        stream: bool = False,
        **kw: Any,
    ) -> Any:
        response = self.http.request(method, path, **kw)
        assert response.status_code == status, f"{name}: {response.status_code} {response.text}"
        if stream:
            assert response.headers["content-type"].startswith("text/event-stream")
        body = response.text if stream else response.json()
        self.records[name] = Record(method, path, status, body, stream)
        return body


def wait_for(http: httpx.Client, job_id: str, statuses: set[str]) -> dict[str, Any]:
    deadline = time.monotonic() + 120
    while True:
        job: dict[str, Any] = http.get(f"/v1/fine_tuning/jobs/{job_id}").json()
        if job["status"] in statuses:
            return job
        assert job["status"] not in {"failed", "cancelled", "succeeded"}, job
        assert time.monotonic() < deadline, f"job {job_id} still {job['status']}"
        time.sleep(0.05)


def create_job(http: httpx.Client, training: str, **hyperparameters: Any) -> dict[str, Any]:
    body = {
        "model": TOY_BASE,
        "training_file": training,
        "method": {"type": "supervised", "supervised": {"hyperparameters": hyperparameters}},
    }
    response = http.post("/v1/fine_tuning/jobs", json=body)
    assert response.status_code == 200, response.text
    job: dict[str, Any] = response.json()
    return job


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, toy_model_dir: Path) -> Iterator[LiveServer]:
    """A server with a worker, the toy model registered and deployed as ``toy``."""
    settings = jobs_settings_for(tmp_path_factory.mktemp("schema-home"), toy_model_dir)
    env = pytest.MonkeyPatch()
    env.setenv("OMP_NUM_THREADS", "1")  # the toy's steps are tiny; one thread is faster
    app = create_app(settings)
    register_toy_base(app, toy_model_dir)
    try:
        for live in run_live(app, settings):
            with live.http() as http:
                deployed = http.post("/v1/deployments", json={"name": "toy", "model": TOY_BASE})
                assert deployed.status_code == 200, deployed.text
            yield live
    finally:
        env.undo()


@pytest.fixture(scope="module")
def recorded(server: LiveServer) -> dict[str, Record]:
    with server.http() as http:
        record = Recorder(http)
        _files(record)
        _uploads(record)
        _jobs(record)
        _models(record)
        _chat(record)
        _moderations(record)
        _errors(record, server)
        _azure(record)
        return record.records


def _files(record: Recorder) -> None:
    record("files.list.empty", "GET", "/v1/files")
    record(
        "files.create",
        "POST",
        "/v1/files",
        files={"file": ("train.jsonl", training_file(12))},
        data={"purpose": "fine-tune"},
    )
    expiring = record(
        "files.create.expiring",
        "POST",
        "/v1/files",
        files={"file": ("brief.jsonl", training_file(10))},
        data={
            "purpose": "fine-tune",
            "expires_after[anchor]": "created_at",
            "expires_after[seconds]": "3600",
        },
    )
    record(
        "files.create.invalid",
        "POST",
        "/v1/files",
        files={"file": ("short.jsonl", jsonl([{"messages": [{"role": "user", "content": "hi"}]}]))},
        data={"purpose": "fine-tune"},
    )
    record("files.list", "GET", "/v1/files")
    record("files.retrieve", "GET", f"/v1/files/{expiring['id']}")
    record("files.delete", "DELETE", f"/v1/files/{expiring['id']}")


def _uploads(record: Recorder) -> None:
    data = jsonl([chat_example(i) for i in range(20, 30)])
    fields = {"filename": "valid.jsonl", "purpose": "fine-tune", "mime_type": "application/jsonl"}
    upload = record("uploads.create", "POST", "/v1/uploads", json={**fields, "bytes": len(data)})
    part = record(
        "uploads.parts.create",
        "POST",
        f"/v1/uploads/{upload['id']}/parts",
        files={"data": ("blob", data)},
    )
    record(
        "uploads.complete",
        "POST",
        f"/v1/uploads/{upload['id']}/complete",
        json={"part_ids": [part["id"]]},
    )
    other = record("uploads.create.other", "POST", "/v1/uploads", json={**fields, "bytes": 10})
    record("uploads.cancel", "POST", f"/v1/uploads/{other['id']}/cancel")


def _jobs(record: Recorder) -> None:
    http = record.http
    training = http.get("/v1/files", params={"purpose": "fine-tune"}).json()["data"]
    training_id = next(f["id"] for f in training if f["filename"] == "train.jsonl")
    job = record(
        "jobs.create",
        "POST",
        "/v1/fine_tuning/jobs",
        json={
            "model": TOY_BASE,
            "training_file": training_id,
            "suffix": "schema",
            "metadata": {"team": "qa"},
            "method": {
                "type": "supervised",
                # 120 steps: more events than a page holds
                "supervised": {"hyperparameters": {"n_epochs": 10, "batch_size": 1}},
            },
        },
    )
    wait_for(http, job["id"], {"succeeded"})
    record("jobs.retrieve.succeeded", "GET", f"/v1/fine_tuning/jobs/{job['id']}")
    record("jobs.events", "GET", f"/v1/fine_tuning/jobs/{job['id']}/events", params={"limit": 100})
    record("jobs.checkpoints", "GET", f"/v1/fine_tuning/jobs/{job['id']}/checkpoints")

    long = create_job(http, training_id, n_epochs=50, batch_size=1)
    wait_for(http, long["id"], {"running"})
    record("jobs.retrieve.running", "GET", f"/v1/fine_tuning/jobs/{long['id']}")
    record("jobs.pause", "POST", f"/v1/fine_tuning/jobs/{long['id']}/pause")
    record("jobs.resume", "POST", f"/v1/fine_tuning/jobs/{long['id']}/resume")
    record("jobs.cancel", "POST", f"/v1/fine_tuning/jobs/{long['id']}/cancel")
    record("jobs.list", "GET", "/v1/fine_tuning/jobs")
    record("jobs.list.metadata", "GET", "/v1/fine_tuning/jobs", params={"metadata[team]": "qa"})

    bad = http.post(
        "/v1/files",
        files={"file": ("tiny.jsonl", training_file(2))},
        data={"purpose": "fine-tune"},
    ).json()
    failed = create_job(http, bad["id"])
    wait_for(http, failed["id"], {"failed"})
    record("jobs.retrieve.failed", "GET", f"/v1/fine_tuning/jobs/{failed['id']}")


def _models(record: Recorder) -> None:
    listed = record("models.list", "GET", "/v1/models")
    fine_tuned = next(m["id"] for m in listed["data"] if m["id"].startswith("ft:"))
    record("models.retrieve.base", "GET", f"/v1/models/{TOY_BASE}")
    record("models.retrieve.fine_tuned", "GET", f"/v1/models/{fine_tuned}")
    checkpoint = next(m["id"] for m in listed["data"] if ":ckpt-step-" in m["id"])
    record("models.delete", "DELETE", f"/v1/models/{checkpoint}")


def _chat(record: Recorder) -> None:
    chat = {"model": "toy", "messages": HELLO, "temperature": 0, "max_tokens": 8}
    record("chat.create", "POST", "/v1/chat/completions", json=chat)
    record("chat.create.n", "POST", "/v1/chat/completions", json={**chat, "n": 2, "seed": 1})
    record(
        "chat.create.stop",
        "POST",
        "/v1/chat/completions",
        json={**chat, "max_tokens": 30, "stop": ["a"]},
    )
    record(
        "chat.stream", "POST", "/v1/chat/completions", json={**chat, "stream": True}, stream=True
    )
    record(
        "chat.stream.usage",
        "POST",
        "/v1/chat/completions",
        json={**chat, "n": 2, "stream": True, "stream_options": {"include_usage": True}},
        stream=True,
    )
    text = {"model": "toy", "prompt": "The capital of France is", "max_tokens": 8}
    record("completions.create", "POST", "/v1/completions", json=text)
    record(
        "completions.stream",
        "POST",
        "/v1/completions",
        json={**text, "stream": True, "stream_options": {"include_usage": True}},
        stream=True,
    )


def _moderations(record: Recorder) -> None:
    record("moderations.create", "POST", "/v1/moderations", json={"input": "hello there"})
    record(
        "moderations.create.many",
        "POST",
        "/v1/moderations",
        json={"input": ["What a lovely day.", "I will kill you."]},
    )


def _errors(record: Recorder, server: LiveServer) -> None:
    chat = {"model": "toy", "messages": HELLO}
    record("errors.400.body", "POST", "/v1/chat/completions", status=400, json={"model": "toy"})
    record(
        "errors.400.logprobs",
        "POST",
        "/v1/chat/completions",
        status=400,
        json={**chat, "logprobs": True},
    )
    record("errors.400.limit", "GET", "/v1/fine_tuning/jobs", status=400, params={"limit": 0})
    with httpx.Client(base_url=server.url, headers={"Authorization": "Bearer nope"}) as stranger:
        response = stranger.get("/v1/models")
        assert response.status_code == 401
        record.records["errors.401"] = Record("GET", "/v1/models", 401, response.json())
    record("errors.404.file", "GET", "/v1/files/file-nothere", status=404)
    record(
        "errors.404.model",
        "POST",
        "/v1/chat/completions",
        status=404,
        json={**chat, "model": "none"},
    )
    jobs = record.http.get("/v1/fine_tuning/jobs").json()["data"]
    done = next(j["id"] for j in jobs if j["status"] == "succeeded")
    record("errors.409", "POST", f"/v1/fine_tuning/jobs/{done}/cancel", status=409)


def _azure(record: Recorder) -> None:
    record("azure.files.list", "GET", "/openai/files", params=AZURE)
    record("azure.jobs.list", "GET", "/openai/fine_tuning/jobs", params=AZURE)
    record("azure.models.list", "GET", "/openai/models", params=AZURE)
    chat = {"messages": HELLO, "temperature": 0, "max_tokens": 8}
    path = "/openai/deployments/toy/chat/completions"
    record("azure.chat.create", "POST", path, params=AZURE, json=chat)
    record(
        "azure.chat.stream", "POST", path, params=AZURE, json={**chat, "stream": True}, stream=True
    )
    record(
        "azure.completions.create",
        "POST",
        "/openai/deployments/toy/completions",
        params=AZURE,
        json={"prompt": "Hello", "max_tokens": 4},
    )


RECORDS = (
    *("files.list.empty", "files.create", "files.create.expiring", "files.create.invalid"),
    *("files.list", "files.retrieve", "files.delete"),
    *("uploads.create", "uploads.parts.create", "uploads.complete", "uploads.create.other"),
    "uploads.cancel",
    *("jobs.create", "jobs.retrieve.succeeded", "jobs.retrieve.running", "jobs.retrieve.failed"),
    *("jobs.events", "jobs.checkpoints", "jobs.pause", "jobs.resume", "jobs.cancel"),
    *("jobs.list", "jobs.list.metadata"),
    *("models.list", "models.retrieve.base", "models.retrieve.fine_tuned", "models.delete"),
    *("chat.create", "chat.create.n", "chat.create.stop", "chat.stream", "chat.stream.usage"),
    *("completions.create", "completions.stream"),
    *("moderations.create", "moderations.create.many"),
    *("errors.400.body", "errors.400.logprobs", "errors.400.limit", "errors.401"),
    *("errors.404.file", "errors.404.model", "errors.409"),
    *("azure.files.list", "azure.jobs.list", "azure.models.list"),
    *("azure.chat.create", "azure.chat.stream", "azure.completions.create"),
)


@pytest.mark.parametrize("name", RECORDS)
def test_the_response_validates_against_openais_schema(
    recorded: dict[str, Record], name: str
) -> None:
    got = recorded[name]
    OpenAISchema.load().check(got.method, got.path, got.body, status=got.status, stream=got.stream)


def test_every_operation_of_the_document_was_recorded(recorded: dict[str, Record]) -> None:
    schema = OpenAISchema.load()
    covered = {(r.method.lower(), schema.operation_path(r.path)) for r in recorded.values()}
    documented = {(m, p) for p, ops in schema.document["paths"].items() for m in ops}
    assert documented - covered == set()
    assert set(recorded) == set(RECORDS)


def test_the_recordings_show_what_they_claim(recorded: dict[str, Record]) -> None:
    """The checks above only mean something if the recordings hold the cases named."""
    assert recorded["files.list.empty"].body["data"] == []
    assert recorded["files.create.expiring"].body["expires_at"] > 0
    assert recorded["files.create.invalid"].body["status"] == "error"
    assert recorded["uploads.complete"].body["file"]["object"] == "file"
    assert recorded["jobs.pause"].body["status"] == "paused"
    assert recorded["jobs.retrieve.failed"].body["error"]["code"]
    events = recorded["jobs.events"].body["data"]
    assert {e["type"] for e in events} == {"message", "metrics"}
    assert recorded["jobs.checkpoints"].body["data"]
    chunks = parse_sse(recorded["chat.stream.usage"].body)
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] > 0
    reasons = [c["finish_reason"] for chunk in chunks[:-1] for c in chunk["choices"]]
    assert reasons.count(None) == len(reasons) - 2  # null until each of the two choices ends
    text_chunks = parse_sse(recorded["completions.stream"].body)
    assert text_chunks[-1]["choices"] == [] and text_chunks[-1]["usage"]
    assert recorded["moderations.create.many"].body["results"][1]["flagged"]


def test_a_stream_without_finish_reason_does_not_validate() -> None:
    """The validator sees the fault the live stream once had: a choice without
    ``finish_reason``."""
    chunk = '{"id":"c","object":"chat.completion.chunk","created":1,"model":"m",'
    chunk += '"choices":[{"index":0,"delta":{"content":"hi"}}]}'
    problems = OpenAISchema.load().problems(
        "POST", "/v1/chat/completions", f"data: {chunk}\n\ndata: [DONE]\n\n", stream=True
    )
    assert problems == ["chunk 0: $.choices[0]: 'finish_reason' is a required property"]


def test_the_docs_name_the_commit_the_document_comes_from() -> None:
    api = (Path(__file__).parents[1] / "docs" / "API.md").read_text()
    assert COMMIT in (SPEC_DIR / "README.md").read_text() and COMMIT in api
    assert "tests/test_openai_schema.py" in api


def test_the_document_normalised_reads_as_json_schema() -> None:
    schema = OpenAISchema.load()
    rate = schema.document["components"]["schemas"]["FineTuneSupervisedHyperparameters"]
    number = rate["properties"]["learning_rate_multiplier"]["oneOf"][1]
    assert number == {"type": "number", "exclusiveMinimum": 0}
    assert "nullable" not in str(schema.document)
    job = "/v1/fine_tuning/jobs/ftjob-1"
    assert schema.problems("GET", job, {}, status=404) == ["$: 'error' is a required property"]


# -- limits: what the schema allows is served ------------------------------------------------------


def test_a_limit_above_the_page_size_is_a_full_page(server: LiveServer, recorded: Any) -> None:
    schema = OpenAISchema.load()
    with server.http() as http:
        job = next(
            j for j in http.get("/v1/fine_tuning/jobs").json()["data"] if j["status"] == "succeeded"
        )
        events = f"/v1/fine_tuning/jobs/{job['id']}/events"
        assert "maximum" not in schema.parameter_schema("GET", events, "limit")
        everything = http.get(events, params={"limit": 100}).json()["data"]
        assert len(everything) == 100
        for path in (
            events,
            f"/v1/fine_tuning/jobs/{job['id']}/checkpoints",
            "/v1/fine_tuning/jobs",
        ):
            response = http.get(path, params={"limit": 500})
            assert response.status_code == 200, response.text
            schema.check("GET", path, response.json())
        assert http.get(events, params={"limit": 500}).json()["data"] == everything[:100]
        others = ("/v1/deployments", "/v1/deployments/toy/events", "/v1/webhook_endpoints")
        for path in (*others, "/v1/projects", "/v1/projects/proj_default/api_keys", "/v1/files"):
            assert http.get(path, params={"limit": 100_000}).status_code == 200, path
        files = http.get("/v1/files", params={"limit": 10_000})
        assert files.status_code == 200
        schema.check("GET", "/v1/files", files.json())
        for bad in (0, -1):
            refused = http.get(events, params={"limit": bad})
            assert refused.status_code == 400
            assert refused.json()["error"]["param"] == "limit"
            schema.check("GET", events, refused.json(), status=400)


def test_tunesmith_refuses_a_key_it_does_not_know_in_the_envelope(server: LiveServer) -> None:
    with httpx.Client(base_url=server.url, headers={"api-key": ADMIN_KEY + "x"}) as http:
        response = http.get("/openai/models", params=AZURE)
    assert response.status_code == 401
    OpenAISchema.load().check("GET", "/openai/models", response.json(), status=401)
