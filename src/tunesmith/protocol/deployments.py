"""Deployments (our extension, in OpenAI's style, modelled on Azure AI Foundry's serverless
deployments): the wire shapes of ``/v1/deployments``.

Requests refuse unknown fields and values of the wrong type (``"true"`` is not a boolean, ``"10"``
not a number), so a typo never deploys with a silent default.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt

MAX_REQUESTS_PER_MINUTE = 1_000_000
MAX_TOKENS_PER_MINUTE = 1_000_000_000
MAX_CONCURRENT_REQUESTS = 10_000

RequestsPerMinute = Annotated[StrictInt, Field(ge=1, le=MAX_REQUESTS_PER_MINUTE)]
TokensPerMinute = Annotated[StrictInt, Field(ge=1, le=MAX_TOKENS_PER_MINUTE)]
ConcurrentRequests = Annotated[StrictInt, Field(ge=1, le=MAX_CONCURRENT_REQUESTS)]

DeploymentEventType = Literal[
    "created",
    "succeeded",
    "failed",
    "retried",
    "updated",
    "keys_regenerated",
    "deleted",
    "deleted_idle",
]
DeploymentStatus = Literal["creating", "succeeded", "failed"]
"""Azure's provisioning states (Creating, Succeeded, Failed), in OpenAI's lower case."""


class RateLimitsObject(BaseModel):
    requests_per_minute: int
    tokens_per_minute: int
    """Counted as Azure does: a request's prompt tokens plus its ``max_tokens`` when admitted,
    corrected to the tokens it used once answered."""
    max_concurrent_requests: int


class RateLimitsRequest(BaseModel):
    """Any subset: on create the rest come from the server's defaults, on update they stay."""

    model_config = ConfigDict(extra="forbid")

    requests_per_minute: RequestsPerMinute | None = None
    tokens_per_minute: TokensPerMinute | None = None
    max_concurrent_requests: ConcurrentRequests | None = None


class DeploymentError(BaseModel):
    code: str
    message: str


class Deployment(BaseModel):
    id: str
    """``dep_…``"""
    object: Literal["deployment"] = "deployment"
    name: str
    """What chat requests name as ``model``."""
    model: str
    """The model as it was asked for (an id, a checkpoint, or a registered ``name[:N]``)."""
    model_id: str
    """The concrete model it resolved to when deployed."""
    created_at: int
    updated_at: int
    last_used_at: int | None
    """When it last served a request (to the minute); null if never. Deployments unused for
    ``TUNESMITH_DEPLOYMENT_IDLE_SECONDS`` are removed."""
    rate_limits: RateLimitsObject
    content_filter: bool
    status: DeploymentStatus
    """``creating`` until its model is loaded and ready to serve (``succeeded``), or refused by
    the engine (``failed``, with ``error``). A ``creating`` deployment is callable already: a
    request waits for the load. Any update of a ``failed`` one loads its model again."""
    error: DeploymentError | None = None
    """Why the model cannot be served (null unless ``failed``): the code and message a chat
    request for it answers, e.g. ``model_not_servable``."""
    scoring_uri: str
    """The deployment's serverless endpoint, absolute (``{public base URL}/endpoints/{project
    id}/{name}``): ``POST {scoring_uri}/v1/chat/completions`` calls this deployment, no
    ``model`` needed, with one of its keys or a key of its project."""


class CreateDeploymentRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    model: str
    rate_limits: RateLimitsRequest | None = None
    content_filter: StrictBool = True


class UpdateDeploymentRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rate_limits: RateLimitsRequest | None = None
    content_filter: StrictBool | None = None


class DeploymentDeleted(BaseModel):
    id: str
    object: Literal["deployment"] = "deployment"
    name: str
    deleted: bool = True


class DeploymentKeys(BaseModel):
    """Both keys of a deployment; either authenticates (send it as a bearer or ``api-key``)."""

    primary_key: str
    secondary_key: str


class RegeneratedKeys(BaseModel):
    """The answer of ``POST …/keys/regenerate``: the new key, and the other one as it was. The
    other is ``null`` only when its stored copy does not open on this server (it was sealed
    under another key-encryption key): it still authenticates, and regenerating it too makes
    both readable again."""

    primary_key: str | None
    secondary_key: str | None


class RegenerateKeyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    key_name: Literal["primary", "secondary"]


class DeploymentEvent(BaseModel):
    id: str
    """``depevt_…``"""
    object: Literal["deployment.event"] = "deployment.event"
    deployment_id: str
    deployment_name: str
    created_at: int
    type: DeploymentEventType
    message: str
