"""The budget page's burn-down chart: cumulative spend per day, forecast band, limit and thresholds.

Actual spend comes from the usage query layer with the budget's filters (day buckets in the
organisation's time zone); the forecast is the evaluation job's (BudgetPeriodState). The figure is
Plotly's JSON form, like the dashboards' figures, drawn by the app's own plotly.js
(static/costline/charts.js); the template embeds it with Django's json_script. Times are wall-clock
times in the organisation's zone (plotly.js has no time zones).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from costline.budgets.models import Budget, BudgetPeriodState
from costline.budgets.spend import usage_filters
from costline.charts import FONT, GRID
from costline.usage.metrics import QueryError, UsageQuery, usage

Figure = dict[str, Any]
ACTUAL, FORECAST, LIMIT, THRESHOLD = "#636efa", "#ab63fa", "#ef553b", "#ffa15a"


def time_layout(
    height: int, legend_y: float, yaxis: dict[str, Any], xaxis: dict[str, Any] | None = None, **more: Any
) -> dict[str, Any]:
    """The layout the budget, incident and advisor charts share: a date x axis, white, a legend below;
    `yaxis`, `xaxis` (added to the date axis) and `more` are each chart's own."""
    return {
        "font": {"family": FONT, "size": 12},
        "margin": {"l": 60, "r": 20, "t": 10, "b": 40},
        "height": height,
        "plot_bgcolor": "white",
        "paper_bgcolor": "white",
        "legend": {"orientation": "h", "y": legend_y},
        "xaxis": {"type": "date", "gridcolor": GRID, **(xaxis or {})},
        "yaxis": yaxis,
        **more,
    }


@dataclass
class BurnDown:
    start: datetime  # the period, aware
    end: datetime
    zone: ZoneInfo
    amount: Decimal
    thresholds: list[int]
    days: list[tuple[datetime, Decimal]] = field(default_factory=list)  # day start → cumulative spend
    now: datetime | None = None  # the last actual point is at min(now, end)
    spend: Decimal | None = None  # the evaluation's spend (more recent than the rollups' days)
    forecast: Decimal | None = None
    forecast_low: Decimal | None = None
    forecast_high: Decimal | None = None
    note: str = ""  # why there is no actual series, when there is none


def burn_down(
    budget: Budget, start: datetime, end: datetime, now: datetime, state: BudgetPeriodState | None
) -> BurnDown:
    """The chart's numbers for `budget`'s period [start, end) as of `now`."""
    zone = budget.organization.zone
    data = BurnDown(
        start=start,
        end=end,
        zone=zone,
        amount=budget.amount_usd,
        thresholds=list(budget.thresholds or []),
        now=now,
    )
    if state is not None:
        data.spend = state.spend_usd
        data.forecast, data.forecast_low, data.forecast_high = (
            state.forecast_usd,
            state.forecast_low_usd,
            state.forecast_high_usd,
        )
    try:
        filters = usage_filters(budget)
    except ValueError as exc:
        data.note = f"No spend history to draw: {exc}."
        return data
    until = min(now, end)
    if until <= start:
        return data
    try:
        result = usage(
            budget.organization_id,
            UsageQuery(
                start=start,
                end=until,
                interval="day",
                filters=filters,
                metrics=("cost_usd",),
                time_zone=zone.key,
            ),
        )
    except QueryError as exc:
        data.note = f"No spend history to draw: {exc}"
        return data
    per_day: dict[datetime, Decimal] = {}
    for series in result.series:
        for bucket, values in series.points:
            cost = values.get("cost_usd")
            per_day[bucket] = per_day.get(bucket, Decimal(0)) + (
                cost if isinstance(cost, Decimal) else Decimal(str(cost or 0))
            )
    total = Decimal(0)
    for bucket in sorted(per_day):
        total += per_day[bucket]
        data.days.append((max(bucket, start), total))
    return data


def _wall(moment: datetime, zone: ZoneInfo) -> str:
    return moment.astimezone(zone).replace(tzinfo=None).isoformat()


def _usd(value: Decimal) -> float:
    # A chart is a picture: the one place money becomes a float. The page's numbers stay Decimal.
    return float(value)


def _money(value: Decimal) -> str:
    return f"${value.quantize(Decimal('0.01')):,}" if value >= 1 else f"${value.normalize():f}"


def burn_down_figure(data: BurnDown) -> Figure:
    zone = data.zone
    x0, x1 = _wall(data.start, zone), _wall(data.end, zone)
    traces: list[dict[str, Any]] = []
    xs = [x0] + [_wall(day, zone) for day, _ in data.days]
    ys = [0.0] + [_usd(total) for _, total in data.days]
    last = data.days[-1][1] if data.days else Decimal(0)
    if data.spend is not None and data.spend > last:
        last = data.spend
    if data.now is not None and data.start < data.now:
        xs.append(_wall(min(data.now, data.end), zone))
        ys.append(_usd(last))
    traces.append(
        {
            "type": "scatter",
            "mode": "lines+markers",
            "name": "Actual spend",
            "x": xs,
            "y": ys,
            "line": {"color": ACTUAL, "width": 2, "shape": "linear"},
            "hovertemplate": "%{x}<br>$%{y:,.4f}<extra>actual</extra>",
        }
    )
    if data.forecast is not None and data.now is not None and data.now < data.end:
        x_now = _wall(data.now, zone)
        low = data.forecast_low if data.forecast_low is not None else data.forecast
        high = data.forecast_high if data.forecast_high is not None else data.forecast
        traces += [
            {
                "type": "scatter",
                "mode": "lines",
                "name": "Forecast low",
                "x": [x_now, x1],
                "y": [_usd(last), _usd(low)],
                "line": {"width": 0, "color": FORECAST},
                "showlegend": False,
                "hoverinfo": "skip",
            },
            {
                "type": "scatter",
                "mode": "lines",
                "name": "Forecast range",
                "x": [x_now, x1],
                "y": [_usd(last), _usd(high)],
                "fill": "tonexty",
                "fillcolor": "rgba(171, 99, 250, 0.18)",
                "line": {"width": 0, "color": FORECAST},
                "hoverinfo": "skip",
            },
            {
                "type": "scatter",
                "mode": "lines",
                "name": f"Forecast ({_money(data.forecast)})",
                "x": [x_now, x1],
                "y": [_usd(last), _usd(data.forecast)],
                "line": {"color": FORECAST, "dash": "dash"},
                "hovertemplate": "%{x}<br>$%{y:,.4f}<extra>forecast</extra>",
            },
        ]
    traces.append(
        {
            "type": "scatter",
            "mode": "lines",
            "name": f"Limit ({_money(data.amount)})",
            "x": [x0, x1],
            "y": [_usd(data.amount)] * 2,
            "line": {"color": LIMIT, "width": 2},
            "hovertemplate": "$%{y:,.2f}<extra>limit</extra>",
        }
    )
    for percent in data.thresholds:
        if percent == 100:
            continue
        level = data.amount * percent / 100
        traces.append(
            {
                "type": "scatter",
                "mode": "lines",
                "name": f"{percent}% ({_money(level)})",
                "x": [x0, x1],
                "y": [_usd(level)] * 2,
                "line": {"color": THRESHOLD, "width": 1, "dash": "dot"},
                "hovertemplate": "$%{y:,.2f}<extra>" + f"{percent}%" + "</extra>",
            }
        )
    layout = time_layout(
        360,
        -0.15,
        {
            "title": {"text": "Spend (USD)"},
            "rangemode": "tozero",
            "tickprefix": "$",
            "separatethousands": True,
            "gridcolor": GRID,
            "zerolinecolor": GRID,
        },
        xaxis={"range": [x0, x1]},
        hovermode="closest",
    )
    return {"data": traces, "layout": layout}
