"""The collector's sink: authenticate ingest keys and store normalised exports in PostgreSQL.

An export is written in one transaction and acknowledged only after it commits. Calls are priced and
their rows built before the transaction; inside it, under a per-tenant advisory lock, the sink looks up
what the same traces and provider requests already stored (retries, wrappers, duplicates, pending
features), then COPYs the new rows. Retried exports change nothing: the primary key is (tenant, trace
id, span id, start time) and the lookup skips spans already stored.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Sequence
from datetime import date, datetime, timedelta
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from collector.pipeline import Pipeline, cpu_bound
from collector.records import Batch
from collector.server import CollectorServer
from collector.sink import SinkUnavailable, TenantRef, WriteResult
from costline.tenancy.keys import GATEWAY_KEY_PREFIX, INGEST_KEY_PREFIX, hash_secret
from costline.usage.partitions import day_of, ensure_partitions_async, existing_days_async, partition_name
from costline.usage.pricing import Override
from costline.usage.reconcile import (
    ContextUpdate,
    Plan,
    StoredCall,
    plan_duplicates,
    plan_nested,
    plan_root_updates,
)
from costline.usage.rollup import MARK_DIRTY_SQL
from costline.usage.rows import PreparedRows, TenantContext, ns_to_datetime

logger = logging.getLogger(__name__)

# Spans of one trace or one provider request lie close together in time; the lookups are bounded to
# this window around the export so that only a few daily partitions are searched.
LOOKUP_WINDOW = timedelta(days=1)
NS_PER_DAY = 86_400 * 1_000_000_000
NS_PER_MINUTE = 60 * 1_000_000_000
EPOCH_DAY = date(1970, 1, 1)
TENANT_CONTEXT_SECONDS = 10.0
# Lists of ids travel to PostgreSQL as one string joined by the ASCII unit separator and are split with
# string_to_array: binding a Python list of 1,000 strings costs milliseconds of per-element escaping.
SEPARATOR = chr(31)
LAST_USED_RESOLUTION_SECONDS = 60.0
ANALYZE_FIRST_AFTER_ROWS = 5_000
ANALYZE_GROWTH = 4

CALL_COLUMNS = (
    "tenant_id",
    "trace_id",
    "span_id",
    "start_time",
    "parent_span_id",
    "service",
    "environment",
    "project_id",
    "feature",
    "feature_source",
    "user_id",
    "session_id",
    "tags",
    "provider",
    "operation",
    "request_model",
    "response_model",
    "model",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
    "cost_usd",
    "cache_savings_usd",
    "emitter_cost_usd",
    "price_source",
    "price_version",
    "latency_ms",
    "ttft_ms",
    "streaming",
    "status",
    "error_type",
    "finish_reason",
    "response_id",
    "request_id",
    "emitter",
    "emitter_kind",
    "prompt_hash",
    "prefix_hash",
    "prompt_tokens",
    "prefix_tokens",
    "prompt_simhash",
)
_COPY_CALLS = f"COPY usage_llmcall ({', '.join(CALL_COLUMNS)}) FROM STDIN"

_STORED_COLUMNS = (
    "trace_id, span_id, parent_span_id, start_time, emitter, emitter_kind, feature, feature_source, "
    "user_id, session_id, response_id, request_id, ttft_ms"
)


def tenant_lock_key(organization_id: int) -> int:
    # One advisory lock per tenant: exports of one tenant reconcile one at a time; tenants never wait
    # for each other. (Per-trace locks would need thousands of lock-table slots per export.)
    return (0x434C << 48) | organization_id


def conninfo_from_settings(database: dict[str, Any]) -> str:
    """A libpq connection string for Django's DATABASES['default'] entry."""
    params: dict[str, Any] = {
        "dbname": database.get("NAME"),
        "user": database.get("USER") or None,
        "password": database.get("PASSWORD") or None,
        "host": database.get("HOST") or None,
        "port": database.get("PORT") or None,
    }
    params.update(database.get("OPTIONS") or {})
    return psycopg.conninfo.make_conninfo(**{k: v for k, v in params.items() if v is not None})


class PostgresSink:
    """Implements `collector.sink.Sink` on the platform's PostgreSQL."""

    def __init__(
        self,
        conninfo: str,
        *,
        pool_size: int = 4,
        key_cache_seconds: float = 10.0,
        connect_timeout: float = 5.0,
    ) -> None:
        self.pool = AsyncConnectionPool(
            conninfo,
            min_size=1,
            max_size=pool_size,
            open=False,
            timeout=connect_timeout,
            # No server-side prepared statements: a generic plan cannot see how many ids a lookup
            # carries and may scan a whole day's partition instead of probing the primary key.
            kwargs={"autocommit": True, "prepare_threshold": None},
        )
        self.key_cache_seconds = key_cache_seconds
        self._keys: dict[str, tuple[TenantRef | None, float]] = {}
        self._last_used: dict[int, float] = {}
        self._contexts: dict[int, TenantContext] = {}
        self._partition_days: set[date] = set()
        self._partition_lock = asyncio.Lock()
        self._rows_since_analyze: dict[date, int] = {}
        self._analyze_at: dict[date, int] = {}
        self._analyzing: asyncio.Task[None] | None = None

    async def open(self) -> None:
        await self.pool.open(wait=False)
        try:
            await self._refresh_partition_days()
        except (psycopg.OperationalError, PoolTimeout):
            logger.warning("PostgreSQL is not reachable yet; exports will be answered 503 until it is")

    async def _refresh_partition_days(self) -> None:
        async with self.pool.connection() as conn:
            self._partition_days = await existing_days_async(conn)

    async def close(self) -> None:
        await self.pool.close()

    # --- authentication ------------------------------------------------------------------------

    async def authenticate(self, secret: str) -> TenantRef | None:
        """An ingest key's tenant; a gateway key's too, which the gateway exports its spans with."""
        if secret.startswith(INGEST_KEY_PREFIX):
            table = "tenancy_ingestkey"
        elif secret.startswith(GATEWAY_KEY_PREFIX):
            table = "tenancy_gatewaykey"
        else:
            return None
        digest = hash_secret(secret)
        now = time.monotonic()
        cached = self._keys.get(digest)
        if cached is not None and cached[1] > now:
            return cached[0]
        try:
            async with self.pool.connection() as conn:
                cur = await conn.execute(
                    f"SELECT id, organization_id, project_id FROM {table} "  # noqa: S608 - one of two names
                    "WHERE secret_hash = %s AND revoked_at IS NULL",
                    [digest],
                )
                row = await cur.fetchone()
                tenant = (
                    TenantRef(organization_id=row[1], ingest_key_id=row[0], project_id=row[2])
                    if row
                    else None
                )
                # The gateway stamps its keys' last use itself; the collector only its ingest keys'.
                if (
                    tenant is not None
                    and table == "tenancy_ingestkey"
                    and now - self._last_used.get(tenant.ingest_key_id, -1e9) > LAST_USED_RESOLUTION_SECONDS
                ):
                    self._last_used[tenant.ingest_key_id] = now
                    await conn.execute(
                        "UPDATE tenancy_ingestkey SET last_used_at = now() WHERE id = %s",
                        [tenant.ingest_key_id],
                    )
        except (psycopg.OperationalError, PoolTimeout) as exc:
            raise SinkUnavailable(f"cannot reach PostgreSQL to check the ingest key: {exc}") from exc
        self._keys[digest] = (tenant, now + self.key_cache_seconds)
        return tenant

    # --- per-tenant context ----------------------------------------------------------------------

    async def _context(self, conn: psycopg.AsyncConnection[Any], organization_id: int) -> TenantContext:
        ctx = self._contexts.get(organization_id)
        if ctx is not None and time.monotonic() - ctx.loaded_at < TENANT_CONTEXT_SECONDS:
            return ctx
        cur = await conn.execute(
            "SELECT id, model_pattern, provider, effective_from, updated_at, input_per_mtok, "
            "output_per_mtok, cache_read_per_mtok, cache_write_per_mtok, discount_percent "
            "FROM usage_priceoverride "
            "WHERE tenant_id = %s ORDER BY effective_from",
            [organization_id],
        )
        overrides = [Override(*row) for row in await cur.fetchall()]
        cur = await conn.execute(
            "SELECT id, slug, service_patterns FROM tenancy_project WHERE organization_id = %s ORDER BY id",
            [organization_id],
        )
        by_slug: dict[str, int] = {}
        patterns: list[tuple[str, int]] = []
        for project_id, slug, service_patterns in await cur.fetchall():
            by_slug[slug.lower()] = project_id
            patterns.extend((p, project_id) for p in service_patterns or [])
        ctx = TenantContext(overrides, by_slug, patterns)
        self._contexts[organization_id] = ctx
        return ctx

    def forget_tenant_context(self, organization_id: int | None = None) -> None:
        """Drop cached overrides and projects (tests; a settings change is also picked up in 10 s)."""
        if organization_id is None:
            self._contexts.clear()
        else:
            self._contexts.pop(organization_id, None)

    async def _create_projects(
        self, conn: psycopg.AsyncConnection[Any], organization_id: int, slugs: set[str]
    ) -> None:
        """Projects named by a `costline.project` attribute that do not exist yet are created."""
        for slug in sorted(slugs):
            await conn.execute(
                "INSERT INTO tenancy_project (organization_id, name, slug, service_patterns, created_at) "
                "VALUES (%s, %s, %s, '[]'::jsonb, now()) ON CONFLICT (organization_id, slug) DO NOTHING",
                [organization_id, slug, slug],
            )
        self.forget_tenant_context(organization_id)

    # --- partitions -------------------------------------------------------------------------------

    async def _ensure_partitions(self, days: set[date]) -> None:
        missing = days - self._partition_days
        if not missing:
            return
        async with self._partition_lock:
            missing = days - self._partition_days
            if missing:
                async with self.pool.connection() as conn:
                    await ensure_partitions_async(conn, missing)
                    self._partition_days = await existing_days_async(conn)

    def _count_rows(self, starts: list[int]) -> None:
        """Keep statistics of fresh partitions current.

        A day's partition starts without statistics, and until autovacuum analyses it the planner
        mistakes a full scan of the tenant's rows for a cheap one (seen: 180 ms instead of 3 ms per
        lookup at 400,000 rows). The collector analyses a partition itself after 5,000 rows, then
        each time its row count has grown fourfold; ANALYZE samples and does not block inserts.
        """
        for number, count in Counter(start_ns // NS_PER_DAY for start_ns in starts).items():
            day = EPOCH_DAY + timedelta(days=number)
            self._rows_since_analyze[day] = self._rows_since_analyze.get(day, 0) + count
        if self._analyzing is not None and not self._analyzing.done():
            return
        for day, count in self._rows_since_analyze.items():
            if count >= self._analyze_at.get(day, ANALYZE_FIRST_AFTER_ROWS):
                self._analyze_at[day] = count * ANALYZE_GROWTH
                self._analyzing = asyncio.create_task(self._analyze(day))
                break

    async def _analyze(self, day: date) -> None:
        try:
            async with self.pool.connection() as conn:
                for table in ("usage_llmcall", "usage_traceroot"):
                    await conn.execute(f'ANALYZE "{partition_name(table, day)}"')
        except psycopg.Error as exc:
            logger.warning("could not analyse the partitions of %s: %s", day, exc)

    def _days_between(self, lo: datetime, hi: datetime) -> list[date]:
        """The existing daily partitions that overlap [lo, hi)."""
        first, last = day_of(lo), day_of(hi)
        return sorted(d for d in self._partition_days if first <= d <= last)

    # --- writing -----------------------------------------------------------------------------------

    async def write(self, tenant: TenantRef, batch: Batch) -> WriteResult:
        if not batch.calls and not batch.roots:
            return WriteResult(stored_calls=0)
        try:
            day_numbers = {c.start_ns // NS_PER_DAY for c in batch.calls}
            day_numbers |= {r.start_ns // NS_PER_DAY for r in batch.roots if r.start_ns > 0}
            await self._ensure_partitions({EPOCH_DAY + timedelta(days=n) for n in day_numbers})
            async with self.pool.connection() as conn:
                ctx = await self._context(conn, tenant.organization_id)
                wanted = {
                    c.project_slug.lower() for c in batch.calls if c.project_slug
                } - ctx.project_by_slug.keys()
                if wanted:
                    await self._create_projects(conn, tenant.organization_id, wanted)
                    ctx = await self._context(conn, tenant.organization_id)
                # Pricing and row formatting are CPU work: done off the event loop and before the tenant
                # lock is taken, so the lock is held only for database round trips.
                rows = await cpu_bound(PreparedRows, batch, ctx, tenant)
                safe_roots = False
                for attempt in range(3):
                    try:
                        async with conn.transaction():
                            stored = await self._write_locked(conn, tenant, ctx, batch, rows, safe_roots)
                        self._count_rows([c.start_ns for c in batch.calls])
                        break
                    except psycopg.errors.UniqueViolation:
                        if safe_roots or attempt == 2:
                            raise
                        safe_roots = True  # a retried export met its own trace roots
                    except psycopg.errors.UndefinedTable:
                        # Retention dropped a partition this process still listed; relist and write again.
                        self._partition_days = await existing_days_async(conn)
                        if attempt == 2:
                            raise
        except (psycopg.OperationalError, PoolTimeout) as exc:
            raise SinkUnavailable(f"PostgreSQL is unavailable: {exc}") from exc
        return WriteResult(stored_calls=stored)

    async def _write_locked(
        self,
        conn: psycopg.AsyncConnection[Any],
        tenant: TenantRef,
        ctx: TenantContext,
        batch: Batch,
        rows: PreparedRows,
        safe_roots: bool,
    ) -> int:
        org = tenant.organization_id
        instants = [c.start_ns for c in batch.calls] + [r.start_ns for r in batch.roots if r.start_ns > 0]
        lo = ns_to_datetime(min(instants)) - LOOKUP_WINDOW
        hi = ns_to_datetime(max(instants)) + LOOKUP_WINDOW
        days = self._days_between(lo, hi)
        traces = sorted({c.trace_id for c in batch.calls} | {r.trace_id for r in batch.roots})

        # The roots go first, before the tenant's lock: their rows decide nothing in this transaction,
        # and a concurrent export that needs them is reconciled by whichever of the two locks later.
        if rows.root_payload:
            if safe_roots:
                await conn.cursor().executemany(_INSERT_ROOT, rows.root_rows)
            else:
                async with conn.cursor().copy(_COPY_ROOTS) as copy:
                    await copy.write(rows.root_payload)

        # One round trip: take the tenant's lock, then read (with a snapshot taken after the lock) the
        # stored calls of these traces and the tenant's known emitters.
        async with conn.pipeline() as pipeline:
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", [tenant_lock_key(org)])
            stored_cur = await _query_stored(
                conn, days, "trace_id = ANY(string_to_array(%s, chr(31)))", [SEPARATOR.join(traces)], org
            )
            emitters_cur = await conn.execute(
                "SELECT emitter FROM usage_tenantemitter WHERE tenant_id = %s", [org]
            )
            await pipeline.sync()
            stored = [StoredCall(*row) for row in await stored_cur.fetchall()] if stored_cur else []
            known_emitters = {row[0] for row in await emitters_cur.fetchall()}
        plan: Plan = plan_nested(batch.calls, stored)

        keyed: dict[str, set[str]] = {}
        for call in plan.insert:
            if call.provider_keys:
                keyed.setdefault(call.emitter, set()).update(call.provider_keys)
        rivals: list[StoredCall] = []
        for emitter, keys in keyed.items():
            # Only another instrumentation's report of the same request is a duplicate; the same
            # emitter's rows are never fetched (a busy emitter may reuse ids across traces).
            others = sorted((known_emitters | keyed.keys()) - {emitter})
            if others:
                joined = SEPARATOR.join(sorted(keys))
                cur = await _query_stored(
                    conn,
                    days,
                    "(response_id = ANY(string_to_array(%s, chr(31))) "
                    "OR request_id = ANY(string_to_array(%s, chr(31)))) AND emitter = ANY(%s)",
                    [joined, joined, others],
                    org,
                )
                rivals += [StoredCall(*row) for row in await cur.fetchall()] if cur else []
        if rivals:
            plan_duplicates(plan, rivals)
        plan_root_updates(plan, stored, batch.roots)

        pending = sorted({c.trace_id for c in plan.insert if c.feature_source is None})
        if pending:
            cur = await conn.execute(
                "SELECT DISTINCT ON (trace_id) trace_id, feature, user_id, session_id FROM usage_traceroot "
                "WHERE tenant_id = %s AND start_time >= %s AND start_time < %s "
                "AND trace_id = ANY(string_to_array(%s, chr(31)))",
                [org, lo, hi, SEPARATOR.join(pending)],
            )
            found = {row[0]: row for row in await cur.fetchall()}
            for call in plan.insert:
                root = found.get(call.trace_id)
                if call.feature_source is None and root is not None:
                    call.feature, call.feature_source = root[1], "root"
                    call.user_id = call.user_id or root[2]
                    call.session_id = call.session_id or root[3]

        new_emitters = sorted({c.emitter for c in plan.insert} - known_emitters)
        # The minutes whose rollups this transaction changes, marked in it: committed with the rows,
        # or not at all (costline.usage.rollup recomputes them).
        minutes = {c.start_ns // NS_PER_MINUTE for c in plan.insert}
        minutes |= {_minute_of(gone.start_time) for gone in plan.delete}
        minutes |= {_minute_of(update.stored.start_time) for update in plan.updates}
        if minutes or new_emitters:
            async with conn.pipeline():
                if minutes:
                    await conn.execute(MARK_DIRTY_SQL, [org, [m * 60 for m in sorted(minutes)]])
                for gone in plan.delete:
                    await conn.execute(
                        "DELETE FROM usage_llmcall WHERE tenant_id = %s AND trace_id = %s AND span_id = %s "
                        "AND start_time = %s",
                        [org, gone.trace_id, gone.span_id, gone.start_time],
                    )
                for update in plan.updates:
                    await conn.execute(_UPDATE_CONTEXT, _update_params(org, update))
                if new_emitters:
                    await conn.execute(
                        "INSERT INTO usage_tenantemitter (tenant_id, emitter, first_seen) "
                        "SELECT %s, e, now() FROM unnest(%s::varchar[]) AS e ON CONFLICT DO NOTHING",
                        [org, new_emitters],
                    )

        if plan.insert:
            async with conn.cursor().copy(_COPY_CALLS) as copy:
                await copy.write(rows.payload(plan.insert, ctx, tenant.project_id))
        return len(plan.insert)


_UPDATE_CONTEXT = (
    "UPDATE usage_llmcall SET "
    "feature = CASE WHEN feature_source IS NULL AND %(f)s::text IS NOT NULL THEN %(f)s ELSE feature END, "
    "feature_source = CASE WHEN feature_source IS NULL AND %(f)s::text IS NOT NULL "
    "THEN %(fs)s ELSE feature_source END, "
    "user_id = COALESCE(user_id, %(u)s), session_id = COALESCE(session_id, %(s)s), "
    "ttft_ms = COALESCE(ttft_ms, %(ttft)s) "
    "WHERE tenant_id = %(t)s AND trace_id = %(trace)s AND span_id = %(span)s AND start_time = %(at)s"
)


def _minute_of(moment: datetime) -> int:
    return int(moment.timestamp()) // 60


def _update_params(org: int, update: ContextUpdate) -> dict[str, Any]:
    s = update.stored
    return {
        "f": update.feature,
        "fs": update.feature_source,
        "u": update.user_id,
        "s": update.session_id,
        "ttft": update.ttft_ms,
        "t": org,
        "trace": s.trace_id,
        "span": s.span_id,
        "at": s.start_time,
    }


_INSERT_ROOT = (
    "INSERT INTO usage_traceroot (tenant_id, trace_id, start_time, feature, user_id, session_id) "
    "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING"
)
_COPY_ROOTS = (
    "COPY usage_traceroot (tenant_id, trace_id, start_time, feature, user_id, session_id) FROM STDIN"
)


async def _query_stored(
    conn: psycopg.AsyncConnection[Any], days: list[date], condition: str, params: Sequence[Any], org: int
) -> psycopg.AsyncCursor[Any] | None:
    """Send the query for stored calls of `org` matching `condition`, in the named daily partitions only.

    Naming the partitions (instead of a start_time range on the parent) leaves the planner one sensible
    index, the primary key or the provider-id index: a partition created minutes ago has no statistics
    yet, and with a time range the planner would walk the (tenant, start_time) index through the day.
    """
    if not days:
        return None
    parts = [
        f'SELECT {_STORED_COLUMNS} FROM "{partition_name("usage_llmcall", day)}" '  # noqa: S608 - names we generate
        f"WHERE tenant_id = %s AND ({condition})"
        for day in days
    ]
    values: list[Any] = []
    for _ in days:
        values.extend([org, *params])
    return await conn.execute(" UNION ALL ".join(parts), values)


def build_collector(*, host: str, http_port: int, grpc_port: int) -> CollectorServer:
    """The collector process: both OTLP receivers over this platform's PostgreSQL, configured by settings."""
    from django.conf import settings

    sink = PostgresSink(
        conninfo_from_settings(settings.DATABASES["default"]),
        pool_size=settings.COLLECTOR_MAX_CONCURRENT_WRITES + 1,
        key_cache_seconds=settings.COLLECTOR_KEY_CACHE_SECONDS,
    )
    pipeline = Pipeline(
        sink,
        retention_days=settings.RAW_RETENTION_DAYS,
        max_future_skew_seconds=settings.MAX_FUTURE_SKEW_SECONDS,
        max_concurrent=settings.COLLECTOR_MAX_CONCURRENT_WRITES,
        max_queued=settings.COLLECTOR_MAX_QUEUED,
    )
    server = CollectorServer(
        pipeline,
        host=host,
        http_port=http_port,
        grpc_port=grpc_port,
        max_body_bytes=settings.COLLECTOR_MAX_BODY_BYTES,
        retry_after_seconds=settings.COLLECTOR_RETRY_AFTER_SECONDS,
    )
    server.app.on_startup.append(sink.open)
    server.app.on_shutdown.append(sink.close)
    return server
