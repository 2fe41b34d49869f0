"""The usage query layer and GET /api/v1/usage answer what the raw calls say, read from rollups."""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from itertools import pairwise
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from costline.usage import sketch
from costline.usage.metrics import QueryError, UsageQuery, usage
from costline.usage.models import LLMCall
from costline.usage.query import bucket_edges, plan_reads
from costline.usage.rollup import mark_dirty, process_dirty
from tests.conftest import TenantKeys
from tests.platform.usage.rollup_checks import random_calls, truncate

MakeTenant = Callable[..., TenantKeys]


def rolled_up(tenant: TenantKeys, seed: int, count: int, start: datetime, span: timedelta) -> list[LLMCall]:
    calls = random_calls(tenant.org, random.Random(seed), count, start, span)
    with connection.cursor() as cursor:
        mark_dirty(cursor, tenant.id, [c.start_time for c in calls])
    process_dirty()
    return calls


def two_days_ago() -> datetime:
    return truncate(timezone.now() - timedelta(days=2), "day")


@pytest.fixture
def tenant(db: None, make_tenant: MakeTenant) -> TenantKeys:
    return make_tenant()


def raw_by(
    calls: list[LLMCall], start: datetime, end: datetime, key: Callable[[LLMCall], Any]
) -> dict[Any, Any]:
    """(requests, cost) per key of the calls in [start, end)."""
    sums: dict[Any, list[Any]] = defaultdict(lambda: [0, Decimal(0)])
    for call in calls:
        if start <= call.start_time < end:
            row = sums[key(call)]
            row[0] += 1
            row[1] += call.cost_usd or 0
    return {k: tuple(v) for k, v in sums.items()}


def test_a_range_with_ragged_edges_sums_exactly(tenant: TenantKeys) -> None:
    start = two_days_ago()
    calls = rolled_up(tenant, 1, 3000, start, timedelta(hours=44))
    # 01:17 to the next day's 15:43: minutes, hours and a whole day are all read.
    query = UsageQuery(
        start=start + timedelta(hours=1, minutes=17),
        end=start + timedelta(days=1, hours=15, minutes=43),
        interval="minute",
        group_by=("model",),
        metrics=("requests", "cost_usd"),
    )
    result = usage(tenant.id, query)

    assert (result.start, result.end) == (query.start, query.end)
    expected = raw_by(calls, query.start, query.end, lambda c: c.model)
    got = {s.group["model"]: (s.totals["requests"], s.totals["cost_usd"]) for s in result.series}
    assert got == expected
    assert result.totals["requests"] == sum(v[0] for v in expected.values())
    # Every minute is a point, and the points add up to the totals.
    for series in result.series:
        assert len(series.points) == (query.end - query.start) / timedelta(minutes=1)
        assert sum(values["requests"] for _, values in series.points) == series.totals["requests"]


def test_plan_reads_tiles_a_range_with_the_coarsest_buckets() -> None:
    start = datetime(2026, 3, 1, 22, 30, tzinfo=UTC)
    reads = plan_reads([start, start + timedelta(days=2, hours=2)])
    assert dict(reads.ranges) == {
        "minute": [
            (start, start + timedelta(minutes=30)),
            (datetime(2026, 3, 4, 0, tzinfo=UTC), start + timedelta(days=2, hours=2)),
        ],
        "hour": [(datetime(2026, 3, 1, 23, tzinfo=UTC), datetime(2026, 3, 2, tzinfo=UTC))],
        "day": [(datetime(2026, 3, 2, tzinfo=UTC), datetime(2026, 3, 4, tzinfo=UTC))],
    }


def test_day_buckets_follow_the_time_zone_asked_for(tenant: TenantKeys) -> None:
    start = two_days_ago() - timedelta(days=3)
    calls = rolled_up(tenant, 2, 2000, start, timedelta(days=4))
    zone = ZoneInfo("America/New_York")
    result = usage(
        tenant.id,
        UsageQuery(
            start=start,
            end=start + timedelta(days=4),
            interval="day",
            metrics=("requests",),
            time_zone="America/New_York",
        ),
    )

    local_days = [t.astimezone(zone) for t, _ in result.series[0].points]
    assert all((d.hour, d.minute) == (0, 0) for d in local_days)
    expected = defaultdict(int)
    for call in calls:
        if result.start <= call.start_time < result.end:
            expected[call.start_time.astimezone(zone).date()] += 1
    got = {t.astimezone(zone).date(): v["requests"] for t, v in result.series[0].points}
    assert got == {day: expected.get(day, 0) for day in got}
    assert sum(got.values()) == sum(expected.values())


def test_day_edges_across_a_daylight_saving_change() -> None:
    zone = ZoneInfo("Europe/Paris")
    edges = bucket_edges(
        datetime(2026, 3, 28, 12, tzinfo=UTC), datetime(2026, 3, 30, 12, tzinfo=UTC), "day", zone
    )
    lengths = [(b - a) / timedelta(hours=1) for a, b in pairwise(edges)]
    assert lengths == [24, 23, 24]  # 29 March 2026 is 23 hours long in Paris


def test_percentiles_are_within_one_percent_of_the_raw_calls(tenant: TenantKeys) -> None:
    start = two_days_ago()
    calls = rolled_up(tenant, 3, 4000, start, timedelta(hours=40))
    result = usage(
        tenant.id,
        UsageQuery(
            start=start,
            end=start + timedelta(days=2),
            interval="day",
            group_by=("model",),
            metrics=("latency_p50", "latency_p95", "latency_p99", "ttft_p95"),
        ),
    )

    for series in result.series:
        model = series.group["model"]
        latencies = [c.latency_ms for c in calls if c.model == model and c.latency_ms is not None]
        ttfts = [c.ttft_ms for c in calls if c.model == model and c.ttft_ms is not None]
        for metric, values, q in (
            ("latency_p50", latencies, 0.5),
            ("latency_p95", latencies, 0.95),
            ("latency_p99", latencies, 0.99),
            ("ttft_p95", ttfts, 0.95),
        ):
            assert series.totals[metric] == pytest.approx(sketch.exact_quantile(values, q), rel=0.01), metric


def test_filters_and_groups(tenant: TenantKeys) -> None:
    start = two_days_ago()
    calls = rolled_up(tenant, 4, 1500, start, timedelta(hours=20))
    project = next(c.project for c in calls if c.project is not None)
    window = {"start": start, "end": start + timedelta(days=1), "interval": "hour"}

    by_feature = usage(
        tenant.id,
        UsageQuery(
            **window,
            group_by=("feature",),
            filters={"project": (project.slug,)},
            metrics=("requests", "errors"),
        ),
    )
    expected = defaultdict(lambda: [0, 0])
    for call in calls:
        if call.project_id == project.id:
            expected[call.feature][0] += 1
            expected[call.feature][1] += call.status == "error"
    assert {
        s.group["feature"]: [s.totals["requests"], s.totals["errors"]] for s in by_feature.series
    } == expected
    assert None in expected  # calls without a feature are a group of their own, named None

    no_feature = usage(
        tenant.id,
        UsageQuery(**window, filters={"feature": ("",), "status": ("error",)}, metrics=("requests",)),
    )
    assert no_feature.totals["requests"] == sum(1 for c in calls if c.feature is None and c.status == "error")

    unknown = usage(
        tenant.id, UsageQuery(**window, filters={"project": ("no-such-project",)}, metrics=("requests",))
    )
    assert unknown.totals["requests"] == 0

    by_project = usage(tenant.id, UsageQuery(**window, group_by=("project",), metrics=("requests",)))
    assert {s.group["project"] for s in by_project.series} == {project.slug, None}


def test_derived_metrics(tenant: TenantKeys) -> None:
    start = two_days_ago()
    calls = rolled_up(tenant, 5, 800, start, timedelta(hours=10))
    result = usage(
        tenant.id,
        UsageQuery(
            start=start,
            end=start + timedelta(days=1),
            metrics=(
                "error_rate",
                "cost_per_request",
                "unpriced_requests",
                "cache_hit_rate",
                "cache_savings_usd",
            ),
        ),
    )
    priced = [c for c in calls if c.cost_usd is not None]
    totals = result.totals
    assert totals["error_rate"] == pytest.approx(sum(c.status == "error" for c in calls) / len(calls))
    assert totals["unpriced_requests"] == len(calls) - len(priced)
    assert totals["cost_per_request"] == (sum(c.cost_usd for c in priced) / len(priced)).quantize(
        Decimal("1e-12")
    )
    assert totals["cache_hit_rate"] == pytest.approx(
        sum((c.cache_read_tokens or 0) > 0 for c in calls) / len(calls)
    )
    assert totals["cache_savings_usd"] == sum(c.cache_savings_usd or 0 for c in calls)


def test_per_user_usage(tenant: TenantKeys) -> None:
    start = two_days_ago()
    calls = rolled_up(tenant, 6, 600, start, timedelta(hours=30))
    result = usage(
        tenant.id,
        UsageQuery(
            start=start,
            end=start + timedelta(days=2),
            interval="day",
            group_by=("user",),
            metrics=("requests", "cost_usd"),
        ),
    )
    expected = raw_by(calls, start, start + timedelta(days=2), lambda c: c.user_id)
    assert {s.group["user"]: (s.totals["requests"], s.totals["cost_usd"]) for s in result.series} == expected

    with pytest.raises(QueryError, match="user alone"):
        usage(tenant.id, UsageQuery(start=start, end=start + timedelta(days=1), group_by=("user", "model")))
    with pytest.raises(QueryError, match="percentiles are not kept per user"):
        usage(
            tenant.id,
            UsageQuery(
                start=start, end=start + timedelta(days=1), group_by=("user",), metrics=("latency_p95",)
            ),
        )


def test_queries_never_read_raw_calls(tenant: TenantKeys) -> None:
    start = two_days_ago()
    rolled_up(tenant, 7, 100, start, timedelta(hours=5))
    with CaptureQueriesContext(connection) as queries:
        usage(tenant.id, UsageQuery(start=start, end=start + timedelta(days=2), group_by=("model",)))
    assert not [q for q in queries.captured_queries if "usage_llmcall" in q["sql"]]


def test_old_ranges_read_hours_when_minutes_are_gone(tenant: TenantKeys) -> None:
    start = truncate(timezone.now() - timedelta(days=12), "day")
    calls = rolled_up(tenant, 8, 2000, start - timedelta(days=1), timedelta(days=3))

    hourly = usage(
        tenant.id,
        UsageQuery(start=start, end=start + timedelta(hours=9), interval="hour", metrics=("requests",)),
    )
    assert hourly.totals["requests"] == sum(
        1 for c in calls if start <= c.start_time < start + timedelta(hours=9)
    )

    # Kolkata's midnight is 18:30 UTC; those minute buckets are gone, so each day is read from 18:00.
    daily = usage(
        tenant.id,
        UsageQuery(
            start=start,
            end=start + timedelta(days=1),
            interval="day",
            metrics=("requests",),
            time_zone="Asia/Kolkata",
        ),
    )
    first, last = daily.start - timedelta(minutes=30), daily.end - timedelta(minutes=30)
    assert (first.hour, first.minute) == (18, 0)
    assert daily.totals["requests"] == sum(1 for c in calls if first <= c.start_time < last)

    with pytest.raises(QueryError, match="minute buckets are kept"):
        usage(tenant.id, UsageQuery(start=start, end=start + timedelta(hours=1), interval="minute"))


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"metrics": ("cost",)}, "unknown metric 'cost'"),
        ({"group_by": ("region",)}, "unknown dimension 'region'"),
        ({"interval": "week"}, "unknown interval 'week'"),
        ({"time_zone": "Mars/Olympus"}, "unknown time zone"),
        ({"interval": "hour", "end_days": 900}, "more than 20000"),
    ],
)
def test_impossible_queries_say_what_to_change(
    tenant: TenantKeys, query: dict[str, Any], message: str
) -> None:
    end = timezone.now()
    days = query.pop("end_days", 1)
    with pytest.raises(QueryError, match=message):
        usage(tenant.id, UsageQuery(start=end - timedelta(days=days), end=end, **query))


# --- Through HTTP ---------------------------------------------------------------------------------


def test_the_api_answers_from_rollups_with_exact_money(
    client: Client, tenant: TenantKeys, make_tenant: MakeTenant
) -> None:
    start = two_days_ago()
    calls = rolled_up(tenant, 9, 500, start, timedelta(hours=12))
    params = {
        "from": start.isoformat(),
        "to": (start + timedelta(days=1)).isoformat(),
        "interval": "hour",
        "group_by": "model",
        "metrics": "requests,cost_usd,latency_p95",
    }

    body = client.get("/api/v1/usage", params, headers=tenant.api_auth).json()

    assert body["interval"] == "hour"
    assert body["units"]["cost_usd"] == "USD"
    assert body["complete_through"] is not None
    expected = raw_by(calls, start, start + timedelta(days=1), lambda c: c.model)
    got = {
        s["group"]["model"]: (s["totals"]["requests"], Decimal(s["totals"]["cost_usd"]))
        for s in body["series"]
    }
    assert got == expected
    assert all(isinstance(s["totals"]["cost_usd"], str) for s in body["series"])
    assert len(body["series"][0]["points"]) == 24

    # Another tenant asking the same question sees none of it.
    other = make_tenant()
    theirs = client.get("/api/v1/usage", params, headers=other.api_auth).json()
    assert theirs["series"] == []
    assert theirs["totals"]["requests"] == 0


def test_the_api_turns_query_errors_into_400(client: Client, tenant: TenantKeys) -> None:
    response = client.get("/api/v1/usage", {"group_by": "user,model"}, headers=tenant.api_auth)
    assert response.status_code == 400
    assert "user alone" in response.json()["detail"]
