"""The Azure OpenAI client as Azure's documentation builds it — ``openai.AzureOpenAI(
azure_endpoint=…, api_key=…, api_version=…)`` — against a live server: the notebook cells in
order (files, uploads, a fine-tuning job, its events and checkpoints, models, chat to a
deployment), for two API versions; every classic ``/openai/<resource>`` path; the ``api-version``
rule of each path family, and malformed versions refused before anything is created."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import ADMIN_KEY, TOY_BASE, LiveServer
from tests.helpers import chat_example, jsonl, training_file, wait_for_job

HELLO = [{"role": "user", "content": "What is 3 plus 3?"}]


def azure(live: LiveServer, api_version: str, key: str = ADMIN_KEY) -> openai.AzureOpenAI:
    return openai.AzureOpenAI(
        azure_endpoint=live.url, api_key=key, api_version=api_version, max_retries=0
    )


@pytest.mark.parametrize("api_version", ["2024-05-01-preview", "2024-10-21"])
def test_the_azure_notebook_cells_run_in_order(
    jobs_live: LiveServer, tmp_path: Path, api_version: str
) -> None:
    train = tmp_path / "train.jsonl"
    train.write_bytes(training_file(10))
    client = azure(jobs_live, api_version)

    # client.files.create(file=open("train.jsonl", "rb"), purpose="fine-tune")
    with train.open("rb") as handle:
        training = client.files.create(file=handle, purpose="fine-tune")
    assert training.filename == "train.jsonl" and training.status == "processed"
    assert client.files.retrieve(training.id).bytes == train.stat().st_size
    assert client.files.content(training.id).read() == train.read_bytes()

    # The validation file through the Uploads API (/openai/uploads…), in two parts.
    data = jsonl([chat_example(i) for i in range(20, 24)])
    upload = client.uploads.create(
        bytes=len(data), filename="valid.jsonl", mime_type="application/jsonl", purpose="fine-tune"
    )
    parts = [
        client.uploads.parts.create(upload_id=upload.id, data=chunk)
        for chunk in (data[: len(data) // 2], data[len(data) // 2 :])
    ]
    done_upload = client.uploads.complete(upload_id=upload.id, part_ids=[p.id for p in parts])
    assert done_upload.status == "completed" and done_upload.file is not None
    validation = done_upload.file
    assert {f.id for f in client.files.list(purpose="fine-tune")} == {training.id, validation.id}

    # client.fine_tuning.jobs.create(training_file=..., validation_file=..., model=..., seed=105)
    job = client.fine_tuning.jobs.create(
        training_file=training.id,
        validation_file=validation.id,
        model=TOY_BASE,
        seed=105,
        hyperparameters={"n_epochs": 1, "batch_size": 2},  # five steps: the test stays short
    )
    assert job.status == "validating_files" and job.seed == 105

    # client.fine_tuning.jobs.retrieve(job_id).model_dump_json(indent=2)
    dumped = json.loads(client.fine_tuning.jobs.retrieve(job.id).model_dump_json(indent=2))
    assert dumped["id"] == job.id and dumped["object"] == "fine_tuning.job"
    assert dumped["training_file"] == training.id and dumped["validation_file"] == validation.id
    assert dumped["model"] == TOY_BASE and dumped["seed"] == 105
    assert [j.id for j in client.fine_tuning.jobs.list()] == [job.id]

    done = wait_for_job(client, job.id, {"succeeded"})
    assert done.fine_tuned_model == f"ft:{TOY_BASE}:default::{job.id}"

    # client.fine_tuning.jobs.list_events(job_id); client.fine_tuning.jobs.checkpoints.list(job_id)
    events = client.fine_tuning.jobs.list_events(job.id, limit=100).data
    messages = [e.message for e in events]
    assert messages[0] == "The job has successfully completed"  # newest first
    assert f"Created fine-tuning job: {job.id}" in messages
    assert [e.data["step"] for e in events if e.type == "metrics"] == [5, 4, 3, 2, 1]
    checkpoints = client.fine_tuning.jobs.checkpoints.list(job.id).data
    assert [c.step_number for c in checkpoints] == [5]
    assert checkpoints[0].fine_tuned_model_checkpoint == f"{done.fine_tuned_model}:ckpt-step-5"

    models = [m.id for m in client.models.list()]
    assert TOY_BASE in models and done.fine_tuned_model in models
    assert client.models.retrieve(done.fine_tuned_model).owned_by == "proj_default"

    # The deployment, made with the project API; then client.chat.completions.create(model=...)
    with jobs_live.http() as http:
        deployed = http.post(
            "/v1/deployments", json={"name": "my-deployment", "model": done.fine_tuned_model}
        )
    assert deployed.status_code == 200, deployed.text
    answer = client.chat.completions.create(
        model="my-deployment",
        messages=HELLO,
        temperature=0,
        max_tokens=8,  # type: ignore[arg-type]
    )
    assert answer.object == "chat.completion" and answer.model == done.fine_tuned_model
    same = jobs_live.client().chat.completions.create(
        model="my-deployment",
        messages=HELLO,
        temperature=0,
        max_tokens=8,  # type: ignore[arg-type]
    )
    assert answer.choices[0].message.content == same.choices[0].message.content

    # cancel, pause and resume answer at the classic paths too (a finished job refuses them).
    for action in (client.fine_tuning.jobs.cancel, client.fine_tuning.jobs.pause):
        with pytest.raises(openai.ConflictError) as refused:
            action(job.id)
        assert isinstance(refused.value.body, dict)
        assert refused.value.body["code"] == "invalid_job_state"
    with pytest.raises(openai.ConflictError):
        client.fine_tuning.jobs.resume(job.id)


@pytest.mark.parametrize(
    "bad",
    [
        "2024-13-01",  # no 13th month
        "2024-02-30",  # no such day
        "20241021",
        "2024-10-21-beta",
        "v2024-10-21",
        "latest",  # the v1 API's alias, not a classic version
        "",
        "2024-10-21\n",
    ],
)
def test_a_malformed_api_version_is_refused_and_creates_nothing(
    jobs_api: LiveServer, bad: str
) -> None:
    client = azure(jobs_api, bad)
    with pytest.raises(openai.BadRequestError) as raised:
        client.files.create(file=("train.jsonl", training_file(10)), purpose="fine-tune")
    error = raised.value.body
    assert isinstance(error, dict)
    assert error["param"] == "api-version" and error["code"] == "invalid_api_version"
    assert "YYYY-MM-DD" in error["message"] and "2024-10-21" in error["message"]
    with pytest.raises(openai.BadRequestError):
        client.fine_tuning.jobs.create(training_file="file-x", model=TOY_BASE)
    with pytest.raises(openai.BadRequestError):
        client.uploads.create(bytes=10, filename="t.jsonl", mime_type="text/plain", purpose="batch")
    good = azure(jobs_api, "2024-10-21")
    assert good.files.list().data == []
    assert good.fine_tuning.jobs.list().data == []


def test_the_api_version_is_required_on_classic_paths_and_sent_once(live: LiveServer) -> None:
    with live.http() as http:
        missing = http.get("/openai/files")
        assert missing.status_code == 400, missing.text
        error = missing.json()["error"]
        assert error["param"] == "api-version" and error["code"] == "missing_api_version"
        assert "/openai/v1/" in error["message"]  # says where no version is needed
        twice = http.get("/openai/files?api-version=2024-10-21&api-version=2024-02-01")
        assert twice.status_code == 400 and twice.json()["error"]["param"] == "api-version"
        # Refused before the key is even read: a request without one gets the same 400.
        anonymous = httpx.get(f"{live.url}/openai/models?api-version=2024-99-01")
        assert anonymous.status_code == 400
        assert anonymous.json()["error"]["param"] == "api-version"
        missing_chat = http.post("/openai/deployments/toy/chat/completions", json={})
        assert missing_chat.json()["error"]["code"] == "missing_api_version"


def test_every_classic_path_answers_as_its_v1_path(live: LiveServer) -> None:
    with live.http() as http:
        uploaded = http.post(
            "/openai/files",
            params={"api-version": "2024-02-01"},
            files={"file": ("t.jsonl", training_file(10))},
            data={"purpose": "fine-tune"},
        )
        assert uploaded.status_code == 200, uploaded.text
        file_id = uploaded.json()["id"]
        for path in (
            "/files",
            f"/files/{file_id}",
            f"/files/{file_id}/content",
            "/models",
            "/models/SmolLM2-135M-Instruct",
            "/fine_tuning/jobs",
        ):
            classic = http.get(f"/openai{path}", params={"api-version": "2024-10-21"})
            plain = http.get(f"/v1{path}")
            assert classic.status_code == 200, (path, classic.text)
            assert classic.content == plain.content, path
        for path, body in (
            ("/uploads", {"bytes": 5, "filename": "a.jsonl", "mime_type": "x", "purpose": "batch"}),
            ("/moderations", {"input": "What a lovely day for a picnic."}),
            ("/chat/completions", {"model": "nothing-here", "messages": HELLO}),
            ("/completions", {"model": "nothing-here", "prompt": "Hello"}),
        ):
            classic = http.post(f"/openai{path}?api-version=2024-06-01", json=body)
            plain = http.post(f"/v1{path}", json=body)
            assert classic.status_code == plain.status_code, (path, classic.text)
            assert classic.json().keys() == plain.json().keys(), path
        unknown = http.get(f"/openai/files/{file_id}/nothing?api-version=2024-10-21")
        assert unknown.status_code == 404
        assert f"/openai/v1/files/{file_id}/nothing" in unknown.json()["error"]["message"]
        deleted = http.delete(f"/openai/files/{file_id}?api-version=2024-10-21")
        assert deleted.json() == {"id": file_id, "object": "file", "deleted": True}


def test_extensions_stay_at_v1_and_openai_v1(live: LiveServer) -> None:
    with live.http() as http:
        for path in ("/usage", "/deployments", "/me", "/webhook_endpoints"):
            assert http.get(f"/v1{path}").status_code == 200, path
            assert http.get(f"/openai/v1{path}").status_code == 200, path
            assert http.get(f"/openai{path}?api-version=2024-10-21").status_code == 404, path


@pytest.mark.parametrize("version", [None, "preview", "latest", "v1", "2025-04-01-preview"])
def test_the_v1_paths_take_azures_v1_versions(live: LiveServer, version: str | None) -> None:
    query: dict[str, Any] = {} if version is None else {"api-version": version}
    client = openai.OpenAI(
        base_url=f"{live.url}/openai/v1", api_key=ADMIN_KEY, default_query=query, max_retries=0
    )
    created = client.files.create(file=("t.jsonl", training_file(10)), purpose="fine-tune")
    assert [f.id for f in client.files.list()] == [created.id]


def test_the_v1_paths_refuse_a_malformed_version(live: LiveServer) -> None:
    client = openai.OpenAI(
        base_url=f"{live.url}/openai/v1",
        api_key=ADMIN_KEY,
        default_query={"api-version": "newest"},
        max_retries=0,
    )
    with pytest.raises(openai.BadRequestError) as raised:
        client.files.create(file=("t.jsonl", training_file(10)), purpose="fine-tune")
    assert isinstance(raised.value.body, dict)
    assert raised.value.body["param"] == "api-version"
    assert "preview, latest, v1" in raised.value.body["message"]
    assert live.client().files.list().data == []


def test_plain_v1_paths_ignore_the_api_version(live: LiveServer) -> None:
    with live.http() as http:
        assert http.get("/v1/files?api-version=whatever").status_code == 200
