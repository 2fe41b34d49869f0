"""Explore: any metric, grouped and filtered as the user asks, as a chart, a table and a CSV.

The whole state is in the URL (the page is a GET form), so a view can be bookmarked and shared:

    ?metric=latency_p95&group_by=model&group_by=feature&model=gpt-4o,gpt-4o-mini&status=error
     &interval=auto&chart=area&range=7d&sort=requests&order=asc

A filter names values separated by commas; `(none)` stands for calls without a value (no feature, no
project). Every mistake raises QueryError (or the range's RangeError) with a message saying what to
change; the page shows it with status 400.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from costline.dashboards.figures import CHART_TYPES
from costline.dashboards.labels import NONE_LABEL
from costline.dashboards.spans import PageSpan, page_span
from costline.dashboards.timerange import TimeRange
from costline.usage.metrics import (
    DIMENSIONS,
    METRICS,
    NONE_VALUE,
    QueryError,
    Series,
    UsageResult,
    Value,
    usage,
)
from costline.usage.models import Status
from costline.usage.usage_params import MAX_GROUP_BY

DEFAULT_METRIC = "cost_usd"
DEFAULT_GROUP_BY = ("model",)
INTERVAL_CHOICES = ("auto", "minute", "hour", "day")
ORDERS = ("desc", "asc")
# Besides the chosen metric, the table always shows how many calls and how much money each group is.
CONTEXT_METRICS = ("requests", "cost_usd")


@dataclass(frozen=True)
class ExploreState:
    metric: str = DEFAULT_METRIC
    group_by: tuple[str, ...] = DEFAULT_GROUP_BY
    filters: dict[str, tuple[str, ...]] = field(default_factory=dict)
    interval: str = "auto"
    chart: str = "line"
    sort: str = ""  # a table column (a metric or a grouped dimension); "" = the chosen metric
    order: str = "desc"

    @property
    def columns(self) -> tuple[str, ...]:
        """The metrics asked of the query layer and shown in the table, the chosen one first."""
        return tuple(dict.fromkeys((self.metric, *CONTEXT_METRICS)))

    @property
    def sort_key(self) -> str:
        return self.sort or self.metric

    def filter_text(self, dimension: str) -> str:
        """A filter as its text input writes it: `gpt-4o, (none)`."""
        return ", ".join(NONE_LABEL if v == NONE_VALUE else v for v in self.filters.get(dimension, ()))

    def params(self, *, sorting: bool = True) -> list[tuple[str, str]]:
        """URL parameters that give this state back (the range apart; the table's order if `sorting`)."""
        pairs = [("metric", self.metric), ("interval", self.interval), ("chart", self.chart)]
        if sorting and self.sort:
            pairs.append(("sort", self.sort))
        if sorting and self.order != "desc":
            pairs.append(("order", self.order))
        # An empty group_by says "no grouping" (absent, it means the default grouping).
        pairs += [("group_by", name) for name in self.group_by] or [("group_by", "")]
        pairs += [(name, self.filter_text(name)) for name in DIMENSIONS if name in self.filters]
        return pairs


def parse_state(params: Mapping[str, Sequence[str]]) -> ExploreState:
    """The state named by the query string (each name with its list of values)."""

    def one(name: str, default: str) -> str:
        values = [v for v in params.get(name, ()) if v != ""]
        if len(set(values)) > 1:
            raise QueryError(f"{name}: give it once, got {', '.join(values)}.")
        return values[0].strip() if values else default

    metric = one("metric", DEFAULT_METRIC)
    if metric not in METRICS:
        raise QueryError(f"metric: unknown metric {metric!r}; choose one of {', '.join(METRICS)}.")
    interval = one("interval", "auto")
    if interval not in INTERVAL_CHOICES:
        raise QueryError(f"interval: unknown interval {interval!r}; use {', '.join(INTERVAL_CHOICES)}.")
    chart = one("chart", "line")
    if chart not in CHART_TYPES:
        raise QueryError(f"chart: unknown chart type {chart!r}; use {', '.join(CHART_TYPES)}.")
    order = one("order", "desc")
    if order not in ORDERS:
        raise QueryError(f"order: use asc or desc, not {order!r}.")

    group_by = _group_by(params)
    sort = one("sort", "")
    allowed = (metric, *CONTEXT_METRICS, *group_by)
    if sort and sort not in allowed:
        raise QueryError(
            f"sort: cannot sort by {sort!r}; sort by one of the table's columns: {', '.join(allowed)}."
        )
    filters = {}
    for dimension in DIMENSIONS:
        values = _filter_values(dimension, params.get(dimension, ()))
        if values:
            filters[dimension] = values
    return ExploreState(metric, group_by, filters, interval, chart, "" if sort == metric else sort, order)


def _group_by(params: Mapping[str, Sequence[str]]) -> tuple[str, ...]:
    if "group_by" not in params:
        return DEFAULT_GROUP_BY
    names = list(
        dict.fromkeys(n.strip() for value in params["group_by"] for n in value.split(",") if n.strip())
    )
    for name in names:
        if name not in DIMENSIONS:
            raise QueryError(
                f"group_by: unknown dimension {name!r}; group by any of {', '.join(DIMENSIONS)}."
            )
    if len(names) > MAX_GROUP_BY:
        raise QueryError(
            f"group_by: at most {MAX_GROUP_BY} dimensions, got {len(names)} ({', '.join(names)}); "
            "group by fewer and filter on the others instead."
        )
    return tuple(names)


def _filter_values(dimension: str, given: Sequence[str]) -> tuple[str, ...]:
    items = [item.strip() for value in given for item in value.split(",")]
    values = tuple(dict.fromkeys(NONE_VALUE if item == NONE_LABEL else item for item in items if item))
    if dimension == "status":
        for value in values:
            if value not in Status.values:
                raise QueryError(f"status: unknown status {value!r}; use {' or '.join(Status.values)}.")
    return values


@dataclass
class Explore:
    state: ExploreState
    span: PageSpan
    result: UsageResult
    rows: list[Series]  # the table: one row per group, in the order asked


def run_explore(tenant_id: int, state: ExploreState, time_range: TimeRange, now: datetime) -> Explore:
    span = page_span(time_range, now, state.interval)
    result = usage(tenant_id, span.query(state.columns, state.group_by, state.filters, points=True))
    return Explore(state, span, result, sorted_rows(result.series, state))


def sorted_rows(series: Sequence[Series], state: ExploreState) -> list[Series]:
    """The table's rows by the sort column; groups without a value (None) always last."""
    key = state.sort_key
    descending = state.order == "desc"

    def value(s: Series) -> Any:
        return s.group.get(key) if key in state.group_by else s.totals.get(key)

    known = [s for s in series if value(s) is not None]
    unknown = [s for s in series if value(s) is None]
    return sorted(known, key=value, reverse=descending) + unknown


def csv_value(value: Value | str) -> str:
    """Exact text of a value: money as its full Decimal (never 1e-05, never a float), None as empty."""
    if value is None:
        return ""
    if isinstance(value, Decimal):
        return f"{value:f}"
    return str(value)


def csv_table(explore: Explore) -> tuple[list[str], Iterator[list[str]]]:
    """Header and rows of the CSV: one row per group and bucket (bucket start in the org's zone)."""
    state, zone = explore.state, explore.span.zone
    header = [*state.group_by, "bucket_start", state.metric]

    def rows() -> Iterator[list[str]]:
        for series in explore.rows:
            group = [csv_value(series.group[name]) for name in state.group_by]
            for moment, values in series.points:
                yield [*group, moment.astimezone(zone).isoformat(), csv_value(values.get(state.metric))]

    return header, rows()
