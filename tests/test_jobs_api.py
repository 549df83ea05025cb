"""The fine-tuning jobs API through the official ``openai`` client, on the toy model: the whole
lifecycle, events, checkpoints, the results file, models, cancel, pause/resume, continued
fine-tuning, registered names, validation failures, bad requests and project isolation."""

from __future__ import annotations

import csv
import io
import time
from typing import Any

import openai
import pytest

from tests.conftest import TOY_BASE, LiveServer
from tests.helpers import all_events, chat_example, jsonl, training_file, wait_for_job
from tests.toy_model import CHATML_TEMPLATE
from tunesmith.training.metrics import RESULTS_COLUMNS

FAST = {"n_epochs": 2, "batch_size": 2}


def upload(client: openai.OpenAI, content: bytes, name: str = "train.jsonl") -> str:
    return client.files.create(file=(name, content), purpose="fine-tune").id


def create(client: openai.OpenAI, training: str, **fields: Any) -> Any:
    hyperparameters = fields.pop("hyperparameters", FAST)
    return client.fine_tuning.jobs.create(
        model=fields.pop("model", TOY_BASE),
        training_file=training,
        method={"type": "supervised", "supervised": {"hyperparameters": hyperparameters}},
        **fields,
    )


def project_key(live: LiveServer, role: str = "owner") -> str:
    with live.http() as http:
        project = http.post("/v1/projects", json={"name": f"team {role}"}).json()
        key = http.post(
            f"/v1/projects/{project['id']}/api_keys", json={"name": "k", "role": role}
        ).json()
    return str(key["value"])


def test_a_job_runs_from_upload_to_a_registered_model(jobs_live: LiveServer) -> None:
    client = jobs_live.client()
    training = upload(client, training_file(12))
    validation = upload(client, jsonl([chat_example(i) for i in range(20, 24)]), "valid.jsonl")
    job = create(
        client,
        training,
        validation_file=validation,
        suffix="arith",
        seed=7,
        metadata={"team": "qa"},
    )
    assert job.status == "validating_files"
    assert job.seed == 7 and job.metadata == {"team": "qa"}
    assert job.fine_tuned_model is None and job.finished_at is None

    done = wait_for_job(client, job.id, {"succeeded"})
    assert done.hyperparameters.n_epochs == 2
    assert done.hyperparameters.batch_size == 2
    assert done.hyperparameters.learning_rate_multiplier == 1.0
    assert done.method.supervised.hyperparameters.n_epochs == 2
    # 2 epochs of the training file as its report counts it; the validation file is not trained
    stats = jobs_live.http().get(f"/v1/files/{training}/validation").json()["statistics"]
    assert done.trained_tokens == 2 * stats["billable_tokens"]
    assert done.finished_at is not None and done.estimated_finish is None
    assert done.fine_tuned_model == f"ft:{TOY_BASE}:default:arith:{job.id}"

    events = all_events(client, job.id)
    messages = [e.message for e in events if e.type == "message"]
    assert messages[0] == f"Created fine-tuning job: {job.id}"
    assert messages[1] == f"Validating training file: {training} and validation file: {validation}"
    for expected in (
        "Files validated, moving job to queued state",
        "Fine-tuning job started",
        f"New fine-tuned model created: {done.fine_tuned_model}",
        "The job has successfully completed",
    ):
        assert expected in messages
    assert messages[-1] == "The job has successfully completed"
    metrics = [e for e in events if e.type == "metrics"]
    assert [e.data["step"] for e in metrics] == list(range(1, 13))  # 12 examples / 2 x 2 epochs
    assert all(e.data["total_steps"] == 12 for e in metrics)
    assert metrics[0].message.startswith("Step 1/12: training loss=")
    assert {"train_loss", "train_mean_token_accuracy"} <= set(metrics[0].data)
    assert "full_valid_loss" in metrics[5].data  # the end of epoch 1
    assert metrics[-1].data["train_loss"] < metrics[0].data["train_loss"]

    checkpoints = client.fine_tuning.jobs.checkpoints.list(job.id).data
    assert [c.step_number for c in checkpoints] == [12, 6]  # newest first
    assert checkpoints[0].fine_tuned_model_checkpoint == f"{done.fine_tuned_model}:ckpt-step-12"
    assert checkpoints[0].metrics.full_valid_loss is not None
    assert checkpoints[0].fine_tuning_job_id == job.id

    (results_id,) = done.result_files
    results_file = client.files.retrieve(results_id)
    assert results_file.purpose == "fine-tune-results"
    rows = list(csv.DictReader(io.StringIO(client.files.content(results_id).text)))
    assert tuple(rows[0]) == RESULTS_COLUMNS
    assert [int(r["step"]) for r in rows] == list(range(1, 13))

    listed = client.models.list().data
    ids = [m.id for m in listed]
    assert ids[0] == "SmolLM2-135M-Instruct" and TOY_BASE in ids
    toy = listed[ids.index(TOY_BASE)]
    assert toy.owned_by == "tunesmith" and toy.created > 0  # when the operator registered it
    assert done.fine_tuned_model in ids
    assert f"{done.fine_tuned_model}:ckpt-step-6" in ids
    model = client.models.retrieve(done.fine_tuned_model)
    assert model.owned_by == "proj_default"
    assert model.model_extra is not None
    assert model.model_extra["context_length"] == toy.model_extra["context_length"] == 256
    assert model.model_extra["tasks"] == ["chat_completion", "text_generation"]
    assert model.model_extra["chat_template"] == CHATML_TEMPLATE  # saved with the model
    folder = jobs_live.settings.fine_tuned_dir(job.id)
    assert (folder / "adapter_model.safetensors").exists()
    assert not (folder / "trainer_state.pt").exists()


def test_validation_split_holds_out_examples_by_seed(jobs_live: LiveServer) -> None:
    client = jobs_live.client()
    training = upload(client, training_file(16))
    job = create(client, training, seed=3, extra_body={"validation_split": 0.25})
    done = wait_for_job(client, job.id, {"succeeded"})
    resolved = done.method.supervised.hyperparameters
    assert done.model_extra["validation_split"] == 0.25
    assert done.total_steps == 12  # 12 examples train (4 held out), batch 2, 2 epochs
    assert resolved.batch_size == 2
    metrics = [e for e in all_events(client, job.id) if e.type == "metrics"]
    assert "full_valid_loss" in metrics[-1].data


def test_cancel_stops_a_running_job(jobs_live: LiveServer) -> None:
    client = jobs_live.client()
    training = upload(client, training_file(12))
    job = create(client, training, hyperparameters={"n_epochs": 50, "batch_size": 1})
    wait_for_metrics(client, job.id, 3)
    cancelled = client.fine_tuning.jobs.cancel(job.id)
    assert cancelled.status == "cancelled"
    assert cancelled.finished_at is not None
    stopped = wait_for_message(client, job.id, "Training stopped at step")
    step = int(stopped.split("step ")[1].split("/")[0])
    time.sleep(0.5)
    after = client.fine_tuning.jobs.retrieve(job.id)
    assert after.status == "cancelled" and after.fine_tuned_model is None
    assert after.step == step < 600  # nothing trained after the stop
    with pytest.raises(openai.ConflictError) as raised:
        client.fine_tuning.jobs.cancel(job.id)
    assert raised.value.body["code"] == "invalid_job_state"  # type: ignore[index]


def test_pause_checkpoints_and_resume_finishes(jobs_live: LiveServer) -> None:
    client = jobs_live.client()
    training = upload(client, training_file(12))
    job = create(client, training, hyperparameters={"n_epochs": 4, "batch_size": 1})
    wait_for_metrics(client, job.id, 8)
    paused = client.fine_tuning.jobs.pause(job.id)
    assert paused.status == "paused"
    text = wait_for_message(client, job.id, "The job is paused at step")
    step = int(text.split("step ")[1].split("/")[0])
    with pytest.raises(openai.ConflictError):
        client.fine_tuning.jobs.pause(job.id)
    checkpoint_steps = [c.step_number for c in client.fine_tuning.jobs.checkpoints.list(job.id)]
    assert step in checkpoint_steps  # a checkpoint written at the pause

    assert paused.trained_tokens is None  # as OpenAI: null until the job has finished

    resumed = client.fine_tuning.jobs.resume(job.id)
    assert resumed.status == "queued"
    done = wait_for_job(client, job.id, {"succeeded"})
    assert done.step == 48
    events = all_events(client, job.id)
    assert any(f"Resuming from checkpoint ckpt-step-{step}" in e.message for e in events)
    metrics = [e.data for e in events if e.type == "metrics"]
    assert [m["step"] for m in metrics] == list(range(1, 49))  # no step reported twice
    # the count goes on from the pause: 4 epochs of the file, each counted once
    stats = jobs_live.http().get(f"/v1/files/{training}/validation").json()["statistics"]
    billable = stats["billable_tokens"]
    assert [m["trained_tokens"] for m in metrics][11::12] == [billable * k for k in (1, 2, 3, 4)]
    assert done.trained_tokens == 4 * billable


def test_continued_fine_tuning_trains_the_adapter_further(jobs_live: LiveServer) -> None:
    client = jobs_live.client()
    training = upload(client, training_file(12))
    first = wait_for_job(client, create(client, training, suffix="one").id, {"succeeded"})
    ckpt = client.fine_tuning.jobs.checkpoints.list(first.id).data[-1]
    second = create(client, training, model=ckpt.fine_tuned_model_checkpoint, suffix="two")
    done = wait_for_job(client, second.id, {"succeeded"})
    assert done.model == ckpt.fine_tuned_model_checkpoint
    assert done.fine_tuned_model.startswith(f"ft:{TOY_BASE}:default:two:")
    first_loss = first_step_loss(client, first.id)
    assert first_step_loss(client, second.id) < first_loss  # it starts from trained weights

    with pytest.raises(openai.BadRequestError) as raised:
        create(client, training, model=first.fine_tuned_model, hyperparameters={"lora_rank": 4})
    assert raised.value.body["param"] == "method.supervised.hyperparameters.lora_rank"  # type: ignore[index]


def test_registered_names_have_versions(jobs_live: LiveServer) -> None:
    client = jobs_live.client()
    training = upload(client, training_file(12))
    named = {"registered_model": {"name": "support-bot"}}
    one = wait_for_job(client, create(client, training, extra_body=named).id, {"succeeded"})
    two = wait_for_job(client, create(client, training, extra_body=named).id, {"succeeded"})
    latest = client.models.retrieve("support-bot")
    assert latest.id == two.fine_tuned_model
    assert client.models.retrieve("support-bot:1").id == one.fine_tuned_model
    assert latest.model_extra["registered_names"] == ["support-bot:2"]
    third = create(client, training, model="support-bot:1")
    assert third.model == "support-bot:1"
    client.fine_tuning.jobs.cancel(third.id)


def test_a_file_too_small_fails_validation_with_openai_code(jobs_live: LiveServer) -> None:
    client = jobs_live.client()
    training = upload(client, training_file(7))
    job = create(client, training)
    failed = wait_for_job(client, job.id, {"failed"})
    assert failed.error.code == "invalid_n_examples"
    assert failed.error.param == "training_file"
    assert (
        failed.error.message == "Training file has 7 example(s), but must have at least 10 examples"
    )
    assert failed.finished_at is not None and failed.fine_tuned_model is None
    last = client.fine_tuning.jobs.list_events(job.id, limit=1).data[0]
    assert last.level == "error" and "must have at least 10" in last.message

    split = create(client, upload(client, training_file(12)), extra_body={"validation_split": 0.5})
    failed = wait_for_job(client, split.id, {"failed"})
    assert failed.error.code == "invalid_n_examples"
    assert "holds out 6 for validation, leaving 6" in failed.error.message


def test_lora_targets_the_model_lacks_fail_validation(jobs_live: LiveServer) -> None:
    client = jobs_live.client()
    job = create(
        client,
        upload(client, training_file(12)),
        hyperparameters={"target_modules": ["q_proj", "qkv_proj"]},
    )
    failed = wait_for_job(client, job.id, {"failed"})
    assert failed.error.code == "invalid_hyperparameters"
    assert failed.error.param == "method.supervised.hyperparameters.target_modules"
    assert "'qkv_proj' names no layer" in failed.error.message
    assert "q_proj" in failed.error.message  # the layers it does have
    assert failed.model_extra["step"] == 0  # it never trained


def test_a_broken_training_file_fails_with_the_line(jobs_live: LiveServer) -> None:
    client = jobs_live.client()
    rows = [chat_example(i) for i in range(12)]
    rows[4]["messages"][1]["role"] = "robot"
    job = create(client, upload(client, jsonl(rows)))
    failed = wait_for_job(client, job.id, {"failed"})
    assert failed.error.code == "invalid_training_file"
    assert failed.error.param == "training_file"
    assert "Line 5" in failed.error.message and "role" in failed.error.message


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"training_file": "$train"}, "model"),
        ({"model": TOY_BASE}, "training_file"),
        ({"model": TOY_BASE, "training_file": "file-missing"}, "training_file"),
        ({"model": "no-such-model", "training_file": "$train"}, "model"),
        ({"model": TOY_BASE, "training_file": "$train", "colour": "red"}, "colour"),
        ({"model": TOY_BASE, "training_file": "$train", "suffix": "a:b"}, "suffix"),
        ({"model": TOY_BASE, "training_file": "$train", "seed": -1}, "seed"),
        (
            {
                "model": TOY_BASE,
                "training_file": "$train",
                "metadata": {f"k{i}": "v" for i in range(17)},
            },
            "metadata",
        ),
        (
            {"model": TOY_BASE, "training_file": "$train", "validation_split": 0.9},
            "validation_split",
        ),
        (
            {
                "model": TOY_BASE,
                "training_file": "$train",
                "validation_file": "$train",
                "validation_split": 0.1,
            },
            "validation_split",
        ),
        ({"model": TOY_BASE, "training_file": "$train", "method": {"type": "dpo"}}, "method.type"),
        (
            {"model": TOY_BASE, "training_file": "$train", "hyperparameters": {"n_epochs": 0}},
            "hyperparameters.n_epochs",
        ),
        (
            {
                "model": TOY_BASE,
                "training_file": "$train",
                "method": {
                    "type": "supervised",
                    "supervised": {"hyperparameters": {"batch_size": 512}},
                },
            },
            "method.supervised.hyperparameters.batch_size",
        ),
        (
            {
                "model": TOY_BASE,
                "training_file": "$train",
                "method": {
                    "type": "supervised",
                    "supervised": {"hyperparameters": {"learning_rate": 0.1}},
                },
            },
            "method.supervised.hyperparameters.learning_rate",
        ),
        (
            {"model": TOY_BASE, "training_file": "$train", "hyperparameters": {"seed": 1}},
            "hyperparameters.seed",
        ),
        (
            {"model": TOY_BASE, "training_file": "$train", "integrations": [{"type": "wandb"}]},
            "integrations",
        ),
        ({"model": TOY_BASE, "training_file": "$train", "priority": 1000}, "priority"),
        (
            {"model": TOY_BASE, "training_file": "$train", "registered_model": {"name": "x/y"}},
            "registered_model.name",
        ),
        ({"model": TOY_BASE, "training_file": "$results"}, "training_file"),
    ],
)
def test_bad_requests_name_the_param_and_create_nothing(
    jobs_api: LiveServer, body: dict[str, Any], param: str
) -> None:
    client = jobs_api.client()
    train = upload(client, training_file(12))
    other = client.files.create(file=("notes.jsonl", b'{"a": 1}\n'), purpose="batch").id
    body = {
        k: {"$train": train, "$results": other}.get(v, v) if isinstance(v, str) else v
        for k, v in body.items()
    }
    with jobs_api.http() as http:
        response = http.post("/v1/fine_tuning/jobs", json=body)
        assert response.status_code in (400, 404), response.text
        error = response.json()["error"]
        assert error["param"] == param, error
        assert set(error) == {"message", "type", "param", "code"}
        assert http.get("/v1/fine_tuning/jobs").json()["data"] == []


def test_files_and_checkpoints_in_use_cannot_be_deleted(jobs_live: LiveServer) -> None:
    client = jobs_live.client()
    training = upload(client, training_file(12))
    job = create(client, training, hyperparameters={"n_epochs": 50, "batch_size": 1})
    with pytest.raises(openai.ConflictError) as raised:
        client.files.delete(training)
    assert job.id in raised.value.message
    wait_for_metrics(client, job.id, 13)  # past the first epoch's checkpoint
    checkpoint = client.fine_tuning.jobs.checkpoints.list(job.id).data[0]
    with pytest.raises(openai.ConflictError):
        client.models.delete(checkpoint.fine_tuned_model_checkpoint)
    client.fine_tuning.jobs.cancel(job.id)
    assert client.files.delete(training).deleted
    assert client.models.delete(checkpoint.fine_tuned_model_checkpoint).deleted


def test_listing_pages_and_filters_by_metadata(jobs_live: LiveServer) -> None:
    client = jobs_live.client()
    training = upload(client, training_file(12))
    jobs = [
        client.fine_tuning.jobs.create(
            model=TOY_BASE, training_file=training, metadata={"team": team}
        )
        for team in ("a", "b", "a")
    ]
    first = client.fine_tuning.jobs.list(limit=2)
    assert [j.id for j in first.data] == [jobs[2].id, jobs[1].id] and first.has_more
    rest = client.fine_tuning.jobs.list(limit=2, after=first.data[-1].id)
    assert [j.id for j in rest.data] == [jobs[0].id] and not rest.has_more
    team_a = client.fine_tuning.jobs.list(metadata={"team": "a"})
    assert [j.id for j in team_a.data] == [jobs[2].id, jobs[0].id]
    for job in jobs:
        client.fine_tuning.jobs.cancel(job.id)


def test_projects_see_only_their_own_jobs_and_models(jobs_live: LiveServer) -> None:
    client = jobs_live.client()
    job = wait_for_job(client, create(client, upload(client, training_file(12))).id, {"succeeded"})
    other = jobs_live.client(project_key(jobs_live))
    for call in (
        lambda: other.fine_tuning.jobs.retrieve(job.id),
        lambda: other.fine_tuning.jobs.list_events(job.id),
        lambda: other.fine_tuning.jobs.checkpoints.list(job.id),
        lambda: other.fine_tuning.jobs.cancel(job.id),
        lambda: other.models.retrieve(job.fine_tuned_model),
        lambda: other.models.delete(job.fine_tuned_model),
    ):
        with pytest.raises(openai.NotFoundError):
            call()
    assert other.fine_tuning.jobs.list().data == []
    assert job.fine_tuned_model not in [m.id for m in other.models.list().data]
    with pytest.raises(openai.NotFoundError):  # a job on another project's model
        create(other, upload(other, training_file(12)), model=job.fine_tuned_model)


def test_deleting_models(jobs_live: LiveServer) -> None:
    client = jobs_live.client()
    job = wait_for_job(client, create(client, upload(client, training_file(12))).id, {"succeeded"})
    model = job.fine_tuned_model
    contributor = jobs_live.client(add_key(jobs_live, "contributor"))
    with pytest.raises(openai.PermissionDeniedError):
        contributor.models.delete(model)
    with pytest.raises(openai.BadRequestError) as raised:
        client.models.delete(TOY_BASE)
    assert raised.value.body["code"] == "base_model"  # type: ignore[index]
    checkpoint = f"{model}:ckpt-step-6"
    assert client.models.delete(checkpoint).deleted
    assert [c.step_number for c in client.fine_tuning.jobs.checkpoints.list(job.id)] == [12]
    assert client.models.delete(model).deleted
    ids = [m.id for m in client.models.list().data]
    assert model not in ids and checkpoint not in ids
    deadline = time.monotonic() + 5
    while jobs_live.settings.fine_tuned_dir(job.id).exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not jobs_live.settings.fine_tuned_dir(job.id).exists()
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve(model)


def add_key(live: LiveServer, role: str) -> str:
    with live.http() as http:
        key = http.post(
            "/v1/projects/proj_default/api_keys", json={"name": role, "role": role}
        ).json()
    return str(key["value"])


def wait_for_metrics(client: openai.OpenAI, job_id: str, steps: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while client.fine_tuning.jobs.retrieve(job_id).model_extra["step"] < steps:
        assert time.monotonic() < deadline, f"job {job_id} made no progress"
        time.sleep(0.02)


def wait_for_message(client: openai.OpenAI, job_id: str, start: str, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while True:
        for event in client.fine_tuning.jobs.list_events(job_id, limit=10).data:
            if event.message.startswith(start):
                return event.message
        assert time.monotonic() < deadline, f"no event starting {start!r}"
        time.sleep(0.05)


def first_step_loss(client: openai.OpenAI, job_id: str) -> float:
    metrics = [e for e in all_events(client, job_id) if e.type == "metrics"]
    return float(metrics[0].data["train_loss"])
