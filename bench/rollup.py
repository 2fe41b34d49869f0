#!/usr/bin/env python
"""Rollup benchmark: how fast workers aggregate calls, and how fast 30-day usage queries answer.

1. Fills a database of its own (`costline_bench_rollup` on DATABASE_URL's server, or the embedded
   one) with N calls (default 10 million) over 30 days for 20 tenants, written straight into the raw
   table with COPY, with the dirty marks the collector would have written. Tenants differ in size
   (Zipf), features, models, users and latency; traffic follows the working day.
2. Backfill: rolls everything up with W worker processes running the worker's own `process_dirty`,
   and reports calls aggregated per second.
3. Live: 20,000 calls/s in real time for 3 minutes, in exports of 1,000 calls that mark their minutes
   as the collector does, while a ticker process runs the rollup tick every 10 s (beat and a worker).
   Rollups keep up when the worker is busy less than all the time and the watermark (what the API
   calls `complete_through`) stays within a minute of the clock; the table says how far it fell behind.
4. Queries: starts the web app (gunicorn) and times GET /api/v1/usage over the last 30 days, grouped
   by model and by feature, with the default metrics (latency p95 included), for the largest tenant
   and a median one: p50/p95 over R requests each.

    .venv/bin/python bench/rollup.py                        # 10 million calls, 2 workers, 50 requests
    .venv/bin/python bench/rollup.py --calls 1000000        # a quicker look
    .venv/bin/python bench/rollup.py --reuse                # keep the data of the last run (steps 3, 4)

Targets (issue 3): rollups keep up with 20,000 calls/s of ingest; the 30-day queries answer in under
150 ms p95 at 10 million calls.
"""

from __future__ import annotations

import argparse
import io
import logging
import multiprocessing
import os
import secrets
import socket
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "platform"), str(ROOT)]
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "costline.settings")

COLUMNS = (
    "tenant_id, trace_id, span_id, start_time, parent_span_id, service, environment, project_id, feature, "
    "feature_source, user_id, provider, operation, request_model, response_model, model, input_tokens, "
    "output_tokens, cache_read_tokens, cost_usd, cache_savings_usd, price_source, price_version, latency_ms, "
    "ttft_ms, streaming, status, emitter, emitter_kind"
)
# (provider, model, median latency ms, share of streaming calls); prices come from genai-prices.
CHAT_MODELS = [
    ("openai", "gpt-4o", 900, 0.7),
    ("openai", "gpt-4o-mini", 500, 0.7),
    ("openai", "gpt-4.1", 1100, 0.6),
    ("openai", "o3-mini", 4000, 0.3),
    ("anthropic", "claude-3-5-sonnet-latest", 1400, 0.8),
    ("anthropic", "claude-3-5-haiku-latest", 700, 0.8),
    ("gcp.gemini", "gemini-2.5-flash", 600, 0.5),
    ("mistral_ai", "mistral-large-latest", 1000, 0.4),
]
EMBEDDING_MODELS = [
    ("openai", "text-embedding-3-small", 80, 0.0),
    ("openai", "text-embedding-3-large", 120, 0.0),
]
FEATURE_NAMES = [
    "search", "chat", "summarise", "classify", "extract", "translate", "autocomplete", "support-reply",
    "code-review", "report", "tagging", "rerank", "draft-email", "qa", "insights",
]  # fmt: skip
HOUR_WEIGHTS = np.array(
    [2, 1, 1, 1, 1, 2, 4, 7, 10, 12, 12, 11, 10, 11, 12, 12, 11, 9, 7, 6, 5, 4, 3, 2], float
)


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --- Database -----------------------------------------------------------------------------------------


def prepare_database(name: str, reuse: bool) -> str:
    """Point Django at database `name` on the configured server (made afresh unless reused); its URL."""
    import django

    django.setup()
    import psycopg
    from django.conf import settings
    from django.core.management import call_command
    from django.db import connections

    db = settings.DATABASES["default"]
    host = str(db["HOST"])
    where = f"@/{name}?host={quote(host)}" if host.startswith("/") else f"@{host}:{db['PORT'] or 5432}/{name}"
    auth = quote(str(db["USER"])) + (f":{quote(str(db['PASSWORD']))}" if db["PASSWORD"] else "")
    url = f"postgres://{auth}{where}"
    admin = {"dbname": "postgres", "user": db["USER"], "password": db["PASSWORD"] or None, "host": host}
    if db["PORT"]:
        admin["port"] = db["PORT"]
    with psycopg.connect(**admin, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone()
        if exists and not reuse:
            conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        if not exists or not reuse:
            conn.execute(f'CREATE DATABASE "{name}"')
    connections.close_all()
    db["NAME"] = name
    os.environ["DATABASE_URL"] = url
    call_command("migrate", verbosity=0)
    return url


# --- Data ---------------------------------------------------------------------------------------------


class Tenant:
    def __init__(self, rng: np.random.Generator, index: int, calls: int) -> None:
        from costline.tenancy.actions import create_organization
        from costline.tenancy.models import Project

        self.org = create_organization(f"Bench tenant {index + 1}")
        self.calls = calls
        projects = [
            Project.objects.create(organization=self.org, name=f"Project {p + 1}", slug=f"project-{p + 1}")
            for p in range(int(rng.integers(1, 5)))
        ]
        count = int(rng.integers(4, len(FEATURE_NAMES) + 1))
        names = rng.choice(FEATURE_NAMES, size=count, replace=False)
        # Each feature belongs to a project and a service, and uses one to three models.
        self.features = []
        for name in names:
            project = projects[int(rng.integers(len(projects)))]
            models = [
                CHAT_MODELS[i]
                for i in rng.choice(len(CHAT_MODELS), size=int(rng.integers(1, 4)), replace=False)
            ]
            if name in ("search", "rerank", "tagging"):
                models = [EMBEDDING_MODELS[int(rng.integers(len(EMBEDDING_MODELS)))], *models[:1]]
            self.features.append((str(name), project.id, f"{project.slug}-api", models))
        self.feature_weights = rng.zipf(1.6, size=len(self.features)).astype(float)
        self.feature_weights /= self.feature_weights.sum()
        self.users = [f"user-{u:05d}" for u in range(int(rng.integers(20, 2000)))]


def unit_prices() -> dict[str, tuple[float, float, float]]:
    """$/token for input, output and cache reads of every bench model, from genai-prices."""
    from costline.usage.pricing import catalogue_lookup

    prices = {}
    for provider, model, *_ in CHAT_MODELS + EMBEDDING_MODELS:
        entry = catalogue_lookup(provider, model)
        if entry is None:
            raise SystemExit(f"genai-prices does not know {provider}/{model}; pick another bench model")
        compiled = entry.compiled(datetime.now(UTC))
        rate = {
            k: float(compiled.unit_price(k) or 0) / 1e6
            for k in ("input_tokens", "output_tokens", "cache_read_tokens")
        }
        prices[model] = (
            rate["input_tokens"],
            rate["output_tokens"],
            rate["cache_read_tokens"] or rate["input_tokens"],
        )
    return prices


def make_rows(
    rng: np.random.Generator,
    tenant: Tenant,
    count: int,
    start: datetime,
    seconds: float,
    diurnal: bool,
    prices: dict[str, tuple[float, float, float]],
) -> bytes:
    """CSV rows (COPY format) of `count` calls of `tenant` within [start, start + seconds)."""
    import pandas as pd

    if diurnal:
        days = rng.integers(0, int(seconds // 86400), size=count)
        hours = rng.choice(24, size=count, p=HOUR_WEIGHTS / HOUR_WEIGHTS.sum())
        offsets = days * 86400 + hours * 3600 + rng.uniform(0, 3600, size=count)
    else:
        offsets = rng.uniform(0, seconds, size=count)
    starts = pd.to_datetime(start.timestamp() + offsets, unit="s", utc=True)
    feature_index = rng.choice(len(tenant.features), size=count, p=tenant.feature_weights)
    columns = {key: np.empty(count, dtype=object) for key in ("feature", "service", "provider", "model")}
    project_id = np.zeros(count, dtype=np.int64)
    median_latency = np.zeros(count)
    stream_share = np.zeros(count)
    for index, (name, project, service, models) in enumerate(tenant.features):
        rows = np.flatnonzero(feature_index == index)
        columns["feature"][rows], columns["service"][rows], project_id[rows] = name, service, project or 0
        # A feature's first model takes most of its traffic, the others the rest.
        weights = np.array([0.7, 0.2, 0.1][: len(models)])
        picks = rng.choice(len(models), size=rows.size, p=weights / weights.sum())
        for m, (provider, model, latency, stream) in enumerate(models):
            chosen = rows[picks == m]
            columns["provider"][chosen], columns["model"][chosen] = provider, model
            median_latency[chosen], stream_share[chosen] = latency, stream
    model = columns["model"]
    embedding = np.isin(model, [m for _, m, *_ in EMBEDDING_MODELS])
    input_tokens = np.maximum(1, rng.lognormal(6.7, 1.0, size=count)).astype(np.int64)
    output_tokens = np.where(embedding, 0, np.maximum(1, rng.lognormal(5.3, 0.9, size=count))).astype(
        np.int64
    )
    cached = (rng.random(size=count) < 0.3) & ~embedding
    cache_read = np.where(cached, (input_tokens * rng.uniform(0.2, 0.9, size=count)).astype(np.int64), 0)
    failed = rng.random(size=count) < 0.02
    rates = np.array([prices[m] for m in model])
    cost = np.where(
        failed,
        0.0,
        (input_tokens - cache_read) * rates[:, 0] + cache_read * rates[:, 2] + output_tokens * rates[:, 1],
    )
    savings = np.where(failed, 0.0, cache_read * (rates[:, 0] - rates[:, 2]))
    latency = median_latency * rng.lognormal(0.0, 0.55, size=count) * (1 + output_tokens / 800)
    streaming = rng.random(size=count) < stream_share
    ttft = np.where(streaming, latency * rng.uniform(0.08, 0.35, size=count), np.nan)
    users = np.array(tenant.users, dtype=object)[
        np.minimum(rng.zipf(1.3, size=count) - 1, len(tenant.users) - 1)
    ]
    frame = pd.DataFrame(
        {
            "tenant_id": tenant.org.id,
            "trace_id": [secrets.token_hex(16) for _ in range(count)],
            "span_id": [secrets.token_hex(8) for _ in range(count)],
            "start_time": starts,
            "parent_span_id": "",
            "service": columns["service"],
            "environment": np.where(rng.random(size=count) < 0.9, "production", "staging"),
            "project_id": np.where(project_id > 0, project_id, None),
            "feature": columns["feature"],
            "feature_source": "attribute",
            "user_id": np.where(rng.random(size=count) < 0.85, users, None),
            "provider": columns["provider"],
            "operation": np.where(embedding, "embeddings", "chat"),
            "request_model": model,
            "response_model": model,
            "model": model,
            "input_tokens": input_tokens,
            "output_tokens": np.where(embedding, None, output_tokens),
            "cache_read_tokens": np.where(cached, cache_read, None),
            "cost_usd": [f"{c:.12f}" for c in cost],
            "cache_savings_usd": [f"{s:.12f}" for s in savings],
            "price_source": "catalogue",
            "price_version": "bench",
            "latency_ms": latency.round(3),
            "ttft_ms": ttft.round(3),
            "streaming": np.where(streaming, "t", "f"),
            "status": np.where(failed, "error", "ok"),
            "emitter": "bench",
            "emitter_kind": "otel",
        }
    )
    buffer = io.StringIO()
    frame.to_csv(buffer, header=False, index=False, date_format="%Y-%m-%d %H:%M:%S.%f+00")
    return buffer.getvalue().encode()


def copy_rows(payload: bytes) -> None:
    from django.db import connection

    with (
        connection.cursor() as cursor,
        cursor.copy(
            f"COPY usage_llmcall ({COLUMNS}) FROM STDIN (FORMAT csv, FORCE_NOT_NULL (parent_span_id))"
        ) as copy,
    ):
        copy.write(payload)


def ensure_partitions_for(start: datetime, end: datetime) -> None:
    from django.db import connection

    from costline.usage.partitions import PARTITIONED_TABLES, ROLLUP_PARTITIONED_TABLES, ensure_partitions

    days = {(start + timedelta(days=i)).date() for i in range((end - start).days + 2)}
    with connection.cursor() as cursor:
        ensure_partitions(cursor, days, (*PARTITIONED_TABLES, *ROLLUP_PARTITIONED_TABLES))


def generate(total: int, tenant_count: int, days: int, seed: int) -> list[Tenant]:
    from django.db import connection

    rng = np.random.default_rng(seed)
    weights = 1 / np.arange(1, tenant_count + 1) ** 0.9  # tenant sizes: Zipf-like
    sizes = np.floor(weights / weights.sum() * total).astype(int)
    sizes[0] += total - sizes.sum()
    tenants = [Tenant(rng, i, int(n)) for i, n in enumerate(sizes)]
    prices = unit_prices()
    end = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    start = end - timedelta(days=days)
    ensure_partitions_for(start, end)
    written, began, chunk = 0, time.monotonic(), 250_000
    for tenant in tenants:
        left = tenant.calls
        while left:
            n = min(chunk, left)
            copy_rows(make_rows(rng, tenant, n, start, days * 86400, True, prices))
            left -= n
            written += n
            rate = written / (time.monotonic() - began)
            say(f"  generated {written:>11,} / {total:,} calls ({rate:,.0f}/s)")
    say("  marking every minute for the rollups, as the collector would have ...")
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO usage_rollup_dirty (tenant_id, minute) "
            "SELECT DISTINCT tenant_id, date_trunc('minute', start_time, 'UTC') FROM usage_llmcall"
        )
        cursor.execute("ANALYZE")
    return tenants


# --- Rollups -------------------------------------------------------------------------------------------


def _worker(url: str, ready: Any) -> None:
    os.environ["DATABASE_URL"] = url
    import django

    django.setup()
    from costline.usage.rollup import process_dirty

    ready.wait()
    while process_dirty().days:
        pass


def remaining_pairs() -> int:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM (SELECT DISTINCT tenant_id, date_trunc('day', minute, 'UTC') "
            "FROM usage_rollup_dirty) AS pairs"
        )
        return int(cursor.fetchone()[0])


def run_rollups(url: str, workers: int) -> float:
    """Wall seconds for `workers` processes to roll up everything marked."""
    context = multiprocessing.get_context("spawn")
    ready = context.Event()
    processes = [context.Process(target=_worker, args=(url, ready)) for _ in range(workers)]
    for process in processes:
        process.start()
    total = remaining_pairs()
    time.sleep(3)  # let them import Django
    began = time.monotonic()
    ready.set()
    while any(p.is_alive() for p in processes):
        time.sleep(2)
        left = remaining_pairs()
        say(f"  rolled up {total - left:>6,} / {total:,} tenant-days ({time.monotonic() - began:,.0f} s)")
    seconds = time.monotonic() - began
    if any(p.exitcode for p in processes):
        raise SystemExit("a rollup worker failed")
    return seconds


def _ticker(url: str, stop: Any, ticks: Any) -> None:
    """Beat and one worker: a rollup tick at every 10-s boundary, skipping boundaries a tick overran
    (beat's runs expire after one period)."""
    os.environ["DATABASE_URL"] = url
    import django

    django.setup()
    from costline.usage.rollup import process_dirty, watermark

    while not stop.is_set():
        time.sleep(10 - time.time() % 10)
        began = time.time()
        run = process_dirty(time_budget=40)
        mark = watermark()
        ticks.put((began, time.time() - began, run.minutes, mark.timestamp() if mark else began))


def live(url: str, tenants: list[Tenant], rate: int, minutes: int, seed: int) -> dict[str, float]:
    """`rate` calls/s in real time for `minutes`, in exports of 1,000 calls that mark their minutes in
    the same transaction (as the collector does), while a ticker process rolls up every 10 s."""
    from django.db import connection, transaction

    from costline.usage.rollup import MARK_DIRTY_SQL

    rng = np.random.default_rng(seed)
    prices = unit_prices()
    weights = np.array([t.calls for t in tenants], float)
    weights /= weights.sum()
    now = datetime.now(UTC)
    ensure_partitions_for(now - timedelta(days=1), now + timedelta(minutes=minutes + 5))
    context = multiprocessing.get_context("spawn")
    stop, queue = context.Event(), context.Queue()
    ticker = context.Process(target=_ticker, args=(url, stop, queue))
    ticker.start()
    written, began = 0, time.time()
    lags: list[float] = []
    for second in range(0, minutes * 60, 10):
        # The calls of the last 10 s (spans are exported once they end: start times lag the export).
        slot_start = datetime.now(UTC) - timedelta(seconds=12)
        counts = rng.multinomial(rate * 10, weights)
        for tenant, count in zip(tenants, counts.tolist(), strict=True):
            for offset in range(0, count, 1000):
                size = min(1000, count - offset)
                with transaction.atomic(), connection.cursor() as cursor:
                    copy_rows(make_rows(rng, tenant, size, slot_start, 10.0, False, prices))
                    minute = int(slot_start.timestamp()) // 60 * 60
                    cursor.execute(MARK_DIRTY_SQL, [tenant.org.id, [minute, minute + 60]])
                written += size
        say(f"  {second + 10:>4} s: {written:,} calls written ({written / (time.time() - began):,.0f}/s)")
        pause = began + second + 10 - time.time()
        if pause > 0:
            time.sleep(pause)
    writing = time.time() - began
    # Drain: calls written last are visible once the watermark passes the end of writing.
    finished = time.time()
    deadline = finished + 180
    ticks: list[tuple[float, float, int, float]] = []
    while time.time() < deadline:
        tick = queue.get(timeout=60)
        ticks.append(tick)
        if tick[3] >= finished:
            break
    stop.set()
    while not queue.empty():
        ticks.append(queue.get())
    ticker.join(timeout=60)
    for tick_start, seconds, _minutes, mark in ticks:
        lags.append(tick_start + seconds - mark)
    durations = [seconds for _, seconds, _, _ in ticks]
    return {
        "rate": written / writing,
        "ticks": len(ticks),
        "tick_mean": statistics.mean(durations),
        "tick_max": max(durations),
        "busy": sum(durations) / (ticks[-1][0] + ticks[-1][1] - ticks[0][0]),
        "lag_max": max(lags),
        "drained_after": ticks[-1][0] + ticks[-1][1] - finished,
    }


# --- Queries -------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def time_queries(url: str, tenants: list[Tenant], requests: int) -> list[tuple[str, str, int, float, float]]:
    import httpx

    from costline.tenancy.actions import issue_api_token

    port = free_port()
    env = {**os.environ, "DATABASE_URL": url}
    web = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "costline.wsgi:application", "--workers", "2",
         "--bind", f"127.0.0.1:{port}"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    results = []
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{port}/api/v1/schema/", timeout=2)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.3)
        ranked = sorted(tenants, key=lambda t: t.calls, reverse=True)
        now = datetime.now(UTC)
        for label, tenant in (("largest", ranked[0]), ("median", ranked[len(ranked) // 2])):
            token = issue_api_token(tenant.org, "bench").plaintext
            with httpx.Client(
                base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {token}"}
            ) as client:
                for group in ("model", "feature"):
                    params = {
                        "from": (now - timedelta(days=30)).isoformat(),
                        "to": now.isoformat(),
                        "group_by": group,
                    }
                    timings = []
                    for attempt in range(requests + 3):
                        began = time.perf_counter()
                        response = client.get("/api/v1/usage", params=params, timeout=30)
                        elapsed = time.perf_counter() - began
                        response.raise_for_status()
                        if attempt >= 3:  # the first requests warm connections and caches
                            timings.append(elapsed * 1000)
                    series = len(response.json()["series"])
                    p50 = statistics.median(timings)
                    p95 = statistics.quantiles(timings, n=20)[-1]
                    results.append((f"{label} tenant ({tenant.calls:,} calls)", group, series, p50, p95))
                    say(f"  {label} tenant by {group}: p50 {p50:.1f} ms, p95 {p95:.1f} ms")
    finally:
        web.terminate()
        web.wait(timeout=15)
    return results


def table_sizes() -> list[tuple[str, int, str]]:
    from django.db import connection

    rows = []
    with connection.cursor() as cursor:
        for table in ("usage_rollup_minute", "usage_rollup_hour", "usage_rollup_day", "usage_userrollup_day"):
            cursor.execute(
                "SELECT pg_size_pretty(pg_total_relation_size(%s::regclass) + coalesce((SELECT "
                "sum(pg_total_relation_size(inhrelid)) FROM pg_inherits WHERE inhparent = %s::regclass), 0))",
                [table, table],
            )
            size = str(cursor.fetchone()[0])
            cursor.execute(f"SELECT count(*) FROM {table}")  # noqa: S608 - our table names
            rows.append((table, int(cursor.fetchone()[0]), size))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=10_000_000)
    parser.add_argument("--tenants", type=int, default=20)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--workers", type=int, default=2, help="rollup worker processes (default 2)")
    parser.add_argument("--requests", type=int, default=50, help="timed requests per query (default 50)")
    parser.add_argument("--live-rate", type=int, default=20_000, help="calls/s of the live stream")
    parser.add_argument("--live-minutes", type=int, default=3, help="how long the live stream runs")
    parser.add_argument("--database", default="costline_bench_rollup")
    parser.add_argument("--reuse", action="store_true", help="keep the data of the last run")
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()

    logging.getLogger("httpx").setLevel(logging.WARNING)
    url = prepare_database(args.database, args.reuse)
    from costline.tenancy.models import Organization
    from costline.usage.models import LLMCall

    backfill = None
    if args.reuse and Organization.objects.exists():
        say(f"reusing {args.database}")
        tenants = []
        for org in Organization.objects.order_by("id"):
            tenant = object.__new__(Tenant)
            tenant.org, tenant.calls = org, LLMCall.objects.filter(tenant_id=org.id).count()
            tenants.append(tenant)
    else:
        say(
            f"1/4 writing {args.calls:,} calls over {args.days} days for {args.tenants} tenants "
            f"into {args.database}"
        )
        began = time.monotonic()
        tenants = generate(args.calls, args.tenants, args.days, args.seed)
        say(f"  written in {time.monotonic() - began:,.0f} s")
        say(f"2/4 backfill: rolling up with {args.workers} worker processes")
        backfill = run_rollups(url, args.workers)
        # Fresh tables have no statistics until autovacuum analyses them (and some servers run it
        # off): the queries below would be planned for empty tables.
        from django.db import connection

        with connection.cursor() as cursor:
            cursor.execute("ANALYZE")
    calls = sum(t.calls for t in tenants)
    if backfill is None:
        # Reused tenants lack the generator's profiles: the live minute gets plain ones.
        for tenant in tenants:
            tenant.features = [("chat", None, "api", CHAT_MODELS[:3])]
            tenant.feature_weights = np.array([1.0])
            tenant.users = [f"user-{u}" for u in range(50)]
    say(f"3/4 live: {args.live_rate:,} calls/s for {args.live_minutes} minutes, a tick every 10 s")
    stream = live(url, tenants, args.live_rate, args.live_minutes, args.seed + 1)
    say(f"4/4 queries: {args.requests} requests each")
    queries = time_queries(url, tenants, args.requests)

    print()
    print(f"Rollups and usage queries: {calls:,} calls, {len(tenants)} tenants, {args.days} days, "
          f"{os.cpu_count()} CPUs")  # fmt: skip
    print()
    print("| step | result |")
    print("|---|---|")
    if backfill is not None:
        print(
            f"| backfill, {args.workers} workers | {backfill:,.1f} s, "
            f"**{calls / backfill:,.0f} calls/s** aggregated |"
        )
    print(
        f"| live, {stream['rate']:,.0f} calls/s for {args.live_minutes} min, tick every 10 s | "
        f"{stream['ticks']} ticks, mean {stream['tick_mean']:.1f} s, worst {stream['tick_max']:.1f} s; "
        f"worker busy {stream['busy']:.0%}; rollups at most **{stream['lag_max']:.0f} s** behind; "
        f"last call visible {stream['drained_after']:.0f} s after it was written |"
    )
    print()
    print("| GET /api/v1/usage, last 30 days | group_by | series | p50 ms | p95 ms |")
    print("|---|---|---|---|---|")
    for label, group, series, p50, p95 in queries:
        print(f"| {label} | {group} | {series} | {p50:.1f} | **{p95:.1f}** |")
    print()
    print("| rollup table | rows | size |")
    print("|---|---|---|")
    for name, rows, size in table_sizes():
        print(f"| {name} | {rows:,} | {size} |")


if __name__ == "__main__":
    main()
