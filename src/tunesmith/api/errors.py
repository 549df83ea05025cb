"""Renders every error once, in the OpenAI envelope ``{"error": {message, type, param, code}}``."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException

from tunesmith.errors import ServiceUnavailable, TunesmithError
from tunesmith.store.db import is_busy

log = logging.getLogger(__name__)

_LOCATIONS = {"body", "query", "path", "header"}


def _envelope(status: int, message: str, param: str | None, code: str | None) -> JSONResponse:
    error_type = "server_error" if status >= 500 else "invalid_request_error"
    body = {"error": {"message": message, "type": error_type, "param": param, "code": code}}
    return JSONResponse(body, status_code=status)


def error_response(exc: TunesmithError) -> JSONResponse:
    """The response of one of our errors (also for middleware, which runs outside the app's
    exception handlers)."""
    headers: dict[str, str] | None = getattr(exc, "headers", None)
    return JSONResponse(exc.to_envelope(), status_code=exc.status_code, headers=headers)


async def _tunesmith_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, TunesmithError)
    return error_response(exc)


async def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems: list[str] = []
    first_param: str | None = None
    for error in exc.errors():
        loc = [str(p) for p in error.get("loc", ()) if str(p) not in _LOCATIONS]
        param = ".".join(loc) or None
        first_param = first_param or param
        problems.append(f"{param or 'request'}: {error.get('msg', 'invalid')}")
    return _envelope(400, "Invalid request: " + "; ".join(problems) + ".", first_param, None)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 404:
        message = f"Invalid URL ({request.method} {request.url.path})."
    elif exc.status_code == 405:
        message = f"Method {request.method} is not allowed on {request.url.path}."
    else:
        message = str(exc.detail)
    return _envelope(exc.status_code, message, None, None)


async def _no_free_connection(_request: Request, exc: Exception) -> JSONResponse:
    """No database connection came free within ``TUNESMITH_DATABASE_POOL_TIMEOUT_SECONDS``:
    overload, answered as such (503, ``retry-after``), never as a server fault."""
    assert isinstance(exc, PoolTimeout)
    log.warning("no free database connection: %s", exc)
    response = _envelope(
        503,
        "The server is busy: every database connection is in use. Retry after 1 s; the operator "
        "can raise TUNESMITH_REQUEST_THREADS (the pool holds one connection per request thread).",
        None,
        "server_busy",
    )
    response.headers["retry-after"] = "1"
    return response


async def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
    if is_busy(exc):  # another writer held the database past the busy timeout
        log.warning("database busy: %s", exc)
        return error_response(
            ServiceUnavailable(
                "The database is busy (another writer holds its lock); try again shortly.",
                code="database_busy",
                headers={"retry-after": "1"},
            )
        )
    log.exception("unhandled error", exc_info=exc)
    return _envelope(500, "The server had an error processing your request.", None, None)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(TunesmithError, _tunesmith_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(PoolTimeout, _no_free_connection)
    app.add_exception_handler(Exception, _unexpected)
