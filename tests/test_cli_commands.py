"""The ``tunesmith`` commands for data, files, models, deployments, usage, chat and the admin,
run in-process against live servers: readable output, ``--json`` parsed, errors as one line."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.cli import Cli
from tests.conftest import TOY_BASE, LiveServer
from tests.helpers import chat_example, jsonl, training_file, wait_for_deployment
from tests.test_deployments_api import refused_model
from tunesmith.cli import main


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch, toy_model_dir: Path, tmp_path: Path) -> None:
    monkeypatch.setenv("TUNESMITH_VALIDATION_MODEL_DIR", str(toy_model_dir))
    monkeypatch.setenv("TUNESMITH_HOME", str(tmp_path / "cli-home"))


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    captured = capsys.readouterr()
    return int(exit_.value.code or 0), captured.out, captured.err


def bad_rows() -> list[dict[str, Any]]:
    rows = [chat_example(i) for i in range(12)]
    rows[4]["messages"][1]["role"] = "robot"
    return rows


# -- data check ----------------------------------------------------------------------------------


def test_data_check_good_file_prints_statistics(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "train.jsonl"
    path.write_bytes(training_file(12))
    code, out, _ = run(["data", "check", str(path)], capsys)
    assert code == 0
    lines = out.splitlines()
    tokens = next(line for line in lines if line.startswith("tokens/example"))
    for name in ("min", "max", "mean", "median", "p5", "p95"):
        assert f" {name} " in tokens
    assert any(line.startswith("over context     0") for line in lines)
    assert any(line.startswith("billable tokens") and line.split()[-1].isdigit() for line in lines)
    assert any(line.startswith("auto epochs") for line in lines)
    assert lines[-1] == "12 examples (chat), 0 errors, 0 warnings: valid"


def test_data_check_bad_file_names_the_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], toy_model_dir: Path
) -> None:
    path = tmp_path / "train.jsonl"
    path.write_bytes(jsonl(bad_rows()))
    code, out, _ = run(["data", "check", str(path), "--model", str(toy_model_dir)], capsys)
    assert code == 1
    first = out.splitlines()[0]
    assert first.split()[:2] == ["error", "unrecognized_role"]
    assert "Line 5, messages[1].role" in first
    assert out.splitlines()[-1].endswith("1 errors, 0 warnings: INVALID")
    code, out, _ = run(["data", "check", str(path), "--json"], capsys)
    assert code == 1 and json.loads(out)["errors"][0]["line"] == 5


def test_data_check_refuses_a_model_that_is_no_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "train.jsonl"
    path.write_bytes(training_file(12))
    code, _, err = run(["data", "check", str(path), "--model", "no-such-model"], capsys)
    assert code == 1
    assert err.count("\n") == 1 and "--model no-such-model" in err


def test_data_split_is_deterministic_and_refuses_to_overwrite(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "train.jsonl"
    source = training_file(20)
    path.write_bytes(source)
    outputs = []
    for name in ("a", "b"):
        out_dir = tmp_path / name
        argv = ["data", "check", str(path), "--split", "0.2", "--out-dir", str(out_dir)]
        code, _, _ = run([*argv, "--seed", "7"], capsys)
        assert code == 0
        outputs.append(
            ((out_dir / "train.jsonl").read_bytes(), (out_dir / "valid.jsonl").read_bytes())
        )
    assert outputs[0] == outputs[1]
    train, valid = outputs[0]
    assert len(valid.splitlines()) == 4 and len(train.splitlines()) == 16
    assert sorted(train.splitlines() + valid.splitlines()) == sorted(source.splitlines())
    code, _, err = run(
        ["data", "check", str(path), "--split", "0.2", "--out-dir", str(tmp_path / "a")], capsys
    )
    assert code == 1 and "already exists" in err
    assert (tmp_path / "a" / "train.jsonl").read_bytes() == train
    code, _, err = run(
        ["data", "check", str(path), "--split", "0.7", "--out-dir", str(tmp_path / "c")], capsys
    )
    assert code == 1 and "at most 0.5" in err and not (tmp_path / "c").exists()


# -- files ---------------------------------------------------------------------------------------


@pytest.fixture
def cli(
    live: LiveServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Cli:
    return Cli(live, monkeypatch, capsys)


def test_files_upload_list_show_rm(cli: Cli, tmp_path: Path) -> None:
    path = tmp_path / "train.jsonl"
    path.write_bytes(training_file(12))
    uploaded = cli("files", "upload", str(path), "--json")
    assert uploaded.code == 0, uploaded.err
    file = uploaded.json()
    assert file["status"] == "processed" and file["filename"] == "train.jsonl"
    listed = cli("files", "list", "--json")
    assert [f["id"] for f in listed.json()] == [file["id"]]
    table = cli("files", "list")
    assert table.out.splitlines()[0].split()[:2] == ["ID", "FILENAME"]
    assert file["id"] in table.out
    shown = cli("files", "show", file["id"], "--json").json()
    assert shown["validation"]["n_examples"] == 12 and shown["validation"]["valid"] is True
    readable = cli("files", "show", file["id"])
    assert "validation: 12 examples (chat), 0 errors" in readable.out
    removed = cli("files", "rm", file["id"], "--json")
    assert removed.json()["deleted"] is True
    assert cli("files", "list", "--json").json() == []
    missing = cli("files", "show", file["id"])
    assert missing.code == 1 and missing.err.startswith("tunesmith: 404")


def test_an_invalid_upload_shows_its_first_error(cli: Cli, tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_bytes(jsonl(bad_rows()))
    result = cli("files", "upload", str(path))
    assert result.code == 1
    lines = result.out.splitlines()
    assert lines[0].split()[1] == "error"
    assert lines[1].split()[:2] == ["error", "unrecognized_role"]
    assert "Line 5, messages[1].role" in lines[1]


def test_a_bad_key_is_one_line(cli: Cli) -> None:
    result = cli("files", "list", key="tsk-wrong")
    assert result.code == 1
    assert result.err.startswith("tunesmith: 401") and result.err.count("\n") == 1
    assert "Traceback" not in result.err
    result = cli("deployments", "list", key="tsk-wrong")
    assert result.code == 1 and result.err.startswith("tunesmith: 401")


# -- deployments, chat, usage, models ------------------------------------------------------------


@pytest.fixture
def jcli(
    jobs_api: LiveServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Cli:
    return Cli(jobs_api, monkeypatch, capsys)


def test_deployments_create_list_keys_regenerate_rm(jcli: Cli) -> None:
    created = jcli(
        "deployments",
        "create",
        "toy",
        "--model",
        TOY_BASE,
        "--rpm",
        "50",
        "--no-content-filter",
        "--json",
    )
    assert created.code == 0, created.err
    body = created.json()
    assert body["name"] == "toy" and body["model_id"] == TOY_BASE
    assert body["rate_limits"]["requests_per_minute"] == 50 and body["content_filter"] is False
    assert [d["name"] for d in jcli("deployments", "list", "--json").json()] == ["toy"]
    assert "toy" in jcli("deployments", "list").out
    assert jcli("deployments", "show", "toy", "--json").json()["id"] == body["id"]
    keys = jcli("deployments", "keys", "toy", "--json").json()
    assert keys["primary_key"].startswith("tsd-")
    new = jcli("deployments", "regenerate-key", "toy", "secondary", "--json").json()
    assert new["primary_key"] == keys["primary_key"]
    assert new["secondary_key"] != keys["secondary_key"]
    again = jcli("deployments", "create", "toy", "--model", TOY_BASE)
    assert again.code == 1 and again.err.startswith("tunesmith: 409")
    assert jcli("deployments", "rm", "toy", "--json").json()["deleted"] is True
    assert jcli("deployments", "list", "--json").json() == []


def test_deployments_list_and_show_print_the_status_and_why_it_failed(
    jcli: Cli, toy_model_dir: Path
) -> None:
    model = refused_model(jcli.live, toy_model_dir, 9)
    created = jcli("deployments", "create", "odd", "--model", model)
    assert created.code == 0, created.err
    assert "STATUS" in created.out and "creating" in created.out
    with jcli.live.http() as http:
        failed = wait_for_deployment(http, "odd")
    reason = failed["error"]["message"]
    assert "modules_to_save" in reason
    for command in ("list", "show"):
        shown = jcli("deployments", command, *(["odd"] if command == "show" else []))
        assert shown.code == 0, shown.err
        header, row = shown.out.splitlines()
        assert "STATUS" in header and "REASON" in header
        assert " failed " in row and row.endswith(reason)
    assert "model_not_servable" in jcli("deployments", "show", "odd").out
    assert jcli("deployments", "show", "odd", "--json").json()["error"] == failed["error"]


def test_chat_one_shot_interactive_and_usage(jcli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    assert jcli("deployments", "create", "toy", "--model", TOY_BASE).code == 0
    once = jcli("chat", "toy", "-m", "hi", "--max-tokens", "8", "--temperature", "0")
    assert once.code == 0, once.err
    assert once.out.endswith("\n") and len(once.out) > 1  # the answer, then a newline

    from tunesmith.cli import chat

    seen: list[int] = []
    original = chat.answer

    def spy(client: Any, args: Any, history: list[dict[str, str]]) -> str:
        seen.append(len(history))
        return original(client, args, history)

    monkeypatch.setattr(chat, "answer", spy)
    monkeypatch.setattr(sys, "stdin", io.StringIO("hello\nand again?\n"))
    convo = jcli("chat", "toy", "--system", "Be brief.", "--max-tokens", "6")
    assert convo.code == 0, convo.err
    assert seen == [2, 4]  # the history grows: system, user, then assistant and user

    report = jcli("usage", "--json", "--deployment", "toy").json()
    assert report["totals"]["requests"] == 3
    assert report["deployments"][0]["deployment"] == "toy"
    readable = jcli("usage", "--since", "2020-01-01")
    assert readable.code == 0 and readable.out.startswith("window 2020-01-01 00:00:00")
    assert "totals: 3 requests" in readable.out
    bad = jcli("usage", "--since", "yesterday")
    assert bad.code == 1 and "--since" in bad.err


def test_chat_errors_are_one_line(jcli: Cli) -> None:
    result = jcli("chat", "no-such-model", "-m", "hi")
    assert result.code == 1
    assert result.err.startswith("tunesmith: 404 model_not_found")
    assert result.err.count("\n") == 1 and "Traceback" not in result.err
    result = jcli("chat", TOY_BASE, "-m", "hi")  # exists, not deployed
    assert result.code == 1 and result.err.startswith("tunesmith: 404 model_not_deployed")


def test_models_list_show_and_export_of_a_base_model(jcli: Cli, tmp_path: Path) -> None:
    models = jcli("models", "list", "--json").json()
    assert TOY_BASE in [m["id"] for m in models]
    shown = jcli("models", "show", TOY_BASE, "--json").json()
    assert shown["kind"] == "base"
    assert "KIND" in jcli("models", "list").out
    export = jcli("models", "export", TOY_BASE, "-o", str(tmp_path / "out"))
    assert export.code == 1 and "base model" in export.err
    missing = jcli("models", "show", "ft:nothing")
    assert missing.code == 1 and missing.err.startswith("tunesmith: 404")
    refused = jcli("models", "rm", TOY_BASE)
    assert refused.code == 1 and refused.err.startswith("tunesmith: 400")


# -- admin ---------------------------------------------------------------------------------------


def test_projects_and_keys(cli: Cli) -> None:
    project = cli("projects", "create", "research", "--json").json()
    assert project["name"] == "research" and project["status"] == "active"
    assert project["id"] in [p["id"] for p in cli("projects", "list", "--json").json()]
    created = cli("keys", "create", "--project", project["id"], "--name", "ci", "--role", "reader")
    assert created.code == 0 and "shown only now" in created.out
    key_value = created.out.split()[-1]
    assert cli("files", "list", "--json", key=key_value).json() == []
    keys = cli("keys", "list", "--project", project["id"], "--json").json()
    assert [k["name"] for k in keys] == ["ci"]
    denied = cli("deployments", "create", "x", "--model", "y", key=key_value)
    assert denied.code == 1 and denied.err.startswith("tunesmith: 403")
    revoked = cli("keys", "revoke", "--project", project["id"], keys[0]["id"], "--json")
    assert revoked.code == 0
    assert cli("files", "list", key=key_value).err.startswith("tunesmith: 401")
    archived = cli("projects", "archive", project["id"], "--json").json()
    assert archived["status"] == "archived"
    assert project["id"] not in [p["id"] for p in cli("projects", "list", "--json").json()]
    assert project["id"] in [p["id"] for p in cli("projects", "list", "--all", "--json").json()]
    user = cli("projects", "list", key=key_value)
    assert user.code == 1


def test_models_export_of_a_fine_tuned_model(
    jobs_live: LiveServer,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    from tests.helpers import wait_for_job
    from tests.test_jobs_api import create, upload

    client = jobs_live.client()
    job = create(client, upload(client, training_file(12)))
    done = wait_for_job(client, job.id, {"succeeded"})
    cli = Cli(jobs_live, monkeypatch, capsys)
    destination = tmp_path / "merged"
    elsewhere = cli("models", "export", done.fine_tuned_model, "-o", str(destination))
    assert elsewhere.code == 1 and "not on this machine" in elsewhere.err
    monkeypatch.setenv("TUNESMITH_HOME", str(jobs_live.settings.home))
    result = cli("models", "export", done.fine_tuned_model, "-o", str(destination), "--json")
    assert result.code == 0, result.err
    assert result.json()["exported_to"] == str(destination)
    assert (destination / "config.json").is_file()
    assert list(destination.glob("*.safetensors"))
    again = cli("models", "export", done.fine_tuned_model, "-o", str(destination))
    assert again.code == 1 and "already exists" in again.err
