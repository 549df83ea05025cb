"""`tunesmith validate`: the server's checks from the terminal."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import chat_example, jsonl, training_file
from tunesmith.cli import main


@pytest.fixture(autouse=True)
def _toy_tokenizer(monkeypatch: pytest.MonkeyPatch, toy_model_dir: Path, tmp_path: Path) -> None:
    monkeypatch.setenv("TUNESMITH_VALIDATION_MODEL_DIR", str(toy_model_dir))
    monkeypatch.setenv("TUNESMITH_HOME", str(tmp_path / "home"))


def run(argv: list[str]) -> int:
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    return int(exit_.value.code or 0)


def test_valid_file_exits_zero_with_json_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "train.jsonl"
    path.write_bytes(training_file(12))
    assert run(["validate", str(path), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["valid"] is True
    assert report["n_examples"] == 12


def test_errors_and_grouped_warnings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = [chat_example(i, system=False) for i in range(12)]
    rows[4]["messages"][0]["role"] = "robot"
    path = tmp_path / "train.jsonl"
    path.write_bytes(jsonl(rows))
    assert run(["validate", str(path)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:2] == ["error", "unrecognized_role"]
    assert "Line 5, messages[0].role" in out[0]
    assert out[1].split()[:3] == ["warning", "missing_system_message", "11x"]
    assert out[-1].startswith("12 examples (chat), 1 errors, 11 warnings")


def test_not_jsonl_prints_the_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "train.jsonl"
    path.write_bytes(training_file(3) + b"[1, 2]\n")
    assert run(["validate", str(path)]) == 1
    assert "Line 4 is not a dictionary" in capsys.readouterr().err
