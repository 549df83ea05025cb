"""``tunesmith models register|catalog|update|unregister`` against a live server: an operator
brings a model folder and, with the CLI alone, registers it, fine-tunes it, deploys the result and
chats with it; every refusal reaches the terminal as the server's message with its field."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.cli import Cli
from tests.conftest import LiveServer
from tests.helpers import training_file
from tests.test_base_models_api import write_truncated_gguf
from tunesmith.catalog.spec import BUNDLED


@pytest.fixture
def cli(
    jobs_live: LiveServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Cli:
    return Cli(jobs_live, monkeypatch, capsys)


def test_register_fine_tune_deploy_and_chat_with_the_cli_alone(
    cli: Cli, toy_model_dir: Path, tmp_path: Path
) -> None:
    folder = Path(shutil.copytree(toy_model_dir, tmp_path / "my-model"))
    registered = cli(
        "models", "register", str(folder), "--id", "my-model", "--task", "chat_completion",
        "--lora-target-modules", "q_proj,v_proj", "--license", "apache-2.0", "--poll", "0.05",
    )  # fmt: skip
    assert registered.code == 0, registered.err
    # the stage the request left it in, then (stages too quick to see for a toy) the end
    assert registered.err.startswith("my-model: checking\n")
    assert registered.err.endswith("my-model: ready\n")
    assert "ready" in registered.out and "apache-2.0" in registered.out

    table = cli("models", "catalog")
    assert table.code == 0, table.err
    header, *rows = table.out.splitlines()
    assert header.split() == ["ID", "STATUS", "FAMILY", "PARAMETERS", "CONTEXT", "TASKS", "LICENCE"]
    ids = [row.split()[0] for row in rows]  # registered in the same second: then by id
    assert (ids[0], sorted(ids[1:])) == (BUNDLED.id, ["my-model", "toy-llama"])
    mine = cli("models", "catalog", "my-model", "--json").json()
    assert (mine["status"], mine["lora_target_modules"]) == ("ready", ["q_proj", "v_proj"])
    only_text = cli("models", "catalog", "--task", "text_generation", "--json").json()
    assert "my-model" not in [entry["id"] for entry in only_text]

    train = tmp_path / "train.jsonl"
    train.write_bytes(training_file(10))
    job = cli(
        "jobs", "create", "--model", "my-model", "--training-file", str(train),
        "--epochs", "1", "--batch-size", "2", "--follow", "--poll", "0.1",
    )  # fmt: skip
    assert job.code == 0, job.err
    fine_tuned = job.out.strip()
    assert fine_tuned.startswith("ft:my-model:default::")
    assert cli("deployments", "create", "mine", "--model", fine_tuned).code == 0
    answer = cli("chat", "mine", "-m", "hi", "--max-tokens", "4", "--temperature", "0")
    assert answer.code == 0, answer.err
    assert answer.out.endswith("\n") and len(answer.out) > 1

    in_use = cli("models", "unregister", "my-model")
    assert in_use.code == 1
    assert in_use.err.startswith("tunesmith: 409 model_in_use [model]: ")
    assert fine_tuned in in_use.err or "deployed as 'mine'" in in_use.err


def test_refusals_reach_the_terminal_with_the_field(
    cli: Cli, toy_model_dir: Path, tmp_path: Path
) -> None:
    folder = Path(shutil.copytree(toy_model_dir, tmp_path / "m"))
    (folder / "config.json").unlink()
    missing = cli("models", "register", str(folder), "--id", "m")
    assert missing.code == 1
    assert missing.err.startswith("tunesmith: 400 invalid_request_error [source]: ")
    assert "has no config.json" in missing.err
    bad_rate = cli("models", "update", "toy-llama", "--lora-learning-rate", "5")
    assert bad_rate.code == 1 and "[lora_learning_rate]" in bad_rate.err
    assert "between 0 and 1" in bad_rate.err
    changed = cli("models", "update", "toy-llama", "--context-length", "128", "--json")
    assert changed.code == 0, changed.err
    assert changed.json()["context_length"] == 128
    bundled = cli("models", "unregister", BUNDLED.id)
    assert bundled.code == 1 and "builtin_model" in bundled.err
    listed = [entry["id"] for entry in cli("models", "catalog", "--json").json()]
    assert listed == [BUNDLED.id, "toy-llama"]  # nothing added


def test_a_failed_registration_exits_non_zero_with_the_cause(cli: Cli, tmp_path: Path) -> None:
    broken = write_truncated_gguf(tmp_path / "Cut.gguf")
    failed = cli("models", "register", str(broken), "--id", "cut", "--poll", "0.05")
    assert failed.code == 1
    assert "cut failed to register: conversion_failed:" in failed.err
    assert "damaged or truncated" in failed.err
    without_wait = cli("models", "register", str(broken), "--id", "cut2", "--no-wait", "--json")
    assert without_wait.code == 0, without_wait.err
    assert without_wait.json()["status"] == "registering"
    gone = cli("models", "unregister", "cut", "--json")
    assert gone.json() == {"id": "cut", "deleted": True, "object": "base_model"}
