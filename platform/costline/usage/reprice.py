"""Re-pricing: when a price override (or the price catalogue) changes, stored calls are priced again.

A change writes a RepriceRequest in its own transaction (signals below; `check_catalogue` for a new
genai-prices release). The worker takes requests once they are SETTLE_SECONDS old, so that the
collectors, which cache a tenant's overrides for a few seconds, price new calls with the new prices
before the old calls are revisited. Each request prices the tenant's calls from `since` on, chunk by
chunk, updates those whose price changed and marks their minutes for the rollups, in the same
transaction. Pricing is deterministic, so a request done twice, or cut off and done again, ends the
same; a per-tenant session lock keeps two workers off one tenant.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models.signals import post_delete, post_save, pre_save
from django.utils import timezone

from costline.usage.models import PriceOverride, RepriceRequest, WorkerState
from costline.usage.partitions import existing_days
from costline.usage.pricing import (
    CATALOGUE_VERSION,
    GATEWAY_CACHE_SOURCE,
    Override,
    TokenUsage,
    as_gateway_cache_hit,
    price_call,
)
from costline.usage.rollup import mark_dirty
from costline.usage.selfhosted import SELF_HOSTED_SOURCE

log = logging.getLogger(__name__)

SETTLE_SECONDS = 15.0  # longer than the collector's tenant-context cache (ingest.TENANT_CONTEXT_SECONDS)
CHUNK = 5000
CATALOGUE_KEY = "pricing.catalogue_version"
_LOCK_PREFIX = 0x50 << 56  # "P"

_COLUMNS = (
    "trace_id, span_id, start_time, provider, request_model, response_model, operation, input_tokens, "
    "output_tokens, cache_read_tokens, cache_write_tokens, reasoning_tokens, status, cost_usd, "
    "cache_savings_usd, price_source, price_version"
)
_UPDATE = (
    "UPDATE usage_llmcall AS c SET cost_usd = v.cost, cache_savings_usd = v.savings, "
    "price_source = v.source, price_version = v.version "
    "FROM unnest(%s::text[], %s::text[], %s::timestamptz[], %s::numeric[], %s::numeric[], "
    "%s::text[], %s::text[]) "
    "AS v(trace_id, span_id, start_time, cost, savings, source, version) "
    "WHERE c.tenant_id = %s AND c.trace_id = v.trace_id AND c.span_id = v.span_id "
    "AND c.start_time = v.start_time"
)


def request_reprice(tenant_id: int, since: datetime, reason: str) -> RepriceRequest:
    return RepriceRequest.objects.create(tenant_id=tenant_id, since=since, reason=reason[:300])


def load_overrides(tenant_id: int) -> list[Override]:
    return [
        Override(
            o.id,
            o.model_pattern,
            o.provider,
            o.effective_from,
            o.updated_at,
            o.input_per_mtok,
            o.output_per_mtok,
            o.cache_read_per_mtok,
            o.cache_write_per_mtok,
            o.discount_percent,
        )
        for o in PriceOverride.objects.filter(tenant_id=tenant_id).order_by("effective_from")
    ]


@dataclass
class RepriceRun:
    requests: int = 0
    calls_seen: int = 0
    calls_changed: int = 0
    seconds: float = 0.0


def reprice_tenant(tenant_id: int, since: datetime, run: RepriceRun | None = None) -> RepriceRun:
    """Price the tenant's stored calls started at or after `since` again; update those that changed."""
    run = run or RepriceRun()
    overrides = load_overrides(tenant_id)
    with connection.cursor() as cursor:
        days = sorted(d for d in existing_days(cursor, "usage_llmcall") if d >= since.astimezone(UTC).date())
        for day in days:
            day_start = datetime(day.year, day.month, day.day, tzinfo=UTC)
            low = max(since, day_start)
            after: tuple[Any, ...] = (low - timedelta(seconds=1), "", "")  # before every row of the day
            while True:
                cursor.execute(
                    f"SELECT {_COLUMNS} FROM usage_llmcall WHERE tenant_id = %s "
                    "AND start_time >= %s AND start_time < %s "
                    "AND (start_time, trace_id, span_id) > (%s, %s, %s) "
                    "ORDER BY start_time, trace_id, span_id LIMIT %s",
                    [tenant_id, low, day_start + timedelta(days=1), *after, CHUNK],
                )
                rows = cursor.fetchall()
                run.calls_seen += len(rows)
                _apply(cursor, tenant_id, [_changed(row, overrides) for row in rows], run)
                if len(rows) < CHUNK:
                    break
                after = (rows[-1][2], rows[-1][0], rows[-1][1])
    return run


def _changed(row: tuple[Any, ...], overrides: list[Override]) -> tuple[Any, ...] | None:
    (trace_id, span_id, start, provider, request_model, response_model, operation) = row[:7]
    usage = TokenUsage(*row[7:12])
    price = price_call(
        provider=provider,
        request_model=request_model,
        response_model=response_model,
        operation=operation,
        usage=usage,
        when=start,
        failed=row[12] == "error",
        overrides=overrides,
    )
    if row[15] == SELF_HOSTED_SOURCE:
        return None  # priced from its deployment's hours (costline.usage.selfhosted), not per token
    if row[15] == GATEWAY_CACHE_SOURCE:
        price = as_gateway_cache_hit(price)
    new = (price.cost_usd, price.cache_savings_usd, price.source, price.version)
    if new == tuple(row[13:17]):
        return None
    return (trace_id, span_id, start, *new)


def _apply(cursor: Any, tenant_id: int, changes: list[tuple[Any, ...] | None], run: RepriceRun) -> None:
    changed = [c for c in changes if c is not None]
    if not changed:
        return
    columns = list(zip(*changed, strict=True))
    with transaction.atomic():
        cursor.execute(_UPDATE, [list(column) for column in columns] + [tenant_id])
        mark_dirty(cursor, tenant_id, columns[2])
    run.calls_changed += len(changed)


def process_reprice_requests(
    *, settle_seconds: float = SETTLE_SECONDS, time_budget: float | None = None
) -> RepriceRun:
    """Do the settled requests, one tenant at a time (its earliest `since`), then delete them."""
    started = time.monotonic()
    run = RepriceRun()
    cutoff = timezone.now() - timedelta(seconds=settle_seconds)
    tenants = (
        RepriceRequest.objects.filter(requested_at__lte=cutoff)
        .values_list("tenant_id", flat=True)
        .distinct()
        .order_by("tenant_id")
    )
    for tenant_id in list(tenants):
        if time_budget is not None and time.monotonic() - started > time_budget:
            break
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_try_advisory_lock(%s)", [_LOCK_PREFIX | tenant_id])
            if not cursor.fetchone()[0]:
                continue  # another worker is re-pricing this tenant
            try:
                pending = list(RepriceRequest.objects.filter(tenant_id=tenant_id, requested_at__lte=cutoff))
                if not pending:
                    continue
                since = min(r.since for r in pending)
                log.info(
                    "re-pricing tenant %s since %s: %s",
                    tenant_id,
                    since,
                    "; ".join(r.reason for r in pending),
                )
                reprice_tenant(tenant_id, since, run)
                RepriceRequest.objects.filter(id__in=[r.id for r in pending]).delete()
                run.requests += len(pending)
            finally:
                cursor.execute("SELECT pg_advisory_unlock(%s)", [_LOCK_PREFIX | tenant_id])
    run.seconds = time.monotonic() - started
    return run


def check_catalogue() -> bool:
    """Ask for every tenant's calls to be priced again when genai-prices changed since the last look."""
    state = WorkerState.objects.filter(key=CATALOGUE_KEY).first()
    if state is not None and state.value == CATALOGUE_VERSION:
        return False
    with transaction.atomic():
        if state is not None:
            from costline.tenancy.models import Organization

            since = timezone.now() - timedelta(days=settings.RAW_RETENTION_DAYS)
            for tenant_id in Organization.objects.values_list("id", flat=True):
                request_reprice(
                    tenant_id, since, f"price catalogue changed: {state.value} → {CATALOGUE_VERSION}"
                )
        WorkerState.objects.update_or_create(key=CATALOGUE_KEY, defaults={"value": CATALOGUE_VERSION})
    return state is not None


# --- Signals: an override saved or deleted asks for its calls to be priced again -------------------------


def _remember_previous(sender: type[PriceOverride], instance: PriceOverride, **kwargs: Any) -> None:
    previous = PriceOverride.objects.filter(pk=instance.pk).values_list("effective_from", flat=True).first()
    instance._previous_effective_from = previous  # type: ignore[attr-defined]


def _override_saved(
    sender: type[PriceOverride], instance: PriceOverride, created: bool, **kwargs: Any
) -> None:
    since = instance.effective_from
    previous = getattr(instance, "_previous_effective_from", None)
    if previous is not None:
        since = min(since, previous)
    verb = "added" if created else "changed"
    request_reprice(
        instance.tenant_id, since, f"price override {instance.pk} ({instance.model_pattern}) {verb}"
    )


def _override_deleted(sender: type[PriceOverride], instance: PriceOverride, **kwargs: Any) -> None:
    request_reprice(
        instance.tenant_id,
        instance.effective_from,
        f"price override {instance.pk} ({instance.model_pattern}) removed",
    )


def connect_signals() -> None:
    pre_save.connect(_remember_previous, sender=PriceOverride, dispatch_uid="usage.reprice.pre_save")
    post_save.connect(_override_saved, sender=PriceOverride, dispatch_uid="usage.reprice.post_save")
    post_delete.connect(_override_deleted, sender=PriceOverride, dispatch_uid="usage.reprice.post_delete")
