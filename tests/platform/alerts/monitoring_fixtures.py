"""Hourly usage for alert-rule tests: 28 days of steady calls, then a spike, rolled up for real."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal

from django.utils import timezone

from costline.alerts.monitoring import floor_hour
from costline.tenancy.models import Organization
from tests.platform.dashboards.conftest import roll_up
from tests.platform.usage.factories import make_calls

CALL_COST = Decimal("0.010000000000")


def hour_end() -> datetime:
    """The end of the last complete hour, recent enough for every rollup's retention."""
    return floor_hour(timezone.now())


def steady_then_spike(
    org: Organization,
    end: datetime,
    spike_hours: int = 3,
    spike_calls: int = 60,
    after_hours: int = 0,
    **fields: object,
) -> None:
    """2 to 4 calls per hour for 28 days before `end`; `spike_hours` hours get `spike_calls`, followed by
    `after_hours` normal hours (0: the spike is the last hours before `end`)."""
    starts = []
    total = 28 * 24
    spike_from, spike_to = total - after_hours - spike_hours, total - after_hours
    for i in range(total):
        hour = end - timedelta(hours=total - i)
        n = spike_calls if spike_from <= i < spike_to else 2 + (i % 3)
        starts += [hour + timedelta(seconds=30 + k) for k in range(n)]
    roll_up(make_calls(org, starts, cost_usd=CALL_COST, **fields))
