"""How the CLI reaches a server: the base URL and key, the official ``openai`` client for every
OpenAI-shaped call, and a thin HTTP client for tunesmith's extensions (deployments, usage,
projects, validation reports).

Resolution, first found wins: ``--base-url`` / ``--api-key``; ``TUNESMITH_BASE_URL`` /
``TUNESMITH_API_KEY``; ``OPENAI_BASE_URL`` / ``OPENAI_API_KEY``; then a local server
(``http://127.0.0.1:8000``) with the admin key ``tunesmith serve`` wrote to
``$TUNESMITH_HOME/admin.key``. Every failure becomes a :class:`CliError`: one line, no traceback.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

DEFAULT_BASE_URL = "http://127.0.0.1:8000"


class CliError(Exception):
    """A user's mistake or an unreachable server: printed as one line, exit status 1."""


def add_connection_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--base-url",
        help="server address, e.g. http://127.0.0.1:8000 (TUNESMITH_BASE_URL, OPENAI_BASE_URL)",
    )
    parser.add_argument("--api-key", help="API key (TUNESMITH_API_KEY, OPENAI_API_KEY)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


@dataclass(frozen=True, slots=True)
class Connection:
    base_url: str
    """The server's root, without ``/v1``."""
    api_key: str

    def openai(self) -> Any:
        import openai

        return openai.OpenAI(base_url=f"{self.base_url}/v1", api_key=self.api_key, max_retries=0)

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """A call to an extension endpoint; the decoded JSON body, or a CliError with the
        server's message."""
        headers = {"Authorization": f"Bearer {self.api_key}"}
        try:
            response = httpx.request(
                method, f"{self.base_url}{path}", headers=headers, timeout=300, **kwargs
            )
        except httpx.HTTPError as exc:
            raise CliError(f"cannot reach the server at {self.base_url} ({exc})") from None
        if response.is_error:
            raise CliError(error_message(response.status_code, _json_or_none(response)))
        return response.json()


def connect(args: argparse.Namespace) -> Connection:
    env = os.environ
    base = (
        getattr(args, "base_url", None)
        or env.get("TUNESMITH_BASE_URL")
        or env.get("OPENAI_BASE_URL")
        or DEFAULT_BASE_URL
    )
    base = base.rstrip("/").removesuffix("/v1")
    key = (
        getattr(args, "api_key", None) or env.get("TUNESMITH_API_KEY") or env.get("OPENAI_API_KEY")
    )
    if not key:
        home = Path(env.get("TUNESMITH_HOME", Path.home() / ".tunesmith")).expanduser()
        key_file = home / "admin.key"
        if not key_file.exists():
            raise CliError(
                "no API key: pass --api-key, or set TUNESMITH_API_KEY (or OPENAI_API_KEY); on the "
                f"server's machine the admin key is read from {key_file}"
            )
        key = key_file.read_text().strip()
    return Connection(base, key)


def error_message(status: int, body: Any) -> str:
    """The server's error envelope as one line: ``404 model_not_found: …``."""
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict) and error.get("message"):
        code = error.get("code") or error.get("type") or "error"
        param = f" [{error['param']}]" if error.get("param") else ""
        return f"{status} {code}{param}: {error['message']}"
    return f"the server answered {status}"


def _json_or_none(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None
