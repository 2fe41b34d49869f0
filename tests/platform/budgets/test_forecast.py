"""The end-of-period forecast on synthetic hourly series with known trend and seasonality (no DB)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd

from costline.budgets.forecast import fit, forecast

NOW = datetime(2025, 3, 17, 0, 0, tzinfo=UTC)  # a Monday, midnight UTC
HOUR = timedelta(hours=1)


def rate(moment: datetime, *, base: float = 1.0, slope: float = 0.0, zone: str = "UTC") -> float:
    """The true hourly spend: business hours ×3, weekends ×0.25, a linear trend (per hour since NOW)."""
    local = moment.astimezone(ZoneInfo(zone))
    daily = 3.0 if 9 <= local.hour < 18 else 1.0
    weekly = 0.25 if local.weekday() >= 5 else 1.0
    return (base + slope * ((moment - NOW) / HOUR)) * daily * weekly


def series(end: datetime, *, noise: float = 0.0, seed: int = 1, **kwargs: float | str) -> pd.Series:
    hours = [end - HOUR * (672 - i) for i in range(672)]
    rng = np.random.default_rng(seed)
    values = [rate(h + HOUR / 2, **kwargs) for h in hours]  # type: ignore[arg-type]
    if noise:
        values = [max(v * (1 + rng.normal(0, noise)), 0.0) for v in values]
    return pd.Series(values, index=pd.DatetimeIndex(hours))


def truth(start: datetime, end: datetime, **kwargs: float | str) -> float:
    total, hour = 0.0, start
    while hour < end:
        total += rate(hour + HOUR / 2, **kwargs)  # type: ignore[arg-type]
        hour += HOUR
    return total


def test_learns_daily_and_weekly_seasonality() -> None:
    model = fit(series(NOW), "UTC")
    assert model is not None
    # Ratios between hours and days are what matter: business hours 3× the night, weekends a quarter.
    assert abs(model.daily[12] / model.daily[3] - 3.0) < 1e-6
    assert abs(model.weekly[6] / model.weekly[2] - 0.25) < 1e-6
    assert abs(model.slope) < 1e-9


def test_flat_seasonal_series_forecast_is_exact() -> None:
    # Period: the week starting NOW; evaluated on Wednesday 12:00 with the spend so far exact.
    end = NOW + 7 * 24 * HOUR
    now = NOW + (2 * 24 + 12) * HOUR
    spent = truth(NOW, now)
    history = series(now)
    result = forecast(history, Decimal(repr(spent)), now, NOW, end, Decimal(10_000), "UTC")
    expected = truth(NOW, end)
    assert abs(float(result.expected) - expected) < 1e-6 * expected
    assert result.low <= result.expected <= result.high
    assert float(result.high - result.low) < 1e-6 * expected  # no noise: no band
    assert result.projected_limit_at is None


def test_trend_is_extrapolated() -> None:
    end = NOW + 7 * 24 * HOUR
    now = NOW + 24 * HOUR
    kwargs = {"base": 2.0, "slope": 0.01}
    spent = truth(NOW, now, **kwargs)
    result = forecast(series(now, **kwargs), Decimal(repr(spent)), now, NOW, end, Decimal(10_000), "UTC")
    expected = truth(NOW, end, **kwargs)
    assert abs(float(result.expected) - expected) / expected < 0.01
    flat = forecast(series(now, base=2.0), Decimal(repr(spent)), now, NOW, end, Decimal(10_000), "UTC")
    assert result.expected > flat.expected


def test_seasonality_follows_the_org_zone() -> None:
    zone = "America/New_York"
    end = NOW + 7 * 24 * HOUR
    now = NOW + 3 * 24 * HOUR
    spent = truth(NOW, now, zone=zone)
    result = forecast(series(now, zone=zone), Decimal(repr(spent)), now, NOW, end, Decimal(10_000), zone)
    expected = truth(NOW, end, zone=zone)
    assert abs(float(result.expected) - expected) / expected < 0.01


def test_noisy_series_band_holds_the_truth() -> None:
    end = NOW + 7 * 24 * HOUR
    now = NOW + 2 * 24 * HOUR
    inside = 0
    for seed in range(20):
        spent = truth(NOW, now)
        result = forecast(
            series(now, noise=0.3, seed=seed), Decimal(repr(spent)), now, NOW, end, Decimal(10**6)
        )
        assert result.low < result.expected < result.high
        if result.low <= Decimal(repr(truth(NOW, end))) <= result.high:
            inside += 1
    assert inside >= 16


def test_projected_to_reach_the_limit() -> None:
    end = NOW + 7 * 24 * HOUR
    now = NOW + 24 * HOUR
    spent = truth(NOW, now)
    limit = Decimal(repr(truth(NOW, NOW + 4 * 24 * HOUR + 13 * HOUR)))  # reached on Friday near 13:00
    result = forecast(series(now), Decimal(repr(spent)), now, NOW, end, limit, "UTC")
    assert result.projected_limit_at is not None
    assert abs(result.projected_limit_at - (NOW + 4 * 24 * HOUR + 13 * HOUR)) < timedelta(minutes=2)
    # A limit above the forecast: never reached in the period.
    assert (
        forecast(series(now), Decimal(repr(spent)), now, NOW, end, Decimal(10**6)).projected_limit_at is None
    )
    # Already over: nothing to project.
    assert forecast(series(now), limit, now, NOW, end, limit / 2).projected_limit_at is None


def test_without_history_the_period_burn_rate() -> None:
    end = NOW + 10 * 24 * HOUR
    now = NOW + 24 * HOUR
    result = forecast(pd.Series(dtype=float), Decimal("24"), now, NOW, end, Decimal("200"))
    assert result.expected == Decimal("240")  # $1/h for 240 h
    assert result.low == Decimal("24") or result.low < result.expected < result.high
    assert result.projected_limit_at == NOW + 200 * HOUR
    nothing = forecast(pd.Series(dtype=float), Decimal(0), now, NOW, end, Decimal("200"))
    assert nothing.expected == 0
    assert nothing.projected_limit_at is None


def test_money_is_decimal() -> None:
    result = forecast(series(NOW), Decimal("1.5"), NOW, NOW - HOUR, NOW + 24 * HOUR, Decimal(100))
    for value in (result.expected, result.low, result.high):
        assert isinstance(value, Decimal)
        assert value.as_tuple().exponent >= -12
