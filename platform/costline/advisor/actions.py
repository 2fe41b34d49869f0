"""What happens to recommendations: stored from findings, dismissed, applied, and measured afterwards.

Every verb is scoped by tenant and idempotent: storing the same findings twice leaves the same rows,
measuring twice the same numbers.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, time, timedelta
from decimal import Decimal

from django.db import transaction
from django.utils import timezone

from costline.advisor.findings import Finding
from costline.advisor.models import Recommendation, Status
from costline.advisor.policies import policy_to_json
from costline.usage.metrics import DIMENSIONS, UsageQuery, usage

MONTH_DAYS = 30  # estimates and realised savings are both per 30 days
MONEY = Decimal("0.000000000001")


class LifecycleError(ValueError):
    """The recommendation is not in a state that allows the change."""


def _numbers(finding: Finding) -> dict[str, object]:
    return {
        "kind": finding.kind.value,
        "title": finding.title,
        "summary": finding.summary,
        "how_to": finding.how_to,
        "monthly_saving_usd": finding.monthly_saving_usd.quantize(MONEY),
        "confidence": finding.confidence,
        "evidence": finding.evidence,
        "policy": policy_to_json(finding.policy),
        "scope": dict(finding.scope),
        "window_days": finding.window_days,
    }


def store_findings(tenant_id: int, findings: Iterable[Finding], now: datetime) -> int:
    """Upsert the findings on (tenant, key); returns how many rows were created.

    Open rows get the new numbers; dismissed rows are never reopened; applied rows keep the estimate
    made when they were applied. All only have `last_seen` moved.
    """
    created = 0
    with transaction.atomic():
        for finding in findings:
            row, new = Recommendation.objects.select_for_update().get_or_create(
                tenant_id=tenant_id,
                key=finding.key,
                defaults={**_numbers(finding), "first_seen": now, "last_seen": now},
            )
            if new:
                created += 1
                continue
            if row.status == Status.OPEN:
                for name, value in _numbers(finding).items():
                    setattr(row, name, value)
            row.last_seen = max(row.last_seen, now)
            row.save()
    return created


def dismiss(recommendation: Recommendation, reason: str, now: datetime | None = None) -> Recommendation:
    reason = reason.strip()
    if not reason:
        raise LifecycleError("Say why you dismiss it (a reason is required).")
    if recommendation.status == Status.APPLIED:
        raise LifecycleError("An applied recommendation cannot be dismissed.")
    recommendation.status = Status.DISMISSED
    recommendation.dismissed_reason = reason
    recommendation.dismissed_at = now or timezone.now()
    recommendation.save(update_fields=["status", "dismissed_reason", "dismissed_at"])
    return recommendation


def apply(recommendation: Recommendation, now: datetime | None = None) -> Recommendation:
    """Mark it applied and keep the scope's daily cost over its window before now as the baseline."""
    if recommendation.status == Status.APPLIED:
        return recommendation  # applying twice is applying once
    now = now or timezone.now()
    end = _day(now)
    start = end - timedelta(days=max(recommendation.window_days, 1))
    recommendation.status = Status.APPLIED
    recommendation.applied_at = now
    recommendation.baseline_daily_usd = _daily_cost(recommendation, start, end)
    recommendation.save(update_fields=["status", "applied_at", "baseline_daily_usd"])
    return recommendation


def measure(recommendation: Recommendation, now: datetime) -> Decimal | None:
    """The realised monthly saving: the baseline daily cost minus the daily cost over the whole days
    since the day after applying, times 30. None until one whole day has passed."""
    if recommendation.status != Status.APPLIED or recommendation.applied_at is None:
        return None
    start = _day(recommendation.applied_at) + timedelta(days=1)  # the day it was applied is mixed
    end = _day(now)
    if end <= start or recommendation.baseline_daily_usd is None:
        return None
    actual = _daily_cost(recommendation, start, end)
    saving = ((recommendation.baseline_daily_usd - actual) * MONTH_DAYS).quantize(MONEY)
    recommendation.realised_saving_usd = saving
    recommendation.realised_measured_at = now
    recommendation.save(update_fields=["realised_saving_usd", "realised_measured_at"])
    return saving


def measure_applied(tenant_id: int, now: datetime) -> int:
    measured = 0
    for row in Recommendation.objects.filter(tenant_id=tenant_id, status=Status.APPLIED):
        if measure(row, now) is not None:
            measured += 1
    return measured


def _day(moment: datetime) -> datetime:
    return datetime.combine(moment.astimezone(UTC).date(), time(), tzinfo=UTC)


def _daily_cost(recommendation: Recommendation, start: datetime, end: datetime) -> Decimal:
    """Mean daily cost of the recommendation's scope over [start, end), from the rollups."""
    filters: dict[str, tuple[str, ...]] = {
        name: (str(value),) for name, value in (recommendation.scope or {}).items() if name in DIMENSIONS
    }
    result = usage(
        recommendation.tenant_id,
        UsageQuery(
            start=start, end=end, interval="day", filters=filters, metrics=("cost_usd",), points=False
        ),
    )
    total = result.totals.get("cost_usd") or Decimal(0)
    assert isinstance(total, Decimal)
    days = (end - start) // timedelta(days=1)
    return (total / days).quantize(MONEY)
