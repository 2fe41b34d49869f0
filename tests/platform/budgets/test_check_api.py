"""POST /api/v1/budgets/check: reserve, settle, release over HTTP with an API token."""

from __future__ import annotations

from decimal import Decimal

import pytest
import redis
from django.test import Client

from costline import redis_client
from tests.platform.budgets.reservation_fixtures import publish_budget

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("redis_db")]
URL = "/api/v1/budgets/check"


def post(tenant, body):
    return Client().post(URL, body, content_type="application/json", headers=tenant.api_auth)


def test_it_reserves_then_settles(make_tenant):
    tenant = make_tenant()
    budget = publish_budget(tenant.org, "1.00", scope={"project": ["search"]})

    reserved = post(tenant, {"action": "reserve", "estimate_usd": "0.40", "call": {"project": "search"}})

    assert reserved.status_code == 200
    body = reserved.json()
    assert body["admitted"] is True
    assert body["decision"] == "ok"
    assert body["reason"] is None
    assert body["budgets"] == [
        {"id": budget.id, "name": budget.name, "state": "ok", "verdict": "ok", "remaining_usd": "0.6"}
    ]
    settled = post(
        tenant, {"action": "settle", "reservation_id": body["reservation_id"], "actual_usd": "0.1"}
    )
    assert settled.status_code == 200
    assert settled.json()["status"] == "settled"
    again = post(tenant, {"action": "reserve", "estimate_usd": "0", "call": {"project": "search"}})
    assert Decimal(again.json()["budgets"][0]["remaining_usd"]) == Decimal("0.9")


def test_a_refusal_says_which_budget_and_why(make_tenant):
    tenant = make_tenant()
    publish_budget(tenant.org, "1.00", spent="0.99")

    response = post(tenant, {"action": "reserve", "estimate_usd": "0.02"})

    assert response.status_code == 200
    body = response.json()
    assert body["admitted"] is False
    assert body["decision"] == "block"
    assert body["reservation_id"] is None
    assert "Blocked by budget block 1.00" in body["reason"]


def test_a_throttle_sets_retry_after(make_tenant):
    tenant = make_tenant()
    publish_budget(tenant.org, "1.00", action="throttle", enforcement="throttle", throttle_rpm=0)

    response = post(tenant, {"action": "reserve", "estimate_usd": "0.01"})

    assert response.json()["decision"] == "throttle"
    assert 1 <= int(response["Retry-After"]) <= 60
    assert response.json()["retry_after_seconds"] == int(response["Retry-After"])


def test_a_downgrade_names_the_model(make_tenant):
    tenant = make_tenant()
    publish_budget(tenant.org, "1.00", action="downgrade", enforcement="downgrade", downgrade_model="small")
    body = post(tenant, {"action": "reserve", "estimate_usd": "0.01"}).json()
    assert body["admitted"]
    assert body["decision"] == "downgrade"
    assert body["downgrade_model"] == "small"


def test_release_and_a_second_close(make_tenant):
    tenant = make_tenant()
    publish_budget(tenant.org, "1.00")
    rid = post(tenant, {"action": "reserve", "estimate_usd": "1"}).json()["reservation_id"]

    assert post(tenant, {"action": "release", "reservation_id": rid}).json()["status"] == "released"
    second = post(tenant, {"action": "settle", "reservation_id": rid, "actual_usd": "1"})
    assert second.status_code == 409
    assert "already released" in second.json()["detail"]


def test_another_organisations_reservation_is_not_found(make_tenant):
    mine, theirs = make_tenant(), make_tenant()
    publish_budget(theirs.org, "1.00")
    rid = post(theirs, {"action": "reserve", "estimate_usd": "1"}).json()["reservation_id"]

    response = post(mine, {"action": "settle", "reservation_id": rid, "actual_usd": "1"})

    assert response.status_code == 404
    assert post(theirs, {"action": "release", "reservation_id": rid}).status_code == 200


def test_another_organisations_budgets_are_not_reported(make_tenant):
    mine, theirs = make_tenant(), make_tenant()
    publish_budget(theirs.org, "0.01")
    body = post(mine, {"action": "reserve", "estimate_usd": "1"}).json()
    assert body["admitted"]
    assert body["budgets"] == []
    assert body["reservation_id"] is None


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ([], "must be a JSON object"),
        ({"action": "hold"}, "action must be one of reserve, settle, release"),
        ({"action": "reserve"}, "reserve needs estimate_usd"),
        ({"action": "reserve", "estimate_usd": 0.02}, "must be a decimal string"),
        ({"action": "reserve", "estimate_usd": "x"}, "estimate_usd must be a decimal amount"),
        ({"action": "reserve", "estimate_usd": "1", "ttl_seconds": 99999}, "ttl_seconds"),
        ({"action": "reserve", "estimate_usd": "1", "call": "search"}, "call must be an object"),
        ({"action": "reserve", "estimate_usd": "1", "call": {"team": "a"}}, "unknown attribute 'team'"),
        ({"action": "reserve", "estimate_usd": "1", "actual_usd": "1"}, "reserve takes no actual_usd"),
        ({"action": "settle", "reservation_id": "r"}, "settle needs actual_usd"),
        ({"action": "settle", "reservation_id": 5, "actual_usd": "1"}, "reservation_id must be the string"),
    ],
)
def test_it_explains_a_bad_body(make_tenant, body, message):
    response = post(make_tenant(), body)
    assert response.status_code == 400
    assert message in response.json()["detail"]


def test_an_unknown_reservation_is_404(make_tenant):
    response = post(make_tenant(), {"action": "release", "reservation_id": "nope"})
    assert response.status_code == 404


def test_it_needs_a_token():
    assert Client().post(URL, {}, content_type="application/json").status_code in (401, 403)


def test_redis_down_is_503_with_retry_after(make_tenant):
    tenant = make_tenant()
    working = redis_client._client
    redis_client._client = redis.Redis.from_url("redis://127.0.0.1:1/0")  # nothing listens on port 1
    try:
        response = post(tenant, {"action": "reserve", "estimate_usd": "0.01"})
    finally:
        redis_client._client = working

    assert response.status_code == 503
    assert response["Retry-After"] == "1"
    assert "retry shortly" in response.json()["detail"]
