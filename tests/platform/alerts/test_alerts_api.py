"""/api/v1/alerts and /api/v1/incidents: CRUD, field-named errors, status changes, tenant isolation."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from costline.alerts.models import AlertIncident, AlertRule, Channel, IncidentStatus
from tests.conftest import TenantKeys

MakeTenant = Callable[..., TenantKeys]


@pytest.fixture
def tenant(db: None, make_tenant: MakeTenant) -> TenantKeys:
    return make_tenant("Acme")


def post(client: Client, tenant: TenantKeys, url: str, body: dict[str, Any] | None = None) -> Any:
    return client.post(url, body or {}, content_type="application/json", headers=tenant.api_auth)


def _incident(tenant: TenantKeys) -> AlertIncident:
    rule = AlertRule.objects.create(organization=tenant.org, name="Spend")
    at = timezone.now().replace(minute=0, second=0, microsecond=0) - timedelta(hours=2)
    return AlertIncident.objects.create(tenant=tenant.org, rule=rule, started_at=at, last_anomalous_at=at)


def test_rules_crud(client: Client, tenant: TenantKeys) -> None:
    channel = Channel.objects.create(organization=tenant.org, name="Ops", kind="email", target="o@x.example")
    created = post(
        client, tenant, "/api/v1/alerts", {"name": "Spend", "min_impact_usd": "25", "channels": [channel.id]}
    )
    assert created.status_code == 201, created.content
    body = created.json()
    assert (body["kind"], body["metric"], body["sensitivity"]) == ("anomaly", "cost_usd", "medium")
    assert body["min_impact_usd"] == "25.000000"
    assert body["channels"] == [channel.id]

    url = f"/api/v1/alerts/{body['id']}"
    changed = client.patch(
        url, {"sensitivity": "high", "channels": []}, content_type="application/json", headers=tenant.api_auth
    )
    assert changed.status_code == 200, changed.content
    assert changed.json()["sensitivity"] == "high"
    assert changed.json()["channels"] == []
    listed = client.get("/api/v1/alerts", headers=tenant.api_auth).json()
    assert [r["name"] for r in listed] == ["Spend"]
    assert client.delete(url, headers=tenant.api_auth).status_code == 204
    assert not AlertRule.objects.exists()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "x", "metric": "vibes"}, "metric"),
        ({"name": "  "}, "name"),
        ({"name": "x", "kind": "threshold"}, "threshold_value"),
        ({"name": "x", "channels": [999999]}, "channels"),
        ({"name": "x", "min_impact_usd": "-1"}, "min_impact_usd"),
    ],
)
def test_invalid_rules_name_the_field(
    client: Client, tenant: TenantKeys, body: dict[str, Any], field: str
) -> None:
    response = post(client, tenant, "/api/v1/alerts", body)
    assert response.status_code == 400
    assert list(response.json()) == [field]


def test_incidents_list_filter_acknowledge_resolve(client: Client, tenant: TenantKeys) -> None:
    incident = _incident(tenant)
    base = f"/api/v1/incidents/{incident.id}"

    assert [i["id"] for i in client.get("/api/v1/incidents?status=open", headers=tenant.api_auth).json()] == [
        incident.id
    ]
    assert client.get("/api/v1/incidents?status=resolved", headers=tenant.api_auth).json() == []
    assert client.get("/api/v1/incidents?status=nope", headers=tenant.api_auth).status_code == 400

    assert post(client, tenant, f"{base}/acknowledge").json()["status"] == "acknowledged"
    resolved = post(client, tenant, f"{base}/resolve").json()
    assert resolved["status"] == "resolved"
    assert resolved["resolved_at"] is not None
    assert client.get(base, headers=tenant.api_auth).json()["rule_name"] == "Spend"
    incident.refresh_from_db()
    assert incident.status == IncidentStatus.RESOLVED


def test_another_organisations_incident_and_rule_are_404(
    client: Client, tenant: TenantKeys, make_tenant: MakeTenant
) -> None:
    other = make_tenant("Other")
    incident = _incident(other)

    assert client.get(f"/api/v1/incidents/{incident.id}", headers=tenant.api_auth).status_code == 404
    assert post(client, tenant, f"/api/v1/incidents/{incident.id}/resolve").status_code == 404
    assert client.get(f"/api/v1/alerts/{incident.rule_id}", headers=tenant.api_auth).status_code == 404
    assert client.get("/api/v1/incidents", headers=tenant.api_auth).json() == []
    incident.refresh_from_db()
    assert incident.status == IncidentStatus.OPEN


def test_a_viewers_token_reads_but_does_not_change(client: Client, sign_in: Callable[..., Any]) -> None:
    from costline.tenancy.actions import issue_api_token
    from costline.tenancy.models import Role

    viewer = sign_in(Role.VIEWER)
    auth = {"Authorization": f"Bearer {issue_api_token(viewer.org, 'mine', user=viewer.user).plaintext}"}
    rule = AlertRule.objects.create(organization=viewer.org, name="Spend")
    at = timezone.now().replace(minute=0, second=0, microsecond=0)
    incident = AlertIncident.objects.create(tenant=viewer.org, rule=rule, started_at=at, last_anomalous_at=at)

    assert client.get("/api/v1/alerts", headers=auth).status_code == 200
    assert (
        client.post(
            "/api/v1/alerts", {"name": "x"}, content_type="application/json", headers=auth
        ).status_code
        == 403
    )
    assert client.post(f"/api/v1/incidents/{incident.id}/resolve", headers=auth).status_code == 403
    assert client.delete(f"/api/v1/alerts/{rule.id}", headers=auth).status_code == 403
    incident.refresh_from_db()
    assert incident.status == IncidentStatus.OPEN
