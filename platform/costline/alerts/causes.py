"""Why did spend rise? The values of each dimension that carry the incident's extra spend.

The extra spend of a value is its cost in the incident's hours minus its cost in the same hours a
week before (the same hours of the week, so office-hours seasonality cancels out), read from the
rollups with `run_usage_query(group_by=...)`. Its share is that difference over the total
increase; the three largest, over all dimensions, are stored on the incident:

    [{"dimension": "feature", "value": "summarize", "extra_usd": "4.100000", "share": 0.82,
      "text": "82% of the extra spend: feature summarize"}, ...]
"""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from costline.alerts.models import AlertIncident
from costline.usage.metrics import QueryError, UsageQuery
from costline.usage.query import run_usage_query

DIMENSIONS = ("model", "feature", "user", "service", "project")
WEEK = timedelta(days=7)
TOP = 3


def _cost_by(tenant_id: int, dimension: str, start: datetime, end: datetime) -> dict[str | None, Decimal]:
    result = run_usage_query(
        tenant_id,
        UsageQuery(
            start=start, end=end, interval="hour", group_by=(dimension,), metrics=("cost_usd",), points=False
        ),
    )
    return {s.group[dimension]: Decimal(str(s.totals.get("cost_usd") or 0)) for s in result.series}


def explain(tenant_id: int, start: datetime, end: datetime) -> list[dict[str, Any]]:
    """The top contributors to the cost increase of [start, end) over the same hours a week before."""
    contributions: list[tuple[Decimal, str, str | None]] = []
    total: Decimal | None = None
    for dimension in DIMENSIONS:
        try:
            now = _cost_by(tenant_id, dimension, start, end)
            before = _cost_by(tenant_id, dimension, start - WEEK, end - WEEK)
        except QueryError:  # a dimension this interval cannot be grouped by (e.g. user by hour)
            continue
        if total is None:
            total = sum(now.values(), Decimal(0)) - sum(before.values(), Decimal(0))
        values = set(now) | set(before)
        if len(values) < 2:
            continue  # every call has the same value (one service): it tells nothing apart
        for value in values:
            extra = now.get(value, Decimal(0)) - before.get(value, Decimal(0))
            if extra > 0:
                contributions.append((extra, dimension, value))
    if not total or total <= 0:
        return []  # spend did not rise: nothing to attribute
    # Largest first; at equal amounts, the dimension listed first (model before feature…).
    contributions.sort(key=lambda c: (-c[0], DIMENSIONS.index(c[1])))
    causes = []
    for extra, dimension, value in contributions[:TOP]:
        share = float(extra / total)
        label = value if value is not None else "(none)"
        causes.append(
            {
                "dimension": dimension,
                "value": value,
                "extra_usd": str(extra.quantize(Decimal("0.000001"))),
                "share": round(share, 4),
                "text": f"{round(share * 100)}% of the extra spend: {dimension} {label}",
            }
        )
    return causes


def explain_incident(incident: AlertIncident) -> list[dict[str, Any]]:
    """Compute and store the incident's causes (its hours: start to the last anomalous hour)."""
    end = incident.last_anomalous_at + timedelta(hours=1)
    incident.cause = explain(incident.tenant_id, incident.started_at, end)
    incident.save(update_fields=["cause", "updated_at"])
    return incident.cause
