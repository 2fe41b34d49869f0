"""Self-hosted cost: a deployment's hourly price shared among the calls it served, the rest idle.

A self-hosted call (vLLM and other model servers) has no per-token price; its server costs money per
hour whether it works or not. A call occupies the server from its start for its latency (queueing,
prefill and decode alike); every second of the deployment's price is shared equally by the calls
running in it, so with continuous batching 8 calls running together for a second pay an eighth of it
each, and a call alone pays its seconds in full. Seconds with no call running are idle cost, kept per
deployment and minute (DeploymentMinute) and never charged to a call.

Each share is also split by the work the call was doing: prefill (from its arrival to its first token,
the time to first token that vLLM measures and the gateway or vLLM's span reports) or decode (from the
first token to the end). A call without a first-token time (an embedding, or a non-streaming call no
server span told about) is all prefill if it produced no output tokens, else all decode.

`decode_throughputs` measures each deployment's decode speed from the same calls: their output tokens
over the seconds in which at least one of them was decoding (what the advisor's self-hosting
break-even sizes GPUs by).

`price_settled(now)` (the Celery task `costline.usage.price_self_hosted`, every minute) re-prices the
calls that started in the last WINDOW_MINUTES minutes older than SETTLE_SECONDS (their spans have
arrived), from raw calls, so a run repeated, late or concurrent leaves the same costs; changed calls
mark their rollup minutes dirty, so the dashboards follow.
"""

from __future__ import annotations

import fnmatch
import logging
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from itertools import pairwise

from django.db import connection, transaction
from django.db.models import Max

from costline.usage.models import Deployment, DeploymentMinute
from costline.usage.rollup import mark_dirty

log = logging.getLogger(__name__)

SELF_HOSTED_SOURCE = "self_hosted"
MAX_CALL_SECONDS = 600  # a call is taken to occupy the server for at most ten minutes
SETTLE_SECONDS = 120  # a minute is priced once the spans of its calls have had two minutes to arrive
WINDOW_MINUTES = 15  # each run prices again the last quarter hour (late spans, a missed run)
CATCH_UP = timedelta(hours=6)  # the most one run prices of a deployment that fell behind
QUANTUM = Decimal("0.000000000001")  # the call table's 12 decimal places
# A deployment's free-text hardware ("1× NVIDIA H100", "2 vCPU") names a GPU: a maker, a stack, or a
# data-centre model (A100, H200, L40S, A10G, T4, MI300X...).
GPU_HARDWARE = re.compile(
    r"gpu|nvidia|cuda|rocm|instinct|\b(?:[abhl]\d{2,3}s?|a10g|t4|mi\d{3}x?|rtx)\b", re.IGNORECASE
)


@dataclass
class PricingRun:
    deployments: int = 0
    calls_priced: int = 0
    calls_changed: int = 0
    minutes: int = 0


@dataclass(frozen=True)
class _Call:
    trace_id: str
    span_id: str
    start: datetime
    start_s: float
    end_s: float
    first_token_s: float  # where its prefill ends and its decode starts (start_s ≤ it ≤ end_s)
    cost: Decimal | None
    prefill_cost: Decimal | None
    version: str | None


def _minute(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(second=0, microsecond=0)


def _calls(deployment: Deployment, start: datetime, end: datetime) -> list[_Call]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT trace_id, span_id, start_time, latency_ms, ttft_ms, output_tokens, model, cost_usd, "
            "prefill_cost_usd, price_version "
            "FROM usage_llmcall WHERE tenant_id = %s AND provider = %s AND start_time >= %s "
            "AND start_time < %s",
            [deployment.tenant_id, deployment.provider, start, end],
        )
        rows = cursor.fetchall()
    calls = []
    for trace_id, span_id, started, latency_ms, ttft_ms, output, model, cost, prefill, version in rows:
        if not fnmatch.fnmatchcase(model or "", deployment.model_pattern):
            continue
        start_s = started.timestamp()
        seconds = min(max(float(latency_ms or 0.0) / 1000.0, 0.0), MAX_CALL_SECONDS)
        if ttft_ms is not None:
            first = min(max(float(ttft_ms) / 1000.0, 0.0), seconds)
        else:
            first = 0.0 if output else seconds
        end_s, first_token_s = start_s + seconds, start_s + first
        calls.append(_Call(trace_id, span_id, started, start_s, end_s, first_token_s, cost, prefill, version))
    return calls


@dataclass(frozen=True)
class DecodeThroughput:
    """A deployment's measured decode speed over a window."""

    deployment: str  # its name
    hardware: str  # as recorded ("" when not)
    on_gpu: bool  # the hardware names a GPU (GPU_HARDWARE)
    output_tokens: int
    decode_seconds: float  # seconds in which at least one of its calls was decoding

    @property
    def tokens_per_s(self) -> float:
        return self.output_tokens / self.decode_seconds


# Seconds in which at least one decoding call ran: each call adds what it runs beyond the furthest end
# of the calls that started before it (in start order), so overlapping calls count their shared
# seconds once. Offsets from the window start keep the floats small.
_DECODE_SECONDS = """
WITH calls AS (
    SELECT extract(epoch FROM start_time - %(start)s)::float8 AS at,
           least(greatest(coalesce(latency_ms, 0)::float8 / 1000.0, 0.0), %(max_seconds)s) AS seconds,
           ttft_ms::float8 / 1000.0 AS ttft, output_tokens
    FROM usage_llmcall
    WHERE tenant_id = %(tenant)s AND provider = %(provider)s AND start_time >= %(start)s
      AND start_time < %(end)s AND model = ANY(%(models)s) AND output_tokens > 0
), spans AS (
    SELECT at + coalesce(least(greatest(ttft, 0.0), seconds), 0.0) AS low, at + seconds AS high, output_tokens
    FROM calls
), ordered AS (
    SELECT low, high, output_tokens,
           max(high) OVER (ORDER BY low, high ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS reach
    FROM spans WHERE high > low
)
SELECT coalesce(sum(greatest(high - greatest(low, coalesce(reach, low)), 0.0)), 0.0),
       coalesce(sum(output_tokens), 0)
FROM ordered
"""


def decode_throughputs(
    tenant_id: int, start: datetime, end: datetime, provider: str = "vllm"
) -> list[DecodeThroughput]:
    """Each of the tenant's `provider` deployments that decoded in calls starting in [start, end).

    Decode seconds are the union of the calls' decode intervals (first token to end), so calls batched
    together count their shared seconds once: the figure is the server's, not one call's. Summed in
    PostgreSQL: a busy deployment's month of calls never comes into Python."""
    deployments = list(Deployment.objects.filter(tenant_id=tenant_id, provider=provider).order_by("id"))
    if not deployments:
        return []
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT DISTINCT model FROM usage_llmcall WHERE tenant_id = %s AND provider = %s "
            "AND start_time >= %s AND start_time < %s AND output_tokens > 0",
            [tenant_id, provider, start, end],
        )
        models = [model for (model,) in cursor.fetchall() if model is not None]
    measured = []
    for deployment in deployments:
        served = [m for m in models if fnmatch.fnmatchcase(m, deployment.model_pattern)]
        if not served:
            continue
        with connection.cursor() as cursor:
            cursor.execute(
                _DECODE_SECONDS,
                {
                    "tenant": tenant_id,
                    "provider": provider,
                    "start": start,
                    "end": end,
                    "models": served,
                    "max_seconds": float(MAX_CALL_SECONDS),
                },
            )
            seconds, tokens = cursor.fetchone()
        if seconds > 0:
            measured.append(
                DecodeThroughput(
                    deployment=deployment.name,
                    hardware=deployment.hardware,
                    on_gpu=bool(GPU_HARDWARE.search(deployment.hardware)),
                    output_tokens=int(tokens),
                    decode_seconds=float(seconds),
                )
            )
    return measured


def price_deployment(deployment: Deployment, start: datetime, end: datetime) -> PricingRun:
    """Price the deployment's calls that started in [start, end) and record its minutes there."""
    run = PricingRun(deployments=1)
    start, end = _minute(start), _minute(end)
    margin = timedelta(seconds=MAX_CALL_SECONDS)
    # Calls up to ten minutes before share the window's first minutes; calls after it its last ones.
    calls = _calls(deployment, start - margin, end + margin)
    per_second = deployment.hourly_usd / Decimal(3600)
    version = f"deployment:{deployment.id}:{deployment.hourly_usd.normalize()}/h"
    # A sweep over every start, end and minute boundary: in each piece of time between two of them, the
    # calls running share its price equally; a piece with none running is idle.
    low, high = (start - margin).timestamp(), (end + margin).timestamp()
    points = {low, high}
    points.update(low + 60 * i for i in range(int((high - low) // 60)))
    for c in calls:
        points.update(p for p in (c.start_s, c.first_token_s, c.end_s) if low <= p <= high)
    cuts = sorted(points)
    starting: dict[float, list[_Call]] = {}
    ending: dict[float, list[_Call]] = {}
    for c in calls:
        if c.end_s > c.start_s:
            starting.setdefault(max(c.start_s, low), []).append(c)
            ending.setdefault(min(c.end_s, high), []).append(c)
    shares: dict[tuple[str, str], Decimal] = {}
    prefill_shares: dict[tuple[str, str], Decimal] = {}
    busy_by_minute: dict[float, float] = {}
    prefill_by_minute: dict[float, Decimal] = {}
    running: dict[tuple[str, str], _Call] = {}
    for a, b in pairwise(cuts):
        for c in ending.get(a, ()):
            running.pop((c.trace_id, c.span_id), None)
        for c in starting.get(a, ()):
            running[(c.trace_id, c.span_id)] = c
        if not running:
            continue
        minute_start = low + 60 * ((a - low) // 60)
        busy_by_minute[minute_start] = busy_by_minute.get(minute_start, 0.0) + (b - a)
        each = per_second * Decimal(str(round(b - a, 6))) / len(running)
        for key, c in running.items():
            shares[key] = shares.get(key, Decimal(0)) + each
            if a < c.first_token_s:  # pieces never straddle a first token: it is a cut
                prefill_shares[key] = prefill_shares.get(key, Decimal(0)) + each
                prefill_by_minute[minute_start] = prefill_by_minute.get(minute_start, Decimal(0)) + each
    minutes: list[DeploymentMinute] = []
    minute = start
    while minute < end:
        m_low = minute.timestamp()
        busy = round(busy_by_minute.get(m_low, 0.0), 6)
        minutes.append(
            DeploymentMinute(
                deployment=deployment,
                tenant_id=deployment.tenant_id,
                minute=minute,
                calls=sum(1 for c in calls if c.start_s < m_low + 60 and c.end_s >= m_low),
                busy_seconds=busy,
                busy_usd=(per_second * Decimal(str(busy))).quantize(QUANTUM),
                prefill_usd=prefill_by_minute.get(m_low, Decimal(0)).quantize(QUANTUM),
                idle_usd=(per_second * Decimal(str(round(60 - busy, 6)))).quantize(QUANTUM),
            )
        )
        minute += timedelta(minutes=1)
    changed = []
    for call in calls:
        if not start <= call.start < end:
            continue
        run.calls_priced += 1
        key = (call.trace_id, call.span_id)
        cost = shares.get(key, Decimal(0)).quantize(QUANTUM)
        prefill = min(prefill_shares.get(key, Decimal(0)).quantize(QUANTUM), cost)
        if call.cost != cost or call.prefill_cost != prefill or call.version != version:
            changed.append((call.trace_id, call.span_id, call.start, cost, prefill))
    with transaction.atomic(), connection.cursor() as cursor:
        if changed:
            cursor.execute(
                "UPDATE usage_llmcall AS c SET cost_usd = v.cost, prefill_cost_usd = v.prefill, "
                "cache_savings_usd = 0, price_source = %s, price_version = %s "
                "FROM unnest(%s::text[], %s::text[], %s::timestamptz[], %s::numeric[], %s::numeric[]) "
                "AS v(trace_id, span_id, start_time, cost, prefill) "
                "WHERE c.tenant_id = %s AND c.trace_id = v.trace_id AND c.span_id = v.span_id "
                "AND c.start_time = v.start_time",
                [
                    SELF_HOSTED_SOURCE,
                    version,
                    [c[0] for c in changed],
                    [c[1] for c in changed],
                    [c[2] for c in changed],
                    [c[3] for c in changed],
                    [c[4] for c in changed],
                    deployment.tenant_id,
                ],
            )
            mark_dirty(cursor, deployment.tenant_id, [c[2] for c in changed])
        DeploymentMinute.objects.bulk_create(
            minutes,
            update_conflicts=True,
            unique_fields=["deployment", "minute"],
            update_fields=["calls", "busy_seconds", "busy_usd", "prefill_usd", "idle_usd"],
        )
    run.calls_changed = len(changed)
    run.minutes = len(minutes)
    return run


def price_settled(now: datetime | None = None) -> PricingRun:
    """Every deployment's settled minutes since it was last priced, and at least the last WINDOW_MINUTES
    again (what the Celery task runs). A deployment never priced starts at its creation; a run catches up
    at most CATCH_UP a time, so a long outage is priced over a few runs."""
    now = now or datetime.now(UTC)
    end = _minute(now - timedelta(seconds=SETTLE_SECONDS))
    total = PricingRun()
    last_priced = dict(
        DeploymentMinute.objects.values("deployment_id")
        .annotate(last=Max("minute"))
        .values_list("deployment_id", "last")
    )
    for deployment in Deployment.objects.all():
        last = last_priced.get(deployment.id)
        resume = last + timedelta(minutes=1) if last is not None else _minute(deployment.created_at)
        start = max(min(end - timedelta(minutes=WINDOW_MINUTES), resume), end - CATCH_UP)
        run = price_deployment(deployment, start, min(end, start + CATCH_UP))
        total.deployments += 1
        total.calls_priced += run.calls_priced
        total.calls_changed += run.calls_changed
        total.minutes += run.minutes
    return total
