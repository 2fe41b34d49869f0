"""A budget's scope as query filters, and its exact spend: rollups up to the watermark, raw after."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from costline.budgets.spend import expanded_scope, period_spend, usage_filters
from costline.tenancy.models import Project, Team
from costline.usage.models import LLMCall
from costline.usage.rollup import watermark
from tests.platform.budgets.eval_helpers import make_budget, roll_up, spend

pytestmark = pytest.mark.django_db


def test_scope_filters_and_teams(make_tenant) -> None:  # type: ignore[no-untyped-def]
    org = make_tenant().org
    search = Project.objects.create(organization=org, name="Search", slug="search")
    chat = Project.objects.create(organization=org, name="Chat", slug="chat")
    Project.objects.create(organization=org, name="Other", slug="other")
    team = Team.objects.create(organization=org, name="Core", slug="core")
    team.projects.set([search, chat])
    other_org = make_tenant().org
    Team.objects.create(organization=other_org, name="Core", slug="core").projects.set(
        [Project.objects.create(organization=other_org, name="X", slug="x")]
    )
    assert usage_filters(make_budget(org)) == {}
    budget = make_budget(org, scope={"team": ["core"], "model": ["gpt-4o"]})
    assert usage_filters(budget) == {"project": ("chat", "search"), "model": ("gpt-4o",)}
    budget = make_budget(org, scope={"team": ["core"], "project": ["search", "other"]})
    assert usage_filters(budget) == {"project": ("search",)}  # in the team and listed
    assert usage_filters(make_budget(org, scope={"team": ["nobody"]})) == {"project": ()}
    assert usage_filters(make_budget(org, scope={"team": [str(team.id)]})) == {"project": ("chat", "search")}


def test_scopes_the_rollups_cannot_answer(make_tenant) -> None:  # type: ignore[no-untyped-def]
    org = make_tenant().org
    with pytest.raises(ValueError, match="gateway key is not kept in the usage rollups"):
        usage_filters(make_budget(org, scope={"gateway_key": ["gk_1"]}))
    with pytest.raises(ValueError, match="cannot also filter on model"):
        usage_filters(make_budget(org, scope={"user": ["u1"], "model": ["gpt-4o"]}))
    with pytest.raises(ValueError, match="unknown filter 'colour'"):
        usage_filters(make_budget(org, scope={"colour": ["red"]}))
    assert usage_filters(make_budget(org, scope={"user": ["u1"]})) == {"user": ("u1",)}
    assert expanded_scope(make_budget(org, scope={"gateway_key": ["gk_1"]})) == {"gateway_key": ["gk_1"]}


def test_spend_is_rollups_plus_newest_raw_calls_exactly_once(make_tenant) -> None:  # type: ignore[no-untyped-def]
    org = make_tenant().org
    other = make_tenant().org
    now = datetime.now(UTC)
    start = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=3, minutes=0)
    end = start + timedelta(days=1)
    old = spend(org, Decimal("1.000000000002"), at=start + timedelta(minutes=7), count=3)
    older = spend(org, Decimal("5"), at=start - timedelta(minutes=1))  # before the period
    spend(other, Decimal("100"), at=start + timedelta(minutes=8))  # another organisation
    roll_up(old + older)
    mark = watermark()
    assert mark is not None
    # Newer calls the rollups have not taken: read raw, after the watermark's minute.
    spend(org, Decimal("0.25"), at=now + timedelta(seconds=1), count=2)
    result = period_spend(org.id, {}, start, end, now + timedelta(seconds=5))
    assert result.amount == Decimal("1.250000000002")  # 3 × 0.333333333334 + 2 × 0.125
    assert result.boundary == mark.replace(second=0, microsecond=0)
    assert result.through == mark
    # Rolling the newest up changes nothing: no call counts twice.
    roll_up(list(LLMCall.objects.filter(tenant_id=org.id)))
    again = period_spend(org.id, {}, start, end, now + timedelta(seconds=5))
    assert again.amount == Decimal("1.250000000002")
    assert again.boundary > result.boundary or again.through > result.through


def test_spend_filters_match_the_rollups(make_tenant) -> None:  # type: ignore[no-untyped-def]
    org = make_tenant().org
    search = Project.objects.create(organization=org, name="Search", slug="search")
    now = datetime.now(UTC)
    start = now - timedelta(hours=2)
    calls = spend(org, Decimal("1"), at=now - timedelta(hours=1), project=search)
    calls += spend(org, Decimal("2"), at=now - timedelta(hours=1), model="gpt-4o-mini")
    calls += spend(org, Decimal("4"), at=now - timedelta(hours=1), user_id="alice")
    calls += spend(org, Decimal("8"), at=now - timedelta(hours=1), feature=None)
    # Not rolled up yet (no watermark: read raw), then rolled up (read from the rollups): they agree.
    raw = {
        key: period_spend(org.id, filters, start, now, now).amount
        for key, filters in {
            "project": {"project": ("search",)},
            "model": {"model": ("gpt-4o-mini",)},
            "user": {"user": ("alice",)},
            "no project": {"project": ("",)},
            "none": {"project": ("nothing",)},
        }.items()
    }
    assert raw == {
        "project": Decimal(1),
        "model": Decimal(2),
        "user": Decimal(4),
        "no project": Decimal(14),
        "none": Decimal(0),
    }
    roll_up(calls)
    rolled = {
        key: period_spend(org.id, filters, start, now + timedelta(minutes=1), now + timedelta(minutes=1))
        for key, filters in {
            "project": {"project": ("search",)},
            "model": {"model": ("gpt-4o-mini",)},
            "user": {"user": ("alice",)},
            "no project": {"project": ("",)},
            "none": {"project": ("nothing",)},
        }.items()
    }
    assert {k: v.amount for k, v in rolled.items()} == raw
    assert all(v.boundary > now - timedelta(minutes=1) for v in rolled.values())  # rollups did the work


def test_half_hour_zone_period_start_is_exact(make_tenant) -> None:  # type: ignore[no-untyped-def]
    """A Kolkata month starts at 18:30 UTC: the half hour before it is in no bucket of the period."""
    from costline.budgets.periods import current_period

    org = make_tenant(time_zone="Asia/Kolkata").org
    budget = make_budget(org)  # monthly
    now = datetime.now(UTC)
    start, end = current_period(budget, now)
    assert start.astimezone(UTC).minute == 30
    calls = spend(org, Decimal("1"), at=start - timedelta(minutes=10))  # the previous month
    calls += spend(org, Decimal("2"), at=start + timedelta(minutes=10))  # the ragged first half hour
    calls += spend(org, Decimal("4"), at=start + timedelta(minutes=40))  # the first whole hour
    calls += spend(org, Decimal("8"), at=now - timedelta(minutes=30))
    roll_up(calls)
    result = period_spend(org.id, {}, start, end, now)
    assert result.amount == Decimal("14")
    assert result.boundary > now - timedelta(minutes=2)  # the rollups answered nearly all of it
