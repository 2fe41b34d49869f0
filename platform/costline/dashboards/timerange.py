"""The time range a page shows: a preset (last 24 hours, 7 days, 30 days, this month, last month) or
custom dates, always in the organisation's time zone, kept in the URL so a view can be shared.

URL parameters: `range=<preset>`, or `from` and `to` (dates `2025-03-01`, both days included, or
local times `2025-03-01T14:00`, end excluded), read in the organisation's zone.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

PRESETS: dict[str, str] = {
    "24h": "Last 24 hours",
    "7d": "Last 7 days",
    "30d": "Last 30 days",
    "this_month": "This month",
    "last_month": "Last month",
}
MAX_RANGE = timedelta(days=400)  # as the usage API


class RangeError(ValueError):
    """The range in the URL cannot be used; the message says what to change."""


@dataclass(frozen=True)
class TimeRange:
    start: datetime  # inclusive, aware in the organisation's zone
    end: datetime  # exclusive
    preset: str | None  # None: custom
    zone: ZoneInfo

    @property
    def label(self) -> str:
        if self.preset is not None:
            return PRESETS[self.preset]
        last = self.end - timedelta(microseconds=1)
        if self.start.time() == time(0) and self.end.time() == time(0):
            if self.start.date() == last.date():
                return f"{self.start:%d %b %Y}"
            return f"{self.start:%d %b %Y} – {last:%d %b %Y}"
        return f"{self.start:%d %b %Y %H:%M} – {self.end:%d %b %Y %H:%M}"

    @property
    def params(self) -> dict[str, str]:
        """URL parameters that give this range back (for links that keep it)."""
        if self.preset is not None:
            return {"range": self.preset}
        return {"from": _format_edge(self.start), "to": _format_edge(self.end, end=True)}

    def previous(self) -> TimeRange:
        """The range of the same length just before (for "vs previous period")."""
        length = self.end - self.start
        return TimeRange(self.start - length, self.start, None, self.zone)


def month_start(moment: datetime) -> datetime:
    return moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def _midnight(day: date, zone: ZoneInfo) -> datetime:
    return datetime.combine(day, time(0), tzinfo=zone)


def _format_edge(moment: datetime, *, end: bool = False) -> str:
    if moment.time() == time(0):
        return (moment.date() - timedelta(days=1) if end else moment.date()).isoformat()
    return moment.strftime("%Y-%m-%dT%H:%M")


def preset_range(preset: str, zone: ZoneInfo, now: datetime) -> TimeRange:
    local_now = now.astimezone(zone)
    if preset == "24h":
        start, end = local_now - timedelta(hours=24), local_now
    elif preset == "7d":
        start, end = local_now - timedelta(days=7), local_now
    elif preset == "30d":
        start, end = local_now - timedelta(days=30), local_now
    elif preset == "this_month":
        start, end = _midnight(local_now.date().replace(day=1), zone), local_now
    elif preset == "last_month":
        first = local_now.date().replace(day=1)
        start = _midnight((first - timedelta(days=1)).replace(day=1), zone)
        end = _midnight(first, zone)
    else:
        choices = ", ".join(PRESETS)
        raise RangeError(f"Unknown range {preset!r}: use one of {choices}, or from and to dates.")
    return TimeRange(start, end, preset, zone)


def _parse_edge(value: str, name: str, zone: ZoneInfo, *, end: bool) -> datetime:
    value = value.strip()
    try:
        if "T" in value or " " in value:
            moment = datetime.fromisoformat(value)
            return moment.replace(tzinfo=zone) if moment.tzinfo is None else moment.astimezone(zone)
        day = date.fromisoformat(value)
    except ValueError:
        raise RangeError(
            f"{name}={value!r} is not a date: write 2025-03-01, or 2025-03-01T14:00 for a time."
        ) from None
    return _midnight(day + timedelta(days=1) if end else day, zone)


def parse_range(params: Mapping[str, str], zone: ZoneInfo, now: datetime, default: str = "7d") -> TimeRange:
    """The range named by URL parameters; `default` (a preset) when none is given.

    A preset wins over dates (the picker's preset buttons submit the custom dates beside it).
    """
    start_text, end_text = params.get("from", ""), params.get("to", "")
    if params.get("range") or (not start_text and not end_text):
        return preset_range(params.get("range") or default, zone, now)
    if not start_text or not end_text:
        raise RangeError("A custom range needs both from and to (dates such as 2025-03-01).")
    start = _parse_edge(start_text, "from", zone, end=False)
    end = _parse_edge(end_text, "to", zone, end=True)
    if end <= start:
        raise RangeError("The range ends before it starts: from must come before to.")
    if end - start > MAX_RANGE:
        raise RangeError(f"The range is longer than {MAX_RANGE.days} days: choose a shorter one.")
    return TimeRange(start, end, None, zone)
