"""Webhook endpoints, as in OpenAI's ``WebhookEndpoint`` (``client.webhooks.*``), the events
they receive, and our delivery log.

The events are OpenAI's ``fine_tuning.job.*`` webhook events, signed by the Standard Webhooks
scheme, so ``client.webhooks.unwrap(body, headers, secret=...)`` verifies and parses them."""

from __future__ import annotations

from typing import Literal, get_args

from pydantic import BaseModel, Field

EventType = Literal[
    "fine_tuning.job.succeeded",
    "fine_tuning.job.failed",
    "fine_tuning.job.cancelled",
]
EVENT_TYPES: tuple[str, ...] = get_args(EventType)


class WebhookEndpoint(BaseModel):
    id: str
    """``wh_…``"""
    object: Literal["webhook_endpoint"] = "webhook_endpoint"
    created_at: int
    event_types: list[str]
    """The event types delivered to this endpoint."""
    name: str
    signing_secret: str | None = None
    """``whsec_…``: present only in the response that created the endpoint."""
    signing_secret_hint: str
    """The secret's first characters, to tell secrets apart."""
    url: str
    updated_at: int


class CreateWebhookEndpointRequest(BaseModel):
    url: str
    """An absolute ``http://`` or ``https://`` URL."""
    name: str = Field(default="", max_length=200)
    event_types: list[str] | None = None
    """Default: every event type in ``EVENT_TYPES``."""


class DeletedWebhookEndpoint(BaseModel):
    id: str
    object: Literal["webhook_endpoint.deleted"] = "webhook_endpoint.deleted"
    deleted: bool = True


class WebhookDelivery(BaseModel):
    """``GET /v1/webhook_endpoints/{id}/deliveries`` (extension): one event's way to one
    endpoint, for debugging a receiver."""

    id: str
    """``whd_…``"""
    object: Literal["webhook_endpoint.delivery"] = "webhook_endpoint.delivery"
    webhook_endpoint_id: str
    event_id: str
    """``evt_…``, also sent as the ``webhook-id`` header."""
    event_type: str
    created_at: int
    status: Literal["pending", "delivered", "failed"]
    attempts: int
    last_attempt_at: int | None
    next_attempt_at: int | None
    """When the next attempt is due; null once delivered or failed."""
    last_status_code: int | None
    """The receiver's HTTP status at the last attempt; null if it could not be reached."""
    last_error: str | None
