"""Request bodies: the key is checked before a body is read, and a body is read with a size cap.

Every router takes ``route_class=CappedRoute`` (``ChatRoute`` for the chat, completion and
moderation endpoints). Its handler, before FastAPI's own (which reads a declared body before any
dependency runs, so a key check in a dependency would come too late):

1. authenticates the caller when the route takes one (``deps.get_principal`` then returns the
   principal found, so a request is authenticated once);
2. reads the body of a route that declares one (a pydantic model, ``Body()`` or ``LimitedBody``)
   through :func:`read_capped`: a ``Content-Length`` over the limit is refused with 413 before a
   byte is read, and a chunked body is counted as it arrives and cut at the limit.

The limits are settings: ``max_json_bytes`` (1 MB) for every JSON body, ``max_request_bytes``
for the chat, completion and moderation endpoints. Multipart uploads stream through
``api/multipart.py`` with the file limits instead.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from typing import Annotated, Any, ClassVar

from fastapi import Depends, Request, Response
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from starlette.concurrency import run_in_threadpool

from tunesmith.api.deps import Runtime, authenticate_request, get_principal, remember_principal
from tunesmith.errors import InvalidRequest, PayloadTooLarge

_BODY_KEY = "tunesmith.body"


async def read_capped(request: Request, *, limit: int, setting: str) -> bytes:
    """The whole body, at most ``limit`` bytes of it (``setting`` names the limit's setting):
    refused from its declared length before reading, or as soon as it passes the limit."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit, setting)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit, setting)
        chunks.append(chunk)
    return b"".join(chunks)


async def request_body(request: Request) -> bytes:
    """The body :class:`CappedRoute` read (``LimitedBody``)."""
    body: bytes = request.scope[_BODY_KEY]
    return body


LimitedBody = Annotated[bytes, Depends(request_body)]
"""The raw body of a route that parses it itself (chat: strict parsing, ``model`` filled in)."""


class CappedRoute(APIRoute):
    """A route whose caller is authenticated before its body is read, and whose body is read
    with the cap of :attr:`setting`."""

    setting: ClassVar[str] = "max_json_bytes"

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        authenticates = _depends_on(self.dependant, get_principal)
        reads_body = (self.body_field is not None and not _is_form(self)) or _depends_on(
            self.dependant, request_body
        )
        setting = self.setting

        async def capped(request: Request) -> Response:
            runtime: Runtime = request.app.state.runtime
            if authenticates:
                principal = await run_in_threadpool(authenticate_request, request, runtime)
                remember_principal(request, principal)
            if reads_body:
                limit = getattr(runtime.settings, setting)
                body = await read_capped(request, limit=limit, setting=setting)
                # FastAPI's handler reads the body again: it finds this one (Starlette keeps a
                # read body on the request), and so does ``request_body``.
                request._body = body
                request.scope[_BODY_KEY] = body
            return await handler(request)

        return capped


class ChatRoute(CappedRoute):
    """The chat, completion and moderation endpoints: their own, larger cap."""

    setting = "max_request_bytes"


def _depends_on(dependant: Dependant, call: Callable[..., Any]) -> bool:
    return any(d.call is call or _depends_on(d, call) for d in dependant.dependencies)


def _is_form(route: APIRoute) -> bool:
    from fastapi import params

    return route.body_field is not None and isinstance(route.body_field.field_info, params.Form)


def json_object(body: bytes) -> dict[str, Any]:
    """A body that must be one JSON object."""
    try:
        value = json.loads(body)
    except ValueError as exc:
        raise InvalidRequest(
            f"The request body is not valid JSON ({exc}). Send a JSON object with "
            "'Content-Type: application/json'."
        ) from None
    if not isinstance(value, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    return value


def _too_large(limit: int, setting: str) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"The request body is larger than the limit of {limit} bytes "
        f"(TUNESMITH_{setting.upper()}); send a smaller body, such as fewer or shorter messages "
        "or inputs per request.",
        code="request_too_large",
    )
