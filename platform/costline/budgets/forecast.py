"""End-of-period spend forecast: the burn rate, shaped by daily and weekly seasonality.

Plain functions over pandas and numpy (no database): `forecast(history, spent, now, period_end, ...)`.

The model, learned from the scope's last four weeks of hourly spend (local time of the organisation):

- weekly seasonality: a factor per day of the week (mean spend that day / mean spend), once the
  history covers two weeks; daily seasonality: a factor per hour of the day, from the history with
  the weekly factors divided out, once it covers two days;
- trend: a straight line fitted to the deseasonalised hourly spend (its slope, in USD per hour²);
- the burn rate now: the deseasonalised mean of the last 24 hours, moved to the present by the slope
  (a runaway spend today shows within hours, not diluted by four weeks);
- each future hour to the period's end: (rate now + slope × hours ahead) × its seasonal factors; the
  expected spend is what is spent plus their sum. The band: the residuals' spread (sigma per hour) over
  the hours ahead, plus the rate's own uncertainty, at ±1.645 sigma (about 90%); the low end never goes
  below what is already spent.

Money in and out is Decimal (12 places); the estimate itself is float arithmetic.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd

PLACES = Decimal("0.000000000001")
HOUR = timedelta(hours=1)
HISTORY = timedelta(days=28)
RATE_WINDOW_HOURS = 24
Z = 1.645  # two-sided 90%
MIN_HISTORY_HOURS = 6  # less than this: the burn rate of the period so far, flat


@dataclass(frozen=True)
class Forecast:
    expected: Decimal  # spend at the end of the period
    low: Decimal
    high: Decimal
    projected_limit_at: datetime | None  # when the expected spend reaches the limit, within the period
    history_hours: int = 0  # hours of history the model learned from (0: the period's burn rate alone)


@dataclass(frozen=True)
class Model:
    rate: float  # deseasonalised USD per hour at `at`
    slope: float  # USD per hour, per hour
    sigma: float  # residual standard deviation per hour, USD
    rate_sigma: float  # standard error of `rate`
    daily: np.ndarray  # 24 factors, hour of day (local)
    weekly: np.ndarray  # 7 factors, Monday = 0 (local)
    at: datetime  # the end of the history (an hour boundary, UTC)
    hours: int = 0  # hours of history learned from

    def factor(self, moment: datetime, zone: ZoneInfo) -> float:
        local = moment.astimezone(zone)
        return float(self.daily[local.hour] * self.weekly[local.weekday()])


def _money(value: float) -> Decimal:
    return Decimal(repr(max(value, 0.0))).quantize(PLACES)


def _normalised(means: pd.Series, size: int) -> np.ndarray:
    out = np.ones(size)
    values = means.reindex(range(size)).to_numpy(dtype=float)
    overall = np.nanmean(values) if np.isfinite(values).any() else 0.0
    if overall > 0:
        out = np.where(np.isfinite(values), values / overall, 1.0)
        out = np.where(out > 0, out, 1e-6)  # an hour that never spends: tiny, not zero (division)
    return out


def fit(history: pd.Series, zone: ZoneInfo | str = "UTC") -> Model | None:
    """Learn the model from hourly spend (index: aware hour starts, values: USD). None without data."""
    zone = ZoneInfo(zone) if isinstance(zone, str) else zone
    if history.empty:
        return None
    values = history.astype(float)
    index = pd.DatetimeIndex(values.index).tz_convert(UTC)
    values = pd.Series(values.to_numpy(), index=index).sort_index()
    if len(values) < MIN_HISTORY_HOURS or values.sum() <= 0:
        return None
    local = pd.DatetimeIndex(values.index).tz_convert(str(zone))
    hours = len(values)
    weekly = np.ones(7)
    if hours >= 14 * 24:
        weekly = _normalised(values.groupby(local.day_of_week).mean(), 7)
    week_factor = weekly[local.day_of_week]
    daily = np.ones(24)
    if hours >= 2 * 24:
        daily = _normalised(pd.Series(values.to_numpy() / week_factor).groupby(local.hour).mean(), 24)
    season = week_factor * daily[local.hour]
    y = values.to_numpy() / season
    t = np.arange(hours, dtype=float)
    slope, intercept = np.polyfit(t, y, 1) if hours >= 24 else (0.0, float(y.mean()))
    fitted = (intercept + slope * t) * season
    residuals = values.to_numpy() - fitted
    sigma = float(np.sqrt(np.mean(residuals**2)))
    window = min(RATE_WINDOW_HOURS, hours)
    recent = y[-window:]
    # The window's mean sits (window - 1) / 2 hours back from its last hour, which ends at `at`.
    rate = float(recent.mean() + slope * ((window - 1) / 2 + 1))
    rate_sigma = (
        float((residuals[-window:] / season[-window:]).std() / math.sqrt(window)) if window > 1 else sigma
    )
    at = values.index[-1].to_pydatetime() + HOUR
    return Model(
        rate=max(rate, 0.0),
        slope=float(slope),
        sigma=sigma,
        rate_sigma=rate_sigma,
        daily=daily,
        weekly=weekly,
        at=at,
        hours=hours,
    )


def _future_hours(now: datetime, end: datetime) -> list[tuple[datetime, float]]:
    """(hour start, fraction of it still ahead) for every hour from now to the period's end."""
    out = []
    hour = now.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    end = end.astimezone(UTC)
    while hour < end:
        lo, hi = max(hour, now), min(hour + HOUR, end)
        if hi > lo:
            out.append((hour, (hi - lo) / HOUR))
        hour += HOUR
    return out


def forecast(
    history: pd.Series,
    spent: Decimal,
    now: datetime,
    period_start: datetime,
    period_end: datetime,
    limit: Decimal,
    zone: ZoneInfo | str = "UTC",
) -> Forecast:
    """Expected spend at `period_end` with its band, and when it reaches `limit` (None if it does not
    within the period, or already has)."""
    zone = ZoneInfo(zone) if isinstance(zone, str) else zone
    spent_f = float(spent)
    ahead = _future_hours(now, period_end)
    model = fit(history, zone)
    increments: list[float] = []
    spread = 0.0
    if model is None:
        # No usable history: the period's own burn rate so far, flat.
        elapsed_h = max((now - period_start) / HOUR, 1.0)
        rate = spent_f / elapsed_h
        increments = [rate * fraction for _, fraction in ahead]
        spread = 0.5 * sum(increments)  # a guess from one average: wide
    else:
        variance = 0.0
        for hour, fraction in ahead:
            steps = (hour - model.at) / HOUR + 0.5
            factor = model.factor(hour, zone)
            increments.append(max(model.rate + model.slope * steps, 0.0) * factor * fraction)
            variance += (model.sigma * fraction) ** 2
        level_error = model.rate_sigma * sum(model.factor(h, zone) * f for h, f in ahead)
        spread = Z * (math.sqrt(variance) + level_error)
    future = float(sum(increments))
    expected = spent_f + future
    projected = None
    remaining = float(limit) - spent_f
    if remaining > 0 and expected >= float(limit):
        total = 0.0
        for (hour, fraction), inc in zip(ahead, increments, strict=True):
            if inc > 0 and total + inc >= remaining:
                projected = max(hour, now) + fraction * HOUR * ((remaining - total) / inc)
                break
            total += inc
    return Forecast(
        expected=max(_money(expected), spent),
        low=max(_money(expected - spread), spent),
        high=_money(expected + spread),
        projected_limit_at=projected,
        history_hours=0 if model is None else model.hours,
    )


def history_series(points: list[tuple[datetime, Decimal | float | int | None]]) -> pd.Series:
    """The query layer's hourly points as a Series (missing spend: 0)."""
    if not points:
        return pd.Series(dtype=float)
    index = pd.DatetimeIndex([p[0] for p in points]).tz_convert(UTC)
    return pd.Series([float(v or 0) for _, v in points], index=index)
