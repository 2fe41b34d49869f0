"""/api/v1/budgets and /api/v1/budgets/<id>: CRUD, validation answers, roles, tenant isolation, audit."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from costline.alerts.models import Channel
from costline.budgets.models import AuditAction, Budget, BudgetAuditEntry, BudgetPeriodState
from costline.budgets.periods import current_period
from costline.tenancy.actions import issue_api_token
from costline.tenancy.models import Project, Role, Team
from tests.conftest import TenantKeys
from tests.platform.budgets.conftest import Member

MakeTenant = Callable[..., TenantKeys]
URL = "/api/v1/budgets"
BODY = {"name": "Search", "amount_usd": "500.00"}


@pytest.fixture
def tenant(db: None, make_tenant: MakeTenant) -> TenantKeys:
    return make_tenant("Acme")


def post(client: Client, tenant: TenantKeys, body: dict[str, Any]) -> Any:
    return client.post(URL, body, content_type="application/json", headers=tenant.api_auth)


def test_it_creates_a_budget_with_defaults(client: Client, tenant: TenantKeys) -> None:
    response = post(client, tenant, BODY)

    assert response.status_code == 201, response.content
    body = response.json()
    assert body["amount_usd"] == "500.000000"
    assert (body["period"], body["action"], body["thresholds"], body["scope"]) == (
        "monthly",
        "notify",
        [50, 80, 100],
        {},
    )
    assert body["current_period"]["state"] is None
    assert body["current_period"]["spend_usd"] is None
    entry = BudgetAuditEntry.objects.get(budget_id=body["id"])
    assert entry.action == AuditAction.CREATED
    assert entry.actor_label.startswith("api token test token")


def test_it_creates_a_full_budget(client: Client, tenant: TenantKeys) -> None:
    Project.objects.create(organization=tenant.org, name="Search", slug="search")
    channel = Channel.objects.create(organization=tenant.org, name="Ops", kind="email", target="o@x.example")

    response = post(
        client,
        tenant,
        {
            **BODY,
            "scope": {"project": ["search"], "model": ["gpt-4o"]},
            "period": "custom",
            "custom_start": "2026-01-01T09:00:00Z",
            "custom_length_days": 14,
            "thresholds": [90, 25],
            "action": "downgrade",
            "downgrade_model": "gpt-4o-mini",
            "channels": [channel.id],
        },
    )

    assert response.status_code == 201, response.content
    budget = Budget.objects.get(id=response.json()["id"])
    assert budget.scope == {"model": ["gpt-4o"], "project": ["search"]}
    assert (budget.custom_length_days, budget.thresholds, budget.downgrade_model) == (
        14,
        [25, 90],
        "gpt-4o-mini",
    )
    assert response.json()["channels"] == [channel.id]


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        ({"name": "x", "amount_usd": "0"}, "amount_usd", "more than $0"),
        ({"name": "x", "amount_usd": "ten"}, "amount_usd", "valid number"),
        ({"amount_usd": "5"}, "name", "required"),
        ({**BODY, "thresholds": [0]}, "thresholds", "1 to 200"),
        ({**BODY, "action": "throttle"}, "throttle_rpm", "requests per minute"),
        ({**BODY, "action": "downgrade"}, "downgrade_model", "cheaper model"),
        ({**BODY, "action": "explode"}, "action", "not a valid choice"),
        ({**BODY, "period": "custom"}, "custom_start", "start of its first period"),
        ({**BODY, "scope": {"region": ["eu"]}}, "scope", "Unknown scope filter"),
        ({**BODY, "scope": {"project": ["nope"]}}, "scope", "no project with the slug nope"),
        ({**BODY, "scope": {"user": ["u"], "model": ["m"]}}, "scope", "cannot also filter on model"),
        ({**BODY, "channels": [999999]}, "channels", "No notification channel with the id 999999"),
    ],
)
def test_it_says_what_is_wrong(
    client: Client, tenant: TenantKeys, body: dict[str, Any], field: str, message: str
) -> None:
    response = post(client, tenant, body)

    assert response.status_code == 400
    assert message in " ".join(response.json()[field])
    assert not Budget.objects.filter(organization=tenant.org).exists()


def test_it_lists_budgets_with_their_period_state(client: Client, tenant: TenantKeys) -> None:
    budget_id = post(client, tenant, BODY).json()["id"]
    budget = Budget.objects.select_related("organization").get(id=budget_id)
    start, end = current_period(budget, timezone.now())
    BudgetPeriodState.objects.create(
        budget=budget, period_start=start, period_end=end, spend_usd=Decimal("12.5"), state="ok"
    )

    response = client.get(URL, headers=tenant.api_auth)

    assert response.status_code == 200
    [row] = response.json()
    assert row["current_period"]["spend_usd"] == "12.500000000000"
    assert row["current_period"]["state"] == "ok"


def test_it_changes_a_budget_and_audits_old_and_new(client: Client, tenant: TenantKeys) -> None:
    budget_id = post(client, tenant, BODY).json()["id"]

    response = client.patch(
        f"{URL}/{budget_id}",
        {"action": "throttle", "throttle_rpm": 30},
        content_type="application/json",
        headers=tenant.api_auth,
    )

    assert response.status_code == 200, response.content
    assert (response.json()["action"], response.json()["throttle_rpm"], response.json()["name"]) == (
        "throttle",
        30,
        "Search",
    )
    entry = BudgetAuditEntry.objects.filter(budget_id=budget_id).latest("id")
    assert entry.action == AuditAction.UPDATED
    assert (entry.old["action"], entry.new["action"]) == ("notify", "throttle")
    assert (entry.old["throttle_rpm"], entry.new["throttle_rpm"]) == (None, 30)


def test_a_patch_is_validated_as_a_whole(client: Client, tenant: TenantKeys) -> None:
    budget_id = post(client, tenant, BODY).json()["id"]

    response = client.patch(
        f"{URL}/{budget_id}", {"action": "throttle"}, content_type="application/json", headers=tenant.api_auth
    )

    assert response.status_code == 400
    assert "requests per minute" in response.json()["throttle_rpm"][0]


def test_it_pauses_with_a_patch(client: Client, tenant: TenantKeys) -> None:
    budget_id = post(client, tenant, BODY).json()["id"]

    client.patch(
        f"{URL}/{budget_id}", {"paused": True}, content_type="application/json", headers=tenant.api_auth
    )

    assert BudgetAuditEntry.objects.filter(budget_id=budget_id).latest("id").action == AuditAction.PAUSED


def test_it_deletes_a_budget_and_keeps_its_audit_log(client: Client, tenant: TenantKeys) -> None:
    budget_id = post(client, tenant, BODY).json()["id"]

    response = client.delete(f"{URL}/{budget_id}", headers=tenant.api_auth)

    assert response.status_code == 204
    assert client.get(f"{URL}/{budget_id}", headers=tenant.api_auth).status_code == 404
    assert BudgetAuditEntry.objects.filter(organization=tenant.org, action=AuditAction.DELETED).count() == 1


def test_another_organisations_budget_is_not_found(
    client: Client, tenant: TenantKeys, make_tenant: MakeTenant
) -> None:
    budget_id = post(client, tenant, BODY).json()["id"]
    other = make_tenant("Other")

    assert client.get(f"{URL}/{budget_id}", headers=other.api_auth).status_code == 404
    patched = client.patch(
        f"{URL}/{budget_id}", {"name": "mine"}, content_type="application/json", headers=other.api_auth
    )
    assert patched.status_code == 404
    assert client.delete(f"{URL}/{budget_id}", headers=other.api_auth).status_code == 404
    assert client.get(URL, headers=other.api_auth).json() == []
    assert Budget.objects.get(id=budget_id).name == "Search"


def test_another_organisations_channel_is_refused(
    client: Client, tenant: TenantKeys, make_tenant: MakeTenant
) -> None:
    other = make_tenant("Other")
    theirs = Channel.objects.create(organization=other.org, name="Theirs", kind="email", target="t@x.example")

    response = post(client, tenant, {**BODY, "channels": [theirs.id]})

    assert response.status_code == 400
    assert "No notification channel" in response.json()["channels"][0]


def test_it_needs_a_token(client: Client) -> None:
    assert client.get(URL).status_code in (401, 403)


def test_a_viewers_token_reads_and_changes_only_team_budgets(
    client: Client, sign_in: Callable[..., Member]
) -> None:
    viewer = sign_in(Role.VIEWER)
    Team.objects.create(organization=viewer.org, name="Search", slug="search").members.add(viewer.user)
    token = issue_api_token(viewer.org, "mine", user=viewer.user).plaintext
    auth = {"Authorization": f"Bearer {token}"}

    refused = client.post(URL, BODY, content_type="application/json", headers=auth)
    created = client.post(
        URL, {**BODY, "scope": {"team": ["search"]}}, content_type="application/json", headers=auth
    )

    assert refused.status_code == 403
    assert created.status_code == 201, created.content
    assert client.get(URL, headers=auth).status_code == 200
    entry = BudgetAuditEntry.objects.get(budget_id=created.json()["id"])
    assert entry.actor == viewer.user
    assert entry.actor_label.startswith(viewer.user.email)
