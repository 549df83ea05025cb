"""``tunesmith jobs …`` against a live server (the toy model trains in seconds), and the Azure ML
job YAML reader on its own."""

from __future__ import annotations

import io
import json
import shutil
import socket
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from tests.cli import Cli, Result
from tests.conftest import TOY_BASE, LiveServer
from tests.helpers import all_events, chat_example, jsonl, training_file, wait_for_job
from tunesmith.cli import main
from tunesmith.cli.azure_yaml import AzureYamlError, DataRef, parse_job_yaml
from tunesmith.cli.jobs import _event_rows, draw, follow, progress_line

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def cli(
    jobs_live: LiveServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Cli:
    return Cli(jobs_live, monkeypatch, capsys)


@pytest.fixture
def idle_cli(
    jobs_api: LiveServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Cli:
    """A server without a worker: jobs stay in ``validating_files``."""
    return Cli(jobs_api, monkeypatch, capsys)


def write_job(folder: Path, body: str) -> Path:
    (folder / "data").mkdir(exist_ok=True)
    (folder / "data" / "train.jsonl").write_bytes(training_file(12))
    (folder / "data" / "valid.jsonl").write_bytes(jsonl([chat_example(i) for i in range(20, 24)]))
    path = folder / "job.yml"
    path.write_text(body)
    return path


AZURE_JOB = f"""\
$schema: https://azuremlschemas.azureedge.net/latest/finetuningjob.schema.json
type: finetuning
name: arith-run
experiment_name: cli-tests
display_name: Arithmetic
task: chat_completion
model_provider: custom
model:
  path: {TOY_BASE}
  type: mlflow_model
training_data:
  path: data/train.jsonl
  type: uri_file
validation_data: data/valid.jsonl
hyperparameters:
  num_train_epochs: "2"
  per_device_train_batch_size: "2"
  learning_rate: "0.002"
  lora_rank: "4"
properties:
  owner: qa
tags:
  team: support
outputs:
  registered_model:
    name: arith-bot
compute: azureml:gpu-cluster
queue_settings:
  priority: high
"""
AZURE_METADATA = {
    "owner": "qa",
    "team": "support",
    "azure.name": "arith-run",
    "azure.experiment_name": "cli-tests",
    "azure.display_name": "Arithmetic",
    "azure.no_effect": "$schema, model_provider, model.type, training_data.type, compute",
}


FOUNDRY = Path(__file__).parent / "data" / "foundry"
"""The Foundry's own fine-tuning job samples, as published (each file says where from)."""
FOUNDRY_NAME = "Phi-3-mini-4k-instruct-finetuned-model"


def foundry_job(folder: Path, sample: str) -> Path:
    """A copy of a Foundry sample with the data files it names beside it."""
    job_yml = folder / sample
    shutil.copyfile(FOUNDRY / sample, job_yml)
    (folder / "train.jsonl").write_bytes(training_file(12))
    (folder / "validation.jsonl").write_bytes(jsonl([chat_example(i) for i in range(20, 24)]))
    return job_yml


def one_line(result: Result) -> str:
    lines = result.err.strip().splitlines()
    assert len(lines) == 1, result.err
    assert "Traceback" not in result.err
    return lines[0]


# --- end to end ---------------------------------------------------------------------------------


def test_the_azure_yaml_job_runs_to_a_registered_model(cli: Cli, tmp_path: Path) -> None:
    job_yml = write_job(tmp_path, AZURE_JOB)
    result = cli("jobs", "create", "-f", str(job_yml), "--follow", "--poll", "0.1", "--json")
    assert result.code == 0, result.err
    assert "has no effect here: $schema (a schema hint for editors), model_provider (" in result.err
    assert "compute (jobs run on this server's own workers)" in result.err
    assert result.err.count("tunesmith: uploaded ") == 2
    job_json, _, tail = result.out.rpartition("}")
    fine_tuned = tail.strip()
    assert fine_tuned.startswith(f"ft:{TOY_BASE}:default:arith-bot:")  # suffix: registered name
    created = json.loads(job_json + "}")
    assert created["metadata"] == AZURE_METADATA
    assert created["registered_model"] == {"name": "arith-bot"}
    assert created["priority"] == 10  # queue_settings.priority: high
    # follow's lines: one per update (stderr is no terminal here), the last one finished
    progress = [line for line in result.err.splitlines() if line.startswith("step ")]
    assert progress, result.err
    assert progress[-1].endswith("succeeded")
    assert "loss " in progress[-1] and "acc " in progress[-1]

    job = cli("jobs", "show", created["id"], "--json").json()
    assert job["status"] == "succeeded" and job["fine_tuned_model"] == fine_tuned
    hyper = job["method"]["supervised"]["hyperparameters"]
    assert hyper["n_epochs"] == 2 and hyper["batch_size"] == 2 and hyper["lora_rank"] == 4
    assert hyper["learning_rate_multiplier"] == pytest.approx(2.0)
    assert job["metadata"] == AZURE_METADATA
    model = cli.live.client().models.retrieve("arith-bot")
    assert model.id == fine_tuned

    listed = cli("jobs", "list", "--json").json()
    assert [j["id"] for j in listed] == [created["id"]]
    table = cli("jobs", "list")
    assert table.out.startswith("ID") and created["id"] in table.out

    events = cli("jobs", "events", created["id"], "--json").json()
    assert events[0]["message"] == f"Created fine-tuning job: {created['id']}"
    assert events[-1]["message"] == "The job has successfully completed"
    newest = cli("jobs", "events", created["id"], "--limit", "2", "--json").json()
    assert [e["message"] for e in newest] == [e["message"] for e in events[-2:]]

    again = cli("jobs", "follow", created["id"], "--poll", "0.1")
    assert again.code == 0 and again.out.strip() == fine_tuned

    png = tmp_path / "loss.png"
    plotted = cli("jobs", "plot", created["id"], "-o", str(png))
    assert plotted.code == 0, plotted.err
    data = png.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 10_000

    # without --json, stdout holds only the model's name: MODEL=$(tunesmith jobs create … --follow)
    second = cli("jobs", "create", "-f", str(job_yml), "--follow", "--poll", "0.1")
    assert second.code == 0, second.err
    assert second.out.count("\n") == 1 and second.out.startswith(
        f"ft:{TOY_BASE}:default:arith-bot:"
    )
    assert "created ftjob-" in second.err


def test_the_foundry_sample_runs_as_published(cli: Cli, tmp_path: Path) -> None:
    """The Foundry's serverless CLI sample, pasted as published with only model.path changed:
    the job runs, what means something here is used, and what does not is named once on stderr
    and recorded in the job's metadata."""
    job_yml = foundry_job(tmp_path, "chat-completion-finetuning.yaml")
    assert f'path: "{TOY_BASE}"' in job_yml.read_text()
    result = cli("jobs", "create", "-f", str(job_yml), "--follow", "--poll", "0.1", "--json")
    assert result.code == 0, result.err
    notes = [line for line in result.err.splitlines() if "has no effect here" in line]
    assert len(notes) == 1, result.err
    assert notes[0].startswith("tunesmith: accepted, has no effect here: model_provider (")
    for key in ("model.type (", "validation_data.type (", "outputs.registered_model.type ("):
        assert key in notes[0]
    job_json, _, tail = result.out.rpartition("}")
    fine_tuned = tail.strip()
    assert fine_tuned.startswith(f"ft:{TOY_BASE}:default:{FOUNDRY_NAME}:ftjob-")
    created = json.loads(job_json + "}")
    assert created["metadata"] == {
        "my_property": "my_value",
        "foo_tag": "bar",
        "azure.name": "Phi-3-mini-4k-instruct-with-amlcompute",
        "azure.experiment_name": "Phi-3-mini-4k-instruct-finetuning-experiment",
        "azure.display_name": "Phi-3-mini-4k-instruct-display-name",
        "azure.no_effect": "model_provider, model.type, validation_data.type, "
        "outputs.registered_model.type",
    }
    assert created["registered_model"] == {"name": FOUNDRY_NAME}

    job = cli("jobs", "show", created["id"], "--json").json()
    assert job["status"] == "succeeded" and job["fine_tuned_model"] == fine_tuned
    hyper = job["method"]["supervised"]["hyperparameters"]
    assert hyper["n_epochs"] == 1 and hyper["batch_size"] == 1
    assert hyper["learning_rate_multiplier"] == pytest.approx(0.02)  # 2e-5 of LoRA's 1e-3
    client = cli.live.client()
    assert client.models.retrieve(FOUNDRY_NAME).id == fine_tuned
    # the experiment groups its jobs, as the Foundry's experiment view does
    experiment = {"azure.experiment_name": "Phi-3-mini-4k-instruct-finetuning-experiment"}
    assert [j.id for j in client.fine_tuning.jobs.list(metadata=experiment).data] == [job["id"]]


def test_flags_create_a_job_and_cancel_stops_it(idle_cli: Cli, tmp_path: Path) -> None:
    train = tmp_path / "train.jsonl"
    train.write_bytes(training_file(12))
    result = idle_cli(
        "jobs", "create", "--model", TOY_BASE, "--training-file", str(train),
        "--validation-split", "0.2", "--suffix", "flags", "--epochs", "2", "--batch-size", "2",
        "--lr-multiplier", "0.5", "--seed", "7", "--lora-rank", "4", "--strategy", "lora",
        "--metadata", "team=qa", "--json",
    )  # fmt: skip
    assert result.code == 0, result.err
    job = result.json()
    assert job["model"] == TOY_BASE and job["seed"] == 7 and job["metadata"] == {"team": "qa"}
    assert job["validation_split"] == 0.2 and job["user_provided_suffix"] == "flags"
    hyper = job["method"]["supervised"]["hyperparameters"]
    assert hyper["n_epochs"] == 2 and hyper["learning_rate_multiplier"] == 0.5
    assert hyper["lora_rank"] == 4

    shown = idle_cli("jobs", "show", job["id"])
    assert shown.code == 0 and job["id"] in shown.out and "validating_files" in shown.out

    nothing = idle_cli("jobs", "plot", job["id"], "-o", str(tmp_path / "x.png"))
    assert nothing.code == 1
    assert "has no metrics yet" in one_line(nothing)
    assert not (tmp_path / "x.png").exists()

    cancelled = idle_cli("jobs", "cancel", job["id"], "--json")
    assert cancelled.code == 0 and cancelled.json()["status"] == "cancelled"
    followed = idle_cli("jobs", "follow", job["id"], "--poll", "0.05")
    assert followed.code == 1
    assert followed.err.strip().splitlines()[-1] == f"tunesmith: job {job['id']} was cancelled"

    again = idle_cli("jobs", "cancel", job["id"])
    assert again.code == 1 and one_line(again).startswith("tunesmith: 409 invalid_job_state")


def test_an_uploaded_file_id_is_used_as_is(idle_cli: Cli) -> None:
    client = idle_cli.live.client()
    file_id = client.files.create(file=("t.jsonl", training_file(12)), purpose="fine-tune").id
    result = idle_cli("jobs", "create", "--model", TOY_BASE, "--training-file", file_id, "--json")
    assert result.code == 0, result.err
    assert result.json()["training_file"] == file_id and "uploaded" not in result.err


# --- mistakes -----------------------------------------------------------------------------------


def test_an_unknown_model_lists_the_available_base_models(idle_cli: Cli, tmp_path: Path) -> None:
    azure_id = "azureml://registries/azureml/models/Phi-3-mini/versions/1"
    job_yml = write_job(tmp_path, AZURE_JOB.replace(f"path: {TOY_BASE}", f"path: {azure_id}"))
    result = idle_cli("jobs", "create", "-f", str(job_yml))
    assert result.code == 1
    line = one_line(result)
    assert azure_id in line and "available base models are:" in line and TOY_BASE in line
    assert idle_cli.live.client().files.list().data == []  # nothing uploaded, nothing created


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            ("  lora_rank:", "  warmup_stepz: '3'\n  lora_rank:"),
            "unknown key hyperparameters.warmup_stepz",
        ),
        (("type: finetuning\n", ""), "type is required"),
        (
            ('num_train_epochs: "2"', 'num_train_epochs: "two"'),
            "hyperparameters.num_train_epochs must be a whole number",
        ),
        (
            ('learning_rate: "0.002"', 'learning_rate: "fast"'),
            "hyperparameters.learning_rate must be a number",
        ),
        (
            ("path: data/train.jsonl", "path: azureml://datastores/x/paths/train.jsonl"),
            "training_data.path is an Azure ML data asset",
        ),
        (
            ("validation_data: data/valid.jsonl", "validation_data: data/missing.jsonl"),
            "validation_data: no such file",
        ),
    ],
)
def test_yaml_mistakes_are_one_line(
    idle_cli: Cli, tmp_path: Path, change: tuple[str, str], message: str
) -> None:
    old, new = change
    assert old in AZURE_JOB
    job_yml = write_job(tmp_path, AZURE_JOB.replace(old, new))
    result = idle_cli("jobs", "create", "-f", str(job_yml))
    assert result.code == 1
    line = one_line(result)
    assert line.startswith(f"tunesmith: {job_yml}: ") and message in line


def test_flags_do_not_mix_with_a_yaml_file(idle_cli: Cli, tmp_path: Path) -> None:
    job_yml = write_job(tmp_path, AZURE_JOB)
    result = idle_cli("jobs", "create", "-f", str(job_yml), "--epochs", "3")
    assert result.code == 1 and "leave out --epochs" in one_line(result)


def test_an_unknown_job_is_a_404_line(idle_cli: Cli) -> None:
    for command in ("show", "events", "follow", "cancel", "plot"):
        result = idle_cli("jobs", command, "ftjob-nope")
        assert result.code == 1
        assert one_line(result).startswith("tunesmith: 404 ")


def test_a_bad_flag_is_an_argparse_error(idle_cli: Cli) -> None:
    result = idle_cli("jobs", "create", "--model", TOY_BASE, "--bogus", "1")
    assert result.code == 2
    assert result.err == "tunesmith: unrecognized arguments: --bogus 1 (see tunesmith --help)\n"
    missing = idle_cli("jobs", "create", "--model", TOY_BASE)
    assert missing.code == 1 and "needs --model and --training-file" in one_line(missing)


def test_an_unreachable_server_is_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("TUNESMITH_API_KEY", "sk-anything")
    with pytest.raises(SystemExit) as exit_:
        main(["jobs", "list", "--base-url", f"http://127.0.0.1:{port}"])
    err = capsys.readouterr().err
    assert exit_.value.code == 1
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert err.startswith(f"tunesmith: cannot reach the server at http://127.0.0.1:{port}/")


# --- pure pieces --------------------------------------------------------------------------------


def test_the_yaml_maps_onto_the_jobs_api(tmp_path: Path) -> None:
    write_job(tmp_path, "")
    spec = parse_job_yaml(AZURE_JOB, tmp_path)
    assert spec.model == TOY_BASE and spec.task == "chat_completion"
    assert spec.training_data == DataRef(path=tmp_path / "data" / "train.jsonl")
    assert spec.validation_data == DataRef(path=tmp_path / "data" / "valid.jsonl")
    assert spec.hyperparameters == {
        "n_epochs": 2,
        "batch_size": 2,
        "lora_rank": 4,
        "learning_rate_multiplier": 2.0,
    }
    assert spec.metadata == AZURE_METADATA
    assert spec.registered_name == "arith-bot" and spec.priority == 10
    assert [key for key, _ in spec.no_effect] == [
        "$schema",
        "model_provider",
        "model.type",
        "training_data.type",
        "compute",
    ]
    assert spec.unrecorded == []


def test_the_yaml_takes_plain_strings_and_file_ids(tmp_path: Path) -> None:
    spec = parse_job_yaml(
        "type: finetuning\nmodel: m\ntraining_data: file-abc\n"
        "hyperparameters:\n  strategy: full\n  learning_rate: '0.0001'\n  seed: '5'\n"
        "  n_epochs: auto\n  target_modules: q_proj, v_proj\n",
        tmp_path,
    )
    assert spec.model == "m" and spec.training_data == DataRef(file_id="file-abc")
    assert spec.seed == 5
    assert spec.hyperparameters == {
        "strategy": "full",
        "learning_rate_multiplier": 2.0,
        "n_epochs": "auto",
        "target_modules": ["q_proj", "v_proj"],
    }


BASE = "type: finetuning\nmodel: m\ntraining_data: file-abc\n"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("- a\n- b\n", "must hold a mapping"),
        ("type: [unclosed\n", "not valid YAML"),
        ("type: command\nmodel: m\ntraining_data: file-abc\n", "type must be finetuning"),
        (BASE + "colour: red\n", "unknown key colour"),
        (BASE + "task: summarization\n", "task must be one of chat_completion, text_completion"),
        (BASE + "model_x: 1\n", "unknown key model_x"),
        (
            "type: finetuning\nmodel: {path: m, flavor: x}\ntraining_data: file-abc\n",
            "unknown key model.flavor",
        ),
        ("type: finetuning\ntraining_data: file-abc\n", "model is required"),
        ("type: finetuning\nmodel: m\n", "training_data is required"),
        (
            "type: finetuning\nmodel: m\ntraining_data: {path: file-abc, type: mltable}\n",
            "training_data.type must be uri_file",
        ),
        ("type: finetuning\nmodel: m\ntraining_data: https://x.org/t.jsonl\n", "is a remote URI"),
        (
            BASE + "hyperparameters:\n  num_train_epochs: '2.5'\n",
            "num_train_epochs must be a whole number",
        ),
        (BASE + "hyperparameters:\n  num_train_epochs: '2'\n  n_epochs: '3'\n", "sets n_epochs"),
        (BASE + "hyperparameters:\n  strategy: qlora\n", "strategy must be one of lora, full"),
        (
            BASE + "hyperparameters:\n  learning_rate: '1'\n",
            "learning_rate must be above 0 and at most 0.01",
        ),
        (
            BASE + "hyperparameters:\n  learning_rate: '1e-4'\n  learning_rate_multiplier: '2'\n",
            "not both",
        ),
        (BASE + "tags:\n  a: " + "x" * 513 + "\n", "tags.a has 513 characters"),
        (BASE + "tags:\n" + "".join(f"  k{i}: v\n" for i in range(17)), "hold 17 entries"),
        (BASE + "properties:\n  a: '1'\ntags:\n  a: '2'\n", "tags.a repeats"),
        (BASE + "tags:\n  a: [1, 2]\n", "tags.a must be a string"),
        (
            BASE + "outputs:\n  registered_model:\n    label: x\n",
            "unknown key outputs.registered_model.label",
        ),
        (BASE + "outputs:\n  model: x\n", "outputs.model must be a mapping"),
        # values outside the Foundry's enumerations, and keys only the service writes
        (
            "type: finetuning\nmodel: {path: m, type: onnx}\ntraining_data: file-abc\n",
            "model.type must be one of custom_model, mlflow_model, triton_model, not 'onnx'",
        ),
        (BASE + "task: image_classification\n", "task image_classification is not available"),
        (BASE + "model_provider: openai\n", "model_provider must be one of custom, azure_open_ai"),
        (BASE + "id: azureml:/jobs/x\n", "id is written by the service (az ml job show)"),
        (BASE + "status: Completed\n", "status is written by the service"),
        (BASE + "identity:\n  type: password\n", "identity.type must be one of managed"),
        (
            BASE + "identity:\n  type: user_identity\n  client_id: x\n",
            "unknown key identity.client_id",
        ),
        (
            BASE + "queue_settings:\n  priority: urgent\n",
            "queue_settings.priority must be one of low",
        ),
        (
            BASE + "queue_settings:\n  job_tier: gold\n",
            "queue_settings.job_tier must be one of spot",
        ),
        (BASE + "queue_settings:\n  tier: spot\n", "unknown key queue_settings.tier"),
        (BASE + "resources:\n  instance_typs: [a]\n", "unknown key resources.instance_typs"),
        (BASE + "resources:\n  instance_types: Standard_NC6\n", "instance_types must be a list"),
        (BASE + "compute: [a, b]\n", "compute must be a non-empty string"),
        (
            "type: finetuning\nmodel: m\ntraining_data: {path: d, type: uri_folder}\n",
            "training_data.type is uri_folder; tunesmith trains on one JSONL file",
        ),
        (
            "type: finetuning\nmodel: m\ntraining_data: {path: file-abc, mode: copy}\n",
            "training_data.mode must be one of download, ro_mount, direct",
        ),
        (
            BASE + "outputs:\n  registered_model:\n    name: x\n    type: onnx_model\n",
            "outputs.registered_model.type must be one of uri_file",
        ),
        (BASE + "name: [a]\n", "name must be a string"),
    ],
)
def test_yaml_mistakes_name_the_key(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(AzureYamlError, match=None) as error:
        parse_job_yaml(text, tmp_path)
    assert message in str(error.value)


@pytest.mark.parametrize(
    ("sample", "no_effect"),
    [
        (
            "chat-completion-finetuning.yaml",
            [
                "model_provider",
                "model.type",
                "validation_data.type",
                "outputs.registered_model.type",
            ],
        ),
        (
            "chat-completion-finetuning-amlcompute.yaml",
            [
                "model_provider",
                "model.type",
                "compute",
                "validation_data.type",
                "outputs.registered_model.type",
            ],
        ),
        (
            "chat-completion-finetuning-instance-types.yaml",
            [
                "model_provider",
                "model.type",
                "resources.instance_types",
                "validation_data.type",
                "outputs.registered_model.type",
            ],
        ),
        (
            "text-generation-finetuning.yaml",
            [
                "model_provider",
                "model.type",
                "validation_data.type",
                "outputs.registered_model.type",
            ],
        ),
    ],
)
def test_every_foundry_sample_reads_as_published(
    tmp_path: Path, sample: str, no_effect: list[str]
) -> None:
    job_yml = foundry_job(tmp_path, sample)
    spec = parse_job_yaml(job_yml.read_text(), tmp_path)
    assert spec.model == TOY_BASE
    assert spec.training_data == DataRef(path=tmp_path / "train.jsonl")
    assert spec.validation_data == DataRef(path=tmp_path / "validation.jsonl")
    assert spec.hyperparameters == {
        "n_epochs": 1,
        "batch_size": 1,
        "learning_rate_multiplier": 0.02,
    }
    assert [key for key, _ in spec.no_effect] == no_effect
    assert all(why for _, why in spec.no_effect)
    assert spec.metadata["my_property"] == "my_value" and spec.metadata["foo_tag"] == "bar"
    assert spec.metadata["azure.no_effect"] == ", ".join(no_effect)
    assert spec.registered_name and spec.registered_name.endswith("-finetuned-model")
    assert spec.task in ("chat_completion", "text_completion")


def test_every_key_the_foundry_documents_is_accepted(tmp_path: Path) -> None:
    """The rest of the Foundry's keys, each in a spelling its schemas take: used where it means
    something (priority, a ``file:`` path), reported as having no effect otherwise."""
    (tmp_path / "t.jsonl").write_bytes(training_file(12))
    spec = parse_job_yaml(
        "$schema: https://azuremlschemas.azureedge.net/latest/finetuningJob.schema.json\n"
        "type: finetuning\nname: run-1\ndescription: " + "d" * 600 + "\n"
        "model_provider: AzureOpenAI\ntask: TEXT_COMPLETION\n"
        "model: {path: m, type: custom_model, mode: download, datastore: workspaceblobstore}\n"
        "training_data: {path: 'file:t.jsonl', type: uri_file, mode: ro_mount, "
        "datastore: d, path_on_compute: /mnt/t}\n"
        "hyperparameters: {n_epochs: 2, batch_size: 4, learning_rate_multiplier: 0.5, "
        "seed: null}\n"
        "compute: azureml:serverless\n"
        "resources: {instance_types: [Standard_NC24ads_A100_v4], instance_count: 1}\n"
        "queue_settings: {job_tier: Standard, priority: high}\n"
        "identity: {type: managed, client_id: abc}\n"
        "services: {studio: {type: Studio}}\n"
        "tags: {empty: null, flag: true}\n"
        "outputs:\n  registered_model: {name: bot, version: '3', type: custom_model, "
        "mode: rw_mount, path: azureml://datastores/x}\n  metrics: {type: uri_folder}\n",
        tmp_path,
    )
    assert spec.priority == 10 and spec.task == "text_completion"
    assert spec.training_data == DataRef(path=tmp_path / "t.jsonl")
    assert spec.hyperparameters == {"n_epochs": 2, "batch_size": 4, "learning_rate_multiplier": 0.5}
    assert spec.seed is None and spec.registered_name == "bot"
    assert [key for key, _ in spec.no_effect] == [
        "$schema",
        "model_provider",
        "model.type",
        "model.mode",
        "model.datastore",
        "training_data.type",
        "training_data.mode",
        "training_data.datastore",
        "training_data.path_on_compute",
        "compute",
        "resources.instance_types",
        "resources.instance_count",
        "queue_settings.job_tier",
        "identity",
        "services",
        "outputs.registered_model.version",
        "outputs.registered_model.type",
        "outputs.registered_model.mode",
        "outputs.registered_model.path",
        "outputs.metrics",
    ]
    assert spec.metadata["empty"] == "" and spec.metadata["flag"] == "true"
    assert spec.metadata["azure.name"] == "run-1"
    description = spec.metadata["azure.description"]
    assert len(description) == 512 and description.endswith("…")  # OpenAI's bound on values


def test_recorded_keys_never_crowd_out_properties_and_tags(tmp_path: Path) -> None:
    tags = "".join(f"  k{i}: v\n" for i in range(15))
    spec = parse_job_yaml(
        BASE + "name: run\nexperiment_name: e\ncompute: c\ntags:\n" + tags, tmp_path
    )
    assert len(spec.metadata) == 16
    assert spec.metadata["azure.name"] == "run"  # the one pair left
    assert spec.unrecorded == ["azure.experiment_name", "azure.no_effect"]


def test_the_progress_line() -> None:
    assert progress_line("queued", None) == "queued"
    data = {
        "step": 3,
        "total_steps": 30,
        "train_loss": 1.23456,
        "train_mean_token_accuracy": 0.5,
        "tokens_per_second": 812.4,
        "eta_seconds": 42.0,
    }
    assert progress_line("running", data) == (
        "step 3/30  loss 1.2346  acc 0.500  812 tok/s  ETA 0:42  running"
    )
    assert progress_line("running", data, bar=True).startswith("[##" + "-" * 18 + "]  step 3/30")


class FakeJobs:
    """``client.fine_tuning.jobs`` of a job that runs two steps and succeeds."""

    def __init__(self) -> None:
        self.polls = 0

    def retrieve(self, job_id: str) -> Any:
        self.polls += 1
        status = "running" if self.polls < 3 else "succeeded"
        return SimpleNamespace(id=job_id, status=status, fine_tuned_model="ft:toy:x", error=None)

    def list_events(self, job_id: str, limit: int = 20, after: str | None = None) -> Any:
        step = min(self.polls, 2)
        data = [
            SimpleNamespace(
                id=f"ev-{s}",
                type="metrics",
                data={"step": s, "total_steps": 2, "train_loss": 2.0 / s, "valid_loss": 2.5 / s},
            )
            for s in range(step, 0, -1)
        ]
        return SimpleNamespace(data=data, has_more=False)


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_follow_redraws_in_place_on_a_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    client = SimpleNamespace(fine_tuning=SimpleNamespace(jobs=FakeJobs()))
    screen = Terminal()
    assert follow(client, "ftjob-x", 0.0, screen) == 0
    text = screen.getvalue()
    assert text.startswith("\r[") and "\x1b[K" in text and text.endswith("\n")
    assert text.count("\n") == 1 and "step 2/2" in text
    assert capsys.readouterr().out == "ft:toy:x\n"


def test_a_running_job_plots_from_its_metrics_events(tmp_path: Path) -> None:
    client = SimpleNamespace(fine_tuning=SimpleNamespace(jobs=FakeJobs()))
    client.fine_tuning.jobs.polls = 2
    rows = _event_rows(client, "ftjob-x")
    assert [r["step"] for r in rows] == [1.0, 2.0]
    draw(rows, tmp_path / "p.png", title="x")
    assert (tmp_path / "p.png").read_bytes().startswith(PNG_MAGIC)


def test_data_check_split_holds_out_what_a_job_holds_out(
    cli: Cli, tmp_path: Path, toy_model_dir: Path
) -> None:
    """``data check --split F --seed S`` writes to valid.jsonl exactly the lines a job with
    ``validation_split`` F and seed S holds out — the job's side computed in its own process."""
    source = training_file(17)
    train = tmp_path / "train.jsonl"
    train.write_bytes(source)
    lines = source.splitlines(keepends=True)

    def split(seed: int) -> tuple[bytes, bytes]:
        out = tmp_path / f"split-{seed}"
        result = cli(
            "data", "check", str(train), "--model", str(toy_model_dir), "--split", "0.25",
            "--seed", str(seed), "--out-dir", str(out),
        )  # fmt: skip
        assert result.code == 0, result.err
        return (out / "train.jsonl").read_bytes(), (out / "valid.jsonl").read_bytes()

    kept, held = split(3)
    assert split(4)[1] != held  # the seed decides
    created = cli(
        "jobs", "create", "--model", TOY_BASE, "--training-file", str(train),
        "--validation-split", "0.25", "--seed", "3", "--epochs", "1", "--batch-size", "2",
        "--json",
    )  # fmt: skip
    assert created.code == 0, created.err
    job_id = created.json()["id"]
    client = cli.live.client()
    wait_for_job(client, job_id, {"succeeded"})
    (event,) = [e for e in all_events(client, job_id) if "holds out" in e.message]
    numbers = event.data["validation_lines"]
    assert event.data["validation_examples"] == len(numbers) == 5  # ceil(17 · 0.25)
    assert f"lines {', '.join(map(str, numbers))}" in event.message
    assert b"".join(lines[n - 1] for n in numbers) == held
    assert b"".join(line for n, line in enumerate(lines, 1) if n not in numbers) == kept
