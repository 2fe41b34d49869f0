"""A budget's periods: daily, weekly (from Monday), monthly, or custom (a start and a length in days).

Periods follow the organisation's time zone on the wall clock: a daily period runs from local midnight
to the next local midnight, so the days on which daylight saving starts and ends are 23 and 25 hours
long; a custom period keeps its start's local time of day. Every instant belongs to exactly one
period: [start, end) with the end of one the start of the next, so a rollover resets at the boundary.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

if TYPE_CHECKING:
    from costline.budgets.models import Budget


def local_instant(day: date, at: time, zone: ZoneInfo) -> datetime:
    """The instant the wall clock of `zone` reads `day` `at`.

    A time that never happens (skipped by a spring-forward gap) is the first instant after the gap; a
    time that happens twice (autumn) is its first occurrence. Returned in `zone`, normalised.
    """
    # fold=0 takes the offset in force before a transition: in a gap that lands just after it, in a
    # repeated hour on its first pass. The round trip through UTC normalises the wall clock.
    return datetime.combine(day, at).replace(tzinfo=zone, fold=0).astimezone(UTC).astimezone(zone)


def _month_start(day: date) -> date:
    return day.replace(day=1)


def _next_month(day: date) -> date:
    return date(day.year + (day.month == 12), day.month % 12 + 1, 1)


def period_of(
    period: str,
    zone: ZoneInfo | str,
    moment: datetime,
    *,
    custom_start: datetime | None = None,
    custom_length_days: int | None = None,
) -> tuple[datetime, datetime]:
    """The [start, end) of the period containing `moment` (aware), as aware datetimes in `zone`.

    A custom period before its first start is the first period.
    """
    if moment.tzinfo is None:
        raise ValueError("moment must be aware")
    zone = ZoneInfo(zone) if isinstance(zone, str) else zone
    local = moment.astimezone(zone)
    today = local.date()
    midnight = time(0, 0)
    if period == "daily":
        start_day, end_day = today, today + timedelta(days=1)
    elif period == "weekly":
        start_day = today - timedelta(days=today.weekday())
        end_day = start_day + timedelta(days=7)
    elif period == "monthly":
        start_day, end_day = _month_start(today), _next_month(today)
    elif period == "custom":
        return _custom_period(zone, moment, custom_start, custom_length_days)
    else:
        raise ValueError(f"unknown period {period!r}; use daily, weekly, monthly or custom")
    return local_instant(start_day, midnight, zone), local_instant(end_day, midnight, zone)


def _custom_period(
    zone: ZoneInfo, moment: datetime, custom_start: datetime | None, length_days: int | None
) -> tuple[datetime, datetime]:
    if custom_start is None or not length_days or length_days < 1:
        raise ValueError("a custom period needs a start and a length of at least one day")
    if custom_start.tzinfo is None:
        raise ValueError("custom_start must be aware")
    moment = moment.astimezone(UTC)  # compare instants, not wall clocks of one zone
    first = custom_start.astimezone(zone)
    at = first.timetz().replace(tzinfo=None)
    step = timedelta(days=length_days)

    def nth(n: int) -> datetime:
        return local_instant(first.date() + step * n, at, zone)

    if moment < nth(0):
        return nth(0), nth(1)
    # Estimate n from the wall-clock distance, then correct by at most a step either way (DST shifts).
    n = (moment.astimezone(zone).replace(tzinfo=None) - first.replace(tzinfo=None)) // step
    n = max(0, int(n))
    while n > 0 and moment < nth(n):
        n -= 1
    while moment >= nth(n + 1):
        n += 1
    return nth(n), nth(n + 1)


def budget_zone(budget: Budget) -> ZoneInfo:
    name = budget.organization.time_zone or "UTC"
    try:
        return ZoneInfo(name)
    except (KeyError, ValueError):  # an unknown zone name: fall back to UTC rather than fail the job
        return ZoneInfo("UTC")


def current_period(budget: Budget, now: datetime) -> tuple[datetime, datetime]:
    """The [start, end) of `budget`'s period containing `now`: aware, in the organisation's zone.

    Mind Python's rule for two datetimes of one zone: `end - start` is wall-clock time (24 h on a
    23-hour day); convert to UTC first to measure elapsed time.
    """
    return period_of(
        budget.period,
        budget_zone(budget),
        now,
        custom_start=budget.custom_start,
        custom_length_days=budget.custom_length_days,
    )


def previous_period(budget: Budget, now: datetime) -> tuple[datetime, datetime]:
    start, _ = current_period(budget, now)
    return current_period(budget, start - timedelta(microseconds=1))
