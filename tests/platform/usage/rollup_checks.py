"""Random calls and the rollups they must produce, computed straight from the raw rows in Python."""
# ruff: noqa: S608 - SQL names come from costline.usage.rollup's own families

from __future__ import annotations

import random
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from django.db import connection

from costline.tenancy.models import Organization, Project
from costline.usage.models import LLMCall
from costline.usage.partitions import day_of, ensure_partitions
from costline.usage.rollup import CALLS, MEASURE_COLUMNS, USERS, Family

FEATURES = ["search", "chat", "summarise", None]
MODELS = [("openai", "gpt-4o"), ("openai", "gpt-4o-mini"), ("anthropic", "claude-sonnet-4")]


def random_calls(
    org: Organization, rng: random.Random, count: int, start: datetime, span: timedelta
) -> list[LLMCall]:
    """`count` calls of `org` spread over [start, start + span): varied dimensions, latencies, gaps."""
    project = Project.objects.create(
        organization=org, name=f"Project {rng.random()}", slug=f"p{rng.randrange(10**9)}"
    )
    calls = []
    for _ in range(count):
        provider, model = rng.choice(MODELS)
        failed = rng.random() < 0.08
        unpriced = rng.random() < 0.05
        input_tokens = rng.randrange(10, 5000)
        cache_read = rng.choice([0, 0, rng.randrange(0, input_tokens)])
        calls.append(
            LLMCall(
                tenant=org,
                trace_id=f"{rng.getrandbits(128):032x}",
                span_id=f"{rng.getrandbits(64):016x}",
                start_time=start + timedelta(seconds=rng.uniform(0, span.total_seconds())),
                service=rng.choice(["api", "worker"]),
                environment=rng.choice(["production", "staging", ""]),
                project=rng.choice([project, None]),
                feature=rng.choice(FEATURES),
                user_id=rng.choice(["alice", "bob", "carol", None]),
                provider=provider,
                operation=rng.choice(["chat", "chat", "embeddings"]),
                model=model,
                input_tokens=input_tokens,
                output_tokens=rng.randrange(0, 2000),
                cache_read_tokens=cache_read or None,
                cache_write_tokens=rng.choice([None, rng.randrange(0, 100)]),
                reasoning_tokens=rng.choice([None, rng.randrange(0, 500)]),
                cost_usd=None if unpriced else Decimal(rng.randrange(0, 10**9)).scaleb(-12),
                cache_savings_usd=None if unpriced else Decimal(rng.randrange(0, 10**6)).scaleb(-12),
                latency_ms=None if rng.random() < 0.03 else rng.lognormvariate(6.5, 0.8),
                ttft_ms=None if rng.random() < 0.4 else rng.lognormvariate(5, 0.6),
                status="error" if failed else "ok",
            )
        )
    with connection.cursor() as cursor:
        ensure_partitions(cursor, {day_of(call.start_time) for call in calls})
    return LLMCall.objects.bulk_create(calls)


def truncate(moment: datetime, level: str) -> datetime:
    moment = moment.astimezone(UTC)
    if level == "minute":
        return moment.replace(second=0, microsecond=0)
    if level == "hour":
        return moment.replace(minute=0, second=0, microsecond=0)
    return moment.replace(hour=0, minute=0, second=0, microsecond=0)


def dimension_values(family: Family, call: LLMCall) -> tuple[Any, ...]:
    if family is USERS:
        return (call.user_id or "",)
    return (
        call.project_id or 0,
        call.service,
        call.environment,
        call.feature or "",
        call.provider,
        call.model,
        call.operation,
        call.status,
    )


def expected_sums(family: Family, level: str, calls: list[LLMCall]) -> dict[tuple[Any, ...], tuple[Any, ...]]:
    """(bucket, *dimensions) → the measures in MEASURE_COLUMNS order, summed exactly in Python."""
    sums: dict[tuple[Any, ...], list[Any]] = defaultdict(lambda: [0] * 8 + [Decimal(0), 0, Decimal(0)])
    for call in calls:
        row = sums[(truncate(call.start_time, level), *dimension_values(family, call))]
        row[0] += 1
        row[1] += call.status == "error"
        row[2] += call.cost_usd is None
        row[3] += call.input_tokens or 0
        row[4] += call.output_tokens or 0
        row[5] += call.cache_read_tokens or 0
        row[6] += call.cache_write_tokens or 0
        row[7] += call.reasoning_tokens or 0
        row[8] += call.cost_usd or 0
        row[9] += (call.cache_read_tokens or 0) > 0
        row[10] += call.cache_savings_usd or 0
    return {key: tuple(value) for key, value in sums.items()}


def stored_sums(family: Family, level: str, tenant_id: int) -> dict[tuple[Any, ...], tuple[Any, ...]]:
    dims = ", ".join(family.dimension_columns)
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT bucket, {dims}, {', '.join(MEASURE_COLUMNS)} FROM {family.table(level)} "
            "WHERE tenant_id = %s",
            [tenant_id],
        )
        width = 1 + len(family.dimensions)
        return {tuple(row[:width]): tuple(row[width:]) for row in cursor.fetchall()}


def stored_sketches(level: str, tenant_id: int) -> dict[tuple[Any, ...], tuple[bytes, bytes]]:
    dims = ", ".join(CALLS.dimension_columns)
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT bucket, {dims}, latency_sketch, ttft_sketch FROM {CALLS.table(level)} "
            "WHERE tenant_id = %s",
            [tenant_id],
        )
        return {tuple(row[:9]): (bytes(row[9]), bytes(row[10])) for row in cursor.fetchall()}


def snapshot(tenant_id: int) -> dict[str, list[tuple[Any, ...]]]:
    """Every rollup row of a tenant, for comparing two runs."""
    tables = {}
    with connection.cursor() as cursor:
        for family in (CALLS, USERS):
            for level in ("minute", "hour", "day"):
                cursor.execute(
                    f"SELECT * FROM {family.table(level)} WHERE tenant_id = %s ORDER BY 1, 2, 3, 4, 5, 6",
                    [tenant_id],
                )
                tables[family.table(level)] = sorted(
                    (
                        tuple(bytes(v) if isinstance(v, memoryview) else v for v in row)
                        for row in cursor.fetchall()
                    ),
                    key=repr,
                )
    return tables
