"""The error hierarchy. Each error knows its HTTP status and OpenAI ``type``; the API renders
them once, as ``{"error": {"message", "type", "param", "code"}}``."""

from __future__ import annotations

from typing import Any


class TunesmithError(Exception):
    """Base of every error a user can cause. ``message`` says what was wrong and what to do."""

    status_code = 500
    error_type = "server_error"

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code

    def to_envelope(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.error_type,
                "param": self.param,
                "code": self.code,
            }
        }


class InvalidRequest(TunesmithError):
    status_code = 400
    error_type = "invalid_request_error"


class AuthenticationError(TunesmithError):
    status_code = 401
    error_type = "invalid_request_error"

    def __init__(self, message: str, *, code: str | None = "invalid_api_key") -> None:
        super().__init__(message, code=code)


class PermissionDenied(TunesmithError):
    status_code = 403
    error_type = "invalid_request_error"

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message, param=param, code="insufficient_permissions")


class NotFound(TunesmithError):
    status_code = 404
    error_type = "invalid_request_error"


class Conflict(TunesmithError):
    status_code = 409
    error_type = "invalid_request_error"


class PayloadTooLarge(TunesmithError):
    status_code = 413
    error_type = "invalid_request_error"


class ServerError(TunesmithError):
    status_code = 500
    error_type = "server_error"


class RateLimited(TunesmithError):
    """429: a deployment's requests-per-minute, tokens-per-minute or concurrency limit is
    reached. ``headers`` (``retry-after``, ``x-ratelimit-*``) go out with the error."""

    status_code = 429
    error_type = "requests"

    def __init__(
        self,
        message: str,
        *,
        headers: dict[str, str],
        param: str | None = None,
        code: str | None = "rate_limit_exceeded",
        busy: bool = False,
    ) -> None:
        super().__init__(message, param=param, code=code)
        self.headers = headers
        self.busy = busy
        """Refused only because the deployment's requests in flight are at their limit: a
        slot frees as soon as one of them ends."""


class ServiceUnavailable(TunesmithError):
    """503: a part the request needs (the model, an external moderation endpoint, the database's
    write lock) is not available now; retrying later may work. ``headers`` (``retry-after``) go
    out with the error."""

    status_code = 503
    error_type = "server_error"

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message, param=param, code=code)
        self.headers = headers
