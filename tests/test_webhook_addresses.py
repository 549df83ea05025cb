"""Webhooks reach only public addresses unless the operator allows a host: registration
refuses private, loopback, link-local, reserved forms and names that resolve to them (400
naming ``url``), and a delivery re-checks the host and records only an error category."""

from __future__ import annotations

import ipaddress

import pytest

from tests.conftest import LiveServer
from tunesmith import webhook_delivery, webhooks
from tunesmith.auth import DEFAULT_PROJECT_ID
from tunesmith.store.db import transaction
from tunesmith.store.tables import WebhookDeliveryRow, WebhookRow
from tunesmith.webhook_targets import NOTHING_ALLOWED, Allow, is_public

REFUSED_URLS = [
    "http://127.0.0.1/hook",
    "http://127.1/hook",
    "http://169.254.169.254/latest/meta-data/",
    "http://[::1]/hook",
    "http://10.0.0.5/hook",
    "http://192.168.1.1/hook",
    "http://172.16.0.1/hook",
    "http://100.64.0.1/hook",
    "http://0.0.0.0/hook",
    "http://224.0.0.1/hook",
    "http://[::ffff:127.0.0.1]/hook",
    "http://[::ffff:169.254.169.254]/hook",
    "http://[2002:7f00:1::]/hook",
    "http://[64:ff9b::a00:1]/hook",
    "http://[fe80::1]/hook",
    "http://[fc00::1]/hook",
    "http://localhost:8080/hook",
]


def test_private_and_reserved_receivers_are_refused_naming_url(live: LiveServer) -> None:
    http = live.http()
    for url in REFUSED_URLS:  # one server for all cases keeps this fast
        response = http.post("/v1/webhook_endpoints", json={"url": url})
        assert response.status_code == 400, url
        error = response.json()["error"]
        assert (error["type"], error["param"]) == ("invalid_request_error", "url"), url
        assert "TUNESMITH_WEBHOOK_ALLOW" in error["message"], url
    assert http.get("/v1/webhook_endpoints").json()["data"] == []
    # A normal request is still served.
    assert http.get("/v1/models").status_code == 200


@pytest.mark.parametrize(
    "address", ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "::ffff:8.8.8.8"]
)
def test_public_addresses_pass(address: str) -> None:
    assert is_public(ipaddress.ip_address(address))


def test_the_allow_setting_admits_named_hosts_and_networks() -> None:
    allow = Allow.parse(" hooks.internal , 10.1.0.0/16, ::1 ")
    assert allow.names("HOOKS.internal.")
    assert allow.covers(ipaddress.ip_address("10.1.2.3"))
    assert not allow.covers(ipaddress.ip_address("10.2.0.1"))
    assert allow.covers(ipaddress.ip_address("::1"))
    assert webhooks.check_url("http://10.1.2.3/x", allow) == "http://10.1.2.3/x"
    with pytest.raises(ValueError):
        Allow.parse("10.0.0.0/99")


def test_a_delivery_rechecks_the_host_and_logs_only_a_category(live: LiveServer) -> None:
    """An endpoint whose address became private (rows written before this check, or an operator
    who narrowed the allow list) is not contacted; the log shows a category, no error text."""
    sessions = live.app.state.runtime.sessions
    with transaction(sessions) as session:
        row, _ = webhooks.create_webhook(
            session,
            project_id=DEFAULT_PROJECT_ID,
            name="",
            url="http://127.0.0.1:9/hook",
            event_types=None,
            now=0,
            allow=Allow.parse("127.0.0.1"),
        )
        hook_id = row.id
        webhooks.enqueue(
            session,
            project_id=DEFAULT_PROJECT_ID,
            event_type="fine_tuning.job.succeeded",
            data={"id": "ftjob-x"},
            now=1000,
        )
    attempted = webhook_delivery.deliver_due(
        sessions,
        now=1000,
        timeout_seconds=2,
        max_attempts=3,
        retry_base_seconds=1,
        allow=NOTHING_ALLOWED,
    )
    assert attempted == 1
    with sessions() as session:
        (delivery,) = session.query(WebhookDeliveryRow).all()
        assert session.get(WebhookRow, hook_id) is not None
    assert (delivery.last_error, delivery.last_status_code) == ("refused_address", None)
    listed = live.http().get(f"/v1/webhook_endpoints/{hook_id}/deliveries").json()["data"]
    assert listed[0]["last_error"] == "refused_address"
