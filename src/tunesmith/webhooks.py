"""Webhooks: a project's endpoints hear when its fine-tuning jobs end.

The job code calls :func:`enqueue` inside the transaction that finishes a job, so an event
exists exactly when the job's end does: one delivery row per subscribed endpoint, holding the
exact body (OpenAI's event object). :mod:`tunesmith.webhook_delivery` sends them, signed by
:func:`sign` (the Standard Webhooks scheme, what ``client.webhooks.unwrap`` verifies).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import secrets
from typing import Any, Literal
from urllib.parse import urlsplit

from sqlalchemy import select
from sqlalchemy.orm import Session

from tunesmith.errors import InvalidRequest, NotFound
from tunesmith.ids import new_id
from tunesmith.protocol.webhooks import EVENT_TYPES, WebhookDelivery, WebhookEndpoint
from tunesmith.store.pagination import page
from tunesmith.store.tables import WebhookDeliveryRow, WebhookRow
from tunesmith.webhook_targets import (
    NOTHING_ALLOWED,
    Allow,
    RefusedTarget,
    check_registration,
)

log = logging.getLogger(__name__)

SECRET_PREFIX = "whsec_"
MAX_URL_LENGTH = 2048


def webhook_to_protocol(row: WebhookRow, secret: str | None = None) -> WebhookEndpoint:
    return WebhookEndpoint(
        id=row.id,
        created_at=row.created_at,
        event_types=row.event_types,
        name=row.name,
        signing_secret=secret,
        signing_secret_hint=row.secret[: len(SECRET_PREFIX) + 4] + "…",
        url=row.url,
        updated_at=row.updated_at,
    )


def delivery_to_protocol(row: WebhookDeliveryRow) -> WebhookDelivery:
    return WebhookDelivery(
        id=row.id,
        webhook_endpoint_id=row.webhook_id,
        event_id=row.event_id,
        event_type=row.event_type,
        created_at=row.created_at,
        status=row.status,
        attempts=row.attempts,
        last_attempt_at=row.last_attempt_at,
        next_attempt_at=None if row.next_attempt_at is None else int(row.next_attempt_at),
        last_status_code=row.last_status_code,
        last_error=row.last_error,
    )


def check_url(url: str, allow: Allow = NOTHING_ALLOWED) -> str:
    """An absolute http(s) URL whose host is public or allowed (``webhook_targets``), or a 400
    naming ``url``."""
    problem = None
    if len(url) > MAX_URL_LENGTH:
        problem = f"it is longer than {MAX_URL_LENGTH} characters"
    elif any(c.isspace() or not c.isprintable() for c in url):
        problem = "it contains spaces or control characters"
    else:
        try:
            parts = urlsplit(url)
            parts.port  # noqa: B018 - raises ValueError for a port out of range
        except ValueError as exc:
            problem = str(exc)
        else:
            if parts.scheme not in ("http", "https"):
                problem = "it must start with http:// or https://"
            elif not parts.hostname:
                problem = "it has no host"
            else:
                try:
                    check_registration(parts.hostname, port_of(parts.port, parts.scheme), allow)
                except RefusedTarget as refused:
                    problem = refused.reason
    if problem is not None:
        raise InvalidRequest(
            f"Invalid webhook URL {url[:200]!r}: {problem}. "
            "Give an absolute URL such as 'https://example.com/hooks/tunesmith'.",
            param="url",
        )
    return url


def port_of(port: int | None, scheme: str) -> int:
    return port if port is not None else (443 if scheme == "https" else 80)


def check_event_types(event_types: list[str] | None) -> list[str]:
    """The requested event types without duplicates; every type when None."""
    if event_types is None:
        return list(EVENT_TYPES)
    known = ", ".join(repr(t) for t in EVENT_TYPES)
    unknown = [t for t in event_types if t not in EVENT_TYPES]
    if unknown:
        raise InvalidRequest(
            f"Unknown event type(s) {', '.join(repr(t) for t in unknown)}; "
            f"tunesmith sends {known}.",
            param="event_types",
        )
    if not event_types:
        raise InvalidRequest(
            f"event_types is empty; list at least one of {known}, or leave it out for all.",
            param="event_types",
        )
    return list(dict.fromkeys(event_types))


def new_signing_secret() -> str:
    """``whsec_`` + base64 of 32 random bytes, the Standard Webhooks secret format."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def sign(secret: str, *, event_id: str, timestamp: int, body: str) -> str:
    """The ``webhook-signature`` header: ``v1,`` + base64 HMAC-SHA256 of ``id.timestamp.body``
    under the secret's decoded bytes (Standard Webhooks; ``openai.lib._webhooks``)."""
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX))
    digest = hmac.new(key, f"{event_id}.{timestamp}.{body}".encode(), hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def create_webhook(
    session: Session,
    *,
    project_id: str,
    name: str,
    url: str,
    event_types: list[str] | None,
    now: int,
    allow: Allow = NOTHING_ALLOWED,
) -> tuple[WebhookRow, str]:
    """Registers an endpoint; returns it and its signing secret, which the caller shows once.

    The secret is stored as is, not hashed: the server signs every delivery with it."""
    secret = new_signing_secret()
    row = WebhookRow(
        id=new_id("wh_"),
        project_id=project_id,
        name=name,
        url=check_url(url, allow),
        event_types=check_event_types(event_types),
        secret=secret,
        created_at=now,
        updated_at=now,
    )
    session.add(row)
    return row, secret


def get_webhook(session: Session, *, project_id: str, webhook_id: str) -> WebhookRow:
    row = session.get(WebhookRow, webhook_id)
    if row is None or row.project_id != project_id:
        raise NotFound(f"No such webhook endpoint: {webhook_id}", param="webhook_endpoint_id")
    return row


def list_webhooks(
    session: Session,
    *,
    project_id: str,
    after: str | None,
    limit: int,
    order: Literal["asc", "desc"],
) -> tuple[list[WebhookRow], bool]:
    stmt = select(WebhookRow).where(WebhookRow.project_id == project_id)
    return page(session, stmt, WebhookRow, after=after, limit=limit, order=order)


def delete_webhook(session: Session, *, project_id: str, webhook_id: str) -> None:
    """Deletes the endpoint; its pending deliveries go with it (ON DELETE CASCADE)."""
    session.delete(get_webhook(session, project_id=project_id, webhook_id=webhook_id))
    session.flush()


def list_deliveries(
    session: Session,
    *,
    webhook: WebhookRow,
    after: str | None,
    limit: int,
    order: Literal["asc", "desc"],
) -> tuple[list[WebhookDeliveryRow], bool]:
    stmt = select(WebhookDeliveryRow).where(WebhookDeliveryRow.webhook_id == webhook.id)
    return page(session, stmt, WebhookDeliveryRow, after=after, limit=limit, order=order)


def enqueue(
    session: Session, *, project_id: str, event_type: str, data: dict[str, Any], now: int
) -> None:
    """Queues one event for every endpoint of the project subscribed to ``event_type``; call it
    in the transaction that makes the event true, so neither exists without the other."""
    if event_type not in EVENT_TYPES:
        raise ValueError(f"unknown webhook event type {event_type!r}")
    event_id = new_id("evt_")
    body = json.dumps(
        {"object": "event", "id": event_id, "type": event_type, "created_at": now, "data": data},
        separators=(",", ":"),
    )
    hooks = session.scalars(select(WebhookRow).where(WebhookRow.project_id == project_id))
    for hook in hooks:
        if event_type in hook.event_types:
            session.add(
                WebhookDeliveryRow(
                    id=new_id("whd_"),
                    webhook_id=hook.id,
                    event_id=event_id,
                    event_type=event_type,
                    payload=body,
                    created_at=now,
                    status="pending",
                    attempts=0,
                    next_attempt_at=float(now),
                )
            )
