"""Budget periods in the organisation's zone: daily, weekly, monthly, custom; DST days; rollover."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from costline.budgets.periods import period_of

PARIS = ZoneInfo("Europe/Paris")
NEW_YORK = ZoneInfo("America/New_York")


def test_daily_in_the_org_zone() -> None:
    # 23:30 UTC on 14 March is already 15 March in Paris (UTC+1).
    start, end = period_of("daily", PARIS, datetime(2025, 3, 14, 23, 30, tzinfo=UTC))
    assert start == datetime(2025, 3, 15, tzinfo=PARIS)
    assert end == datetime(2025, 3, 16, tzinfo=PARIS)
    assert start.astimezone(UTC) == datetime(2025, 3, 14, 23, 0, tzinfo=UTC)
    assert start.tzinfo == PARIS


def hours(period: tuple[datetime, datetime]) -> timedelta:
    # Python subtracts two datetimes of one zone on the wall clock: measure elapsed time in UTC.
    return period[1].astimezone(UTC) - period[0].astimezone(UTC)


def test_dst_days_are_23_and_25_hours() -> None:
    spring = period_of("daily", PARIS, datetime(2025, 3, 30, 12, tzinfo=UTC))
    autumn = period_of("daily", PARIS, datetime(2025, 10, 26, 12, tzinfo=UTC))
    assert hours(spring) == timedelta(hours=23)
    assert hours(autumn) == timedelta(hours=25)
    ny_spring = period_of("daily", NEW_YORK, datetime(2025, 3, 9, 12, tzinfo=UTC))
    assert hours(ny_spring) == timedelta(hours=23)
    assert ny_spring[0].astimezone(UTC) == datetime(2025, 3, 9, 5, tzinfo=UTC)  # EST midnight
    assert ny_spring[1].astimezone(UTC) == datetime(2025, 3, 10, 4, tzinfo=UTC)  # EDT midnight


def test_weekly_from_monday_and_across_dst() -> None:
    # Sunday 30 March 2025 (DST starts in Paris): the week is Monday 24 to Monday 31, 167 hours.
    start, end = period_of("weekly", PARIS, datetime(2025, 3, 30, 20, tzinfo=UTC))
    assert start == datetime(2025, 3, 24, tzinfo=PARIS)
    assert end == datetime(2025, 3, 31, tzinfo=PARIS)
    assert start.weekday() == 0
    assert hours((start, end)) == timedelta(hours=7 * 24 - 1)


def test_monthly_and_year_end() -> None:
    start, end = period_of("monthly", PARIS, datetime(2025, 12, 31, 23, 30, tzinfo=UTC))
    assert (start, end) == (datetime(2026, 1, 1, tzinfo=PARIS), datetime(2026, 2, 1, tzinfo=PARIS))
    start, end = period_of("monthly", NEW_YORK, datetime(2025, 3, 1, 3, tzinfo=UTC))  # still February there
    assert (start, end) == (datetime(2025, 2, 1, tzinfo=NEW_YORK), datetime(2025, 3, 1, tzinfo=NEW_YORK))
    start, end = period_of("monthly", "UTC", datetime(2025, 3, 31, 23, 59, tzinfo=UTC))
    assert hours((start, end)) == timedelta(days=31)


def test_half_hour_zone() -> None:
    start, _ = period_of("daily", "Asia/Kolkata", datetime(2025, 3, 14, 18, 29, tzinfo=UTC))
    assert start.astimezone(UTC) == datetime(2025, 3, 13, 18, 30, tzinfo=UTC)
    start, _ = period_of("daily", "Asia/Kolkata", datetime(2025, 3, 14, 18, 30, tzinfo=UTC))
    assert start.astimezone(UTC) == datetime(2025, 3, 14, 18, 30, tzinfo=UTC)


def test_custom_periods_keep_their_local_start_across_dst() -> None:
    first = datetime(2025, 3, 20, 9, 0, tzinfo=PARIS)  # 08:00 UTC before DST
    start, end = period_of(
        "custom", PARIS, datetime(2025, 3, 25, tzinfo=UTC), custom_start=first, custom_length_days=10
    )
    assert (start, end) == (first, datetime(2025, 3, 30, 9, 0, tzinfo=PARIS))
    start, end = period_of(
        "custom", PARIS, datetime(2025, 4, 5, tzinfo=UTC), custom_start=first, custom_length_days=10
    )
    assert start == datetime(2025, 3, 30, 9, 0, tzinfo=PARIS)
    assert start.astimezone(UTC) == datetime(2025, 3, 30, 7, 0, tzinfo=UTC)  # 09:00 summer time
    assert end == datetime(2025, 4, 9, 9, 0, tzinfo=PARIS)
    # Far later: still on the grid.
    start, end = period_of(
        "custom", PARIS, datetime(2026, 1, 1, tzinfo=UTC), custom_start=first, custom_length_days=10
    )
    assert (start.date() - first.date()).days % 10 == 0
    assert start.hour == 9
    assert start <= datetime(2026, 1, 1, tzinfo=UTC) < end
    # Before the first start: the first period.
    start, _ = period_of(
        "custom", PARIS, datetime(2025, 1, 1, tzinfo=UTC), custom_start=first, custom_length_days=10
    )
    assert start == first


def test_custom_period_needs_start_and_length() -> None:
    with pytest.raises(ValueError, match="custom period needs"):
        period_of("custom", "UTC", datetime(2025, 1, 1, tzinfo=UTC))
    with pytest.raises(ValueError, match="unknown period"):
        period_of("yearly", "UTC", datetime(2025, 1, 1, tzinfo=UTC))


@pytest.mark.parametrize("kind", ["daily", "weekly", "monthly"])
@pytest.mark.parametrize(
    "zone", ["UTC", "Europe/Paris", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata"]
)
def test_rollover_at_the_boundary(kind: str, zone: str) -> None:
    """Every instant is in exactly one period; one period's end is the next one's start."""
    moment = datetime(2025, 1, 1, 0, 0, tzinfo=UTC)
    for _ in range(30):
        start, end = period_of(kind, zone, moment)
        assert start <= moment < end
        before = period_of(kind, zone, end - timedelta(microseconds=1))
        after = period_of(kind, zone, end)
        assert before == (start, end)
        assert after[0] == end
        assert after[1] > end
        moment = end + timedelta(hours=7 * 24 if kind == "daily" else 0)
