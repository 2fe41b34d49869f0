"""Plotly figures of the pages: plain functions from query answers to figures, tested without HTTP.

A figure is Plotly's own JSON form (`{"data": [traces], "layout": {...}}`), built as plain dicts:
plotly's Python objects validate every property on the way in and deep-copy on the way out, which cost
150 ms for a week of hourly points, more than the page's queries. The tests load every figure into
`plotly.graph_objects.Figure`, which rejects any property plotly does not know.

Figures are drawn in the browser by the app's own copy of plotly.js (`static/plotly/plotly.min.js`,
loaded once per page, then `static/costline/charts.js` draws every embedded figure): no CDN, so the
pages work offline. Times are the organisation's wall-clock times (plotly.js has no time zones), and
hover labels are the same formatted strings as the tables, so a chart never shows $0.01 where the
table says $0.0062.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from django.utils.html import format_html
from django.utils.safestring import SafeString, mark_safe

from costline.charts import FONT, GRID
from costline.dashboards.labels import ADDITIVE_METRICS, group_label, metric_label
from costline.dashboards.templatetags.costline_format import format_metric
from costline.usage.metrics import METRICS, Series, UsageResult, Value

Figure = dict[str, Any]  # Plotly's figure JSON: {"data": [...], "layout": {...}}

CHART_TYPES = {"line": "Line", "area": "Stacked area", "bar": "Bar"}
# More lines than this make a chart unreadable; the rest of the groups are summed into one "Other"
# trace (for sums) and listed in full in the table under the chart.
MAX_SERIES = 10
PERIOD_MS = {"minute": 60_000, "hour": 3_600_000, "day": 86_400_000}
HOVER_FORMAT = {"minute": "%d %b %Y %H:%M", "hour": "%d %b %Y %H:%M", "day": "%a %d %b %Y"}
# Plotly's own default colours, written out: a figure built as JSON gets no Python-side template.
COLOURS = [
    "#636efa", "#ef553b", "#00cc96", "#ab63fa", "#ffa15a",
    "#19d3f3", "#ff6692", "#b6e880", "#ff97ff", "#fecb52", "#9aa0ac",
]  # fmt: skip


def local_time(moment: datetime, zone: ZoneInfo) -> str:
    """Wall-clock time in `zone` without an offset, which plotly.js puts on a date axis as given."""
    return moment.astimezone(zone).replace(tzinfo=None).isoformat()


def _number(value: Value) -> float | None:
    # The one place money becomes a float: a chart is a picture; tables and CSV keep the Decimal.
    if value is None:
        return None
    return float(value)


def _value_axis(metric: str) -> dict[str, Any]:
    axis: dict[str, Any] = {
        "title": {"text": metric_label(metric)},
        "rangemode": "tozero",
        "gridcolor": GRID,
        "zerolinecolor": GRID,
        "automargin": True,
    }
    unit = METRICS[metric]
    if unit == "USD":
        axis.update(tickprefix="$", separatethousands=True)
    elif unit == "ms":
        axis.update(ticksuffix=" ms", separatethousands=True)
    elif unit == "ratio":
        axis.update(tickformat=".1%")
    else:
        axis.update(separatethousands=True)
    return axis


def _layout(result: UsageResult, metric: str, zone: ZoneInfo, stacked: bool, bars: bool) -> dict[str, Any]:
    layout: dict[str, Any] = {
        "font": {"family": FONT, "size": 12, "color": "#1d2330"},
        "paper_bgcolor": "#ffffff",
        "plot_bgcolor": "#ffffff",
        "colorway": COLOURS,
        "height": 360,
        "margin": {"l": 70, "r": 20, "t": 10, "b": 50},
        "hovermode": "x unified",
        "showlegend": True,
        "legend": {"orientation": "h", "yanchor": "top", "y": -0.18, "x": 0},
        "xaxis": {
            "type": "date",
            "title": {"text": f"{result.interval.capitalize()} ({zone.key})"},
            "hoverformat": HOVER_FORMAT[result.interval],
            "range": [local_time(result.start, zone), local_time(result.end, zone)],
            "gridcolor": GRID,
        },
        "yaxis": _value_axis(metric),
    }
    if bars:
        layout["barmode"] = "stack" if stacked else "group"
        layout["bargap"] = 0.15
    return layout


def usage_chart(
    result: UsageResult, metric: str, chart: str, zone: ZoneInfo, top: int = MAX_SERIES
) -> Figure:
    """One trace per group of `result` (the `top` largest by the metric, then "Other" for sums).

    chart: line, area (stacked for sums, filled to zero otherwise) or bar (stacked for sums, side by
    side otherwise): stacking rates or percentiles would draw a total that means nothing.
    """
    if chart not in CHART_TYPES:
        raise ValueError(f"unknown chart type {chart!r}; use one of {', '.join(CHART_TYPES)}")
    additive = metric in ADDITIVE_METRICS
    ranked = sorted(result.series, key=lambda s: _rank(s.totals.get(metric)), reverse=True)
    shown, rest = ranked[:top], ranked[top:]
    lines: list[tuple[str, list[datetime], list[Value]]] = [
        (group_label(s.group), [p[0] for p in s.points], [p[1].get(metric) for p in s.points]) for s in shown
    ]
    if rest and additive:
        lines.append((f"Other ({len(rest)} groups)", *_summed(rest, metric)))
    stacked = additive and chart in ("area", "bar")
    figure: Figure = {"data": [], "layout": _layout(result, metric, zone, stacked, chart == "bar")}
    for name, moments, values in lines:
        trace: dict[str, Any] = {
            "name": name,
            "x": [local_time(moment, zone) for moment in moments],
            "y": [_number(v) for v in values],
            "customdata": [format_metric(v, metric) for v in values],
            "hovertemplate": "%{fullData.name}: %{customdata}<extra></extra>",
        }
        if chart == "bar":
            trace.update(type="bar", xperiod=PERIOD_MS[result.interval], xperiodalignment="middle")
        elif chart == "area":
            trace.update(type="scatter", mode="lines", line={"width": 1})
            trace.update({"stackgroup": "one"} if stacked else {"fill": "tozeroy"})
        else:
            trace.update(type="scatter", mode="lines+markers", marker={"size": 4})
        figure["data"].append(trace)
    if not any(s.totals.get("requests") or s.totals.get(metric) for s in result.series):
        figure["layout"]["annotations"] = [
            {
                "text": "No calls in this range",
                "showarrow": False,
                "xref": "paper",
                "yref": "paper",
                "x": 0.5,
                "y": 0.5,
                "font": {"size": 14, "color": "#687083"},
            }
        ]
    return figure


def spend_by_model(result: UsageResult, zone: ZoneInfo, top: int = MAX_SERIES) -> Figure:
    """The Overview's spend over time: a bar per bucket, stacked by model."""
    return usage_chart(result, "cost_usd", "bar", zone, top)


def _summed(series: Sequence[Series], metric: str) -> tuple[list[datetime], list[Value]]:
    moments = [moment for moment, _ in series[0].points]
    totals: list[Value] = []
    for index in range(len(moments)):
        values = [s.points[index][1].get(metric) for s in series]
        known = [v for v in values if v is not None]
        totals.append(sum(known, Decimal(0) if metric.endswith("_usd") else 0) if known else None)
    return moments, totals


def _rank(value: Value) -> float:
    return float(value) if value is not None else float("-inf")


def embed(figure: Figure, div_id: str, label: str) -> SafeString:
    """The chart's <div> and its figure as JSON, drawn by static/costline/charts.js.

    The JSON is escaped for an HTML <script> element (model and feature names come from the traces
    services send, so a `</script>` in one must stay text).
    """
    payload = (
        json.dumps(figure, separators=(",", ":"))
        .replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("&", "\\u0026")
    )
    data_id = f"{div_id}-figure"
    return format_html(
        '<div id="{}" class="chart" data-figure="{}" role="img" aria-label="{}"></div>'
        '<script type="application/json" id="{}">{}</script>',
        div_id,
        data_id,
        label,
        data_id,
        mark_safe(payload),  # noqa: S308 - escaped for a script element just above
    )
