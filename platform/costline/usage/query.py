"""Answers to usage queries (costline.usage.metrics) from the rollups.

A query's range is cut into its interval's buckets (days follow the query's time zone). Each bucket
is read from the coarsest rollups that fit inside it: whole UTC days from the day rollups, whole hours
from the hour rollups, the minutes left at the edges from the minute rollups. So a 30-day series
reads 30 rows per group, and a total from 09:30 to 17:45 reads 8 hours and 45 minutes of rows.

Minute rollups are kept ROLLUP_MINUTE_RETENTION_DAYS: an edge older than that which falls inside an
hour is moved to the hour's start (both neighbours agree on it, so nothing is counted twice or lost).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from itertools import pairwise
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
import numpy.typing as npt
from django.conf import settings
from django.db import connection
from django.utils import timezone

from costline.tenancy.models import Project
from costline.usage import sketch
from costline.usage.metrics import (
    AUTO_HOUR_UP_TO,
    AUTO_MINUTE_UP_TO,
    DIMENSIONS,
    INTERVALS,
    METRICS,
    PERCENTILE_METRICS,
    QueryError,
    Series,
    UsageQuery,
    UsageResult,
    Value,
)
from costline.usage.rollup import CALLS, MEASURE_COLUMNS, USERS, Family, watermark

MAX_BUCKETS = 20_000  # points per series: a week of minutes fits, a year of minutes does not
MONEY_PLACES = Decimal("0.000000000001")  # 12 places, as stored
STEP = {"minute": timedelta(minutes=1), "hour": timedelta(hours=1), "day": timedelta(days=1)}

# Query dimension → rollup column of the calls family; `user` lives in the users family alone.
COLUMN = {
    "project": "project_id",
    "service": "service",
    "environment": "environment",
    "feature": "feature",
    "provider": "provider",
    "model": "model",
    "operation": "operation",
    "status": "status",
    "user": "user_id",
}
PERCENTILES = {"p50": 0.5, "p95": 0.95, "p99": 0.99}


# --- Validation -------------------------------------------------------------------------------------


def _family(query: UsageQuery) -> Family:
    for name in query.group_by:
        if name not in DIMENSIONS:
            raise QueryError(f"group_by: unknown dimension {name!r}; use any of {', '.join(DIMENSIONS)}")
    for name in query.filters:
        if name not in DIMENSIONS:
            raise QueryError(f"unknown filter {name!r}; filter on any of {', '.join(DIMENSIONS)}")
    for metric in query.metrics:
        if metric not in METRICS:
            raise QueryError(f"metrics: unknown metric {metric!r}; use any of {', '.join(METRICS)}")
    if not query.metrics:
        raise QueryError("metrics: name at least one metric")
    used = set(query.group_by) | set(query.filters)
    if "user" not in used:
        return CALLS
    others = sorted(used - {"user"})
    if others:
        raise QueryError(
            "user: per-user usage is kept apart from the other dimensions; group or filter by user alone, "
            f"without {', '.join(others)}"
        )
    sketched = [m for m in query.metrics if m in PERCENTILE_METRICS]
    if sketched:
        raise QueryError(f"user: latency percentiles are not kept per user; drop {', '.join(sketched)}")
    return USERS


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise QueryError(f"tz: unknown time zone {name!r}; use an IANA name such as Europe/Paris") from exc


def resolve_interval(query: UsageQuery, now: datetime) -> str:
    span = query.end - query.start
    oldest_minute = now - timedelta(days=settings.ROLLUP_MINUTE_RETENTION_DAYS)
    if query.interval == "auto":
        if span <= AUTO_MINUTE_UP_TO and query.start >= oldest_minute:
            return "minute"
        return "hour" if span <= AUTO_HOUR_UP_TO else "day"
    if query.interval not in INTERVALS:
        raise QueryError(f"interval: unknown interval {query.interval!r}; use minute, hour, day or auto")
    if query.interval == "minute" and query.start < oldest_minute - timedelta(minutes=1):
        raise QueryError(
            f"interval: minute buckets are kept {settings.ROLLUP_MINUTE_RETENTION_DAYS} days and this range "
            "starts earlier; use interval=hour or a later from"
        )
    return query.interval


# --- Buckets and where to read them ------------------------------------------------------------------


def _floor(moment: datetime, unit: str) -> datetime:
    moment = moment.astimezone(UTC)
    if unit == "minute":
        return moment.replace(second=0, microsecond=0)
    if unit == "hour":
        return moment.replace(minute=0, second=0, microsecond=0)
    return moment.replace(hour=0, minute=0, second=0, microsecond=0)


def _ceil(moment: datetime, unit: str) -> datetime:
    floor = _floor(moment, unit)
    return floor if floor == moment else floor + STEP[unit]


def bucket_edges(start: datetime, end: datetime, interval: str, zone: ZoneInfo) -> list[datetime]:
    """Edges (UTC) of the interval's buckets covering [start, end): N buckets, N + 1 edges."""
    if interval != "day":
        first, last = _floor(start, interval), _ceil(end, interval)
        count = int((last - first) / STEP[interval])
        if count > MAX_BUCKETS:
            raise QueryError(
                f"interval: {count} {interval} buckets is more than {MAX_BUCKETS}; use a coarser interval "
                "or a shorter range"
            )
        return [first + STEP[interval] * i for i in range(count + 1)]
    day: date = start.astimezone(zone).date()
    edges = [datetime(day.year, day.month, day.day, tzinfo=zone).astimezone(UTC)]
    while edges[-1] < end:
        day += timedelta(days=1)
        edges.append(datetime(day.year, day.month, day.day, tzinfo=zone).astimezone(UTC))
        if len(edges) > MAX_BUCKETS:
            raise QueryError(f"interval: more than {MAX_BUCKETS} day buckets; use a shorter range")
    return edges


def _readable_edge(edge: datetime, oldest_minute: datetime) -> datetime:
    """An edge the rollups can honour: older minute precision is gone, so move it to its hour."""
    if edge < oldest_minute and edge != _floor(edge, "hour"):
        return _floor(edge, "hour")
    return edge


@dataclass
class Reads:
    """Per rollup level, the [lo, hi) ranges of its buckets that the query reads."""

    ranges: dict[str, list[tuple[datetime, datetime]]] = field(default_factory=lambda: defaultdict(list))

    def add(self, level: str, lo: datetime, hi: datetime) -> None:
        if lo >= hi:
            return
        spans = self.ranges[level]
        if spans and spans[-1][1] == lo:
            spans[-1] = (spans[-1][0], hi)
        else:
            spans.append((lo, hi))


def plan_reads(edges: Sequence[datetime]) -> Reads:
    """The coarsest rollup buckets that tile every [edge_i, edge_i+1) exactly."""
    reads = Reads()
    for lo, hi in pairwise(edges):
        day_lo, day_hi = _ceil(lo, "day"), _floor(hi, "day")
        if day_lo < day_hi:
            _plan_hours(reads, lo, day_lo)
            reads.add("day", day_lo, day_hi)
            _plan_hours(reads, day_hi, hi)
        else:
            _plan_hours(reads, lo, hi)
    return reads


def _plan_hours(reads: Reads, lo: datetime, hi: datetime) -> None:
    hour_lo, hour_hi = _ceil(lo, "hour"), _floor(hi, "hour")
    if hour_lo < hour_hi:
        reads.add("minute", lo, hour_lo)
        reads.add("hour", hour_lo, hour_hi)
        reads.add("minute", hour_hi, hi)
    else:
        reads.add("minute", lo, hi)


# --- Reading ---------------------------------------------------------------------------------------


@dataclass
class Cell:
    """Sums (MEASURE_COLUMNS order) and concatenated sketches of one bucket of one group."""

    sums: list[Any]
    latency: list[bytes] = field(default_factory=list)
    ttft: list[bytes] = field(default_factory=list)

    def add(self, sums: Sequence[Any], latency: bytes | None, ttft: bytes | None) -> None:
        for i, value in enumerate(sums):
            self.sums[i] += value
        if latency:
            self.latency.append(latency)
        if ttft:
            self.ttft.append(ttft)


def _empty_sums() -> list[Any]:
    return [Decimal(0) if column.endswith("_usd") else 0 for column in MEASURE_COLUMNS]


def _filters_sql(
    tenant_id: int, filters: dict[str, tuple[str, ...]], params: dict[str, Any]
) -> tuple[str, bool]:
    """SQL conditions for the filters; False when a filter can match nothing (an unknown project)."""
    clauses = []
    for i, (name, values) in enumerate(sorted(filters.items())):
        column = COLUMN[name]
        if name == "project":
            slugs = [v for v in values if v]
            ids = list(
                Project.objects.filter(organization_id=tenant_id, slug__in=slugs).values_list("id", flat=True)
            )
            if "" in values:
                ids.append(0)
            if not ids:
                return "", False
            params[f"f{i}"] = ids
            clauses.append(f"{column} = ANY(%(f{i})s::bigint[])")
        else:
            params[f"f{i}"] = list(values)
            clauses.append(f"{column} = ANY(%(f{i})s::text[])")
    return "".join(f" AND {clause}" for clause in clauses), True


def _read(
    tenant_id: int,
    family: Family,
    reads: Reads,
    edges: Sequence[datetime],
    group_by: Sequence[str],
    filters: dict[str, tuple[str, ...]],
    with_sketches: bool,
) -> dict[tuple[Any, ...], dict[int, Cell]]:
    """group key → bucket index → Cell, from every rollup level the plan reads."""
    cells: dict[tuple[Any, ...], dict[int, Cell]] = defaultdict(dict)
    columns = [COLUMN[name] for name in group_by]
    # Counts summed back to bigint (sum() of bigints is numeric), money kept numeric: exact either way.
    sums = ", ".join(
        f"sum({column})" if column.endswith("_usd") else f"sum({column})::bigint"
        for column in MEASURE_COLUMNS
    )
    sketches = (
        ", string_agg(latency_sketch, ''::bytea), string_agg(ttft_sketch, ''::bytea)" if with_sketches else ""
    )
    grouped = "".join(f", {column}" for column in columns)
    base: dict[str, Any] = {"tenant": tenant_id, "edges": list(edges)}
    where_filters, possible = _filters_sql(tenant_id, filters, base)
    if not possible:
        return cells
    # One bucket (totals only): every row read falls in it. A constant slot lets the planner see that
    # the groups are the dimension values alone; with width_bucket it expects groups × rows, sorts a
    # month of per-user rows on disk and takes twice as long.
    slot_sql = "0" if len(edges) == 2 else "width_bucket(bucket, %(edges)s::timestamptz[]) - 1"
    with connection.cursor() as cursor:
        for level, spans in reads.ranges.items():
            params = dict(base)
            ranges = []
            for i, (lo, hi) in enumerate(spans):
                params[f"lo{i}"], params[f"hi{i}"] = lo, hi
                ranges.append(f"(bucket >= %(lo{i})s AND bucket < %(hi{i})s)")
            cursor.execute(
                f"SELECT {slot_sql} AS slot{grouped}, "
                f"{sums}{sketches} "
                f"FROM {family.table(level)} WHERE tenant_id = %(tenant)s AND ({' OR '.join(ranges)})"
                f"{where_filters} GROUP BY slot{grouped}",
                params,
            )
            width = 1 + len(columns)
            for row in cursor.fetchall():
                slot = int(row[0])
                key = tuple(row[1:width])
                measures = row[width : width + len(MEASURE_COLUMNS)]
                latency = ttft = None
                if with_sketches:
                    latency, ttft = row[width + len(MEASURE_COLUMNS)], row[width + len(MEASURE_COLUMNS) + 1]
                cell = cells[key].get(slot)
                if cell is None:
                    cells[key][slot] = Cell(
                        list(measures), [latency] if latency else [], [ttft] if ttft else []
                    )
                else:
                    cell.add(measures, latency, ttft)
    return cells


# --- Metrics ---------------------------------------------------------------------------------------


def _ratio(numerator: int, denominator: int) -> float | None:
    return numerator / denominator if denominator else None


def metric_values(
    cells: Sequence[Cell], metrics: Sequence[str], percentiles: dict[str, Any] | None = None
) -> list[dict[str, Value]]:
    """The metrics of each cell; `percentiles`: kind (latency, ttft) → one row of PERCENTILES per cell."""
    percentiles = percentiles or {}
    columns = {f"{kind}_{name}": (kind, i) for kind in percentiles for i, name in enumerate(PERCENTILES)}
    answers = []
    for index, cell in enumerate(cells):
        sums = dict(zip(MEASURE_COLUMNS, cell.sums, strict=True))
        requests = sums["requests"]
        values: dict[str, Value] = {}
        for metric in metrics:
            if metric in columns:
                kind, column = columns[metric]
                value = float(percentiles[kind][index, column])
                values[metric] = None if value != value else value  # NaN: no samples
            elif metric == "unpriced_requests":
                values[metric] = sums["unpriced"]
            elif metric == "error_rate":
                values[metric] = _ratio(sums["errors"], requests)
            elif metric == "cache_hit_rate":
                values[metric] = _ratio(sums["cache_hits"], requests)
            elif metric == "cost_per_request":
                priced = requests - sums["unpriced"]
                values[metric] = (
                    (sums["cost_usd"] / priced).quantize(MONEY_PLACES, ROUND_HALF_EVEN) if priced else None
                )
            else:
                values[metric] = sums[metric]
        answers.append(values)
    return answers


def _merge_sums(cells: Sequence[Cell]) -> Cell:
    """A cell of the sums of `cells` (their percentiles come from `_percentiles`)."""
    total = Cell(_empty_sums())
    for cell in cells:
        total.add(cell.sums, None, None)
    return total


def _percentiles(
    points: Sequence[Cell], groups: int, slots: int, metrics: Sequence[str]
) -> dict[str, npt.NDArray[np.float64]]:
    """Per kind, PERCENTILES of every point, then of every group's total, then of the total."""
    answers = {}
    for kind in ("latency", "ttft"):
        if not any(m.startswith(f"{kind}_p") for m in metrics):
            continue
        low, matrix = sketch.histograms(
            [b"".join(c.latency if kind == "latency" else c.ttft) for c in points]
        )
        by_group = matrix.reshape(groups, slots, matrix.shape[1]).sum(axis=1)
        stacked = np.vstack([matrix, by_group, by_group.sum(axis=0, keepdims=True)])
        answers[kind] = sketch.dense_quantiles(low, stacked, list(PERCENTILES.values()))
    return answers


def _group_value(name: str, value: Any, project_slugs: dict[int, str]) -> str | None:
    if name == "project":
        return project_slugs.get(int(value)) if value else None
    return value or None


def run_usage_query(tenant_id: int, query: UsageQuery, *, now: datetime | None = None) -> UsageResult:
    family = _family(query)
    if query.start.tzinfo is None or query.end.tzinfo is None:
        raise QueryError("from and to must carry a time zone (UTC when none is written)")
    if query.start >= query.end:
        raise QueryError("from must be before to")
    zone = _zone(query.time_zone)
    now = now or timezone.now()
    interval = resolve_interval(query, now)
    oldest_minute = _floor(now - timedelta(days=settings.ROLLUP_MINUTE_RETENTION_DAYS), "day")
    edges = bucket_edges(query.start, query.end, interval, zone)
    if not query.points:
        edges = [edges[0], edges[-1]]  # one bucket: the whole (snapped) range
    readable = [_readable_edge(edge, oldest_minute) for edge in edges]
    with_sketches = any(m in PERCENTILE_METRICS for m in query.metrics)
    cells = _read(
        tenant_id, family, plan_reads(readable), readable, query.group_by, query.filters, with_sketches
    )

    project_slugs: dict[int, str] = {}
    if "project" in query.group_by:
        project_slugs = dict(Project.objects.filter(organization_id=tenant_id).values_list("id", "slug"))
    if not query.group_by and not cells:
        cells[()] = {}  # no calls: one series of zeros, not none
    # Every cell whose metrics are answered: each point of each group, each group's total, the total.
    keys = list(cells)
    slots_count = len(edges) - 1
    points: list[Cell] = []
    for key in keys:
        points += [cells[key].get(i) or Cell(_empty_sums()) for i in range(slots_count)]
    group_totals = [_merge_sums(points[n * slots_count : (n + 1) * slots_count]) for n in range(len(keys))]
    every = [*points, *group_totals, _merge_sums(group_totals)]
    values = metric_values(every, query.metrics, _percentiles(points, len(keys), slots_count, query.metrics))
    series = []
    for n, key in enumerate(keys):
        first = n * slots_count
        group = {
            name: _group_value(name, value, project_slugs)
            for name, value in zip(query.group_by, key, strict=True)
        }
        series.append(
            Series(
                group=group,
                points=[(edges[i], values[first + i]) for i in range(slots_count)],
                totals=values[len(points) + n],
            )
        )
    # Largest first by the first metric asked for: a "top N" reads the head of the list.
    order = query.metrics[0]
    series.sort(key=lambda s: _sort_key(s.totals.get(order)), reverse=True)
    totals = values[-1]
    return UsageResult(
        start=edges[0],
        end=edges[-1],
        interval=interval,
        metrics=tuple(query.metrics),
        series=series,
        totals=totals,
        complete_through=watermark(),
    )


def _sort_key(value: Value) -> float:
    return float(value) if value is not None else float("-inf")
