"""The incident page's chart: the rule's hourly series, the detector's expected band, anomalous hours.

The series and band are recomputed from the rollups with the same code the hourly job runs
(costline.alerts.monitoring), so the chart shows what the detector saw. Plotly's JSON form, drawn by
static/costline/charts.js like the budgets' burn-down; times are wall-clock times in the
organisation's zone (plotly.js has no time zones).
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np

from costline.alerts.detection import DetectorConfig, score
from costline.alerts.models import AlertIncident
from costline.alerts.monitoring import HISTORY, SENSITIVITY, hourly_series
from costline.budgets.figures import time_layout
from costline.charts import GRID

Figure = dict[str, Any]
SERIES, EXPECTED, ANOMALY = "#636efa", "#ab63fa", "#ef553b"
# Hours shown around the incident: the detector still needs its whole history to score them.
BEFORE, AFTER = timedelta(days=2), timedelta(hours=12)


def _wall(moment: datetime, zone: ZoneInfo) -> str:
    return moment.astimezone(zone).replace(tzinfo=None).isoformat()


def _num(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None  # JSON has no NaN: a gap in the line


def incident_figure(incident: AlertIncident, now: datetime, zone: ZoneInfo) -> Figure:
    rule = incident.rule
    end_at = incident.resolved_at or incident.last_anomalous_at
    end = min(end_at + AFTER, now.replace(minute=0, second=0, microsecond=0))
    series = hourly_series(rule, end - HISTORY, end)
    if not series.starts:
        return {"data": [], "layout": {}}
    timestamps = np.asarray([int(at.timestamp()) for at in series.starts], dtype=np.int64)
    scores = score(series.values, timestamps, DetectorConfig(sensitivity=SENSITIVITY[rule.sensitivity]))
    shown = [i for i, at in enumerate(series.starts) if at >= incident.started_at - BEFORE]
    xs = [_wall(series.starts[i], zone) for i in shown]
    anomalous = [i for i in shown if incident.started_at <= series.starts[i] <= incident.last_anomalous_at]
    traces: list[dict[str, Any]] = [
        {
            "type": "scatter",
            "mode": "lines",
            "name": "Expected low",
            "x": xs,
            "y": [_num(scores.low[i]) for i in shown],
            "line": {"width": 0, "color": EXPECTED},
            "showlegend": False,
            "hoverinfo": "skip",
        },
        {
            "type": "scatter",
            "mode": "lines",
            "name": "Expected band",
            "x": xs,
            "y": [_num(scores.high[i]) for i in shown],
            "fill": "tonexty",
            "fillcolor": "rgba(171, 99, 250, 0.18)",
            "line": {"width": 0, "color": EXPECTED},
            "hoverinfo": "skip",
        },
        {
            "type": "scatter",
            "mode": "lines",
            "name": "Expected",
            "x": xs,
            "y": [_num(scores.expected[i]) for i in shown],
            "line": {"color": EXPECTED, "dash": "dash", "width": 1},
        },
        {
            "type": "scatter",
            "mode": "lines",
            "name": rule.metric,
            "x": xs,
            "y": [_num(series.values[i]) for i in shown],
            "line": {"color": SERIES, "width": 2},
        },
        {
            "type": "scatter",
            "mode": "markers",
            "name": "Anomalous hours",
            "x": [_wall(series.starts[i], zone) for i in anomalous],
            "y": [_num(series.values[i]) for i in anomalous],
            "marker": {"color": ANOMALY, "size": 9},
        },
    ]
    layout = time_layout(
        360,
        -0.15,
        {"title": {"text": rule.metric}, "rangemode": "tozero", "gridcolor": GRID},
        hovermode="x unified",
    )
    return {"data": traces, "layout": layout}
