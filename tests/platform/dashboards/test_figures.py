"""Figures and number formats: plain functions, tested without HTTP."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import plotly.graph_objects as go
import pytest

from costline.dashboards.figures import MAX_SERIES, Figure, embed, spend_by_model, usage_chart
from costline.dashboards.labels import DIMENSION_LABELS, METRIC_LABELS, metric_label
from costline.dashboards.templatetags.costline_format import (
    format_change,
    format_compact,
    format_count,
    format_metric,
    format_money,
    format_ms,
    format_percent,
)
from costline.usage.metrics import DIMENSIONS, METRICS, Series, UsageResult, Value

PARIS = ZoneInfo("Europe/Paris")
START = datetime(2026, 3, 9, 23, 0, tzinfo=UTC)  # midnight in Paris


def result(groups: dict[str, list[Value]], metric: str = "cost_usd", interval: str = "day") -> UsageResult:
    """An answer of the query layer with one series per model and these values per bucket."""
    step = timedelta(days=1) if interval == "day" else timedelta(hours=1)
    length = len(next(iter(groups.values())))
    edges = [START + step * i for i in range(length + 1)]
    series = [
        Series(
            {"model": name},
            [(edges[i], {metric: value}) for i, value in enumerate(values)],
            {metric: sum((v for v in values if v is not None), Decimal(0) if metric == "cost_usd" else 0)},
        )
        for name, values in groups.items()
    ]
    return UsageResult(edges[0], edges[-1], interval, (metric,), series, {})


def plotly(figure: Figure) -> go.Figure:
    """The figure as plotly's Python objects, which reject any property plotly.js does not know."""
    return go.Figure(figure)


def test_spend_is_a_bar_per_bucket_stacked_by_model_in_the_organisations_time() -> None:
    answer = result({"gpt-4o": [Decimal("1.25"), Decimal("0.000135")], "claude": [Decimal("3"), None]})

    figure = plotly(spend_by_model(answer, PARIS))

    assert [trace.name for trace in figure.data] == ["claude", "gpt-4o"]  # largest first
    gpt = figure.data[1]
    assert gpt.type == "bar"
    assert list(gpt.y) == [1.25, 0.000135]
    assert list(gpt.customdata) == ["$1.25", "$0.000135"]  # hover: exact as the tables write it
    assert list(gpt.x) == ["2026-03-10T00:00:00", "2026-03-11T00:00:00"]  # Paris wall-clock days
    assert "%{customdata}" in gpt.hovertemplate
    assert figure.layout.barmode == "stack"
    assert figure.layout.yaxis.tickprefix == "$"
    assert figure.layout.yaxis.title.text == "Cost ($)"
    assert figure.layout.xaxis.title.text == "Day (Europe/Paris)"
    assert list(figure.layout.xaxis.range) == ["2026-03-10T00:00:00", "2026-03-12T00:00:00"]
    assert figure.data[0].y[1] is None  # a bucket without a value is a gap, not a zero


def test_groups_beyond_the_largest_ten_are_summed_into_other() -> None:
    answer = result({f"model-{n:02d}": [n, n + 1] for n in range(1, 14)}, metric="requests")

    figure = plotly(usage_chart(answer, "requests", "line", ZoneInfo("UTC")))

    assert len(figure.data) == MAX_SERIES + 1
    assert figure.data[0].name == "model-13"
    other = figure.data[-1]
    assert other.name == "Other (3 groups)"
    assert list(other.y) == [1 + 2 + 3, 2 + 3 + 4]
    assert figure.layout.yaxis.title.text == "Requests (calls)"


def test_percentiles_are_neither_stacked_nor_summed() -> None:
    answer = result({f"model-{n:02d}": [100.0 * n, None] for n in range(1, 13)}, metric="latency_p95")

    area = plotly(usage_chart(answer, "latency_p95", "area", ZoneInfo("UTC")))
    bars = plotly(usage_chart(answer, "latency_p95", "bar", ZoneInfo("UTC")))

    assert len(area.data) == MAX_SERIES  # no "Other": a sum of p95s means nothing
    assert {trace.fill for trace in area.data} == {"tozeroy"}
    assert {trace.stackgroup for trace in area.data} == {None}
    assert bars.layout.barmode == "group"
    assert area.layout.yaxis.ticksuffix == " ms"
    assert list(area.data[0].customdata) == ["1,200 ms", "–"]


def test_rates_read_as_percentages() -> None:
    answer = result({"gpt-4o": [0.25, 0.0]}, metric="error_rate", interval="hour")

    figure = plotly(usage_chart(answer, "error_rate", "line", ZoneInfo("UTC")))

    assert figure.layout.yaxis.tickformat == ".1%"
    assert list(figure.data[0].customdata) == ["25%", "0%"]
    assert figure.layout.xaxis.title.text == "Hour (UTC)"


def test_an_empty_answer_says_so_on_the_chart() -> None:
    answer = result({"gpt-4o": [Decimal(0), Decimal(0)]})
    answer.series[0].totals["requests"] = 0

    figure = plotly(spend_by_model(answer, ZoneInfo("UTC")))

    assert [a.text for a in figure.layout.annotations] == ["No calls in this range"]


def test_an_unknown_chart_type_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown chart type 'pie'"):
        usage_chart(result({"gpt-4o": [1]}, "requests"), "requests", "pie", ZoneInfo("UTC"))


def test_names_from_traces_cannot_close_the_figures_script_element() -> None:
    hostile = "</script><script>alert(1)</script>"
    figure = spend_by_model(result({hostile: [Decimal(1)]}), ZoneInfo("UTC"))

    html = embed(figure, "spend-chart", "Spend")

    assert "<script>alert" not in html
    assert html.count("</script>") == 1
    payload = html.split('id="spend-chart-figure">')[1].removesuffix("</script>")
    assert json.loads(payload)["data"][0]["name"] == hostile
    assert html.startswith('<div id="spend-chart" class="chart" data-figure="spend-chart-figure"')


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (Decimal("1234.567"), "$1,234.57"),
        (Decimal("1"), "$1.00"),
        (Decimal("0.5"), "$0.50"),
        (Decimal("0.123456"), "$0.123"),
        (Decimal("0.0042"), "$0.0042"),
        (Decimal("0.000135"), "$0.000135"),
        (Decimal("0.000000000001"), "<$0.0000000001"),
        (Decimal("0E-12"), "$0.00"),
        (Decimal("-2.5"), "-$2.50"),
        (None, "–"),
    ],
)
def test_money_shows_cents_from_a_dollar_and_three_digits_below(value: Decimal | None, text: str) -> None:
    assert format_money(value) == text


def test_counts_durations_and_ratios_read_naturally() -> None:
    assert format_count(1234567) == "1,234,567"
    assert format_count(None) == "–"
    assert [format_compact(v) for v in (3_755_831_013, 745_423_348, 12_345, 9_999, 2_808_094)] == [
        "3.76B",
        "745M",
        "12.3k",
        "9,999",
        "2.81M",
    ]
    assert [format_ms(v) for v in (1234.4, 812.5, 45.25, 0.42)] == [
        "1,234 ms",
        "812 ms",
        "45.2 ms",
        "0.42 ms",
    ]
    assert [format_percent(v) for v in (0.253, 0.0253, 0.00042, 0, 1)] == [
        "25.3%",
        "2.5%",
        "0.042%",
        "0%",
        "100%",
    ]
    assert [format_change(v) for v in (0.123, -0.04, 0.0, None)] == ["+12.3%", "−4.0%", "±0.0%", "–"]
    assert format_metric(Decimal("0.5"), "cost_per_request") == "$0.50"
    assert format_metric(3, "cache_hits") == "3"
    assert format_metric(0.5, "cache_hit_rate") == "50%"
    assert format_metric(120.0, "ttft_p95") == "120 ms"


def test_every_metric_and_dimension_of_the_query_layer_has_a_label() -> None:
    assert set(METRIC_LABELS) == set(METRICS)
    assert set(DIMENSION_LABELS) == set(DIMENSIONS)
    assert metric_label("cost_usd") == "Cost ($)"
    assert metric_label("latency_p95") == "Latency p95 (ms)"
