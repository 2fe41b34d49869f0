"""Reservations: every action, all-or-nothing, settle / release / expiry, scopes and tenants."""

from __future__ import annotations

import time
from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from costline.budgets import reservations, state
from costline.budgets.reservations import ReservationClosed, UnknownReservation, release, reserve, settle
from costline.redis_client import client
from tests.platform.budgets.reservation_fixtures import publish_budget

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("redis_db")]
CALL = {"project": "search", "model": "gpt-4o"}


def remaining(reservation: reservations.Reservation, budget_id: int) -> Decimal:
    return next(b.remaining_usd for b in reservation.budgets if b.id == budget_id)


def test_it_admits_a_call_no_budget_covers(make_tenant):
    result = reserve(make_tenant().id, CALL, Decimal("5"))
    assert result.admitted
    assert result.id is None
    assert result.budgets == ()


def test_it_reserves_against_a_block_budget_until_the_limit(make_tenant):
    org = make_tenant().org
    budget = publish_budget(org, "1.00", spent="0.50")

    first = reserve(org.id, CALL, Decimal("0.30"))
    second = reserve(org.id, CALL, Decimal("0.30"))

    assert first.admitted
    assert first.decision == "ok"
    assert remaining(first, budget.id) == Decimal("0.2")
    assert not second.admitted
    assert second.decision == "block"
    assert second.id is None
    assert second.budgets[0].verdict == "block"
    assert remaining(second, budget.id) == Decimal("0.2")


def test_it_admits_exactly_up_to_the_limit(make_tenant):
    org = make_tenant().org
    publish_budget(org, "1.00")
    assert reserve(org.id, CALL, "0.999999999").admitted
    assert reserve(org.id, CALL, "0.000000001").admitted
    assert not reserve(org.id, CALL, "0.000000001").admitted


def test_it_is_all_or_nothing_across_budgets(make_tenant):
    org = make_tenant().org
    roomy = publish_budget(org, "10.00", scope={"project": ["search"]})
    tight = publish_budget(org, "0.10", scope={"model": ["gpt-4o"]})

    refused = reserve(org.id, CALL, Decimal("0.20"))

    assert not refused.admitted
    assert {b.id: b.verdict for b in refused.budgets} == {roomy.id: "ok", tight.id: "block"}
    assert client().hlen(f"costline:budget:{roomy.id}:reserved") == 0  # nothing reserved on the roomy one


def test_settle_replaces_the_estimate_by_the_actual_cost(make_tenant):
    org = make_tenant().org
    budget = publish_budget(org, "1.00")
    held = reserve(org.id, CALL, Decimal("0.80"))

    settle(org.id, held.id, Decimal("0.25"))

    after = reserve(org.id, CALL, Decimal("0.75"))
    assert after.admitted
    assert remaining(after, budget.id) == Decimal("0")
    assert not reserve(org.id, CALL, Decimal("0.01")).admitted


def test_release_gives_the_whole_reservation_back(make_tenant):
    org = make_tenant().org
    budget = publish_budget(org, "1.00")
    held = reserve(org.id, CALL, Decimal("0.90"))

    release(org.id, held.id)

    assert remaining(reserve(org.id, CALL, Decimal("1.00")), budget.id) == Decimal("0")


def test_a_reservation_is_closed_once(make_tenant):
    org = make_tenant().org
    publish_budget(org, "1.00")
    held = reserve(org.id, CALL, Decimal("0.10"))
    settle(org.id, held.id, Decimal("0.10"))

    with pytest.raises(ReservationClosed, match="already settled"):
        settle(org.id, held.id, Decimal("0.10"))
    with pytest.raises(ReservationClosed):
        release(org.id, held.id)
    assert remaining(reserve(org.id, CALL, Decimal("0")), held.budgets[0].id) == Decimal("0.9")


def test_expired_reservations_free_their_amount(make_tenant):
    org = make_tenant().org
    publish_budget(org, "1.00")
    held = reserve(org.id, CALL, Decimal("1.00"), ttl_s=1)
    assert not reserve(org.id, CALL, Decimal("0.01")).admitted

    time.sleep(1.05)

    assert reserve(org.id, CALL, Decimal("1.00")).admitted
    settle(org.id, held.id, Decimal("0.01"))  # a late settle still counts: the call happened


def test_settled_spend_counts_only_in_its_period(make_tenant):
    org = make_tenant().org
    now = timezone.now()
    budget = publish_budget(org, "1.00", period=(now - timedelta(days=1), now + timedelta(days=1)))
    client().hset(
        state.settled_key(budget.id), str(int((now - timedelta(days=2)).timestamp()) // 60 * 60), 10**9
    )

    assert reserve(org.id, CALL, Decimal("1.00")).admitted


def test_a_period_the_evaluation_has_not_rolled_over_starts_clean(make_tenant):
    org = make_tenant().org
    now = timezone.now()
    publish_budget(
        org,
        "1.00",
        enforcement="block",
        spent="3",
        period=(now - timedelta(days=1), now - timedelta(seconds=5)),
    )

    assert reserve(org.id, CALL, Decimal("0.50")).admitted


def test_a_blocked_budget_refuses_even_a_free_call(make_tenant):
    org = make_tenant().org
    publish_budget(org, "1.00", enforcement="block", spent="1.00")
    assert reserve(org.id, CALL, Decimal("0")).decision == "block"


def test_throttle_caps_requests_per_minute_while_throttled(make_tenant):
    org = make_tenant().org
    publish_budget(org, "1.00", action="throttle", enforcement="throttle", spent="0.9", throttle_rpm=3)

    results = [reserve(org.id, CALL, Decimal("0.01")) for _ in range(5)]

    assert [r.admitted for r in results] == [True, True, True, False, False]
    assert results[3].decision == "throttle"
    assert 1 <= results[3].retry_after_s <= 60


def test_throttle_budget_not_throttled_admits_everything(make_tenant):
    org = make_tenant().org
    publish_budget(org, "1.00", action="throttle", enforcement="warn", throttle_rpm=1)
    assert all(reserve(org.id, CALL, Decimal("0.01")).admitted for _ in range(3))


def test_downgrade_admits_and_names_the_cheaper_model(make_tenant):
    org = make_tenant().org
    publish_budget(
        org, "1.00", action="downgrade", enforcement="downgrade", spent="2", downgrade_model="gpt-4o-mini"
    )

    result = reserve(org.id, CALL, Decimal("0.50"))

    assert result.admitted
    assert result.decision == "downgrade"
    assert result.downgrade_model == "gpt-4o-mini"


@pytest.mark.parametrize("enforcement", ["ok", "warn", "block"])
def test_notify_budgets_never_refuse(make_tenant, enforcement):
    org = make_tenant().org
    budget = publish_budget(org, "1.00", action="notify", enforcement=enforcement, spent="5")
    result = reserve(org.id, CALL, Decimal("1"))
    assert result.admitted
    assert remaining(result, budget.id) == Decimal("-5")


def test_scope_filters_must_all_match(make_tenant):
    org = make_tenant().org
    budget = publish_budget(org, "1.00", scope={"project": ["search", "chat"], "environment": ["prod"]})

    assert reserve(org.id, {**CALL, "environment": "prod"}, "1").budgets[0].id == budget.id
    assert reserve(org.id, {**CALL, "environment": "dev"}, "1").budgets == ()
    assert reserve(org.id, {"environment": "prod"}, "1").budgets == ()  # no project: not covered


def test_a_gateway_key_budget_covers_its_keys_calls(make_tenant):
    org = make_tenant().org
    publish_budget(org, "1.00", scope={"gateway_key": ["gk_1"]})
    assert not reserve(org.id, {"gateway_key": "gk_1"}, "2").admitted
    assert reserve(org.id, {"gateway_key": "gk_2"}, "2").admitted


def test_a_paused_budget_is_not_enforced(make_tenant):
    org = make_tenant().org
    budget = publish_budget(org, "1.00")
    budget.paused = True
    budget.save()

    state.publish(budget.id)

    assert reserve(org.id, CALL, "2").admitted


def test_another_tenants_reservation_cannot_be_settled(make_tenant):
    mine, theirs = make_tenant().org, make_tenant().org
    publish_budget(theirs, "1.00")
    held = reserve(theirs.id, CALL, "0.5")

    with pytest.raises(UnknownReservation):
        settle(mine.id, held.id, "0.5")
    with pytest.raises(UnknownReservation):
        release(mine.id, "not-an-id")
    settle(theirs.id, held.id, "0.5")


def test_another_tenants_budgets_do_not_cover_my_calls(make_tenant):
    mine, theirs = make_tenant().org, make_tenant().org
    publish_budget(theirs, "0.01")
    assert reserve(mine.id, CALL, "1").budgets == ()


@pytest.mark.parametrize(
    ("estimate", "ttl", "attrs", "message"),
    [
        ("abc", 60, CALL, "estimate_usd must be a decimal"),
        ("-1", 60, CALL, "at least 0"),
        ("NaN", 60, CALL, "finite"),
        ("1", 0, CALL, "ttl_seconds"),
        ("1", 60, {"colour": "red"}, "unknown attribute 'colour'"),
        ("1", 60, {"model": 4}, "call.model must be a string"),
    ],
)
def test_it_explains_bad_input(make_tenant, estimate, ttl, attrs, message):
    with pytest.raises(reservations.ReservationError, match=message):
        reserve(make_tenant().id, attrs, estimate, ttl_s=ttl)


def test_a_sweep_frees_more_expired_reservations_than_one_chunk(make_tenant):
    org = make_tenant().org
    budget = publish_budget(org, "1.00")
    for _ in range(1200):  # the script drops expired reservations 500 at a time
        assert reserve(org.id, CALL, "0.0005", ttl_s=1).admitted
    assert not reserve(org.id, CALL, "0.5").admitted

    time.sleep(1.05)

    assert remaining(reserve(org.id, CALL, "1.00"), budget.id) == Decimal("0")
    assert client().hlen(f"costline:budget:{budget.id}:reserved") == 1
    assert client().get(f"costline:budget:{budget.id}:reserved_sum") == b"1000000000"
