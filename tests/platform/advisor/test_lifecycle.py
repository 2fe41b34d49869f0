"""Stored recommendations: upsert on (tenant, key), dismiss, apply, realised savings, the daily tasks."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from costline.advisor import actions, tasks
from costline.advisor.findings import Finding, Kind, ModelSwap, Policy
from costline.advisor.models import Recommendation, Status
from costline.advisor.policies import PolicyError, policy_from_json, policy_to_json
from costline.tenancy.models import Organization
from costline.usage.models import LLMCall
from tests.platform.dashboards.conftest import roll_up

Writer = Callable[[Organization, list[dict[str, Any]]], list[LLMCall]]
T0 = datetime(2026, 11, 1, 12, tzinfo=UTC)


def finding(saving: str = "120.00", key: str = "response_cache:model=gpt-4o", **changes: Any) -> Finding:
    values: dict[str, Any] = {
        "kind": Kind.RESPONSE_CACHE,
        "key": key,
        "title": "Cache exact repeats on gpt-4o",
        "summary": "30% of calls repeat within an hour.",
        "monthly_saving_usd": Decimal(saving),
        "confidence": 0.9,
        "how_to": "Turn on the gateway's response cache.",
        "policy": Policy(response_cache_window_s=3600, models=("gpt-4o",)),
        "window_days": 30,
        "evidence": {"repeats": 300},
        "scope": {"model": "gpt-4o"},
    }
    return Finding(**(values | changes))


def test_it_round_trips_every_policy_field() -> None:
    policy = Policy(
        response_cache_window_s=60,
        semantic_cache_threshold=0.9,
        prefix_cache=True,
        swaps=(ModelSwap("gpt-4o", "gpt-4o-mini", feature="classify", cascade=True, escalation_rate=0.1),),
        max_output_tokens={"summarize": 400},
        batch_non_interactive=True,
        features=("classify",),
        models=("gpt-4o",),
        drop_failed=True,
        history_cap_tokens=2000,
    )
    assert policy_from_json(policy_to_json(policy)) == policy


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ({"semantic_cache_threshold": 1.5}, "semantic_cache_threshold"),
        ({"response_cache_window_s": "soon"}, "response_cache_window_s"),
        ({"swaps": [{"from_model": "gpt-4o"}]}, "swaps[0].to_model"),
        ({"max_output_tokens": {"summarize": -1}}, "max_output_tokens.summarize"),
        ({"cache": True}, "cache"),
    ],
)
def test_it_names_the_bad_field_of_a_policy(raw: dict[str, Any], field: str) -> None:
    with pytest.raises(PolicyError) as caught:
        policy_from_json(raw)
    assert caught.value.field == field


def test_storing_twice_leaves_one_row_with_the_new_numbers(org: Organization) -> None:
    assert actions.store_findings(org.id, [finding("100")], T0) == 1
    assert actions.store_findings(org.id, [finding("150")], T0 + timedelta(days=1)) == 0

    row = Recommendation.objects.get(tenant=org)
    assert row.monthly_saving_usd == Decimal("150")
    assert (row.first_seen, row.last_seen) == (T0, T0 + timedelta(days=1))
    assert row.policy["response_cache_window_s"] == 3600


def test_a_dismissed_recommendation_is_never_reopened(org: Organization) -> None:
    actions.store_findings(org.id, [finding("100")], T0)
    actions.dismiss(Recommendation.objects.get(tenant=org), "We need fresh answers.")

    actions.store_findings(org.id, [finding("500")], T0 + timedelta(days=1))

    row = Recommendation.objects.get(tenant=org)
    assert (row.status, row.dismissed_reason) == (Status.DISMISSED, "We need fresh answers.")
    assert row.monthly_saving_usd == Decimal("100")


def test_dismissing_needs_a_reason(org: Organization) -> None:
    actions.store_findings(org.id, [finding()], T0)
    with pytest.raises(actions.LifecycleError):
        actions.dismiss(Recommendation.objects.get(tenant=org), "  ")


def test_an_applied_recommendation_keeps_its_estimate(org: Organization) -> None:
    actions.store_findings(org.id, [finding("100")], T0)
    actions.apply(Recommendation.objects.get(tenant=org), now=T0)

    actions.store_findings(org.id, [finding("300")], T0 + timedelta(days=1))

    row = Recommendation.objects.get(tenant=org)
    assert (row.status, row.monthly_saving_usd) == (Status.APPLIED, Decimal("100"))


def test_the_same_key_in_two_tenants_is_two_rows(org: Organization, other_org: Organization) -> None:
    actions.store_findings(org.id, [finding("100")], T0)
    actions.store_findings(other_org.id, [finding("7")], T0)
    assert Recommendation.objects.get(tenant=org).monthly_saving_usd == Decimal("100")
    assert Recommendation.objects.get(tenant=other_org).monthly_saving_usd == Decimal("7")


def test_the_realised_saving_compares_the_days_after_applying_with_before(
    org: Organization, write_calls: Writer
) -> None:
    applied_at = datetime(2026, 11, 10, 15, tzinfo=UTC)
    # 10 days before: $1.00 a day of gpt-4o; from the day after applying: $0.40 a day. Other models
    # are outside the scope and must not count.
    rows: list[dict[str, Any]] = []
    for day in range(10):
        start = datetime(2026, 10, 31, 12, tzinfo=UTC) + timedelta(days=day)
        rows.append({"start_time": start, "cost_usd": Decimal("1.00")})
        rows.append({"start_time": start, "cost_usd": Decimal("5.00"), "model": "claude-sonnet-4"})
    for day in range(1, 4):
        rows.append({"start_time": applied_at + timedelta(days=day), "cost_usd": Decimal("0.40")})
    roll_up(write_calls(org, rows))
    actions.store_findings(org.id, [finding(window_days=10)], T0)
    row = actions.apply(Recommendation.objects.get(tenant=org), now=applied_at)
    assert row.baseline_daily_usd == Decimal("1.00")

    saving = actions.measure(row, now=datetime(2026, 11, 14, 1, tzinfo=UTC))

    assert saving == Decimal("18.00")  # ($1.00 − $0.40) × 30
    assert actions.measure(row, now=datetime(2026, 11, 14, 1, tzinfo=UTC)) == saving
    assert Recommendation.objects.get(pk=row.pk).realised_saving_usd == Decimal("18.00")


def test_nothing_is_measured_before_a_whole_day_has_passed(org: Organization) -> None:
    actions.store_findings(org.id, [finding()], T0)
    row = actions.apply(Recommendation.objects.get(tenant=org), now=T0)
    assert actions.measure(row, now=T0 + timedelta(hours=20)) is None


def snapshot(org: Organization) -> list[tuple[Any, ...]]:
    return list(
        Recommendation.objects.filter(tenant=org)
        .order_by("key")
        .values_list("key", "kind", "monthly_saving_usd", "status", "first_seen")
    )


def test_the_generate_task_run_twice_gives_the_same_rows(org: Organization, write_calls: Writer) -> None:
    # 7 new prompts, then 3 of them again within minutes: exact repeats a response cache answers.
    start = datetime.now(UTC) - timedelta(days=3)
    rows: list[dict[str, Any]] = []
    for block in range(100):
        fresh = [{"prompt_hash": 1000 + 7 * block + j} for j in range(7)]
        rows += fresh + fresh[:3]
    write_calls(org, [row | {"start_time": start + timedelta(minutes=i)} for i, row in enumerate(rows)])

    tasks.generate.apply(kwargs={"tenant_id": org.id}).get()
    first = snapshot(org)
    tasks.generate.apply(kwargs={"tenant_id": org.id}).get()

    assert first
    assert snapshot(org) == first
    assert Kind.RESPONSE_CACHE in {row[1] for row in first}


def test_the_tasks_are_scheduled_daily() -> None:
    from costline.celery import BEAT_SCHEDULE, queue_for

    for name in ("costline.advisor.generate", "costline.advisor.measure"):
        assert BEAT_SCHEDULE[name]["schedule"] == 24 * 60 * 60
        assert queue_for(name) == "advisor"
