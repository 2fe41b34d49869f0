"""The JSON body of GET /api/v1/usage for a UsageResult (no database, no HTTP)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest

from costline.usage.metrics import Series, UsageResult
from costline.usage.serializers import usage_json

T0 = datetime(2025, 3, 10, 12, 0, tzinfo=UTC)
T1 = T0 + timedelta(hours=1)


def result(metrics: tuple[str, ...], series: list[Series], **kwargs: object) -> UsageResult:
    """A UsageResult of two hourly buckets from T0; keyword arguments replace its fields."""
    fields: dict[str, object] = {
        "start": T0,
        "end": T0 + timedelta(hours=2),
        "interval": "hour",
        "metrics": metrics,
        "series": series,
        "totals": {},
        "complete_through": None,
    }
    fields.update(kwargs)
    return UsageResult(**fields)  # type: ignore[arg-type]


def test_it_writes_the_whole_answer() -> None:
    metrics = ("requests", "cost_usd", "error_rate", "latency_p95")
    gpt = Series(
        group={"model": "gpt-4o", "feature": None},
        points=[
            (
                T0,
                {
                    "requests": 3,
                    "cost_usd": Decimal("0.001250000000"),
                    "error_rate": 0.0,
                    "latency_p95": 812.5,
                },
            ),
            (T1, {"requests": 0, "cost_usd": Decimal("0E-12"), "error_rate": None, "latency_p95": None}),
        ],
        totals={
            "requests": 3,
            "cost_usd": Decimal("0.001250000000"),
            "error_rate": 0.0,
            "latency_p95": 812.5,
        },
    )
    answer = result(
        metrics,
        [gpt],
        totals=gpt.totals,
        complete_through=datetime(2025, 3, 10, 14, 1, 30, 250000, tzinfo=UTC),
    )

    body = usage_json(answer, "Europe/Paris")

    assert body == {
        "from": "2025-03-10T12:00:00Z",
        "to": "2025-03-10T14:00:00Z",
        "interval": "hour",
        "tz": "Europe/Paris",
        "metrics": ["requests", "cost_usd", "error_rate", "latency_p95"],
        "units": {"requests": "calls", "cost_usd": "USD", "error_rate": "ratio", "latency_p95": "ms"},
        "complete_through": "2025-03-10T14:01:30.250000Z",
        "totals": {"requests": 3, "cost_usd": "0.001250000000", "error_rate": 0.0, "latency_p95": 812.5},
        "series": [
            {
                "group": {"model": "gpt-4o", "feature": None},
                "totals": {
                    "requests": 3,
                    "cost_usd": "0.001250000000",
                    "error_rate": 0.0,
                    "latency_p95": 812.5,
                },
                "points": [
                    {
                        "t": "2025-03-10T12:00:00Z",
                        "requests": 3,
                        "cost_usd": "0.001250000000",
                        "error_rate": 0.0,
                        "latency_p95": 812.5,
                    },
                    {
                        "t": "2025-03-10T13:00:00Z",
                        "requests": 0,
                        "cost_usd": "0.000000000000",
                        "error_rate": None,
                        "latency_p95": None,
                    },
                ],
            }
        ],
    }
    json.dumps(body, allow_nan=False)  # plain JSON: no Decimal, datetime or NaN left


def test_it_writes_money_as_exact_fixed_point_decimal_strings() -> None:
    amounts = [Decimal("0.000000100000"), Decimal("123456789.123456789012"), Decimal("1E+2"), Decimal(7)]

    bodies = [usage_json(result(("cost_usd",), [], totals={"cost_usd": amount}), "UTC") for amount in amounts]

    assert [body["totals"]["cost_usd"] for body in bodies] == [
        "0.000000100000",  # never 1.00000E-7
        "123456789.123456789012",
        "100",
        "7",
    ]


def test_it_refuses_to_write_money_that_went_through_a_float() -> None:
    with pytest.raises(TypeError, match="cost_usd must be a Decimal"):
        usage_json(result(("cost_usd",), [], totals={"cost_usd": 0.1}), "UTC")


def test_it_writes_counts_as_integers_even_when_summed_as_decimals() -> None:
    # PostgreSQL's SUM over bigint is numeric, which arrives as Decimal.
    body = usage_json(
        result(("requests", "input_tokens"), [], totals={"requests": Decimal(12), "input_tokens": 3}), "UTC"
    )

    assert body["totals"] == {"requests": 12, "input_tokens": 3}
    assert all(type(value) is int for value in body["totals"].values())


def test_it_writes_only_the_metrics_asked_for_in_their_order() -> None:
    values = {"errors": 1, "requests": 4, "cost_usd": Decimal("0.5")}

    body = usage_json(
        result(("errors", "requests"), [Series({}, [(T0, values)], values)], totals=values), "UTC"
    )

    assert list(body["totals"]) == ["errors", "requests"]
    assert list(body["series"][0]["points"][0]) == ["t", "errors", "requests"]
    assert body["units"] == {"errors": "calls", "requests": "calls"}


def test_it_writes_times_in_utc_with_z() -> None:
    paris = timezone(timedelta(hours=1))
    answer = result(
        ("requests",), [], totals={"requests": 0}, start=datetime(2025, 3, 10, 1, 0, tzinfo=paris)
    )

    assert usage_json(answer, "Europe/Paris")["from"] == "2025-03-10T00:00:00Z"
