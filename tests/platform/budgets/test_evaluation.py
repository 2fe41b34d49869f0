"""Evaluation: state per action, events once per period (reruns, concurrent runs), forecast events,
rollover, notifications through the budget's channels, Redis, and which budgets the job picks."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.db import connection
from django.utils import timezone

from costline.alerts.models import Channel, Delivery
from costline.budgets import state
from costline.budgets.evaluation import drop_settled, due_budgets, evaluate, evaluate_due
from costline.budgets.models import BudgetEvent, BudgetPeriodState
from costline.budgets.periods import current_period
from costline.redis_client import client
from costline.tenancy.models import Project
from tests.celery_processes import worker_and_beat
from tests.platform.budgets.eval_helpers import make_budget, roll_up, spend


def channel(org, name: str = "Ops") -> Channel:  # type: ignore[no-untyped-def]
    return Channel.objects.create(organization=org, name=name, kind="email", target="ops@example.com")


@pytest.mark.django_db
@pytest.mark.usefixtures("redis_db")
@pytest.mark.parametrize(
    ("action", "at_100"),
    [("notify", "warn"), ("throttle", "throttle"), ("downgrade", "downgrade"), ("block", "block")],
)
def test_states_of_every_action(make_tenant, action: str, at_100: str) -> None:  # type: ignore[no-untyped-def]
    org = make_tenant().org
    extra = (
        {"throttle_rpm": 30}
        if action == "throttle"
        else {"downgrade_model": "gpt-4o-mini"}
        if action == "downgrade"
        else {}
    )
    budget = make_budget(org, amount_usd=Decimal("10"), action=action, **extra)
    assert evaluate(budget.id).state == "ok"  # type: ignore[union-attr]
    spend(org, Decimal("4.99"))
    assert evaluate(budget.id).state == "ok"  # type: ignore[union-attr]
    spend(org, Decimal("0.01"))
    assert evaluate(budget.id).state == "warn"  # type: ignore[union-attr]  # 50%
    spend(org, Decimal("4.999999999999"))
    assert evaluate(budget.id).state == "warn"  # type: ignore[union-attr]  # a picodollar short
    spend(org, Decimal("0.000000000001"))
    result = evaluate(budget.id)
    assert result is not None
    assert result.state == at_100
    assert result.spend == Decimal("10")
    fields = state.read(budget.id)
    assert fields["state"] == at_100
    assert fields["spent"] == "10000000000"
    assert fields["limit"] == "10000000000"
    row = BudgetPeriodState.objects.get(budget=budget)
    assert row.state == at_100
    assert row.spend_usd == Decimal("10")
    assert [
        e.threshold for e in BudgetEvent.objects.filter(budget=budget, kind="threshold").order_by("threshold")
    ] == [50, 80, 100]


@pytest.mark.django_db
@pytest.mark.usefixtures("redis_db")
def test_threshold_events_once_per_period_and_notified(make_tenant) -> None:  # type: ignore[no-untyped-def]
    org = make_tenant().org
    ops, other_org_channel = channel(org), channel(make_tenant().org, "Theirs")
    # A day ending in an hour: the forecast stays under the amount (no forecast event here).
    budget = make_budget(
        org,
        amount_usd=Decimal("10"),
        action="block",
        period="custom",
        custom_start=datetime.now(UTC) - timedelta(hours=23),
        custom_length_days=1,
    )
    budget.channels.set([ops])
    spend(org, Decimal("8.5"))
    first = evaluate(budget.id)
    assert first is not None
    assert len(first.events) == 2
    again = evaluate(budget.id)
    assert again is not None
    assert again.events == []
    events = list(BudgetEvent.objects.filter(budget=budget).order_by("threshold"))
    assert [(e.kind, e.threshold) for e in events] == [("threshold", 50), ("threshold", 80)]
    assert events[1].message == "Budget 'Search' reached 80% of $10.00: $8.50 spent"
    deliveries = Delivery.objects.filter(organization_id=org.id).order_by("id")
    assert [d.source for d in deliveries] == [f"budget_event:{e.id}" for e in events]
    assert {d.channel_id for d in deliveries} == {ops.id}
    assert other_org_channel.id not in {d.channel_id for d in deliveries}
    payload = deliveries[1].payload
    assert payload["kind"] == "budget.threshold"
    assert payload["spend_usd"] == "8.500000000000"
    spend(org, Decimal("2"))
    third = evaluate(budget.id)
    assert third is not None
    assert third.state == "block"
    assert len(third.events) == 1
    assert BudgetEvent.objects.get(budget=budget, threshold=100).message.endswith("calls are now blocked")
    assert Delivery.objects.filter(organization_id=org.id).count() == 3


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("redis_db")
def test_concurrent_runs_raise_each_event_once(make_tenant) -> None:  # type: ignore[no-untyped-def]
    org = make_tenant().org
    ops = channel(org)
    budget = make_budget(org, amount_usd=Decimal("1"), action="block")
    budget.channels.set([ops])
    spend(org, Decimal("1.5"))
    messages = client().pubsub(ignore_subscribe_messages=True)
    messages.subscribe(state.CHANNEL)
    messages.get_message(timeout=1)  # the subscription's confirmation

    def run(_: int) -> list[int]:
        try:
            result = evaluate(budget.id)
            return result.events if result else []
        finally:
            connection.close()

    with ThreadPoolExecutor(6) as pool:
        raised = [event for events in pool.map(run, range(12)) for event in events]
    assert len(raised) == 3 == BudgetEvent.objects.filter(budget=budget).count()
    assert Delivery.objects.filter(channel=ops).count() == 3
    assert BudgetPeriodState.objects.filter(budget=budget).count() == 1
    published = []
    while (message := messages.get_message(timeout=0.3)) is not None:
        published.append(json.loads(message["data"])["state"])
    assert published == ["block"]  # one change, announced once
    messages.close()


@pytest.mark.django_db
@pytest.mark.usefixtures("redis_db")
def test_forecast_event_once_per_period(make_tenant) -> None:  # type: ignore[no-untyped-def]
    org = make_tenant().org
    now = datetime.now(UTC)
    budget = make_budget(
        org,
        period="custom",
        custom_start=now - timedelta(hours=10),
        custom_length_days=2,
        amount_usd=Decimal("90"),
    )
    # $2 an hour for the last ten hours: $20 spent, $76 more expected in the 38 hours left: $90 is
    # reached in 35 hours.
    calls = []
    for hour in range(10):
        calls += spend(org, Decimal("2"), at=now - timedelta(hours=hour, minutes=30))
    roll_up(calls)
    result = evaluate(budget.id, now)
    assert result is not None
    assert result.forecast is not None
    assert result.state == "ok"
    assert abs(result.forecast.expected - Decimal(96)) < Decimal(2)
    assert result.forecast.projected_limit_at is not None
    assert abs(result.forecast.projected_limit_at - (now + timedelta(hours=35))) < timedelta(hours=1)
    event = BudgetEvent.objects.get(budget=budget, kind="forecast")
    assert event.threshold == 0
    assert "projected to reach its limit of $90.00 on" in event.message
    row = BudgetPeriodState.objects.get(budget=budget)
    assert row.forecast_low_usd <= row.forecast_usd <= row.forecast_high_usd  # type: ignore[operator]
    assert row.projected_limit_at == result.forecast.projected_limit_at
    assert evaluate(budget.id, now + timedelta(seconds=1)).events == []  # type: ignore[union-attr]
    # A budget the forecast stays under raises none.
    quiet = make_budget(
        org,
        name="Big",
        period="custom",
        custom_start=now - timedelta(hours=10),
        custom_length_days=2,
        amount_usd=Decimal("1000"),
    )
    assert evaluate(quiet.id, now).events == []  # type: ignore[union-attr]


@pytest.mark.django_db
@pytest.mark.usefixtures("redis_db")
def test_rollover_resets_state_and_events(make_tenant) -> None:  # type: ignore[no-untyped-def]
    org = make_tenant().org
    now = datetime.now(UTC)
    start = now - timedelta(days=1, hours=1)
    budget = make_budget(
        org,
        period="custom",
        custom_start=start,
        custom_length_days=1,
        amount_usd=Decimal("1"),
        action="block",
    )
    spend(org, Decimal("2"), at=start + timedelta(minutes=10))  # in the previous period
    previous = evaluate(budget.id, start + timedelta(hours=2))
    assert previous is not None
    assert previous.state == "block"
    current = evaluate(budget.id, now)
    assert current is not None
    assert current.state == "ok"
    assert current.spend == 0
    assert current.period_start.astimezone(UTC) == start + timedelta(days=1)
    assert state.read(budget.id)["state"] == "ok"
    assert BudgetPeriodState.objects.filter(budget=budget).count() == 2
    spend(org, Decimal("1"))
    after = evaluate(budget.id, now + timedelta(minutes=1))
    assert after is not None
    assert after.state == "block"
    assert len(after.events) == 3
    assert BudgetEvent.objects.filter(budget=budget, kind="threshold").count() == 6


@pytest.mark.django_db
@pytest.mark.usefixtures("redis_db")
def test_scopes_and_tenant_isolation(make_tenant) -> None:  # type: ignore[no-untyped-def]
    org, other = make_tenant().org, make_tenant().org
    search = Project.objects.create(organization=org, name="Search", slug="search")
    Project.objects.create(organization=other, name="Search", slug="search")
    budget = make_budget(org, scope={"project": ["search"]})
    spend(org, Decimal("3"), project=search)
    spend(org, Decimal("5"))  # no project
    spend(other, Decimal("7"), project_id=Project.objects.get(organization=other).id)
    assert evaluate(budget.id).spend == Decimal("3")  # type: ignore[union-attr]
    gateway = make_budget(org, name="Key", scope={"gateway_key": ["gk_1"]})
    result = evaluate(gateway.id)
    assert result is not None
    assert result.state == "ok"
    assert "reservations" in result.error
    assert json.loads(client().hget(state.index_key(org.id), str(gateway.id))) == {"gateway_key": ["gk_1"]}
    # Only reservations know its spend: the settled minutes of earlier periods go, this period's stay.
    start = int(result.period_start.timestamp())
    client().hset(state.settled_key(gateway.id), mapping={str(start - 60): 5, str(start): 7})
    evaluate(gateway.id)
    assert client().hkeys(state.settled_key(gateway.id)) == [str(start).encode()]


@pytest.mark.django_db
@pytest.mark.usefixtures("redis_db")
def test_a_gateway_key_budget_spends_what_its_reservations_settled(make_tenant) -> None:  # type: ignore[no-untyped-def]
    org = make_tenant().org
    budget = make_budget(
        org, name="Key", amount_usd=Decimal("1.00"), action="block", scope={"gateway_key": ["gk_1"]}
    )
    start = int(evaluate(budget.id).period_start.timestamp())  # type: ignore[union-attr]
    now = int(timezone.now().timestamp())
    old, recent = now - now % 60 - 3600, now - now % 60
    settled = {str(old): 600_000_000, str(recent): 500_000_000}  # $0.60 an hour ago, $0.50 this minute
    client().hset(state.settled_key(budget.id), mapping={k: v for k, v in settled.items() if int(k) >= start})
    expected = sum(Decimal(v) / Decimal("1e9") for k, v in settled.items() if int(k) >= start)

    result = evaluate(budget.id)

    assert result is not None
    assert result.spend == expected
    assert result.state == ("block" if expected >= 1 else "ok")
    assert BudgetPeriodState.objects.get(budget=budget).spend_usd == expected
    # Minutes older than ten minutes are folded into the period's first: the hash stays small.
    assert str(old).encode() not in client().hkeys(state.settled_key(budget.id)) or old == start
    assert evaluate(budget.id).spend == expected  # type: ignore[union-attr]  # folding changed no total


@pytest.mark.django_db
@pytest.mark.usefixtures("redis_db")
def test_settled_minutes_dropped_once_the_database_holds_them(make_tenant) -> None:  # type: ignore[no-untyped-def]
    org = make_tenant().org
    budget = make_budget(org)
    through = datetime(2025, 3, 14, 12, 0, 30, tzinfo=UTC)
    key = state.settled_key(budget.id)
    minute = int(datetime(2025, 3, 14, 11, 58, tzinfo=UTC).timestamp())
    client().hset(key, mapping={str(minute): 5, str(minute + 60): 7, str(minute + 120): 9})
    assert drop_settled(budget.id, through) == 1  # 11:58 ended before 11:59:30
    assert sorted(int(k) for k in client().hkeys(key)) == [minute + 60, minute + 120]


@pytest.mark.django_db
@pytest.mark.usefixtures("redis_db")
def test_due_budgets_new_calls_changes_and_rollover(make_tenant) -> None:  # type: ignore[no-untyped-def]
    org, quiet = make_tenant().org, make_tenant().org
    busy_budget, quiet_budget = make_budget(org), make_budget(quiet)
    paused = make_budget(org, name="Paused", paused=True)
    first = evaluate_due()
    assert first["evaluated"] == 2
    assert first["failed"] == 0
    assert due_budgets() == []  # nothing new
    spend(org, Decimal("6"))  # calls ingested now (ingested_at: the database's clock)
    assert due_budgets() == [busy_budget.id]
    assert evaluate_due() == {"due": 1, "evaluated": 1, "changed": 1, "failed": 0, "skipped": 0}
    assert state.read(busy_budget.id)["state"] == "warn"
    quiet_budget.amount_usd = Decimal("5")
    quiet_budget.save()  # changed since its evaluation
    assert quiet_budget.id in due_budgets()
    assert paused.id not in due_budgets()
    assert not client().exists(state.budget_key(paused.id))
    # The next period: due without any call.
    BudgetPeriodState.objects.filter(budget=quiet_budget).update(
        period_end=datetime.now(UTC) - timedelta(seconds=1)
    )
    assert quiet_budget.id in due_budgets()


@pytest.mark.django_db
@pytest.mark.usefixtures("redis_db")
def test_monthly_period_in_org_zone(make_tenant) -> None:  # type: ignore[no-untyped-def]
    org = make_tenant(time_zone="America/New_York").org
    budget = make_budget(org)
    result = evaluate(budget.id)
    assert result is not None
    assert (result.period_start, result.period_end) == current_period(budget, datetime.now(UTC))
    local = result.period_start.astimezone(
        budget.organization.time_zone and __import__("zoneinfo").ZoneInfo("America/New_York")
    )
    assert (local.day, local.hour, local.minute) == (1, 0, 0)


@pytest.mark.django_db
@pytest.mark.usefixtures("redis_db")
def test_no_forecast_event_from_a_scopes_first_minutes(make_tenant) -> None:  # type: ignore[no-untyped-def]
    org = make_tenant().org
    now = datetime.now(UTC)
    budget = make_budget(
        org,
        period="custom",
        custom_start=now - timedelta(hours=1),
        custom_length_days=30,
        amount_usd=Decimal("100"),
    )
    spend(org, Decimal("1"))
    result = evaluate(budget.id, now)
    assert result is not None
    assert result.forecast is not None
    assert result.forecast.projected_limit_at is not None  # $1 an hour for 719 hours
    assert result.events == []  # an hour of a new scope: no forecast event yet


@pytest.mark.django_db
@pytest.mark.usefixtures("redis_db")
def test_one_periodic_run_at_a_time(make_tenant) -> None:  # type: ignore[no-untyped-def]
    make_budget(make_tenant().org)
    client().set("costline:budgets:evaluate-lock", "another run")
    assert evaluate_due()["skipped"] == 1
    client().delete("costline:budgets:evaluate-lock")
    assert evaluate_due()["evaluated"] == 1
    assert not client().exists("costline:budgets:evaluate-lock")


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("redis_db")
def test_state_changes_within_5_seconds_of_ingestion(make_tenant) -> None:  # type: ignore[no-untyped-def]
    """Beat's cadence (a run every 2 s) against committed calls: the state in Redis changes within 5 s."""
    import time

    org = make_tenant().org
    budget = make_budget(org, amount_usd=Decimal("1"), action="block")
    for _ in range(2):  # the first sweep, then a run with nothing due
        evaluate_due()
    assert state.read(budget.id)["state"] == "ok"
    spend(org, Decimal("1"))  # committed now: ingested_at is the database's clock
    ingested = time.monotonic()
    next_run = ingested + 2.0  # the worst case: the calls land just after a run
    while state.read(budget.id)["state"] != "block":
        time.sleep(max(0.0, next_run - time.monotonic()))
        evaluate_due()
        next_run += 2.0
        assert time.monotonic() - ingested < 5.0
    assert time.monotonic() - ingested < 5.0


def _committed(function):  # type: ignore[no-untyped-def]
    """Run `function` on a connection of its own, committed at once (what the worker must see)."""

    def run():  # type: ignore[no-untyped-def]
        from django.db import connections

        try:
            return function()
        finally:
            connections.close_all()

    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(run).result()


@pytest.mark.slow
@pytest.mark.usefixtures("redis_db")
def test_ingested_calls_block_within_5_seconds_with_a_real_worker_and_beat(
    collector, make_live_tenant, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    """Through the real collector, `celery beat` and a `celery worker` for the budgets queue."""
    import time

    from tests.otlp_builders import chat_attrs, export, span, to_protobuf
    from tests.platform.usage.test_rollup_ingest import send

    tenant = make_live_tenant()
    budget = _committed(lambda: make_budget(tenant.org, amount_usd=Decimal("0.000001"), action="block"))
    try:
        with worker_and_beat(tmp_path, queues="budgets") as log:
            deadline = time.monotonic() + 60
            while not client().exists(state.budget_key(budget.id)):  # the worker's first sweep
                assert time.monotonic() < deadline, log.read_text(errors="replace")[-3000:]
                time.sleep(0.1)
            assert state.read(budget.id)["state"] == "ok"
            sent = time.monotonic()
            send(collector, tenant, to_protobuf(export(span(attrs=chat_attrs()))))
            while state.read(budget.id)["state"] != "block":
                assert time.monotonic() - sent < 10, log.read_text(errors="replace")[-3000:]
                time.sleep(0.05)
            waited = time.monotonic() - sent
        print(f"\nstate block {waited:.2f} s after the export was accepted")
        assert waited < 5.0
    finally:
        _committed(lambda: budget.delete())
