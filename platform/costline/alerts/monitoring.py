"""Alert rules → incidents: the hourly job that scores each rule's series and notifies its channels.

    detect(tenant_id, now)  # every enabled rule of the tenant, over the 28 days of hours before `now`

Anomaly rules read the rule's metric per hour from the rollups (`run_usage_query`, never raw calls),
score it with `costline.alerts.detection` and group the scored hours with
`costline.alerts.incidents`. Threshold rules compare the metric over their trailing window with
their value. Either way an incident is stored once per (rule, started_at): a rerun over the same
hours updates the same rows, and `notify` (source "incident:<id>") delivers once per channel.

An incident only resolves on its own when a run sees its series back inside the band. One that is no
longer scored would stay open for ever, so the job closes it, with `resolved_reason` saying why: its
rule is disabled, its last anomalous hour has left the 28-day window, or its series is empty or zero
throughout the window. (Deleting a rule deletes its incidents.)
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import numpy as np
from django.db import transaction
from django.db.models import Max, Q, QuerySet
from django.utils import timezone

from costline.alerts.causes import explain
from costline.alerts.detection import DetectorConfig, score
from costline.alerts.incidents import Incident, IncidentPolicy, group_incidents
from costline.alerts.models import AlertIncident, AlertRule, IncidentStatus, RuleKind
from costline.alerts.notify import notify
from costline.usage.metrics import METRICS, UsageQuery
from costline.usage.query import run_usage_query

log = logging.getLogger(__name__)

HISTORY = timedelta(days=28)
# Sensitivity of a rule → the detector's (0.5 is the benchmarked default: ~1 false flag per 14
# months of hours; 0.25 and 0.75 move the threshold one decade either way).
SENSITIVITY = {"low": 0.25, "medium": 0.5, "high": 0.75}
# Counts and money: an hour without a rollup row had no usage, so 0. Rates and latencies: no value.
ZERO_FILLED_UNITS = frozenset({"calls", "tokens"})
MICRO = Decimal("0.000001")


@dataclass(frozen=True)
class HourlySeries:
    starts: list[datetime]  # each hour's start (UTC)
    values: np.ndarray  # the rule's metric per hour (NaN: no value that hour)
    cost: np.ndarray  # cost_usd per hour, for the dollar impact of non-cost metrics


def floor_hour(at: datetime) -> datetime:
    return at.replace(minute=0, second=0, microsecond=0)


def _filters(rule: AlertRule) -> dict[str, tuple[str, ...]]:
    filters: dict[str, tuple[str, ...]] = {}
    if rule.project:
        filters["project"] = (rule.project,)
    if rule.model:
        filters["model"] = (rule.model,)
    return filters


def hourly_series(rule: AlertRule, start: datetime, end: datetime) -> HourlySeries:
    """The rule's metric per hour in [start, end), from the hourly rollups of its tenant."""
    metrics = tuple(dict.fromkeys((rule.metric, "requests", "cost_usd")))
    result = run_usage_query(
        rule.organization_id,
        UsageQuery(
            start=start, end=end, interval="hour", filters=_filters(rule), metrics=metrics, time_zone="UTC"
        ),
    )
    starts: list[datetime] = []
    values: list[float] = []
    cost: list[float] = []
    zero_filled = rule.metric == "cost_usd" or METRICS[rule.metric] in ZERO_FILLED_UNITS
    points = result.series[0].points if result.series else []
    for at, point in points:
        starts.append(at)
        raw = point.get(rule.metric)
        requests = point.get("requests") or 0
        if raw is None or (not zero_filled and not requests):
            values.append(0.0 if zero_filled else math.nan)
        else:
            values.append(float(raw))
        cost.append(float(point.get("cost_usd") or 0))
    return HourlySeries(starts, np.asarray(values, dtype=np.float64), np.asarray(cost, dtype=np.float64))


def _dollars_per_unit(rule: AlertRule, series: HourlySeries) -> float:
    """Dollars per unit of the metric: 1 for cost, the window's average price for counts, else 0."""
    if rule.metric == "cost_usd":
        return 1.0
    if METRICS[rule.metric] in ZERO_FILLED_UNITS:
        total = float(np.nansum(series.values))
        return float(series.cost.sum()) / total if total > 0 else 0.0
    return 0.0


def detect(tenant_id: int, now: datetime | None = None) -> dict[str, int]:
    """Run every enabled rule of the tenant over the complete hours before `now`, and close the open
    incidents of its disabled rules. Idempotent."""
    now = now or timezone.now()
    counts = {"rules": 0, "incidents": 0, "notified": 0, "closed": 0}
    for rule_id in AlertRule.objects.filter(organization_id=tenant_id, enabled=True).values_list(
        "id", flat=True
    ):
        incidents, notified, closed = detect_rule(rule_id, now)
        counts["rules"] += 1
        counts["incidents"] += incidents
        counts["notified"] += notified
        counts["closed"] += closed
    disabled = AlertIncident.objects.filter(tenant_id=tenant_id, rule__enabled=False)
    counts["closed"] += _close(
        disabled, floor_hour(now), "The rule was disabled while the incident was open."
    )
    return counts


def detect_rule(rule_id: int, now: datetime) -> tuple[int, int, int]:
    """(incidents stored or updated, incidents notified, open incidents closed unscored) for one rule."""
    with transaction.atomic():
        # One run per rule at a time: two concurrent runs would both see "no incident yet".
        rule = AlertRule.objects.select_for_update().get(pk=rule_id)
        end = floor_hour(now)
        closed = 0
        if rule.kind == RuleKind.THRESHOLD:
            rows = _threshold(rule, end)
        else:
            series = hourly_series(rule, end - HISTORY, end)
            rows = _anomaly(rule, series)
            closed = _close_unscored(rule, series, end, kept={row.id for row, _ in rows})
        notified = sum(_maybe_notify(rule, row, paged, now) for row, paged in rows)
    return len(rows), notified, closed


def _close(incidents: QuerySet[AlertIncident], end: datetime, reason: str) -> int:
    """Resolve, at `end` and for `reason`, those of the incidents still open or acknowledged; how many.

    A conditional UPDATE: a person resolving one meanwhile keeps their resolution, and a rerun closes
    nothing twice."""
    return (
        incidents.filter(resolved_at__isnull=True)
        .exclude(status=IncidentStatus.RESOLVED)
        .update(
            status=IncidentStatus.RESOLVED, resolved_at=end, resolved_reason=reason, updated_at=timezone.now()
        )
    )


def _close_unscored(rule: AlertRule, series: HourlySeries, end: datetime, kept: set[int]) -> int:
    """Close the rule's open incidents this run did not find again and can no longer find: those
    whose last anomalous hour is before the window, or all of them when the series is empty or zero in
    every hour of the window (e.g. its model is no longer called). An incident whose hours are inside
    a window with data stays open until a run sees the series back or the hours leave the window."""
    unscored = AlertIncident.objects.filter(rule=rule).exclude(id__in=kept)
    closed = _close(
        unscored.filter(last_anomalous_at__lt=end - HISTORY),
        end,
        f"Its last anomalous hour left the {HISTORY.days}-day detection window before the series "
        "was seen back inside its band.",
    )
    if not np.any(np.nan_to_num(series.values)):  # every hour empty or zero: nothing to score
        closed += _close(
            unscored,
            end,
            f"The rule's series is empty or zero in every hour of the {HISTORY.days} days before "
            f"{end:%Y-%m-%d %H:%M} UTC: nothing is left to score.",
        )
    return closed


def _anomaly(rule: AlertRule, series: HourlySeries) -> list[tuple[AlertIncident, bool]]:
    if not series.starts:
        return []
    timestamps = np.asarray([int(at.timestamp()) for at in series.starts], dtype=np.int64)
    scores = score(series.values, timestamps, DetectorConfig(sensitivity=SENSITIVITY[rule.sensitivity]))
    policy = IncidentPolicy(min_dollar_impact=float(rule.min_impact_usd))
    found = group_incidents(scores, series.values, policy, _dollars_per_unit(rule, series))
    rows = []
    for incident in found:
        rows.append((_store(rule, series, scores.expected, incident), incident.paged_at is not None))
    return rows


def _store(rule: AlertRule, series: HourlySeries, expected: np.ndarray, found: Incident) -> AlertIncident:
    started_at = series.starts[found.start]
    last = series.starts[found.end]
    resolved_at = series.starts[found.resolved_at] if found.resolved_at is not None else None
    fields: dict[str, Any] = {
        "last_anomalous_at": last,
        "severity": str(found.severity),
        "direction": found.direction,
        "impact_usd": Decimal(repr(round(found.dollar_impact, 6))).quantize(MICRO),
        "observed": _finite(series.values[found.peak_at]),
        "expected": _finite(expected[found.peak_at]),
    }
    # The 28-day window slides each hour, and the detector's warm-up with it: an episode already
    # stored may come back with a slightly different start. It is the same incident if it overlaps.
    row = (
        AlertIncident.objects.filter(rule=rule, started_at__lte=last)
        .filter(Q(resolved_at__isnull=True) | Q(resolved_at__gte=started_at))
        .filter(last_anomalous_at__gte=started_at - timedelta(hours=1))
        .order_by("started_at")
        .first()
    )
    if row is None:
        row, _ = AlertIncident.objects.get_or_create(
            rule=rule, started_at=started_at, defaults={"tenant_id": rule.organization_id, **fields}
        )
    for name, value in fields.items():
        setattr(row, name, value)
    if row.status != IncidentStatus.RESOLVED:  # a person's "resolved" stands
        row.resolved_at = resolved_at
        if resolved_at is not None:
            row.status = IncidentStatus.RESOLVED
    if row.direction > 0 and row.resolved_at is None:
        # While open, who carries the extra spend (recomputed each run: the hours grow).
        row.cause = explain(rule.organization_id, row.started_at, row.last_anomalous_at + timedelta(hours=1))
    row.save()
    return row


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def _threshold(rule: AlertRule, end: datetime) -> list[tuple[AlertIncident, bool]]:
    if rule.threshold_value is None:
        return []
    start = end - timedelta(hours=max(rule.window_hours, 1))
    result = run_usage_query(
        rule.organization_id,
        UsageQuery(
            start=start,
            end=end,
            interval="hour",
            filters=_filters(rule),
            metrics=(rule.metric,),
            points=False,
            time_zone="UTC",
        ),
    )
    raw = result.totals.get(rule.metric)
    observed = Decimal(str(raw)) if raw is not None else None
    limit = rule.threshold_value
    breached = observed is not None and (observed > limit if rule.comparison == "above" else observed < limit)
    open_row = (
        AlertIncident.objects.filter(rule=rule, resolved_at__isnull=True).order_by("-started_at").first()
    )
    if not breached:
        if open_row is not None and open_row.status != IncidentStatus.RESOLVED:
            open_row.resolved_at = end
            open_row.status = IncidentStatus.RESOLVED
            open_row.save(update_fields=["resolved_at", "status", "updated_at"])
        return []
    assert observed is not None
    over = observed - limit if rule.comparison == "above" else limit - observed
    fields: dict[str, Any] = {
        "last_anomalous_at": end - timedelta(hours=1),
        "severity": "major",
        "direction": 1 if rule.comparison == "above" else -1,
        "impact_usd": over.quantize(MICRO) if rule.metric == "cost_usd" else Decimal(0),
        "observed": float(observed),
        "expected": float(limit),
    }
    if open_row is None:
        open_row, _ = AlertIncident.objects.get_or_create(
            rule=rule,
            started_at=end - timedelta(hours=1),
            defaults={"tenant_id": rule.organization_id, **fields},
        )
    for name, value in fields.items():
        setattr(open_row, name, value)
    open_row.save()
    return [(open_row, True)]


def _maybe_notify(rule: AlertRule, row: AlertIncident, paged: bool, now: datetime) -> bool:
    """Notify the rule's channels of an open incident worth a page, once, outside the quiet period."""
    if row.notified_at is not None or row.resolved_at is not None or not paged:
        return False
    last = AlertIncident.objects.filter(rule=rule).aggregate(last=Max("notified_at"))["last"]
    if last is not None and now - last < timedelta(minutes=rule.quiet_minutes):
        return False  # the next run after the quiet period notifies it
    channel_ids = list(rule.channels.values_list("id", flat=True))
    if channel_ids:
        notify(
            rule.organization_id,
            channel_ids,
            f"incident:{row.id}",
            incident_subject(rule, row),
            _payload(rule, row),
        )
    row.notified_at = now
    row.save(update_fields=["notified_at", "updated_at"])
    return True


def incident_subject(rule: AlertRule, row: AlertIncident) -> str:
    way = "above" if row.direction > 0 else "below"
    return f"Alert '{rule.name}': {rule.metric} {way} normal since {row.started_at:%Y-%m-%d %H:%M} UTC"


def _payload(rule: AlertRule, row: AlertIncident) -> dict[str, Any]:
    return {
        "kind": "alert.incident",
        "organization": rule.organization_id,
        "rule": {"id": rule.id, "name": rule.name, "metric": rule.metric, "kind": rule.kind},
        "incident": {
            "id": row.id,
            "started_at": row.started_at,
            "severity": row.severity,
            "impact_usd": row.impact_usd,
            "observed": row.observed,
            "expected": row.expected,
            "cause": row.cause,
        },
    }
