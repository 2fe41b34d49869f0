"""Causal anomaly scores for usage series: one detector for spend, tokens, latency and errors.

Plain numpy over arrays, no Django: the anomaly task reads hourly rollups into a matrix (one row per
series) and calls `score_many`; `costline.alerts.incidents` turns the scored hours into incidents.
`bench/nab.py` runs this same module, with the same `DetectorConfig()`, over the Numenta Anomaly
Benchmark; only the way series are fed in differs (NAB rows are minutes apart, not hours).

How a point is scored, using only the points before it (appending points never changes a score):

1. **Three forecasters compete** per series: a level (exponential smoothing), level + time-of-day
   profile, level + time-of-week profile. Profile buckets are hours, read from the timestamps, so
   hourly rollups and NAB's 5-minute rows are handled alike. Each forecaster tracks its mean
   absolute error; the one with the smallest recent error forecasts the next point. A series only
   "becomes seasonal" once a profile actually predicts better, so a new tenant starts on the level.
2. **Robust updates.** Residuals are clipped at a few error scales before they update the level,
   the profiles and the error scale, so one spike neither moves the forecast nor hides the next one.
   A run of same-sided outliers is a level shift: the level jumps to the new values, so a shift is
   flagged at its start and then absorbed instead of alerting for days.
3. **Score = surprise**, −log10 of a tail probability: the point's residual in error scales, and a
   CUSUM of residuals for slow leaks that no single point shows, are each turned into "how often
   has this series seen a value this extreme", from a decaying per-series histogram blended with a
   Laplace prior (the prior carries new series; the histogram learns each series' own tails). A
   score of 4 means a 1-in-10,000-points event *for that series*, so one sensitivity means the same
   false-alarm rate on a bursty tenant as on a smooth one.

NaN is a gap: nothing is learnt from it and its score is NaN. Callers fill hours that have no calls
with 0 for counts and cost (no row in the rollup means no usage) and leave NaN for latencies and
rates, where an hour without calls has no value.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]

_HOUR = 3600
_DAY_BUCKETS = 24
_WEEK_BUCKETS = 168
# Histogram of past statistics (in error scales): log-spaced edges from 1 to ~1,000.
_EDGES = np.exp(np.linspace(0.0, math.log(1000.0), 49))
_N_BINS = _EDGES.size + 1


@dataclass(frozen=True)
class DetectorConfig:
    """Settings of the detector. The defaults are what the product and `bench/nab.py` run.

    `sensitivity` in [0, 1] sets the alert threshold on the surprise scale: 0.5 flags points with a
    tail probability below 10⁻⁴ for their series (about one false flag per 14 months of hours),
    1.0 below 10⁻², 0.0 below 10⁻⁶.
    """

    sensitivity: float = 0.5
    # Level smoothing per point; 0.25 tracked NAB's random-walk-like series best (0.1 lost 4 points).
    level_alpha: float = 0.25
    # Level smoothing of the seasonal forecasters: slower, or the level chases the daily swing the
    # profile is there to explain.
    seasonal_level_alpha: float = 0.05
    hour_scale_floor: float = 0.1
    # Profile smoothing per visit of a bucket: ~1/γ cycles of memory (10 weeks for the weekly profile).
    season_gamma: float = 0.1
    # Error-scale smoothing per point (memory ~100 points).
    scale_beta: float = 0.01
    # Residuals are clipped at this many error scales before they update anything.
    clip: float = 4.0
    # Same-sided residuals beyond `clip` scales in a row that make a level shift.
    shift_run: int = 2
    # CUSUM allowance in error scales: drifts smaller than this are not accumulated.
    cusum_k: float = 1.0
    # Decay of the surprise histogram per point (memory ~5,000 points) and weight of its prior.
    hist_decay: float = 0.9998
    prior_weight: float = 50.0
    recent_decay: float = 0.9
    recent_prior: float = 1.0
    # Points seen before a series may score at all (a new series has no notion of normal yet).
    warmup: int = 12

    @property
    def threshold(self) -> float:
        """The surprise (−log10 tail probability) at and above which a point is anomalous."""
        return 6.0 - 4.0 * min(max(self.sensitivity, 0.0), 1.0)


@dataclass(frozen=True)
class Scores:
    """Per point (same shape as the input values): NaN where the input was a gap or in warm-up.

    `score` is the surprise, −log10 of the point's tail probability for its series; `expected`
    the forecast; `low`/`high` the band outside which a point alone would reach the threshold.
    """

    score: FloatArray
    expected: FloatArray
    low: FloatArray
    high: FloatArray
    threshold: float

    @property
    def anomalous(self) -> npt.NDArray[np.bool_]:
        return np.asarray(np.nan_to_num(self.score, nan=0.0) >= self.threshold)


def score(values: npt.ArrayLike, timestamps: npt.ArrayLike, config: DetectorConfig | None = None) -> Scores:
    """Score one series. `timestamps` are datetime64 or epoch seconds, one per value."""
    v = np.asarray(values, dtype=np.float64)[None, :]
    t = _epoch_seconds(timestamps)
    out = score_many(v, t, config)
    return Scores(out.score[0], out.expected[0], out.low[0], out.high[0], out.threshold)


def score_many(
    values: npt.ArrayLike, timestamps: npt.ArrayLike, config: DetectorConfig | None = None
) -> Scores:
    """Score many series at once: `values` is (series, points); `timestamps` is (points,) when the
    series share a clock (hourly rollups) or (series, points) when they do not (pad with NaN)."""
    cfg = config or DetectorConfig()
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"values must be (series, points), got shape {x.shape}")
    n_series, n_points = x.shape
    t = _epoch_seconds(timestamps)
    if t.ndim == 1:
        t = np.broadcast_to(t, x.shape)
    if t.shape != x.shape:
        raise ValueError(f"timestamps shape {t.shape} does not match values {x.shape}")
    hours = np.floor_divide(t, _HOUR)
    day_bucket = (hours % _DAY_BUCKETS).astype(np.intp)
    # 1970-01-01 was a Thursday: +72 h puts bucket 0 at Monday 00:00 UTC.
    week_bucket = ((hours + 72) % _WEEK_BUCKETS).astype(np.intp)
    return _run(x, day_bucket, week_bucket, cfg, n_series, n_points)


def _epoch_seconds(timestamps: npt.ArrayLike) -> npt.NDArray[np.int64]:
    arr = np.asarray(timestamps)
    if np.issubdtype(arr.dtype, np.datetime64):
        return arr.astype("datetime64[s]").astype(np.int64)
    return np.asarray(arr, dtype=np.float64).astype(np.int64)


def _run(
    x: FloatArray,
    day_bucket: npt.NDArray[np.intp],
    week_bucket: npt.NDArray[np.intp],
    cfg: DetectorConfig,
    n_series: int,
    n_points: int,
) -> Scores:
    n_models = 3
    rows = np.arange(n_series)
    level = np.full((n_models, n_series), np.nan)
    err = np.zeros((n_models, n_series))
    day = np.zeros((n_series, _DAY_BUCKETS))
    day_seen = np.zeros((n_series, _DAY_BUCKETS))
    week = np.zeros((n_series, _WEEK_BUCKETS))
    week_seen = np.zeros((n_series, _WEEK_BUCKETS))
    hour_err = np.zeros((n_series, _DAY_BUCKETS))
    hour_visits = np.zeros((n_series, _DAY_BUCKETS))
    run = np.zeros(n_series)  # signed count of consecutive same-sided outliers
    cus_hi = np.zeros(n_series)
    cus_lo = np.zeros(n_series)
    mean_abs = np.zeros(n_series)  # long-run mean |x|: floors the error scale of flat series
    seen = np.zeros(n_series)
    hist_pt = np.zeros((n_series, _N_BINS))
    hist_cu = np.zeros((n_series, _N_BINS))
    recent_pt = np.zeros((n_series, _N_BINS))
    recent_cu = np.zeros((n_series, _N_BINS))

    out_score = np.full((n_series, n_points), np.nan)
    out_exp = np.full((n_series, n_points), np.nan)
    out_lo = np.full((n_series, n_points), np.nan)
    out_hi = np.full((n_series, n_points), np.nan)
    threshold = cfg.threshold
    ln10 = math.log(10.0)
    band_z = threshold * ln10  # Laplace: P(|r| > z·scale) = e^−z
    a, g, b, c = cfg.level_alpha, cfg.season_gamma, cfg.scale_beta, cfg.clip

    for i in range(n_points):
        xi = x[:, i]
        ok = ~np.isnan(xi)
        if not ok.any():
            continue
        db = day_bucket[:, i]
        wb = week_bucket[:, i]
        first = ok & np.isnan(level[0])
        if first.any():
            level[:, first] = xi[first]
            err[:, first] = 0.0
        s_day = day[rows, db]
        s_week = week[rows, wb]
        pred = np.stack([level[0], level[1] + s_day, level[2] + s_week])
        resid = xi[None, :] - pred
        # Error scale floor: 1% of the series' typical magnitude, so a flat series does not score a
        # rounding change as infinite surprise; zero for a series that has only ever been zero.
        floor = np.maximum(0.01 * mean_abs, 1e-12)
        scale_m = np.maximum(err, floor[None, :])
        best = np.argmin(err + np.where(seen > 0, 0.0, np.arange(n_models)[:, None]), axis=0)
        r = resid[best, rows]
        sc_global = scale_m[best, rows]
        # Spend noise grows with the traffic of the hour (Poisson calls, office hours): the error
        # scale of the hour of day, once it has been seen, down to a quarter of the overall one.
        e_hour = hour_err[rows, db]
        sc = np.where(
            hour_visits[rows, db] >= 3, np.maximum(e_hour, cfg.hour_scale_floor * sc_global), sc_global
        )
        sc = np.maximum(sc, floor)
        z_signed = r / sc
        z = np.abs(z_signed)

        # Surprise of the point and of the CUSUM, each against its own histogram.
        cus_hi_new = np.maximum(0.0, cus_hi + np.clip(z_signed, -c, c) - cfg.cusum_k)
        cus_lo_new = np.maximum(0.0, cus_lo - np.clip(z_signed, -c, c) - cfg.cusum_k)
        cus = np.maximum(cus_hi_new, cus_lo_new)
        s_pt = np.minimum(
            _surprise(z, hist_pt, cfg.prior_weight, ln10, rows),
            _surprise(z, recent_pt, cfg.recent_prior, ln10, rows),
        )
        s_cu = np.minimum(
            _surprise(cus, hist_cu, cfg.prior_weight, ln10, rows),
            _surprise(cus, recent_cu, cfg.recent_prior, ln10, rows),
        )
        surprise = np.maximum(s_pt, s_cu)
        scored = ok & (seen >= cfg.warmup)
        out_score[scored, i] = surprise[scored]
        p = pred[best, rows]
        out_exp[ok, i] = p[ok]
        out_lo[ok, i] = (p - band_z * sc)[ok]
        out_hi[ok, i] = (p + band_z * sc)[ok]

        # ---- learn from the point (only where it is not a gap) ----
        okf = ok.astype(np.float64)
        # Warm-up residuals are measured against an error scale that is still forming: kept out
        # of the histograms, or their huge z would make every later real outlier look ordinary.
        _hist_add(hist_pt, z, rows, cfg.hist_decay, scored)
        _hist_add(hist_cu, cus, rows, cfg.hist_decay, scored)
        _hist_add(recent_pt, z, rows, cfg.recent_decay, scored)
        _hist_add(recent_cu, cus, rows, cfg.recent_decay, scored)
        rc = np.clip(resid, -c * scale_m, c * scale_m)
        outlier = np.abs(r) > c * sc
        side = np.sign(r)
        run = np.where(outlier & (np.sign(run) == side), run + side, np.where(outlier, side, 0.0))
        shifted = ok & (np.abs(run) >= cfg.shift_run)
        upd = okf[None, :]
        level = level + upd * np.array([[a], [cfg.seasonal_level_alpha], [cfg.seasonal_level_alpha]]) * rc
        # Profiles learn what the level does not explain; a bucket's first visit takes it whole.
        d_new = s_day + g * (rc[1] + 0.0)
        d_new = np.where(day_seen[rows, db] > 0, d_new, xi - level[1])
        w_new = s_week + g * rc[2]
        w_new = np.where(week_seen[rows, wb] > 0, w_new, xi - level[2])
        day[rows[ok], db[ok]] = d_new[ok]
        week[rows[ok], wb[ok]] = w_new[ok]
        day_seen[rows[ok], db[ok]] += 1
        hv = hour_visits[rows, db]
        he_new = e_hour + np.maximum(g, 1.0 / (hv + 1.0)) * (np.minimum(np.abs(r), c * sc) - e_hour)
        hour_err[rows[ok], db[ok]] = he_new[ok]
        hour_visits[rows[ok], db[ok]] += 1
        week_seen[rows[ok], wb[ok]] += 1
        # A running mean over the first 1/β points, then exponential forgetting.
        rate = np.maximum(b, 1.0 / (seen + 1.0))[None, :]
        capped = np.where(seen[None, :] < cfg.warmup, np.abs(resid), np.minimum(np.abs(resid), c * scale_m))
        err = err + upd * rate * (capped - err)
        if shifted.any():
            # A level shift: restart the level at the new value and forget the CUSUM, so the shift
            # is one incident rather than days of them.
            level[:, shifted] = (xi[None, :] - np.stack([np.zeros(n_series), s_day, s_week]))[:, shifted]
            # Each forecaster's own residual widens its own scale: inflating all of them by the
            # level's miss at an office's 9:00 ramp made the weekly profile lose to the plain level.
            err[:, shifted] = np.maximum(err[:, shifted], np.abs(resid[:, shifted]) / c)
            run[shifted] = 0.0
            cus_hi_new[shifted] = 0.0
            cus_lo_new[shifted] = 0.0
        cus_hi = np.where(ok, cus_hi_new, cus_hi)
        cus_lo = np.where(ok, cus_lo_new, cus_lo)
        mean_abs = np.where(ok, mean_abs + (np.abs(xi) - mean_abs) / np.minimum(seen + 1, 1000), mean_abs)
        seen += okf

    return Scores(out_score, out_exp, out_lo, out_hi, threshold)


def _bin(stat: FloatArray) -> npt.NDArray[np.intp]:
    return np.searchsorted(_EDGES, np.nan_to_num(stat, nan=0.0), side="right").astype(np.intp)


def _surprise(
    stat: FloatArray, hist: FloatArray, prior_weight: float, ln10: float, rows: npt.NDArray[np.intp]
) -> FloatArray:
    """−log10 P(stat ≥ observed) from the series' histogram, with a Laplace prior P = e^−stat."""
    bins = _bin(stat)
    tail = np.cumsum(hist[:, ::-1], axis=1)[:, ::-1]  # tail[k] = weight in bins ≥ k
    total = tail[:, 0]
    above = tail[rows, np.minimum(bins, _N_BINS - 1)]
    prior = np.exp(-np.minimum(stat, 700.0))
    p = (above + prior_weight * prior) / (total + prior_weight)
    return np.asarray(-np.log10(np.maximum(p, 1e-300)))


def _hist_add(
    hist: FloatArray, stat: FloatArray, rows: npt.NDArray[np.intp], decay: float, ok: npt.NDArray[np.bool_]
) -> None:
    hist[ok] *= decay
    bins = _bin(stat)
    hist[rows[ok], bins[ok]] += 1.0
