"""The demo organisation: projects, a self-hosted model's price, a sign-in, and weeks of traffic.

`generate_demo` sends the hours of `costline.usage.demo_traffic` through the collector's own ingest
path, in-process: every six hours are one OTLP protobuf export, decoded, normalised, priced and written
by the same `Pipeline` and `PostgresSink` that serve `/v1/traces`, so the demo's calls are stored
exactly as a real service's would be. Then the rollups run (`process_dirty`), so the dashboards are
full at once.

Running it again tops up: it sends only the hours missing between what is stored and now (and the
boundary hours again, which store nothing twice: every hour draws the same spans, and the collector
skips spans it already has).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import multiprocessing
import secrets
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone
from django.utils.text import slugify

from collector.otlp import PROTOBUF, decode
from collector.pipeline import Pipeline, cpu_bound
from collector.sink import TenantRef
from costline.alerts.models import AlertRule, RuleKind
from costline.tenancy.actions import create_organization, issue_ingest_key
from costline.tenancy.models import IngestKey, Membership, Organization, Project, Role, User
from costline.usage.demo_traffic import HOUR, SELF_HOSTED_MODEL, Export, floor_hour, hours_export
from costline.usage.ingest import PostgresSink, conninfo_from_settings
from costline.usage.models import Deployment, PriceOverride, RepriceRequest, TenantEmitter
from costline.usage.partitions import day_of, ensure_partitions
from costline.usage.rollup import FAMILIES, LEVELS, process_dirty

logger = logging.getLogger(__name__)

DEMO_NAME = "Demo"
DEMO_EMAIL = "demo@costline.local"
DEFAULT_DAYS = 30
DEFAULT_SEED = 4

# Projects and the services each one owns (Project.service_patterns).
PROJECTS = (
    ("Customer support", "customer-support", ["support-bot", "batch-tagger"]),
    ("Search and docs", "search", ["search-api", "docs-*"]),
    ("Developer tools", "developer-tools", ["code-review"]),
)
# What the self-hosted Llama costs the demo company: one L40S (about $1.10 an hour) serving an 8B model
# at roughly 2,500 output tokens/s when batched is $0.12 per million output tokens; prefill is about
# five times cheaper per token, and prefix-cache hits cost next to nothing.
SELF_HOSTED_PRICE = {
    "input_per_mtok": Decimal("0.025"),
    "output_per_mtok": Decimal("0.12"),
    "cache_read_per_mtok": Decimal("0.0025"),
}
SELF_HOSTED_NOTE = "demo: GPU cost of the self-hosted vLLM (one L40S)"
BUNDLED_DEPLOYMENT = "Bundled vLLM tier (CPU)"
# Exports in flight at once: the next one is decoded and priced while the last one is written.
CONCURRENT_EXPORTS = 2
DRAW_AHEAD = 2  # exports drawn and encoded ahead
# An export per six hours: about 1,000 spans at the busiest. Measured over a week of traffic, exports of
# one hour (~270 spans) ingest at 5,000 calls/s, of four hours at 7,000, of twelve at 8,000: each
# export costs a few round trips whatever its size.
HOURS_PER_EXPORT = 6


@dataclass
class DemoRun:
    organization: Organization
    hours: int = 0  # hours of traffic sent
    calls_sent: int = 0
    spans_sent: int = 0
    calls_stored: int = 0  # new rows: calls sent before (a rerun) are not stored again
    rejected_spans: int = 0
    ingest_seconds: float = 0.0
    rollup_seconds: float = 0.0
    days: list[tuple[date, int]] = field(default_factory=list)  # calls sent per (local) day


Progress = Callable[[str], None]


# --- The organisation and its settings ---------------------------------------------------------------


class NotADemoOrganization(Exception):
    """The organisation has people other than the demo user: it is not for demo traffic."""


def ensure_demo_organization(name: str = DEMO_NAME, *, only_demo: bool = False) -> Organization:
    """The organisation named `name` (found by its slug), created when missing.

    `only_demo`: refuse an existing organisation that has members other than the demo user, so that
    a mistyped --name never mixes demo calls into (or, with --reset, deletes) a real organisation's.
    """
    org = Organization.objects.filter(slug=slugify(name) or "demo").first()
    if org is None:
        return create_organization(name)
    if only_demo and Membership.objects.filter(organization=org).exclude(user__email=DEMO_EMAIL).exists():
        raise NotADemoOrganization(
            f"{org.name} (/o/{org.slug}/) has members other than {DEMO_EMAIL}: demo traffic goes only into "
            "an organisation of its own. Choose another --name."
        )
    return org


DEMO_ALERT_RULE = "Unusual spend"


def ensure_demo_settings(org: Organization, *, since: datetime) -> None:
    """Projects by service, and the self-hosted model's price from `since` on (created once)."""
    with transaction.atomic():
        for name, slug, patterns in PROJECTS:
            Project.objects.get_or_create(
                organization=org, slug=slug, defaults={"name": name, "service_patterns": patterns}
            )
        # The bundled vLLM tier that `make run` starts: its calls through the gateway share the hours of
        # a small CPU instance (about $0.08 an hour for 2 vCPUs).
        Deployment.objects.get_or_create(
            tenant=org,
            name=BUNDLED_DEPLOYMENT,
            defaults={
                "provider": "vllm",
                "model_pattern": "smollm2-*",
                "hourly_usd": Decimal("0.08"),
                "hardware": "2 vCPU",
            },
        )
        if not PriceOverride.objects.filter(tenant=org, model_pattern=SELF_HOSTED_MODEL).exists():
            PriceOverride.objects.create(
                tenant=org,
                model_pattern=SELF_HOSTED_MODEL,
                provider="vllm",
                effective_from=since,
                note=SELF_HOSTED_NOTE,
                **SELF_HOSTED_PRICE,
            )
        # A default anomaly rule on spend, so the Alerts page has something to watch (created once).
        AlertRule.objects.get_or_create(
            organization=org,
            name=DEMO_ALERT_RULE,
            defaults={"kind": RuleKind.ANOMALY, "metric": "cost_usd", "min_impact_usd": Decimal("1")},
        )


def ensure_demo_user(
    org: Organization, *, email: str = DEMO_EMAIL, password: str | None = None
) -> str | None:
    """Make `email` an owner of `org`; returns the password when it was set now, else None.

    A new user gets `password`, or a random one. An existing user's password is changed only when
    `password` is given (the launcher does that when the one it kept no longer works).
    """
    user = User.objects.filter(email=email).first()
    chosen: str | None = None
    if user is None:
        chosen = password or secrets.token_urlsafe(12)
        user = User.objects.create_user(email, chosen)
    elif password is not None and not user.check_password(password):
        user.set_password(password)
        user.save(update_fields=["password"])
        chosen = password
    Membership.objects.update_or_create(organization=org, user=user, defaults={"role": Role.OWNER})
    return chosen


def demo_ingest_key(org: Organization) -> IngestKey:
    """The key the demo traffic is attributed to: one of the organisation's own, issued if it has none.

    A key bound to a project would put every call in that project, so only a key without one will do.
    """
    key = IngestKey.objects.active().filter(organization=org, project__isnull=True).order_by("id").first()
    if key is None:
        issue_ingest_key(org, "demo traffic")
        key = IngestKey.objects.active().filter(organization=org, project__isnull=True).order_by("id").first()
    assert key is not None
    return key


def reset_demo_data(org: Organization) -> None:
    """Delete the organisation's calls, rollups, projects and price overrides; members and keys stay."""
    with transaction.atomic(), connection.cursor() as cursor:
        for table in ("usage_llmcall", "usage_traceroot", "usage_rollup_dirty"):
            cursor.execute(f"DELETE FROM {table} WHERE tenant_id = %s", [org.id])  # noqa: S608 - our names
        for family in FAMILIES:
            for level in LEVELS:
                cursor.execute(f"DELETE FROM {family.table(level)} WHERE tenant_id = %s", [org.id])  # noqa: S608
        TenantEmitter.objects.filter(tenant=org).delete()
        PriceOverride.objects.filter(tenant=org).delete()
        # The deletes above asked for re-pricing; with no calls left there is nothing to price.
        RepriceRequest.objects.filter(tenant=org).delete()
        Project.objects.filter(organization=org).delete()


# --- Which hours to send -----------------------------------------------------------------------------


def hours_to_send(start: datetime, end: datetime, stored_hours: set[datetime]) -> list[datetime]:
    """The UTC hours of [start, end) whose traffic is not stored yet.

    An export is stored whole or not at all, so an hour with a stored trace is complete, except the
    first and the last such hour: an earlier run's window or its "now" may have cut them. Those are
    sent again (storing only what they lack).
    """
    edges = {min(stored_hours), max(stored_hours)} if stored_hours else set()
    hours = []
    hour = floor_hour(start)
    while hour < end:
        if hour not in stored_hours or hour in edges:
            hours.append(hour)
        hour += HOUR
    return hours


def stored_hours(org: Organization, start: datetime) -> set[datetime]:
    """The UTC hours from `start` on whose export was stored: those holding a stored trace's root.

    The root, not the calls: a request that starts at 10:59:59 has calls in the next hour.
    """
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT DISTINCT date_trunc('hour', start_time, 'UTC') FROM usage_traceroot "
            "WHERE tenant_id = %s AND start_time >= %s",
            [org.id, floor_hour(start)],
        )
        return {row[0] for row in cursor.fetchall()}


# --- Sending the traffic through the ingest path -----------------------------------------------------


async def _send_hours(
    run: DemoRun,
    tenant: TenantRef,
    hours: list[datetime],
    *,
    seed: int,
    zone: ZoneInfo,
    start: datetime,
    end: datetime,
    progress: Progress,
    started: float,
) -> None:
    """Export the hours, six at a time, through the collector's pipeline as the OTLP/HTTP receiver does."""
    sink = PostgresSink(conninfo_from_settings(connection.settings_dict), pool_size=CONCURRENT_EXPORTS + 1)
    pipeline = Pipeline(
        sink,
        retention_days=settings.RAW_RETENTION_DAYS,
        max_future_skew_seconds=settings.MAX_FUTURE_SKEW_SECONDS,
        max_concurrent=CONCURRENT_EXPORTS,
        max_queued=CONCURRENT_EXPORTS,
    )
    await sink.open()
    in_flight: set[asyncio.Task[None]] = set()
    day: date | None = None
    day_calls = 0

    async def export(body: bytes) -> None:
        # What collector.http does with a request body once the ingest key is known.
        decoded = await cpu_bound(decode, body, PROTOBUF)
        outcome = await pipeline.export(tenant, decoded)
        run.calls_stored += outcome.stored_calls
        run.rejected_spans += outcome.rejected_spans
        if outcome.rejected_spans:
            logger.warning("demo export: %s", outcome.message)

    def day_done(done: date, calls: int) -> None:
        run.days.append((done, calls))
        elapsed = time.monotonic() - started
        progress(
            f"  {done.isoformat()}  {calls:>6,} calls   ({run.calls_sent:,} sent, "
            f"{run.calls_sent / max(elapsed, 1e-9):,.0f} calls/s)"
        )

    # Drawing and encoding the traffic costs about as much CPU as ingesting it, so it runs in a process
    # of its own (a second core), a few exports ahead. Spawned, not forked: a fork would share this
    # process's database connections.
    loop = asyncio.get_running_loop()
    drawer = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
    drawing: deque[tuple[list[datetime], asyncio.Future[Export]]] = deque()
    groups = iter([hours[i : i + HOURS_PER_EXPORT] for i in range(0, len(hours), HOURS_PER_EXPORT)])

    def draw_next() -> None:
        group = next(groups, None)
        if group is not None:
            task = functools.partial(hours_export, seed, group, zone, start=start, end=end)
            drawing.append((group, loop.run_in_executor(drawer, task)))

    try:
        for _ in range(DRAW_AHEAD):
            draw_next()
        while drawing:
            group, drawn = drawing.popleft()
            drawn_export = await drawn
            draw_next()
            for hour, calls in zip(group, drawn_export.calls, strict=True):
                local_day = hour.astimezone(zone).date()
                if day is not None and local_day != day:
                    day_done(day, day_calls)
                    day_calls = 0
                day = local_day
                day_calls += calls
                run.calls_sent += calls
            run.hours += len(group)
            run.spans_sent += drawn_export.spans
            if not drawn_export.body:
                continue
            if len(in_flight) >= CONCURRENT_EXPORTS:
                finished, in_flight = await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
                for task in finished:
                    task.result()  # an export that failed stops the demo with its error
            in_flight.add(asyncio.create_task(export(drawn_export.body)))
        if in_flight:
            for task in (await asyncio.wait(in_flight))[0]:
                task.result()
        if day is not None:
            day_done(day, day_calls)
    finally:
        for task in in_flight:
            task.cancel()
        drawer.shutdown(cancel_futures=True)
        await sink.close()


def generate_demo(
    org: Organization,
    *,
    days: int = DEFAULT_DAYS,
    seed: int = DEFAULT_SEED,
    now: datetime | None = None,
    progress: Progress = lambda line: None,
) -> DemoRun:
    """Send the demo traffic of the last `days` days that `org` lacks, then roll it up."""
    now = now or timezone.now()
    # The collector refuses spans older than the raw retention; keep a margin for the run's own length.
    oldest = now - timedelta(days=settings.RAW_RETENTION_DAYS) + timedelta(minutes=10)
    start = max(now - timedelta(days=days), oldest)
    zone = ZoneInfo(org.time_zone)
    ensure_demo_settings(org, since=floor_hour(start) - timedelta(days=1))
    key = demo_ingest_key(org)
    hours = hours_to_send(start, now, stored_hours(org, start))
    if hours:
        # Today's partitions and the next days' exist (the worker creates them ahead); past days' may
        # not. Made here, before the exports: a partition created while another export writes to the
        # parent table can deadlock with it.
        with transaction.atomic(), connection.cursor() as cursor:
            ensure_partitions(cursor, {day_of(hour) for hour in hours} | {day_of(now)})
    run = DemoRun(org)
    started = time.monotonic()
    if hours:
        progress(
            f"Sending {len(hours):,} hours of demo traffic for {org.name} through the collector's ingest:"
        )
        asyncio.run(
            _send_hours(
                run,
                TenantRef(organization_id=org.id, ingest_key_id=key.id),
                hours,
                seed=seed,
                zone=zone,
                start=start,
                end=now,
                progress=progress,
                started=started,
            )
        )
    run.ingest_seconds = time.monotonic() - started
    rolled = time.monotonic()
    process_dirty()
    run.rollup_seconds = time.monotonic() - rolled
    return run
