"""The Overview page: this month's spend, the range's KPIs, spend over time by model, top spenders.

Everything is read through the usage query layer (rollups), never from raw calls, in seven queries
whatever the traffic: month spend (two), the range's totals, spend by model per bucket, and the
project, feature and user tables (totals only); the two slowest run on helper threads beside the rest.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from django.db import connection, connections

from costline.dashboards.spans import PageSpan, page_span
from costline.dashboards.timerange import TimeRange, month_start
from costline.tenancy.models import Organization
from costline.usage.metrics import Series, UsageQuery, UsageResult, Value, usage
from costline.usage.models import LLMCall

TILE_METRICS = (
    "requests",
    "errors",
    "error_rate",
    "input_tokens",
    "output_tokens",
    "cost_usd",
    "unpriced_requests",
    "cache_hits",
    "cache_hit_rate",
    "cache_savings_usd",
    "latency_p50",
    "latency_p95",
    "latency_p99",
    "ttft_p50",
    "ttft_p95",
)
TOP_DIMENSIONS = ("project", "feature", "model", "user")
TOP_ROWS = 10
# Longest stretch of history the "has this organisation ever sent a call" check looks at (the day
# rollups are kept two years; raw calls a month).
EVER = timedelta(days=730)


@dataclass(frozen=True)
class MonthSpend:
    """Spend of the current calendar month (organisation's zone) so far, and last month's to compare."""

    month_start: datetime  # local midnight of the 1st
    so_far: Decimal
    last_month_same_point: Decimal  # last month from its 1st through the same elapsed time (by the hour)
    last_month_total: Decimal

    @property
    def change(self) -> float | None:
        """Relative change against the same part of last month; None when last month had no spend."""
        if not self.last_month_same_point:
            return None
        return float((self.so_far - self.last_month_same_point) / self.last_month_same_point)


@dataclass(frozen=True)
class TopRow:
    name: str | None  # None: calls without a value (no project, no feature, no user)
    cost: Decimal
    requests: int
    share: float | None  # of the range's cost


@dataclass(frozen=True)
class TopTable:
    dimension: str
    rows: list[TopRow]
    more: int  # groups beyond the rows shown


@dataclass
class Overview:
    span: PageSpan
    month: MonthSpend
    totals: dict[str, Value]
    spend: UsageResult  # cost and requests per bucket, one series per model
    top: list[TopTable] = field(default_factory=list)
    has_calls: bool = True  # False: the organisation never sent a call (show how to start)
    complete_through: datetime | None = None


def month_spend(tenant_id: int, zone: ZoneInfo, now: datetime) -> MonthSpend:
    """This month so far vs last month through the same elapsed time, by the hour.

    Two queries: last month and this one by day (last month's total, this month's so far, last
    month's whole days before the comparison point), then the comparison day's hours up to the point.
    """
    local_now = now.astimezone(zone)
    this_month = month_start(local_now)
    last_month = month_start(this_month - timedelta(days=1))
    elapsed = now.astimezone(UTC) - this_month.astimezone(UTC)
    # A longer month compared with a shorter one stops at the shorter one's end.
    point = min(last_month.astimezone(UTC) + elapsed, this_month.astimezone(UTC)).astimezone(zone)
    point_day = point.replace(hour=0, minute=0, second=0, microsecond=0)

    days = usage(
        tenant_id,
        UsageQuery(start=last_month, end=now, interval="day", metrics=("cost_usd",), time_zone=zone.key),
    )
    so_far = last_total = before_point_day = Decimal(0)
    for moment, values in days.series[0].points:
        cost = money(values["cost_usd"])
        if moment >= this_month:
            so_far += cost
        else:
            last_total += cost
            if moment < point_day:
                before_point_day += cost
    same_point = before_point_day
    if point > point_day:
        hours = usage(
            tenant_id,
            UsageQuery(
                start=point_day,
                end=point,
                interval="hour",
                metrics=("cost_usd",),
                time_zone=zone.key,
                points=False,
            ),
        )
        same_point += money(hours.totals["cost_usd"])
    return MonthSpend(this_month, so_far, same_point, last_total)


def top_table(dimension: str, result: UsageResult, total_cost: Decimal, rows: int = TOP_ROWS) -> TopTable:
    """The groups of `result` (by `dimension`) with the largest cost."""
    ranked = sorted(result.series, key=_cost, reverse=True)
    return TopTable(
        dimension,
        [
            TopRow(
                series.group[dimension],
                _cost(series),
                int(series.totals.get("requests") or 0),
                float(_cost(series) / total_cost) if total_cost else None,
            )
            for series in ranked[:rows]
        ],
        max(len(ranked) - rows, 0),
    )


def _cost(series: Series) -> Decimal:
    return money(series.totals.get("cost_usd"))


def money(value: Value) -> Decimal:
    """A money metric as Decimal (None, a bucket without calls, as 0)."""
    return value if isinstance(value, Decimal) else Decimal(0)


def has_ever_sent(org: Organization, now: datetime) -> bool:
    """Whether any call of the organisation is stored: raw (not rolled up yet) or in the day rollups."""
    if LLMCall.objects.filter(tenant_id=org.id).exists():
        return True
    history = usage(
        org.id,
        UsageQuery(start=now - EVER, end=now, interval="day", metrics=("requests",), points=False),
    )
    return bool(history.totals["requests"])


def build_overview(org: Organization, time_range: TimeRange, now: datetime) -> Overview:
    span = page_span(time_range, now)
    # The two slowest reads (the tiles' percentiles merge every latency sketch of the range; the user
    # table sums a month of per-user day rollups: 50,000 rows for 1,900 users) run beside the others.
    totals_later = read_aside(org.id, span.query(TILE_METRICS))
    users_later = read_aside(org.id, span.query(("cost_usd", "requests"), ("user",)))
    spend = usage(org.id, span.query(("cost_usd", "requests"), ("model",), points=True))
    by_dimension = {
        "project": usage(org.id, span.query(("cost_usd", "requests"), ("project",))),
        "feature": usage(org.id, span.query(("cost_usd", "requests"), ("feature",))),
        "model": spend,  # the chart's series carry each model's totals already
    }
    month = month_spend(org.id, time_range.zone, now)
    totals = totals_later()
    by_dimension["user"] = users_later()
    total_cost = money(totals.totals["cost_usd"])
    return Overview(
        span=span,
        month=month,
        totals=totals.totals,
        spend=spend,
        top=[top_table(dimension, by_dimension[dimension], total_cost) for dimension in TOP_DIMENSIONS],
        has_calls=bool(totals.totals["requests"]) or has_ever_sent(org, now),
        complete_through=totals.complete_through,
    )


# Reads a page starts on a helper thread, each on a connection of its own, while the request's thread
# reads the rest: PostgreSQL answers one while Python shapes another. At 10 million calls this takes
# the Overview from 230 to 170 ms (bench/pages.py).
_helpers = ThreadPoolExecutor(max_workers=2, thread_name_prefix="costline-page-read")


def read_aside(tenant_id: int, query: UsageQuery) -> Callable[[], UsageResult]:
    """Start answering `query` now; the returned function waits for the answer (and raises its error).

    Inside a transaction (an atomic block, every test) the query runs at once on the request's own
    connection instead: another connection would not see what the transaction wrote.
    """
    if connection.in_atomic_block:
        result = usage(tenant_id, query)
        return lambda: result
    return _helpers.submit(_usage_on_own_connection, tenant_id, query).result


def _usage_on_own_connection(tenant_id: int, query: UsageQuery) -> UsageResult:
    try:
        return usage(tenant_id, query)
    finally:
        # Closed at once (a local connection takes ~2 ms to open, on this thread, beside the request):
        # an idle connection left on a pool thread would outlive its request, its settings and, in
        # tests, the test database.
        connections.close_all()
