"""Reading the query string of GET /api/v1/usage into a UsageQuery.

Plain parsing, no database: every mistake raises InvalidQuery with a message that names the parameter,
says what is wrong and what to send instead; the API answers it with 400.
"""

from __future__ import annotations

import functools
import zoneinfo
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta

from costline.usage.calls import InvalidQuery, _parse_time
from costline.usage.metrics import DEFAULT_METRICS, DIMENSIONS, INTERVALS, METRICS, NONE_VALUE, UsageQuery
from costline.usage.models import Status

DEFAULT_RANGE = timedelta(hours=24)
# A year and a month, so "the last 12 months" and "this month last year" each fit in one query.
MAX_RANGE = timedelta(days=400)
MAX_GROUP_BY = 3
INTERVAL_CHOICES = (*INTERVALS, "auto")

# Given at most once each; the others (group_by, metrics, a filter per dimension) may be repeated or
# comma separated.
SINGLE_VALUED = ("from", "to", "interval", "tz")
PARAMETERS = ("from", "to", "interval", "group_by", "metrics", "tz", *DIMENSIONS)


def parse_usage_query(params: Mapping[str, Sequence[str]], now: datetime | None = None) -> UsageQuery:
    """The UsageQuery that a query string asks for (each name with its list of values)."""
    unknown = sorted(set(params) - set(PARAMETERS))
    if unknown:
        raise InvalidQuery(
            f"Unknown query parameter(s): {', '.join(unknown)}. Accepted: {', '.join(PARAMETERS)}."
        )
    single: dict[str, str] = {}
    for name in SINGLE_VALUED:
        given = params.get(name, ())
        if len(given) > 1:
            raise InvalidQuery(f"{name}: give it once, got {len(given)} values.")
        if given:
            single[name] = given[0]

    start, end = _parse_range(single.get("from"), single.get("to"), now or datetime.now(UTC))
    return UsageQuery(
        start=start,
        end=end,
        interval=_parse_interval(single.get("interval", "auto")),
        group_by=_parse_group_by(params.get("group_by", ())),
        filters={
            dimension: _parse_filter(dimension, params[dimension])
            for dimension in DIMENSIONS
            if dimension in params
        },
        metrics=_parse_metrics(params["metrics"]) if "metrics" in params else DEFAULT_METRICS,
        time_zone=_parse_time_zone(single.get("tz", "UTC")),
    )


def _parse_range(raw_from: str | None, raw_to: str | None, now: datetime) -> tuple[datetime, datetime]:
    end = _parse_time("to", raw_to) if raw_to is not None else now
    start = _parse_time("from", raw_from) if raw_from is not None else end - DEFAULT_RANGE
    if start >= end:
        raise InvalidQuery(
            f"from ({start.isoformat()}) must be earlier than to ({end.isoformat()}): from is inclusive, "
            "to is exclusive. Without to the range ends now; without from it starts 24 hours before to."
        )
    if end - start > MAX_RANGE:
        raise InvalidQuery(
            f"from … to spans {end - start}; at most {MAX_RANGE.days} days can be asked at once: "
            "narrow the range or split it into several queries."
        )
    return start, end


def _parse_interval(raw: str) -> str:
    if raw not in INTERVAL_CHOICES:
        raise InvalidQuery(f"interval: unknown interval {raw!r}; use one of: {', '.join(INTERVAL_CHOICES)}.")
    return raw


def _parse_group_by(given: Sequence[str]) -> tuple[str, ...]:
    # An empty item (`group_by=`, a trailing comma) asks for nothing, so a form with no grouping
    # selected still reads as "one series for everything".
    names = [name for name in _split(given) if name]
    for name in names:
        if name not in DIMENSIONS:
            raise InvalidQuery(
                f"group_by: unknown dimension {name!r}; use up to {MAX_GROUP_BY} of: {', '.join(DIMENSIONS)}."
            )
    for name in names:
        if names.count(name) > 1:
            raise InvalidQuery(
                f"group_by: {name!r} is given {names.count(name)} times; name each dimension once."
            )
    if len(names) > MAX_GROUP_BY:
        raise InvalidQuery(
            f"group_by: at most {MAX_GROUP_BY} dimensions, got {len(names)} ({', '.join(names)}); "
            "group by fewer and filter on the others instead."
        )
    return tuple(names)


def _parse_filter(dimension: str, given: Sequence[str]) -> tuple[str, ...]:
    # Every item is a value, the empty one included: `feature=` or `feature=,checkout` selects calls
    # without a feature (NONE_VALUE), the latter together with those of the checkout feature.
    values = tuple(dict.fromkeys(NONE_VALUE if value == "" else value for value in _split(given)))
    if dimension == "status":
        # A closed set: a misspelt status would otherwise select nothing, silently.
        for value in values:
            if value not in Status.values:
                raise InvalidQuery(
                    f"status: unknown status {value!r}; use one of: {', '.join(Status.values)}."
                )
    return values


def _parse_metrics(given: Sequence[str]) -> tuple[str, ...]:
    names = [name for name in _split(given) if name]
    if not names:
        raise InvalidQuery(
            f"metrics: name at least one metric, e.g. metrics=requests,cost_usd; leave the parameter out "
            f"for the default ({','.join(DEFAULT_METRICS)})."
        )
    for name in names:
        if name not in METRICS:
            raise InvalidQuery(f"metrics: unknown metric {name!r}; use one of: {', '.join(METRICS)}.")
    for name in names:
        if names.count(name) > 1:
            raise InvalidQuery(
                f"metrics: {name!r} is given {names.count(name)} times; name each metric once."
            )
    return tuple(names)


def _parse_time_zone(raw: str) -> str:
    zones = _time_zones()
    if raw in zones:
        return raw
    suggestion = next((zone for zone in zones if zone.lower() == raw.strip().lower()), None)
    hint = f"did you mean {suggestion!r}? " if suggestion else ""
    raise InvalidQuery(
        f"tz: unknown time zone {raw!r}; {hint}use an IANA time zone name such as UTC, Europe/Paris or "
        "America/New_York."
    )


@functools.cache
def _time_zones() -> frozenset[str]:
    # Listing the zone database reads the disk (~80 ms), so once per process. "localtime" is a link to
    # whatever zone the server runs in, not an IANA name; a query must mean the same on every server.
    return frozenset(zoneinfo.available_timezones() - {"localtime"})


def _split(given: Sequence[str]) -> list[str]:
    """The items of a repeated and/or comma separated parameter (`a=x&a=y,z` → x, y, z)."""
    return [item.strip() for value in given for item in value.split(",")]
