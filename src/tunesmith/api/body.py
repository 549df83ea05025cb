"""Request bodies read with a size cap: refused with 413 as soon as they pass
``max_request_bytes`` (the chat, completion and moderation endpoints), never read whole first."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import Depends, Request

from tunesmith.api.deps import RuntimeDep
from tunesmith.errors import InvalidRequest, PayloadTooLarge


async def limited_body(request: Request, runtime: RuntimeDep) -> bytes:
    """The whole body, at most ``max_request_bytes`` of it."""
    limit = runtime.settings.max_request_bytes
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


LimitedBody = Annotated[bytes, Depends(limited_body)]


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


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"The request body is larger than {limit} bytes (TUNESMITH_MAX_REQUEST_BYTES); send "
        "fewer or shorter messages or inputs per request.",
        code="request_too_large",
    )
