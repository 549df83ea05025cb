"""Running the ``tunesmith`` command in-process against a live test server."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pytest

from tests.conftest import ADMIN_KEY, LiveServer
from tunesmith.cli import main


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


class Cli:
    """``cli("jobs", "list", "--json")``: runs the command against ``live`` with the admin key
    (or ``key``), through ``TUNESMITH_BASE_URL`` / ``TUNESMITH_API_KEY``."""

    def __init__(
        self, live: LiveServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        self.live, self.monkeypatch, self.capsys = live, monkeypatch, capsys

    def __call__(self, *argv: str, key: str = ADMIN_KEY) -> Result:
        self.monkeypatch.setenv("TUNESMITH_BASE_URL", self.live.url)
        self.monkeypatch.setenv("TUNESMITH_API_KEY", key)
        self.capsys.readouterr()
        with pytest.raises(SystemExit) as exit_:
            main(list(argv))
        captured = self.capsys.readouterr()
        return Result(int(exit_.value.code or 0), captured.out, captured.err)
