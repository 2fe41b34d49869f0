"""The query string of GET /api/v1/usage, read into a UsageQuery (no database, no HTTP)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs

import pytest

from costline.usage.calls import InvalidQuery
from costline.usage.metrics import DEFAULT_METRICS, DIMENSIONS, METRICS, NONE_VALUE, UsageQuery
from costline.usage.usage_params import parse_usage_query

NOW = datetime(2025, 3, 10, 12, 30, 15, tzinfo=UTC)


def parse(query: str = "") -> UsageQuery:
    """Parse a query string as the API receives it (`+` and %-escapes decoded, blanks kept)."""
    return parse_usage_query(parse_qs(query, keep_blank_values=True), now=NOW)


def refusal(query: str) -> str:
    with pytest.raises(InvalidQuery) as refused:
        parse(query)
    return str(refused.value)


# --- defaults -----------------------------------------------------------------------------------


def test_it_answers_the_last_24_hours_by_default() -> None:
    query = parse()

    assert query == UsageQuery(
        start=NOW - timedelta(hours=24),
        end=NOW,
        interval="auto",
        group_by=(),
        filters={},
        metrics=DEFAULT_METRICS,
        time_zone="UTC",
    )


def test_it_ends_now_when_only_from_is_given() -> None:
    query = parse("from=2025-03-09T00:00:00Z")

    assert (query.start, query.end) == (datetime(2025, 3, 9, tzinfo=UTC), NOW)


def test_it_starts_24_hours_before_to_when_only_to_is_given() -> None:
    query = parse("to=2025-03-01T00:00:00Z")

    assert (query.start, query.end) == (datetime(2025, 2, 28, tzinfo=UTC), datetime(2025, 3, 1, tzinfo=UTC))


# --- time range ---------------------------------------------------------------------------------


def test_it_reads_a_time_without_offset_as_utc() -> None:
    query = parse("from=2025-03-01T08:00:00&to=2025-03-02")

    assert query.start == datetime(2025, 3, 1, 8, tzinfo=UTC)
    assert query.end == datetime(2025, 3, 2, tzinfo=UTC)


def test_it_keeps_an_offset_even_when_its_plus_arrived_as_a_space() -> None:
    # curl sends "+02:00" unencoded; the query string decodes it as a space.
    query = parse("from=2025-03-01T10:00:00+02:00&to=2025-03-01T12:00:00%2B02:00")

    assert query.start == datetime(2025, 3, 1, 8, tzinfo=UTC)
    assert query.end == datetime(2025, 3, 1, 10, tzinfo=UTC)


def test_it_accepts_a_range_of_exactly_400_days() -> None:
    query = parse("from=2024-01-01T00:00:00Z&to=2025-02-04T00:00:00Z")

    assert query.end - query.start == timedelta(days=400)


# --- repeated and comma separated forms -----------------------------------------------------------


def test_it_reads_group_by_repeated_or_comma_separated() -> None:
    assert parse("group_by=model&group_by=feature").group_by == ("model", "feature")
    assert parse("group_by=model,feature").group_by == ("model", "feature")
    assert parse("group_by=model, feature&group_by=user").group_by == ("model", "feature", "user")


def test_it_reads_an_empty_group_by_as_no_grouping() -> None:
    assert parse("group_by=").group_by == ()


def test_it_reads_metrics_repeated_or_comma_separated_in_the_order_given() -> None:
    assert parse("metrics=cost_usd,requests").metrics == ("cost_usd", "requests")
    assert parse("metrics=latency_p99&metrics=error_rate").metrics == ("latency_p99", "error_rate")


def test_it_accepts_every_metric() -> None:
    assert parse("metrics=" + ",".join(METRICS)).metrics == tuple(METRICS)


def test_it_reads_filters_repeated_or_comma_separated() -> None:
    query = parse("model=gpt-4o&model=gpt-4o-mini,o3&provider=openai&status=error")

    assert query.filters == {
        "model": ("gpt-4o", "gpt-4o-mini", "o3"),
        "provider": ("openai",),
        "status": ("error",),
    }


def test_it_reads_an_empty_filter_value_as_calls_without_a_value() -> None:
    assert parse("feature=").filters == {"feature": (NONE_VALUE,)}
    assert parse("feature=,checkout").filters == {"feature": (NONE_VALUE, "checkout")}
    assert parse("user=&user=u-1").filters == {"user": (NONE_VALUE, "u-1")}


def test_it_accepts_a_filter_on_every_dimension() -> None:
    query = parse(
        "&".join(f"{dimension}={'ok' if dimension == 'status' else 'x'}" for dimension in DIMENSIONS)
    )

    assert set(query.filters) == set(DIMENSIONS)


# --- interval and time zone ----------------------------------------------------------------------


@pytest.mark.parametrize("interval", ["minute", "hour", "day", "auto"])
def test_it_accepts_each_interval(interval: str) -> None:
    assert parse(f"interval={interval}").interval == interval


@pytest.mark.parametrize("tz", ["Europe/Paris", "America/New_York", "Asia/Kolkata", "UTC"])
def test_it_accepts_an_iana_time_zone(tz: str) -> None:
    assert parse(f"tz={tz}").time_zone == tz


# --- refusals: each says what is wrong and what to do --------------------------------------------


@pytest.mark.parametrize(
    ("query", "says"),
    [
        # parameters
        ("limit=10", "Unknown query parameter(s): limit. Accepted: from, to, interval, group_by, metrics"),
        ("models=gpt-4o&foo=1", "Unknown query parameter(s): foo, models."),
        ("from=2025-03-01&from=2025-03-02", "from: give it once, got 2 values."),
        ("tz=UTC&tz=Europe/Paris", "tz: give it once, got 2 values."),
        # time range
        ("from=yesterday", "from must be an ISO 8601 date-time such as 2025-01-31T14:00:00Z"),
        ("to=", "to must be an ISO 8601 date-time"),
        (
            "from=2025-03-02T00:00:00Z&to=2025-03-01T00:00:00Z",
            "from (2025-03-02T00:00:00+00:00) must be earlier than to (2025-03-01T00:00:00+00:00)",
        ),
        ("from=2025-03-01T00:00:00Z&to=2025-03-01T00:00:00Z", "must be earlier than to"),
        ("from=2025-03-11T00:00:00Z", "must be earlier than to"),  # after now, with no `to`
        (
            "from=2024-01-01T00:00:00Z&to=2025-02-04T00:00:01Z",
            "from … to spans 400 days, 0:00:01; at most 400 days can be asked at once: narrow the range",
        ),
        # interval
        ("interval=week", "interval: unknown interval 'week'; use one of: minute, hour, day, auto."),
        # group_by
        ("group_by=team", "group_by: unknown dimension 'team'; use up to 3 of: project, service,"),
        ("group_by=model&group_by=model", "group_by: 'model' is given 2 times; name each dimension once."),
        ("group_by=model,feature,model", "group_by: 'model' is given 2 times"),
        (
            "group_by=model,feature,user,service",
            "group_by: at most 3 dimensions, got 4 (model, feature, user, service); group by fewer",
        ),
        # filters
        ("status=failed", "status: unknown status 'failed'; use one of: ok, error."),
        # metrics
        ("metrics=cost", "metrics: unknown metric 'cost'; use one of: requests, errors, error_rate,"),
        ("metrics=requests,latency_p90", "metrics: unknown metric 'latency_p90'"),
        ("metrics=requests&metrics=requests", "metrics: 'requests' is given 2 times; name each metric once."),
        ("metrics=", "metrics: name at least one metric, e.g. metrics=requests,cost_usd"),
        # tz
        ("tz=Mars/Olympus", "tz: unknown time zone 'Mars/Olympus'; use an IANA time zone name such as UTC"),
        ("tz=europe/paris", "tz: unknown time zone 'europe/paris'; did you mean 'Europe/Paris'?"),
        ("tz=", "tz: unknown time zone ''"),
        ("tz=../../etc/passwd", "tz: unknown time zone '../../etc/passwd'"),
        ("tz=localtime", "tz: unknown time zone 'localtime'"),
    ],
)
def test_it_refuses(query: str, says: str) -> None:
    assert says in refusal(query)


def test_it_lists_every_accepted_parameter_when_one_is_unknown() -> None:
    message = refusal("colour=blue")

    for name in ("from", "to", "interval", "group_by", "metrics", "tz", *DIMENSIONS):
        assert name in message.split("Accepted:")[1]


def test_it_lists_every_metric_when_one_is_unknown() -> None:
    message = refusal("metrics=cost")

    assert message.endswith(f"use one of: {', '.join(METRICS)}.")
