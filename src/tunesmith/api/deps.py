"""Dependencies: the runtime, database sessions, the caller, role requirements, page limits.

Authentication runs in its own short transaction, so a long upload never holds the database.
Every route but chat takes a role (``Reader`` … ``Admin``), which refuses deployment keys;
the chat routes take ``ChatCaller``: a project key of any role, or a deployment key.
Every list route takes its ``limit`` as ``PageLimit`` (``FilePageLimit`` for files).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Query, Request
from pydantic import AfterValidator
from sqlalchemy.orm import Session, sessionmaker

from tunesmith.api.file_work import FileWork
from tunesmith.auth import Principal, Role, authenticate, hash_key
from tunesmith.catalog.registration import Registrar
from tunesmith.chat import Serving
from tunesmith.errors import AuthenticationError, RateLimited
from tunesmith.files import Validator
from tunesmith.key_failures import KeyFailures
from tunesmith.ratelimits import RateLimiter
from tunesmith.sealing import Sealer
from tunesmith.settings import Settings
from tunesmith.store.blobs import BlobStore
from tunesmith.store.db import transaction

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Runtime:
    """Everything a request needs, built once by ``create_app``."""

    settings: Settings
    sessions: sessionmaker[Session]
    blobs: BlobStore
    validate: Validator
    admin_key_hash: str | None
    sealer: Sealer
    """Seals and opens the deployment keys' stored copies (the key-encryption key)."""
    registrar: Registrar
    """Runs the background part of base-model registrations, one at a time."""
    wake_worker: Callable[[], None] = lambda: None
    """Tells the embedded worker a job changed (a no-op when workers run apart; they poll)."""
    limiter: RateLimiter = field(default_factory=RateLimiter)
    """The deployments' rate limits, in this process's memory."""
    serving: Serving | None = None
    """The engine and what chat calls need; None where a process serves no models."""
    key_failures: KeyFailures = field(default_factory=KeyFailures)
    """Failed key checks per client address (throttles guessing)."""
    file_work: FileWork = field(default_factory=lambda: FileWork(1))
    """The threads of upload assembly and file validation (``file_workers``), apart from the
    default pool that authentication and the store use; ``create_app`` makes it."""


def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


def get_session(runtime: RuntimeDep) -> Iterator[Session]:
    with transaction(runtime.sessions) as session:
        yield session


# scope="function": commit before the response goes out, so a client never reads its own
# write as missing.
SessionDep = Annotated[Session, Depends(get_session, scope="function")]


def now() -> int:
    return int(time.time())


def api_key_of(request: Request) -> str | None:
    """Where the caller's key comes from, on every route: ``Authorization: Bearer <key>``,
    ``Authorization: <key>`` (the key alone, as Azure AI Foundry's serverless endpoints take it)
    or ``api-key: <key>`` (Azure OpenAI's header); ``Authorization`` wins when both are sent.
    An ``Authorization`` header of another scheme (``Basic …``) with no ``api-key`` is refused."""
    words = request.headers.get("authorization", "").split(None, 1)
    api_key = request.headers.get("api-key", "").strip() or None
    if len(words) == 1 and words[0].lower() != "bearer":
        return words[0]
    if len(words) == 2 and words[0].lower() == "bearer":
        return words[1].strip()
    if len(words) == 2 and api_key is None:
        raise AuthenticationError(
            f"The Authorization header uses the scheme {words[0][:20]!r}, which tunesmith does "
            "not take; send 'Authorization: Bearer <key>', the key alone ('Authorization: "
            "<key>') or 'api-key: <key>'."
        )
    return api_key


_PRINCIPAL_KEY = "tunesmith.principal"


def authenticate_request(request: Request, runtime: Runtime) -> Principal:
    """The caller of a request, from its key (:func:`api_key_of`), in its own transaction."""
    secret = api_key_of(request)
    client = request.client.host if request.client else "unknown"
    wait = runtime.key_failures.retry_after(client)
    if wait is not None:
        raise RateLimited(
            f"Too many requests with wrong API keys from this address; retry in {wait} s.",
            headers={"retry-after": str(wait)},
            code="too_many_failed_keys",
        )
    try:
        with transaction(runtime.sessions) as session:
            return authenticate(session, secret, admin_key_hash=runtime.admin_key_hash, now=now())
    except AuthenticationError as exc:
        if secret:  # a wrong key, not a missing one
            runtime.key_failures.record(client)
            log.warning(
                "failed key check from %s (%s; key sha256 %s…)",
                client,
                exc.code or "invalid_api_key",
                hash_key(secret)[:8],
            )
        raise


def remember_principal(request: Request, principal: Principal) -> None:
    """Keeps the caller ``api/body.py``'s route found before it read the body."""
    request.scope[_PRINCIPAL_KEY] = principal


def get_principal(request: Request, runtime: RuntimeDep) -> Principal:
    """The caller: found before the body was read (``api/body.CappedRoute``), so a request is
    authenticated once and never after a large body has been read."""
    found: Principal | None = request.scope.get(_PRINCIPAL_KEY)
    return found if found is not None else authenticate_request(request, runtime)


def require(role: Role) -> Callable[[Principal], Principal]:
    def dependency(principal: Annotated[Principal, Depends(get_principal)]) -> Principal:
        principal.require(role)
        return principal

    return dependency


Reader = Annotated[Principal, Depends(require("reader"))]
Contributor = Annotated[Principal, Depends(require("contributor"))]
Owner = Annotated[Principal, Depends(require("owner"))]
Admin = Annotated[Principal, Depends(require("admin"))]
ChatCaller = Annotated[Principal, Depends(get_principal)]
"""A project key of any role, or a deployment key (``deployments.routing.resolve_target`` then holds
it to its own deployment)."""


PAGE_SIZE = 100
"""The most items a list page holds."""
FILE_PAGE_SIZE = 10_000
"""The most files a page of ``GET /v1/files`` holds (OpenAI's files list allows 10,000)."""


def _at_most(most: int) -> Callable[[int], int]:
    """The rule of every list's ``limit``: 1 or more (0 or less is a 400 naming ``limit``), and
    above the page size served as a full page, never refused: OpenAI's schema sets no maximum
    (the files list's 10,000 aside)."""
    return lambda limit: min(limit, most)


PageLimit = Annotated[int, Query(ge=1), AfterValidator(_at_most(PAGE_SIZE))]
"""``limit`` of every list route but files: 1 or more, served up to ``PAGE_SIZE``."""
FilePageLimit = Annotated[int, Query(ge=1), AfterValidator(_at_most(FILE_PAGE_SIZE))]
"""``limit`` of ``GET /v1/files``: 1 or more, served up to ``FILE_PAGE_SIZE``."""
