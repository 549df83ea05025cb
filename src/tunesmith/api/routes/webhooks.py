"""``/v1/webhook_endpoints`` (``client.webhooks.*``): register, list, retrieve, delete, and the
delivery log of an endpoint (extension)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends

from tunesmith import webhooks
from tunesmith.api.body import CappedRoute
from tunesmith.api.deps import Owner, PageLimit, Reader, RuntimeDep, SessionDep, now
from tunesmith.protocol.pages import ListPage
from tunesmith.protocol.webhooks import (
    CreateWebhookEndpointRequest,
    DeletedWebhookEndpoint,
    WebhookDelivery,
    WebhookEndpoint,
)
from tunesmith.store.tables import WebhookRow

router = APIRouter(prefix="/v1/webhook_endpoints", tags=["webhooks"], route_class=CappedRoute)


def owned_webhook(webhook_endpoint_id: str, principal: Reader, session: SessionDep) -> WebhookRow:
    return webhooks.get_webhook(
        session, project_id=principal.project_id, webhook_id=webhook_endpoint_id
    )


OwnedWebhook = Annotated[WebhookRow, Depends(owned_webhook)]


@router.post("", response_model=WebhookEndpoint)
def create_webhook_endpoint(
    body: CreateWebhookEndpointRequest, principal: Owner, session: SessionDep, runtime: RuntimeDep
) -> WebhookEndpoint:
    row, secret = webhooks.create_webhook(
        session,
        project_id=principal.project_id,
        name=body.name,
        url=body.url,
        event_types=body.event_types,
        now=now(),
        allow=runtime.settings.webhook_allowed(),
    )
    return webhooks.webhook_to_protocol(row, secret)


@router.get("", response_model=ListPage[WebhookEndpoint])
def list_webhook_endpoints(
    principal: Reader,
    session: SessionDep,
    limit: PageLimit = 20,
    order: Literal["asc", "desc"] = "desc",
    after: str | None = None,
) -> ListPage[WebhookEndpoint]:
    rows, has_more = webhooks.list_webhooks(
        session, project_id=principal.project_id, after=after, limit=limit, order=order
    )
    return ListPage.of(
        [webhooks.webhook_to_protocol(r) for r in rows], has_more=has_more, ids=[r.id for r in rows]
    )


@router.get("/{webhook_endpoint_id}", response_model=WebhookEndpoint)
def retrieve_webhook_endpoint(row: OwnedWebhook) -> WebhookEndpoint:
    return webhooks.webhook_to_protocol(row)


@router.get("/{webhook_endpoint_id}/deliveries", response_model=ListPage[WebhookDelivery])
def list_webhook_deliveries(
    row: OwnedWebhook,
    session: SessionDep,
    limit: PageLimit = 20,
    order: Literal["asc", "desc"] = "desc",
    after: str | None = None,
) -> ListPage[WebhookDelivery]:
    rows, has_more = webhooks.list_deliveries(
        session, webhook=row, after=after, limit=limit, order=order
    )
    return ListPage.of(
        [webhooks.delivery_to_protocol(r) for r in rows],
        has_more=has_more,
        ids=[r.id for r in rows],
    )


@router.delete("/{webhook_endpoint_id}", response_model=DeletedWebhookEndpoint)
def delete_webhook_endpoint(
    webhook_endpoint_id: str, principal: Owner, session: SessionDep
) -> DeletedWebhookEndpoint:
    webhooks.delete_webhook(
        session, project_id=principal.project_id, webhook_id=webhook_endpoint_id
    )
    return DeletedWebhookEndpoint(id=webhook_endpoint_id)
