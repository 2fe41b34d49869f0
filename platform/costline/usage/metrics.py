"""The one query layer for usage metrics: the REST API, dashboards, budgets and detectors read here.

Every answer comes from the rollups (minute, hour and day buckets, and the daily per-user rollup),
never from a scan of raw calls: sums are exact (integers and decimals), percentiles merge the buckets'
latency sketches (costline.usage.sketch, within 1% of the exact value).

A query names a time range, an interval, the dimensions to group by, filters and the metrics wanted;
the answer has one series per group (a point per interval bucket) and totals per group.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal

# Dimensions a query can group by and filter on. `user` is answered from the daily per-user rollup
# (no latency percentiles there); the others from the minute, hour and day rollups.
DIMENSIONS = (
    "project",  # the project's slug
    "service",
    "environment",
    "feature",
    "provider",
    "model",
    "operation",
    "status",  # ok or error
    "user",
)
# A filter value of "" selects calls without a value (no feature, no project, no environment, no user);
# in answers such a group's value is None.
NONE_VALUE = ""
INTERVALS = ("minute", "hour", "day")

# Metric name → unit. Sums are exact; rates and per-request figures are derived from sums per bucket.
METRICS: dict[str, str] = {
    "requests": "calls",
    "errors": "calls",
    "error_rate": "ratio",
    "unpriced_requests": "calls",
    "input_tokens": "tokens",
    "output_tokens": "tokens",
    "cache_read_tokens": "tokens",
    "cache_write_tokens": "tokens",
    "reasoning_tokens": "tokens",
    "cost_usd": "USD",
    "cost_per_request": "USD",
    "cache_hits": "calls",
    "cache_hit_rate": "ratio",
    "cache_savings_usd": "USD",
    "latency_p50": "ms",
    "latency_p95": "ms",
    "latency_p99": "ms",
    "ttft_p50": "ms",
    "ttft_p95": "ms",
    "ttft_p99": "ms",
}
PERCENTILE_METRICS = frozenset(m for m in METRICS if m.startswith(("latency_", "ttft_")))
MONEY_METRICS = frozenset(m for m, unit in METRICS.items() if unit == "USD")
DEFAULT_METRICS = ("requests", "errors", "input_tokens", "output_tokens", "cost_usd", "latency_p95")

# `interval="auto"`: the finest interval that keeps a series short enough to draw and to read fast.
AUTO_MINUTE_UP_TO = timedelta(hours=6)
AUTO_HOUR_UP_TO = timedelta(days=14)

Value = int | Decimal | float | None  # counts int, money Decimal, ratios and milliseconds float


class QueryError(ValueError):
    """The query cannot be answered as asked; the message says what to change."""


@dataclass(frozen=True)
class UsageQuery:
    start: datetime  # inclusive; aware (UTC or any zone)
    end: datetime  # exclusive
    interval: str = "auto"  # minute, hour, day or auto
    group_by: tuple[str, ...] = ()
    filters: dict[str, tuple[str, ...]] = field(default_factory=dict)  # dimension → accepted values
    metrics: tuple[str, ...] = DEFAULT_METRICS
    # IANA zone the day buckets follow (midnight to midnight there); minute and hour buckets are the
    # same instants in every zone with whole-hour offsets.
    time_zone: str = "UTC"
    # False: totals only. Each series has one point spanning the whole range (still snapped to whole
    # buckets of `interval`), read from the coarsest rollups that tile it: what a table needs, far
    # faster than merging a point per bucket for a thousand users.
    points: bool = True


@dataclass
class Series:
    group: dict[str, str | None]  # dimension → value (None: unknown, e.g. a call without a feature)
    points: list[tuple[datetime, dict[str, Value]]]  # bucket start (UTC) → metric values
    totals: dict[str, Value]


@dataclass
class UsageResult:
    start: datetime  # the range actually answered: snapped to whole buckets of `interval`
    end: datetime
    interval: str  # the interval actually used (auto resolved)
    metrics: tuple[str, ...]
    series: list[Series]
    totals: dict[str, Value]  # over every group
    # Every call ingested before this instant is in the answer (the rollups' watermark); None before
    # the first rollup run.
    complete_through: datetime | None = None


def usage(tenant_id: int, query: UsageQuery) -> UsageResult:
    """Answer `query` for one tenant from the rollups. Raises QueryError for an impossible query."""
    from costline.usage.query import run_usage_query

    return run_usage_query(tenant_id, query)
