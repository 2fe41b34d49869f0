"""Rollups: minute, hour and day buckets of every tenant's calls, recomputed from raw rows.

Two families of buckets are kept, each at three levels (`usage_<family>_<level>`):

- `rollup`: the dashboard dimensions (project, service, environment, feature, provider, model,
  operation, status) with sums and latency / time-to-first-token sketches;
- `userrollup`: the end user, with the same sums and no sketches.

**Incremental, never blind.** The transaction that stores, deletes or re-attributes calls marks their
minutes in `usage_rollup_dirty` (MARK_DIRTY_SQL), so a call is either stored and marked, or neither.
`process_dirty` takes one (tenant, UTC day) at a time: under a per-(tenant, day) advisory lock it
deletes that day's marks and, in the same transaction, recomputes every marked minute from the raw
rows, each hour holding one from its minutes, and the day from its hours. Repeating it changes
nothing; two workers never compute the same day at once (the second skips it); a worker killed half
way rolls back, marks included, and the next run does the work. Late calls simply mark old minutes.

Minute buckets are kept ROLLUP_MINUTE_RETENTION_DAYS: a late call for a day older than that rebuilds
its hour straight from raw rows. A day whose raw partition is gone (retention) is never recomputed:
its rollups stay as they were.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from costline.usage import sketch
from costline.usage.partitions import (
    ROLLUP_PARTITIONED_TABLES,
    days_around,
    ensure_partitions,
    existing_days,
)

log = logging.getLogger(__name__)

MARK_DIRTY_SQL = (
    "INSERT INTO usage_rollup_dirty (tenant_id, minute) "
    "SELECT %s, to_timestamp(m) FROM unnest(%s::bigint[]) AS m"
)
LEVELS = ("minute", "hour", "day")
WATERMARK_KEY = "rollups.complete_through"
_LOCK_PREFIX = 0x52 << 56  # "R": rollup locks, apart from the ingest's tenant locks

# Measures: (column, aggregate over raw calls). Over finer buckets every measure is a plain sum.
MEASURES: tuple[tuple[str, str], ...] = (
    ("requests", "count(*)"),
    ("errors", "count(*) FILTER (WHERE status = 'error')"),
    ("unpriced", "count(*) FILTER (WHERE cost_usd IS NULL)"),
    ("input_tokens", "coalesce(sum(input_tokens), 0)"),
    ("output_tokens", "coalesce(sum(output_tokens), 0)"),
    ("cache_read_tokens", "coalesce(sum(cache_read_tokens), 0)"),
    ("cache_write_tokens", "coalesce(sum(cache_write_tokens), 0)"),
    ("reasoning_tokens", "coalesce(sum(reasoning_tokens), 0)"),
    ("cost_usd", "coalesce(sum(cost_usd), 0)"),
    ("cache_hits", "count(*) FILTER (WHERE cache_read_tokens > 0)"),
    ("cache_savings_usd", "coalesce(sum(cache_savings_usd), 0)"),
)
MEASURE_COLUMNS = tuple(name for name, _ in MEASURES)
SKETCHES: tuple[tuple[str, str], ...] = (("latency_sketch", "latency_ms"), ("ttft_sketch", "ttft_ms"))


@dataclass(frozen=True)
class Family:
    name: str
    # (rollup column, its expression over a raw call): "no value" is '' (project 0) in rollups.
    dimensions: tuple[tuple[str, str], ...]
    sketches: bool

    def table(self, level: str) -> str:
        return f"usage_{self.name}_{level}"

    @property
    def dimension_columns(self) -> tuple[str, ...]:
        return tuple(column for column, _ in self.dimensions)

    @property
    def columns(self) -> tuple[str, ...]:
        sketches = tuple(column for column, _ in SKETCHES) if self.sketches else ()
        return ("tenant_id", "bucket", *self.dimension_columns, *MEASURE_COLUMNS, *sketches)


CALLS = Family(
    "rollup",
    (
        ("project_id", "coalesce(project_id, 0)"),
        ("service", "service"),
        ("environment", "environment"),
        ("feature", "coalesce(feature, '')"),
        ("provider", "provider"),
        ("model", "model"),
        ("operation", "operation"),
        ("status", "status"),
    ),
    sketches=True,
)
USERS = Family("userrollup", (("user_id", "coalesce(user_id, '')"),), sketches=False)
FAMILIES = (CALLS, USERS)


# --- Marking ----------------------------------------------------------------------------------------


def mark_dirty(cursor: Any, tenant_id: int, minutes: Iterable[datetime]) -> None:
    """Mark minutes of a tenant for recomputation, in the caller's transaction."""
    epoch_minutes = sorted({int(m.timestamp()) // 60 * 60 for m in minutes})
    if epoch_minutes:
        cursor.execute(MARK_DIRTY_SQL, [tenant_id, epoch_minutes])


def mark_range_dirty(cursor: Any, tenant_id: int, start: datetime, end: datetime) -> int:
    """Mark every minute of [start, end) holding calls of the tenant; returns how many were marked."""
    cursor.execute(
        "INSERT INTO usage_rollup_dirty (tenant_id, minute) "
        "SELECT DISTINCT %s::bigint, date_trunc('minute', start_time, 'UTC') FROM usage_llmcall "
        "WHERE tenant_id = %s AND start_time >= %s AND start_time < %s",
        [tenant_id, tenant_id, start, end],
    )
    return int(cursor.rowcount)


# --- Recomputing ------------------------------------------------------------------------------------


def _ranges_sql(column: str, ranges: Sequence[tuple[datetime, datetime]]) -> tuple[str, dict[str, Any]]:
    """`column` within any of the ranges, with named placeholders (the tenant is `%(tenant)s`)."""
    clauses = " OR ".join(f"({column} >= %(lo{i})s AND {column} < %(hi{i})s)" for i in range(len(ranges)))
    params: dict[str, Any] = {}
    for i, (lo, hi) in enumerate(ranges):
        params[f"lo{i}"], params[f"hi{i}"] = lo, hi
    return f"({clauses})", params


MAX_RANGES = 8
WIDTHS = {"minute": timedelta(minutes=1), "hour": timedelta(hours=1), "day": timedelta(days=1)}


def covering(
    starts: Iterable[datetime], width: timedelta, max_ranges: int = MAX_RANGES
) -> list[tuple[datetime, datetime]]:
    """At most `max_ranges` [start, end) ranges covering the buckets of `width` that begin at `starts`.

    Contiguous buckets make one range; then the closest ranges are joined until few enough are left.
    A query reads the rows of the ranges (an index range scan each) and keeps the marked buckets'.
    """
    result: list[tuple[datetime, datetime]] = []
    for start in sorted(set(starts)):
        if result and start <= result[-1][1]:
            result[-1] = (result[-1][0], start + width)
        else:
            result.append((start, start + width))
    while len(result) > max_ranges:
        gaps = [result[i + 1][0] - result[i][1] for i in range(len(result) - 1)]
        i = gaps.index(min(gaps))
        result[i : i + 2] = [(result[i][0], result[i + 1][1])]
    return result


def _buckets_sql(column: str, level: str, buckets: Sequence[datetime]) -> tuple[str, dict[str, Any]]:
    """`column` (a time) falls in one of `buckets` of `level`: ranges for the index, then membership."""
    where, params = _ranges_sql(column, covering(buckets, WIDTHS[level]))
    where += f" AND date_trunc('{level}', {column}, 'UTC') = ANY(%(buckets)s::timestamptz[])"
    return where, params | {"buckets": list(buckets)}


def _from_raw_sql(family: Family, level: str, ranges_sql: str) -> str:
    """INSERT of one level's buckets computed from raw calls (the sketches built by PostgreSQL)."""
    dims = ", ".join(family.dimension_columns)
    base_dims = ", ".join(f"{expr} AS {column}" for column, expr in family.dimensions)
    sums = ", ".join(f"{expr} AS {column}" for column, expr in MEASURES)
    table = family.table(level)
    if not family.sketches:
        return (
            f"INSERT INTO {table} ({', '.join(family.columns)}) "
            f"SELECT %(tenant)s, date_trunc('{level}', start_time, 'UTC') AS bucket, {base_dims}, {sums} "
            f"FROM usage_llmcall WHERE tenant_id = %(tenant)s AND {ranges_sql} "
            f"GROUP BY bucket, {dims}"
        )
    bins = ", ".join(f"{sketch.BUCKET_SQL.format(column=raw)} AS {column}" for column, raw in SKETCHES)
    raw_measures = ", ".join(
        column
        for column in (
            "status",
            "cost_usd",
            "input_tokens",
            "output_tokens",
            "cache_read_tokens",
            "cache_write_tokens",
            "reasoning_tokens",
            "cache_savings_usd",
        )
        if column not in family.dimension_columns
    )
    # One row per bucket and dimensions from each of three parts (the sums, and each sketch built
    # from per-bin counts), put together by a last GROUP BY: no join, whose plan would depend on
    # statistics a fresh partition does not have yet.
    no_sums = ", ".join("NULL" for _ in MEASURES)
    parts = [
        f"SELECT bucket, {dims}, {sums}, {', '.join(f'NULL::bytea AS {column}' for column, _ in SKETCHES)} "
        f"FROM base GROUP BY bucket, {dims}"
    ]
    for index, (column, _raw) in enumerate(SKETCHES):
        others = ["NULL"] * len(SKETCHES)
        others[index] = f"string_agg(int2send({column}) || int4send(n), ''::bytea ORDER BY {column})"
        parts.append(
            f"SELECT bucket, {dims}, {no_sums}, {', '.join(others)} "
            f"FROM (SELECT bucket, {dims}, {column}, count(*)::int AS n FROM base "
            f"WHERE {column} IS NOT NULL GROUP BY bucket, {dims}, {column}) AS bins GROUP BY bucket, {dims}"
        )
    measures = ", ".join(f"max({column})" for column in MEASURE_COLUMNS)
    sketches = ", ".join(f"coalesce(string_agg({column}, ''::bytea), ''::bytea)" for column, _ in SKETCHES)
    return (
        f"WITH base AS MATERIALIZED ("
        f"SELECT date_trunc('{level}', start_time, 'UTC') AS bucket, {base_dims}, {raw_measures}, {bins} "
        f"FROM usage_llmcall WHERE tenant_id = %(tenant)s AND {ranges_sql}) "
        f"INSERT INTO {table} ({', '.join(family.columns)}) "
        f"SELECT %(tenant)s, bucket, {dims}, {measures}, {sketches} "
        f"FROM ({' UNION ALL '.join(parts)}) AS parts GROUP BY bucket, {dims}"
    )


def _delete(cursor: Any, family: Family, level: str, tenant_id: int, buckets: Sequence[datetime]) -> None:
    cursor.execute(
        f"DELETE FROM {family.table(level)} WHERE tenant_id = %s AND bucket = ANY(%s::timestamptz[])",
        [tenant_id, list(buckets)],
    )


def _recompute_from_raw(
    cursor: Any, family: Family, level: str, tenant_id: int, buckets: Sequence[datetime]
) -> None:
    """Buckets of `level` (given by their start) rebuilt from the raw calls."""
    _delete(cursor, family, level, tenant_id, buckets)
    where, params = _buckets_sql("start_time", level, buckets)
    cursor.execute(_from_raw_sql(family, level, where), params | {"tenant": tenant_id})


def _recompute_from_finer(
    cursor: Any,
    family: Family,
    level: str,
    finer: str,
    tenant_id: int,
    buckets: Sequence[datetime],
) -> None:
    """Buckets of `level` (given by their start) rebuilt as the merge of their `finer` buckets."""
    _delete(cursor, family, level, tenant_id, buckets)
    where, params = _buckets_sql("bucket", level, buckets)
    dims = ", ".join(family.dimension_columns)
    sums = ", ".join(f"sum({column})" for column in MEASURE_COLUMNS)
    select = f"date_trunc('{level}', bucket, 'UTC') AS coarse, {dims}, {sums}"
    source = f"FROM {family.table(finer)} WHERE tenant_id = %(tenant)s AND {where} GROUP BY coarse, {dims}"
    params |= {"tenant": tenant_id}
    if not family.sketches:
        cursor.execute(
            f"INSERT INTO {family.table(level)} ({', '.join(family.columns)}) "
            f"SELECT %(tenant)s, {select} {source}",
            params,
        )
        return
    concatenated = ", ".join(f"string_agg({column}, ''::bytea)" for column, _ in SKETCHES)
    cursor.execute(f"SELECT {select}, {concatenated} {source}", params)
    rows = cursor.fetchall()
    if not rows:
        return
    width = 2 + len(family.dimensions) + len(MEASURES) - 1  # index of the first sketch in a row
    merged = [sketch.merge_groups([row[width + i] for row in rows]) for i in range(len(SKETCHES))]
    with cursor.copy(f"COPY {family.table(level)} ({', '.join(family.columns)}) FROM STDIN") as copy:
        for index, row in enumerate(rows):
            copy.write_row((tenant_id, *row[:width], *(m[index] for m in merged)))


def _hours(minutes: Iterable[datetime]) -> list[datetime]:
    return sorted({m.replace(minute=0, second=0, microsecond=0) for m in minutes})


def recompute_day(
    cursor: Any, tenant_id: int, day: date, minutes: Sequence[datetime], *, keep_minutes: bool
) -> None:
    """Recompute the marked `minutes` of one (tenant, day), their hours and the day, for every family.

    `keep_minutes`: the day is within minute retention (its minute partition exists); otherwise the
    hours are recomputed straight from raw rows.
    """
    day_start = [datetime(day.year, day.month, day.day, tzinfo=UTC)]
    hours = _hours(minutes)
    for family in FAMILIES:
        if keep_minutes:
            _recompute_from_raw(cursor, family, "minute", tenant_id, minutes)
            _recompute_from_finer(cursor, family, "hour", "minute", tenant_id, hours)
        else:
            _recompute_from_raw(cursor, family, "hour", tenant_id, hours)
        _recompute_from_finer(cursor, family, "day", "hour", tenant_id, day_start)


# --- The worker's loop ------------------------------------------------------------------------------


def day_lock_key(tenant_id: int, day: date) -> int:
    return _LOCK_PREFIX | (tenant_id << 20) | (day - date(1970, 1, 1)).days


@dataclass
class RollupRun:
    days: int = 0  # (tenant, day) pairs recomputed
    minutes: int = 0  # marked minutes taken
    skipped: int = 0  # pairs another worker held
    discarded: int = 0  # marks of days whose raw rows retention has dropped
    seconds: float = 0.0
    remaining: int = 0  # (tenant, day) pairs still marked when the run stopped


# A marked minute is ready to recompute when it has settled (its oldest mark is `settle` seconds old)
# or when few exports marked it. Recomputing reads every call of the minute, so a minute that keeps
# receiving calls is not rebuilt at every tick: at 20,000 calls/s into one tenant, a 10-s tick would
# rebuild the open minute six times (0.2 + 0.4 + ... + 1.2 million rows: 4.2 million rows a minute,
# more than one core reads), while waiting 30 s rebuilds it about twice (1.9 million). A minute with
# few marks is cheap whatever its age, so quiet tenants see their calls at the next tick.
_READY_MINUTES = (
    "SELECT tenant_id, minute, min(marked_at) AS oldest FROM usage_rollup_dirty {where} "
    "GROUP BY tenant_id, minute "
    "HAVING min(marked_at) <= now() - make_interval(secs => %(settle)s) OR count(*) <= %(eager)s"
)


def _pending(cursor: Any, limit: int, settle: float) -> list[tuple[int, date]]:
    ready = _READY_MINUTES.format(where="")
    cursor.execute(
        "SELECT tenant_id, (date_trunc('day', minute, 'UTC') AT TIME ZONE 'UTC')::date AS day "
        f"FROM ({ready}) AS ready GROUP BY 1, 2 ORDER BY min(oldest) LIMIT %(limit)s",
        {"settle": settle, "eager": settings.ROLLUP_EAGER_MARKS, "limit": limit},
    )
    return [(int(tenant), day) for tenant, day in cursor.fetchall()]


def _today() -> date:
    return timezone.now().astimezone(UTC).date()


def process_dirty(
    *, time_budget: float | None = None, max_days: int | None = None, settle: float | None = None
) -> RollupRun:
    """Recompute marked buckets until none is ready or `time_budget` seconds have passed.

    `settle`: seconds a busy minute waits (ROLLUP_SETTLE_SECONDS by default; 0 takes every mark).
    """
    started = time.monotonic()
    settle = settings.ROLLUP_SETTLE_SECONDS if settle is None else settle
    run = RollupRun()
    tick_start = timezone.now()
    with connection.cursor() as cursor:
        raw_days = existing_days(cursor, "usage_llmcall")
        minute_cutoff = _today() - timedelta(days=settings.ROLLUP_MINUTE_RETENTION_DAYS)
        done: set[tuple[int, date]] = set()
        while True:
            batch = [pair for pair in _pending(cursor, 500, settle) if pair not in done]
            if not batch:
                break
            minute_days = {day for _, day in batch if day >= minute_cutoff and day in raw_days}
            if minute_days:
                with transaction.atomic():
                    ensure_partitions(cursor, minute_days, ROLLUP_PARTITIONED_TABLES)
            for tenant_id, day in batch:
                done.add((tenant_id, day))
                if time_budget is not None and time.monotonic() - started > time_budget:
                    break
                if max_days is not None and run.days >= max_days:
                    break
                _process_pair(cursor, run, tenant_id, day, raw_days, minute_cutoff, settle)
            else:
                continue
            break
        cursor.execute(
            "SELECT count(*) FROM (SELECT DISTINCT tenant_id, date_trunc('day', minute, 'UTC') "
            "FROM usage_rollup_dirty) AS pairs"
        )
        run.remaining = int(cursor.fetchone()[0])
        _advance_watermark(cursor, tick_start)
    run.seconds = time.monotonic() - started
    return run


def _process_pair(
    cursor: Any,
    run: RollupRun,
    tenant_id: int,
    day: date,
    raw_days: set[date],
    minute_cutoff: date,
    settle: float,
) -> None:
    day_start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    with transaction.atomic():
        cursor.execute("SELECT pg_try_advisory_xact_lock(%s)", [day_lock_key(tenant_id, day)])
        if not cursor.fetchone()[0]:
            run.skipped += 1
            return
        # One statement, one snapshot: every mark it deletes was committed before it started, so the
        # recompute below (a later snapshot) sees the calls those marks stand for.
        ready = _READY_MINUTES.format(
            where="WHERE tenant_id = %(tenant)s AND minute >= %(start)s AND minute < %(end)s"
        )
        cursor.execute(
            "DELETE FROM usage_rollup_dirty WHERE tenant_id = %(tenant)s "
            "AND minute >= %(start)s AND minute < %(end)s "
            f"AND minute IN (SELECT minute FROM ({ready}) AS ready) RETURNING minute",
            {
                "tenant": tenant_id,
                "start": day_start,
                "end": day_start + timedelta(days=1),
                "settle": settle,
                "eager": settings.ROLLUP_EAGER_MARKS,
            },
        )
        minutes = sorted({row[0] for row in cursor.fetchall()})
        if not minutes:
            return
        if day not in raw_days:
            run.discarded += len(minutes)
            return
        recompute_day(cursor, tenant_id, day, minutes, keep_minutes=day >= minute_cutoff)
        run.days += 1
        run.minutes += len(minutes)


def _advance_watermark(cursor: Any, tick_start: datetime) -> None:
    """Everything marked before the oldest mark still waiting (or this run's start) is rolled up."""
    cursor.execute(
        "INSERT INTO usage_workerstate (key, value, updated_at) "
        "SELECT %(key)s, to_jsonb(least(%(start)s::timestamptz, "
        "(SELECT min(marked_at) FROM usage_rollup_dirty))), now() "
        "ON CONFLICT (key) DO UPDATE SET value = to_jsonb(greatest("
        "(usage_workerstate.value #>> '{}')::timestamptz, (EXCLUDED.value #>> '{}')::timestamptz)), "
        "updated_at = now()",
        {"key": WATERMARK_KEY, "start": tick_start},
    )


def watermark() -> datetime | None:
    """Every call ingested before this instant is in the rollups (None before the first run)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT value #>> '{}' FROM usage_workerstate WHERE key = %s", [WATERMARK_KEY])
        row = cursor.fetchone()
    return datetime.fromisoformat(row[0]) if row else None


# --- Retention --------------------------------------------------------------------------------------


@dataclass
class Maintenance:
    created: int
    dropped: list[str]
    deleted_hours: int
    deleted_days: int


def maintain(today: date | None = None) -> Maintenance:
    """Create partitions ahead, drop raw and minute partitions past retention, trim hour and day rollups."""
    from costline.usage.partitions import PARTITIONED_TABLES, drop_partitions_before

    today = today or _today()
    with connection.cursor() as cursor:
        with transaction.atomic():
            created = ensure_partitions(
                cursor, days_around(today, back=1, ahead=7), (*PARTITIONED_TABLES, *ROLLUP_PARTITIONED_TABLES)
            )
        with transaction.atomic():
            dropped = drop_partitions_before(cursor, today - timedelta(days=settings.RAW_RETENTION_DAYS))
        with transaction.atomic():
            dropped += drop_partitions_before(
                cursor,
                today - timedelta(days=settings.ROLLUP_MINUTE_RETENTION_DAYS),
                ROLLUP_PARTITIONED_TABLES,
            )
        deleted = []
        for level, days in (
            ("hour", settings.ROLLUP_HOUR_RETENTION_DAYS),
            ("day", settings.ROLLUP_DAY_RETENTION_DAYS),
        ):
            cutoff = datetime(today.year, today.month, today.day, tzinfo=UTC) - timedelta(days=days)
            count = 0
            for family in FAMILIES:
                with transaction.atomic():
                    cursor.execute(f"DELETE FROM {family.table(level)} WHERE bucket < %s", [cutoff])
                    count += cursor.rowcount
            deleted.append(count)
    return Maintenance(created, dropped, deleted[0], deleted[1])
