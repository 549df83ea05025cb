"""Azure OpenAI's URL layout, in front of the app: the ``api-version`` query parameter checked,
and the classic paths (``{endpoint}/openai/files?api-version=…``) served by the ``/v1`` routes.

``openai.AzureOpenAI(azure_endpoint=…, api_version=…)`` sends the OpenAI-shaped resources to
``/openai/<resource>`` and chat to ``/openai/deployments/{name}/chat/completions``, always with
``?api-version=``. Three families of paths take the parameter:

- **classic** — ``/openai/{files,uploads,fine_tuning,models,chat/completions,completions,
  moderations}…`` and ``/openai/deployments/…``: ``api-version`` is required, as Azure requires
  it, and must be a date ``YYYY-MM-DD`` (a real one), optionally with ``-preview``. The classic
  resource paths are rewritten to ``/openai/v1/…``, which the ``/v1`` routers serve; tunesmith's
  extensions (deployments, usage, projects, webhooks, serving) are not classic paths and stay at
  ``/v1`` and ``/openai/v1`` only.
- **v1** — ``/openai/v1/…``: optional; a date as above, or ``preview``, ``latest`` or ``v1``
  (Azure's v1 API takes these).
- **endpoints** — the scoring URIs (``/endpoints/…``): optional, the same forms as v1.

A missing or malformed value is answered 400 in the OpenAI envelope (``param: "api-version"``)
before the request reaches any route, so nothing is read or changed. Elsewhere (``/v1``) the
parameter means nothing and is ignored, as OpenAI ignores unknown query parameters.
"""

from __future__ import annotations

import datetime
import re
from typing import Literal
from urllib.parse import parse_qs

from starlette.types import ASGIApp, Receive, Scope, Send

from tunesmith.api.errors import error_response
from tunesmith.endpoints import SCORING_PREFIX
from tunesmith.errors import InvalidRequest

CLASSIC_RESOURCES = (
    "files",
    "uploads",
    "fine_tuning",
    "models",
    "chat/completions",
    "completions",
    "moderations",
)
"""The OpenAI-shaped resources Azure's classic paths serve (``/openai/<resource>…``)."""

V1_ALIASES = ("preview", "latest", "v1")
"""What Azure's v1 API (``/openai/v1``) takes besides a dated version."""

Family = Literal["classic", "v1", "endpoints"]

_DATED = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})(-preview)?")
_EXAMPLES = "such as 2024-10-21 or 2024-05-01-preview"


def family_of(path: str) -> Family | None:
    """Which ``api-version`` rule a path follows; None where the parameter is ignored."""
    if path == "/openai/v1" or path.startswith("/openai/v1/"):
        return "v1"
    if path.startswith("/openai/deployments/") or _classic_resource(path) is not None:
        return "classic"
    if path.startswith(SCORING_PREFIX + "/"):
        return "endpoints"
    return None


def check_api_version(values: list[str], family: Family) -> None:
    """Refuses (400, ``param: "api-version"``) a missing, repeated or malformed version."""
    if not values:
        if family != "classic":
            return
        raise InvalidRequest(
            "The query parameter 'api-version' is required on Azure OpenAI's paths "
            f"(/openai/...): add ?api-version=YYYY-MM-DD, {_EXAMPLES}; or call the same "
            "resource at /v1/... or /openai/v1/..., which take none.",
            param="api-version",
            code="missing_api_version",
        )
    if len(values) > 1:
        raise InvalidRequest(
            f"The query parameter 'api-version' was sent {len(values)} times; send it once.",
            param="api-version",
            code="invalid_api_version",
        )
    (value,) = values
    if family != "classic" and value in V1_ALIASES:
        return
    if not _is_dated(value):
        forms = f"a date YYYY-MM-DD, optionally followed by -preview ({_EXAMPLES})"
        if family != "classic":
            forms += ", or one of " + ", ".join(V1_ALIASES)
        elif value in V1_ALIASES:
            forms += f"; '{value}' is taken on the v1 paths (/openai/v1/...) only"
        raise InvalidRequest(
            f"The api-version {value[:40]!r} is not valid here: use {forms}.",
            param="api-version",
            code="invalid_api_version",
        )


class AzurePaths:
    """ASGI middleware: checks ``api-version`` and maps the classic resource paths onto
    ``/openai/v1/…`` (``raw_path`` keeps what the client sent)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        family = family_of(path)
        if family is not None:
            query = scope.get("query_string", b"").decode("latin-1")
            values = parse_qs(query, keep_blank_values=True).get("api-version", [])
            try:
                check_api_version(values, family)
            except InvalidRequest as exc:
                await error_response(exc)(scope, receive, send)
                return
            if _classic_resource(path) is not None:
                scope = {**scope, "path": "/openai/v1" + path.removeprefix("/openai")}
        await self.app(scope, receive, send)


def _classic_resource(path: str) -> str | None:
    for resource in CLASSIC_RESOURCES:
        prefix = f"/openai/{resource}"
        if path == prefix or path.startswith(prefix + "/"):
            return resource
    return None


def _is_dated(value: str) -> bool:
    match = _DATED.fullmatch(value)
    if match is None:
        return False
    try:
        datetime.date(int(match[1]), int(match[2]), int(match[3]))
    except ValueError:
        return False
    return True
