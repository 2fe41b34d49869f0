"""/api/v1/recommendations and /api/v1/whatif: sorting, filters, dismiss, apply, tenant isolation, 400s."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.test import Client

from costline.advisor import actions
from costline.advisor.findings import Kind
from costline.advisor.models import Recommendation
from costline.tenancy.actions import issue_api_token
from costline.tenancy.models import Organization, Role
from costline.usage.models import LLMCall
from tests.conftest import TenantKeys
from tests.platform.advisor.test_lifecycle import T0, finding
from tests.platform.dashboards.conftest import Member, sign_in

__all__ = ["sign_in"]  # the signed-in members of the dashboards' tests
URL = "/api/v1/recommendations"
Writer = Callable[[Organization, list[dict[str, Any]]], list[LLMCall]]


@pytest.fixture
def tenant(db: None, make_tenant: Callable[..., TenantKeys]) -> TenantKeys:
    tenant = make_tenant("Acme")
    actions.store_findings(
        tenant.id,
        [
            finding("10", key="a"),
            finding("250", key="b", kind=Kind.RIGHT_SIZE),
            finding("40", key="c"),
        ],
        T0,
    )
    return tenant


def rec(tenant: TenantKeys, key: str) -> Recommendation:
    return Recommendation.objects.get(tenant_id=tenant.id, key=key)


def test_it_lists_by_saving_largest_first(client: Client, tenant: TenantKeys) -> None:
    response = client.get(URL, headers=tenant.api_auth)

    assert response.status_code == 200
    assert [r["key"] for r in response.json()] == ["b", "c", "a"]
    assert response.json()[0]["monthly_saving_usd"] == "250.000000000000"


def test_it_filters_by_kind_and_status(client: Client, tenant: TenantKeys) -> None:
    actions.dismiss(rec(tenant, "c"), "no")
    assert [r["key"] for r in client.get(URL, {"kind": "right_size"}, headers=tenant.api_auth).json()] == [
        "b"
    ]
    assert [r["key"] for r in client.get(URL, {"status": "open"}, headers=tenant.api_auth).json()] == [
        "b",
        "a",
    ]
    response = client.get(URL, {"status": "closed"}, headers=tenant.api_auth)
    assert response.status_code == 400
    assert "status" in response.json()


def test_it_dismisses_with_a_reason_and_applies(client: Client, tenant: TenantKeys) -> None:
    a, b = rec(tenant, "a"), rec(tenant, "b")

    no_reason = client.post(
        f"{URL}/{a.id}/dismiss", {}, content_type="application/json", headers=tenant.api_auth
    )
    dismissed = client.post(
        f"{URL}/{a.id}/dismiss",
        {"reason": "Answers must be fresh"},
        content_type="application/json",
        headers=tenant.api_auth,
    )
    applied = client.post(f"{URL}/{b.id}/apply", headers=tenant.api_auth)

    assert no_reason.status_code == 400
    assert "reason" in no_reason.json()
    assert dismissed.status_code == 200
    assert (dismissed.json()["status"], dismissed.json()["dismissed_reason"]) == (
        "dismissed",
        "Answers must be fresh",
    )
    assert applied.status_code == 200
    assert applied.json()["status"] == "applied"
    assert rec(tenant, "b").applied_at is not None


def test_another_tenants_recommendation_is_a_404(
    client: Client, tenant: TenantKeys, make_tenant: Callable[..., TenantKeys]
) -> None:
    other = make_tenant("Globex")
    theirs = rec(tenant, "a")

    assert client.get(f"{URL}/{theirs.id}", headers=other.api_auth).status_code == 404
    assert client.post(f"{URL}/{theirs.id}/apply", headers=other.api_auth).status_code == 404
    assert (
        client.post(
            f"{URL}/{theirs.id}/dismiss",
            {"reason": "x"},
            content_type="application/json",
            headers=other.api_auth,
        ).status_code
        == 404
    )
    assert client.get(URL, headers=other.api_auth).json() == []
    assert rec(tenant, "a").status == "open"


def personal_token(member: Member) -> dict[str, str]:
    return {"Authorization": f"Bearer {issue_api_token(member.org, 'mine', user=member.user).plaintext}"}


def test_a_viewer_reads_but_may_not_dismiss_or_apply(client: Client, sign_in: Callable[..., Member]) -> None:
    viewer = sign_in(Role.VIEWER)
    actions.store_findings(viewer.org.id, [finding(key="a")], T0)
    row = Recommendation.objects.get(tenant=viewer.org)
    auth = personal_token(viewer)

    read = client.get(f"{URL}/{row.id}", headers=auth)
    dismissed = client.post(
        f"{URL}/{row.id}/dismiss", {"reason": "x"}, content_type="application/json", headers=auth
    )
    applied = client.post(f"{URL}/{row.id}/apply", headers=auth)

    assert read.status_code == 200
    assert dismissed.status_code == 403
    assert applied.status_code == 403
    assert "needs the member role" in applied.json()["detail"]
    assert "you are viewer" in applied.json()["detail"]
    row.refresh_from_db()
    assert (row.status, row.applied_at) == ("open", None)


def test_a_members_token_dismisses_and_applies(client: Client, sign_in: Callable[..., Member]) -> None:
    member = sign_in(Role.MEMBER)
    actions.store_findings(member.org.id, [finding(key="a"), finding(key="b")], T0)
    a, b = (Recommendation.objects.get(tenant=member.org, key=k) for k in ("a", "b"))
    auth = personal_token(member)

    dismissed = client.post(
        f"{URL}/{a.id}/dismiss", {"reason": "x"}, content_type="application/json", headers=auth
    )
    applied = client.post(f"{URL}/{b.id}/apply", headers=auth)

    assert (dismissed.status_code, dismissed.json()["status"]) == (200, "dismissed")
    assert (applied.status_code, applied.json()["status"]) == (200, "applied")


def test_a_member_of_another_organisation_gets_a_404_not_a_403(
    client: Client, tenant: TenantKeys, sign_in: Callable[..., Member]
) -> None:
    stranger = sign_in(Role.OWNER)  # every right in their own organisation, none in the tenant's
    theirs = rec(tenant, "a")
    auth = personal_token(stranger)

    dismissed = client.post(
        f"{URL}/{theirs.id}/dismiss", {"reason": "x"}, content_type="application/json", headers=auth
    )
    applied = client.post(f"{URL}/{theirs.id}/apply", headers=auth)

    assert (dismissed.status_code, applied.status_code) == (404, 404)
    assert rec(tenant, "a").status == "open"


def test_it_needs_a_token(client: Client, tenant: TenantKeys) -> None:
    assert client.get(URL).status_code in (401, 403)


def whatif(client: Client, tenant: TenantKeys, body: dict[str, Any]) -> Any:
    return client.post("/api/v1/whatif", body, content_type="application/json", headers=tenant.api_auth)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"policy": {"semantic_cache_threshold": 2}}, "policy.semantic_cache_threshold"),
        ({"policy": {"swaps": [{"from_model": "gpt-4o"}]}}, "policy.swaps[0].to_model"),
        ({"policy": {}, "days": 0}, "days"),
        ({"policy": {}, "start": "yesterday", "end": "2026-11-01T00:00:00Z"}, "start"),
    ],
)
def test_whatif_names_the_bad_field(
    client: Client, tenant: TenantKeys, body: dict[str, Any], field: str
) -> None:
    response = whatif(client, tenant, body)
    assert response.status_code == 400
    assert field in response.json(), response.json()


def test_whatif_refuses_an_unknown_model(client: Client, tenant: TenantKeys, write_calls: Writer) -> None:
    write_calls(tenant.org, [{"start_time": datetime.now(UTC) - timedelta(days=1)}])  # type: ignore[arg-type]
    response = whatif(
        client, tenant, {"policy": {"swaps": [{"from_model": "gpt-4o", "to_model": "no-such-model-9"}]}}
    )
    assert response.status_code == 400
    assert "no-such-model-9" in str(response.json())


def test_whatif_replays_the_tenants_own_calls(
    client: Client, tenant: TenantKeys, write_calls: Writer, make_tenant: Callable[..., TenantKeys]
) -> None:
    start = datetime(2026, 11, 1, tzinfo=UTC)
    rows: list[dict[str, Any]] = []
    for block in range(10):  # 7 new prompts, then 3 of them again: 30% exact repeats
        fresh = [{"prompt_hash": 1000 + 7 * block + j} for j in range(7)]
        rows += fresh + fresh[:3]
    write_calls(tenant.org, [r | {"start_time": start + timedelta(minutes=i)} for i, r in enumerate(rows)])  # type: ignore[arg-type]
    body = {
        "policy": {"response_cache_window_s": 3600},
        "start": "2026-11-01T00:00:00Z",
        "end": "2026-11-02T00:00:00Z",
    }

    mine = whatif(client, tenant, body)
    theirs = whatif(client, make_tenant("Globex"), body)

    assert mine.status_code == 200, mine.content
    assert mine.json()["calls"] == 100
    assert Decimal(mine.json()["baseline_usd"]) == 100 * Decimal("0.0085")
    assert Decimal(mine.json()["saving_usd"]) == 30 * Decimal("0.0085")
    assert mine.json()["days"][0]["day"] == "2026-11-01"
    assert theirs.json()["calls"] == 0
