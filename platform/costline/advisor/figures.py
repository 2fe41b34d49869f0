"""The advisor's chart: daily baseline cost against the replayed cost, in Plotly's JSON form (drawn by
static/costline/charts.js, like the budgets' and dashboards' figures)."""

from __future__ import annotations

from typing import Any

from costline.advisor.findings import ReplayResult
from costline.budgets.figures import time_layout
from costline.charts import GRID

BASELINE, REPLAYED = "#636efa", "#00cc96"


def replay_figure(result: ReplayResult) -> dict[str, Any]:
    days = [d.day.isoformat() for d in result.days]
    # A chart is a picture: the one place money becomes a float. The page's numbers stay Decimal.
    traces = [
        {
            "type": "scatter",
            "mode": "lines+markers",
            "name": "Actual cost",
            "x": days,
            "y": [float(d.baseline_usd) for d in result.days],
            "line": {"color": BASELINE},
        },
        {
            "type": "scatter",
            "mode": "lines+markers",
            "name": "Replayed under the policy",
            "x": days,
            "y": [float(d.replayed_usd) for d in result.days],
            "line": {"color": REPLAYED, "dash": "dash"},
        },
    ]
    layout = time_layout(
        320,
        -0.2,
        {
            "title": {"text": "Cost per day (USD)"},
            "rangemode": "tozero",
            "tickprefix": "$",
            "gridcolor": GRID,
        },
    )
    return {"data": traces, "layout": layout}
