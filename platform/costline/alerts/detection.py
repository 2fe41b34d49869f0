"""Causal anomaly scores for usage series: one detector for spend, tokens, latency and errors.

Plain numpy over arrays, no Django: the anomaly task reads hourly rollups into a matrix (one row per
series) and calls `score_many`; `costline.alerts.incidents` turns the scored hours into incidents.
`bench/nab.py` runs this same module, with the same `DetectorConfig()`, over the Numenta Anomaly
Benchmark; only the way series are fed in differs (NAB rows are minutes apart, not hours).

How a point is scored, using only the points before it (appending points never changes a score):

1. **Three forecasters compete** per series: a level (exponential smoothing); the median of the
   last 7 values at this hour of day; the median of the last 4 values at this hour of week. The
   seasonal medians carry a slowly smoothed deviation for growth. Buckets are hours read from the
   timestamps, so hourly rollups and NAB's 5-minute rows go through the same code. Each forecaster
   tracks its mean absolute error, and the one with the smallest error forecasts the next point.
   A series "becomes seasonal" only once a profile predicts better than the level, so a new tenant
   starts on the level.
2. **Robust updates.** A residual is clipped at 4 error scales before it updates anything, so one
   spike moves neither the forecast nor the scale, and does not hide the next spike. Two
   same-sided outliers in a row are a level shift. The level forecaster then restarts at the new
   value, so the shift is flagged at its start and absorbed within hours. The seasonal forecasters
   never restart; they absorb a shift through their deviation term. Meanwhile the forecaster is
   picked by a faster error average, so the restarted level takes over.
3. **Error scale per hour of day.** Spend noise grows with the traffic of the hour (Poisson calls,
   office hours), so each hour of day has its own error scale, floored at a tenth of the overall
   one. Without it, a runaway loop at 5 a.m. sat inside a band sized for office-hours noise.
4. **Score = surprise**, −log10 of a tail probability. Four statistics are scored: the point's
   residual in error scales; a CUSUM of residuals, which catches a slow leak that no single point
   shows; a moving average of the residuals' size, which catches a run of misses on either side
   (a series that starts flapping) that each point alone and the CUSUM both shrug off; and the
   drift, the gap between a fast (~20 points) and a slow (~200 points) moving average of the
   values in its own typical size, which catches a cluster: spikes that come closer together,
   a bump of the mean inside the noise, a dip of a few points with normal points among them,
   where the CUSUM is reset by every normal point in between. Its size is learnt with the same
   clipping as the error scale, so a gap that persists is absorbed within ~100 points (a lasting
   shift is the level-shift restart's business, point 2).
   Each is turned into "how often has this series seen a value this extreme". The answer comes
   from a decaying histogram per series, blended with a Laplace prior P = e^−z. The prior carries
   new series; the histogram learns each series' own tails. A score of 4 is a
   1-in-10,000 event *for that series*, so one sensitivity means roughly the same false-alarm rate
   on every series. The surprise is the smaller of the long-memory value and a short-memory one
   (~5 points). After a large event, only a still larger one scores high again, which is what
   turns one episode into one alert.
5. **Range novelty.** A value outside everything the series has seen ([min, max] of all its past
   values) adds `novelty_weight` × its distance beyond that range, in widths of the range: a new
   high or low is evidence of its own, whatever the forecasters made of it.
6. **Records.** The chance that the last of n exchangeable values is a new maximum or minimum of
   all of them is 2/n, whatever their distribution. So a new record of the values, or of their
   fast moving average (n counted in its independent values, n·α/(2−α)), scores at least
   log10(n/2): about 3 after 2,000 points, 4 after 20,000. It is calibrated by construction and
   taken as a maximum with the other scores, not added (a spike that sets a record is one event).
7. **Refractory period.** After a point scores `refractory_level` or more, the next
   `refractory_points` points are capped just below that level unless one is more than
   `refractory_margin` times as surprising (it then starts a new period). One episode gives one
   high point; `incidents.py` keeps the incident open on its band meanwhile.

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
_N_STATS = 4  # scored statistics: point, CUSUM, moving average, drift
# The histograms are kept in blocks of bins (see `_Tails`).
_BLOCK = 8
_N_BLOCKS = -(-_N_BINS // _BLOCK)
_TAIL_OF = np.tril(np.ones((_BLOCK, _BLOCK)))  # x @ _TAIL_OF: column k sums x[k:]
_TAIL_OF_LATER = np.tril(np.ones((_BLOCK, _BLOCK)), -1)  # column k sums x[k + 1:]
# Which forecasters (level, daily, weekly) restart at a level shift. Letting the seasonal ones
# restart too, on their own runs, made them worse than the level on office tenants (mean error
# 0.8 against 0.1 $/h) and cost 17 points of runaway-loop recall.
_RESTARTS = np.array([True, False, False])


@dataclass(frozen=True)
class DetectorConfig:
    """Settings of the detector. The defaults are what the product and `bench/nab.py` run.

    `sensitivity` in [0, 1] sets the alert threshold on the surprise scale: 0.5 flags points with a
    tail probability below 10⁻⁴ for their series (about one false flag per 14 months of hours),
    1.0 below 10⁻², 0.0 below 10⁻⁶.
    """

    sensitivity: float = 0.5
    # Level smoothing per point: 0.25 tracked NAB's random-walk-like series best (0.1 scored 29.7
    # on NAB against 41.2 at the time, 0.5 scored 36.9).
    level_alpha: float = 0.25
    # Smoothing of the seasonal forecasters' deviation from their medians (growth, a new normal).
    # 0.01–0.1 changed the spend bench by under 3 points; 0.02 kept false incidents lowest.
    seasonal_level_alpha: float = 0.02
    # Values remembered per seasonal bucket: a week of days, four weeks of weeks.
    day_memory: int = 7
    week_memory: int = 4
    # Per-hour-of-day error scale: smoothing per visit, and floor as a share of the overall scale.
    # A floor of 0.25 instead of 0.1 lost 6 points of runaway-loop recall.
    season_gamma: float = 0.1
    hour_scale_floor: float = 0.1
    # Visits' worth of the overall scale an hour's scale is shrunk towards (none: the first scored
    # hour of a smooth office series scored 4.8 on a 0.4 wobble; 3: +3 NAB points).
    hour_prior: float = 3.0
    # Error-scale smoothing per point (memory ~100 points); 0.03 scored 7 NAB points lower.
    scale_beta: float = 0.01
    # Smoothing of the unclipped error that picks the forecaster (memory ~50 points): a shifted
    # flat series goes to the restarted level within hours instead of 30. 0.05 cost 6 points of
    # runaway-loop recall; the clipped error scale alone (0.01) made the level-shift test fail.
    select_beta: float = 0.02
    # Residuals are clipped at this many error scales before they update anything (3: −3 NAB points).
    clip: float = 4.0
    # Same-sided outliers in a row that make a level shift (4 → 2 took NAB from 44.6 to 50.4).
    shift_run: int = 2
    # CUSUM allowance in error scales: drifts smaller than this are not accumulated (0.5: −6 NAB).
    cusum_k: float = 1.0
    # Moving average of the clipped |z| (memory ~10 points), scored like the point and the CUSUM:
    # a run of misses each too small to alert, on either side (a series that starts flapping).
    # NAB 67.9 → 68.7 (rogue_agent_key_hold and exchange-4_cpm found), spend bench unchanged;
    # 0.05: 68.5, 0.2: 67.6; clipped at 2.5 instead of 4: 68.2. Instead of the CUSUM it scored
    # 68.8 but halved prompt-change recall within 2 h, cut outage recall from 20 to 11 % and paged
    # slow leaks 38 h later.
    moving_alpha: float = 0.1
    # Drift (docstring, 4): smoothing of the fast and slow moving averages of the values, and of
    # the mean size of their gap (memory ~200 points; clipped at `clip` like every scale). NAB
    # 68.7 → 71.8: four more windows found (art_increase_spike_density, ec2_cpu_utilization_53ea38,
    # speed_7578, Twitter_volume_CVS) and one found 0.7 window earlier, for 9 more false-positive
    # rows; spend bench unchanged but one slow leak of 34 (0.38 false incidents a month).
    # Fast 0.1 / slow 0.005: 71.3; 0.07: 71.5; 0.03: 70.7; slow 0.0025: 70.9, 0.01: 71.2; gap
    # memory 0.01: 70.5, 0.002: 71.1; fast 0.2 / slow 0.01: 70.2.
    drift_fast_alpha: float = 0.05
    drift_slow_alpha: float = 0.005
    drift_scale_beta: float = 0.005
    # Long-memory surprise histogram: decay per point (~2,000 points) and weight of the prior.
    hist_decay: float = 0.9995
    prior_weight: float = 50.0
    # Short-memory histogram (~5 points) that keeps an episode from alerting on every point
    # (+3.4 NAB points, 60 fewer false-positive rows). Decay 0.9 → 0.8 and prior 1 → 2: NAB
    # 65.4 → 66.7, false spend incidents 0.42 → 0.38 a month, loops and retry storms unchanged,
    # slow leaks paged 20 h sooner but 2 of 34 fewer (and 2 of 46 prompt changes).
    recent_decay: float = 0.8
    recent_prior: float = 2.0
    # Points seen before a series may score at all: a week of hours, so the weekly profile has
    # seen every hour once before its misses enter the histograms. With 12, a new office tenant's
    # first-week ramps filled the histogram and capped a later 6× spike at a surprise of 2; NAB's
    # unscored first 15 % (at least 186 rows) covers it.
    warmup: int = 168
    # Range novelty: a value beyond the series' whole past range [min, max], measured in widths
    # of that range, adds `novelty_weight` × that excess to the surprise. NAB's anomalies are
    # often values never seen before (with the refractory period: 65.5 NAB at 10, 65.9 at 30,
    # 67.5 at 100). Spend grows, so every new high is slightly novel: 100 took the
    # spend bench to 0.77 false incidents a month and 87 % loop recall; 10 keeps 0.42 and 88.9 %.
    novelty_weight: float = 10.0
    # Records (docstring, 6): smoothing of the moving average whose records count as well. 0.5
    # and 0.15 together scored as 0.5 alone (its n is larger, so its score is); 0.3: −0.7 NAB.
    # Records took NAB from 66.7 to 67.9 and left the spend bench as it was (below 20,000 hours a
    # record alone does not reach the default threshold of 4). Adding range novelty of moving
    # averages instead (weights 20 and 40) scored 70.4 but was not calibrated: it paged a 5-point
    # dip in Gaussian noise and doubled the false alarms on heavy-tailed noise.
    record_alpha: float = 0.5
    # One alert per episode: after a point scores `refractory_level` or more, the next
    # `refractory_points` points are capped just below that level (the incident stays open on its
    # band, see `incidents.py`). NAB counts every later row outside a window as a false positive:
    # 62.7 → 67.9 with novelty 100 (level 2.5: 64.0, 3.5: 66.0; 10 points: 66.8, 20: 67.4).
    refractory_level: float = 3.0
    refractory_points: int = 30
    # A point more than this many times as surprising as the one that started the period still
    # scores and restarts it: without it, a 3.x wobble muted the start of runaway loops
    # (−4 points of loop recall, −8 of retry storms); with 1×, NAB fell from 67.9 to 63.5.
    # 3× scored NAB 0.4 higher but muted outages, slow leaks and model changes (recall 20 → 9 %,
    # 71 → 65 %, 79 → 66 %).
    refractory_margin: float = 2.0

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
    sel_err = np.zeros((n_models, n_series))  # faster, unclipped: which forecaster is right now
    # The seasonal forecasters remember the last few values of each bucket (7 days of an hour of
    # day, 4 weeks of an hour of week) and forecast their median plus a smoothed deviation. A
    # Holt-Winters profile learnt together with its level took ten weeks to find an office's
    # working day (the level chased the daily swing); the median of raw values has nothing to
    # confound and shrugs off one bad week.
    day_ring = np.full((n_series, _DAY_BUCKETS, cfg.day_memory), np.nan)
    day_seen = np.zeros((n_series, _DAY_BUCKETS), dtype=np.intp)
    week_ring = np.full((n_series, _WEEK_BUCKETS, cfg.week_memory), np.nan)
    week_seen = np.zeros((n_series, _WEEK_BUCKETS), dtype=np.intp)
    hour_err = np.zeros((n_series, _DAY_BUCKETS))
    hour_visits = np.zeros((n_series, _DAY_BUCKETS))
    run = np.zeros((n_models, n_series))  # per forecaster: signed count of same-sided outliers in a row
    cus_hi = np.zeros(n_series)
    cus_lo = np.zeros(n_series)
    mean_abs = np.zeros(n_series)  # long-run mean |x|: floors the error scale of flat series
    seen = np.zeros(n_series)
    run_max = np.full(n_series, -np.inf)  # range of every value seen so far (range novelty)
    run_min = np.full(n_series, np.inf)
    alert_level = np.zeros(n_series)  # surprise that started the refractory period
    since_alert = np.full(n_series, np.iinfo(np.int64).max // 2)  # points since a refractory start
    # Decaying histograms of the four statistics (point, CUSUM, moving average, drift; see
    # `_Tails`), long and short memory.
    hist = _Tails(n_series, cfg.hist_decay, cfg.prior_weight)
    recent = _Tails(n_series, cfg.recent_decay, cfg.recent_prior)
    moving = np.ones(n_series)  # moving average of |z|, which is 1 on average
    drift_fast = np.full(n_series, np.nan)  # fast and slow moving averages of the values
    drift_slow = np.full(n_series, np.nan)
    drift_scale = np.zeros(n_series)  # mean size of their gap
    fast = np.full(n_series, np.nan)  # moving average of the values, its range (records)
    fast_max = np.full(n_series, -np.inf)
    fast_min = np.full(n_series, np.inf)

    out_score = np.full((n_series, n_points), np.nan)
    out_exp = np.full((n_series, n_points), np.nan)
    out_lo = np.full((n_series, n_points), np.nan)
    out_hi = np.full((n_series, n_points), np.nan)
    threshold = cfg.threshold
    ln10 = math.log(10.0)
    band_z = threshold * ln10  # Laplace: P(|r| > z·scale) = e^−z
    a, g, b, c = cfg.level_alpha, cfg.season_gamma, cfg.scale_beta, cfg.clip
    # The moving average of |z| (each ~Exp(1): mean 1, variance 1) in its standard deviations.
    mov_a = cfg.moving_alpha
    mov_sd = math.sqrt(mov_a / (2 - mov_a))

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
        n_day = np.minimum(day_seen[rows, db], cfg.day_memory)
        n_week = np.minimum(week_seen[rows, wb], cfg.week_memory)
        s_day = _median(day_ring[rows, db], n_day)
        s_week = _median(week_ring[rows, wb], n_week)
        # A bucket not seen yet forecasts like the level.
        pred = np.stack(
            [
                level[0],
                np.where(n_day > 0, level[1] + s_day, level[0]),
                np.where(n_week > 0, level[2] + s_week, level[0]),
            ]
        )
        # A gap scores NaN and teaches nothing: a zero residual leaves every state as it was.
        resid = np.where(ok[None, :], xi[None, :] - pred, 0.0)
        # Error scale floor: 1% of the series' typical magnitude, so a flat series does not score a
        # rounding change as infinite surprise; zero for a series that has only ever been zero.
        floor = np.maximum(0.01 * mean_abs, 1e-12)
        scale_m = np.maximum(err, floor[None, :])
        best = np.argmin(sel_err + np.where(seen > 0, 0.0, np.arange(n_models)[:, None]), axis=0)
        r = resid[best, rows]
        sc_global = scale_m[best, rows]
        # The error scale of the hour of day once it has 3 visits (see the module docstring).
        e_hour = hour_err[rows, db]
        # Shrunk towards the overall scale by `hour_prior` visits' worth, so an hour seen a few
        # times with near-identical values does not make the next small wobble a 10⁻⁵ event.
        hv = hour_visits[rows, db]
        e_hour_eff = (hv * e_hour + cfg.hour_prior * sc_global) / (hv + cfg.hour_prior)
        sc = np.maximum(e_hour_eff, cfg.hour_scale_floor * sc_global)
        sc = np.maximum(sc, floor)
        z_signed = r / sc
        z = np.abs(z_signed)

        # Surprise of the point, the CUSUM, the moving average and the drift, each against its own
        # histograms.
        cus_hi_new = np.maximum(0.0, cus_hi + np.clip(z_signed, -c, c) - cfg.cusum_k)
        cus_lo_new = np.maximum(0.0, cus_lo - np.clip(z_signed, -c, c) - cfg.cusum_k)
        cus = np.maximum(cus_hi_new, cus_lo_new)
        moving_new = np.where(ok, moving + mov_a * (np.minimum(z, c) - moving), moving)
        drift_fast_new = _smooth(drift_fast, xi, ok, cfg.drift_fast_alpha)
        drift_slow_new = _smooth(drift_slow, xi, ok, cfg.drift_slow_alpha)
        gap = np.abs(drift_fast_new - drift_slow_new)
        drift_unit = np.maximum(drift_scale, floor)
        drift = gap / drift_unit
        stats = np.stack([z, cus, np.maximum(0.0, (moving_new - 1.0) / mov_sd), drift])
        bins = _bin(stats)
        prior = np.exp(-np.minimum(stats, 700.0))  # a Laplace tail, P(|r| > z·scale) = e^−z
        surprise = np.minimum(hist.surprise(stats, bins, prior), recent.surprise(stats, bins, prior)).max(
            axis=0
        )
        # Range novelty, in widths of the past range (floored like the error scale).
        width = np.maximum(run_max - run_min, floor)
        beyond = np.maximum(np.maximum(xi - run_max, run_min - xi), 0.0)
        surprise = surprise + cfg.novelty_weight * np.nan_to_num(beyond / width, nan=0.0, posinf=0.0)
        # Records: at least log10(n/2), of the values and of their moving average (its n counted
        # in independent values).
        fa = cfg.record_alpha
        fast_new = _smooth(fast, xi, ok, fa)
        fast_record = (fast_new > fast_max) | (fast_new < fast_min)
        n_record = np.where(beyond > 0, seen, np.where(fast_record, seen * fa / (2 - fa), 0.0))
        surprise = np.maximum(surprise, np.log10(np.maximum(n_record / 2, 1.0)))
        scored = ok & (seen >= cfg.warmup)
        # Refractory period: only the first high point of an episode keeps its score.
        high = scored & (surprise >= cfg.refractory_level)
        # A larger surprise than the one that started the period still scores (and restarts it).
        in_period = since_alert < cfg.refractory_points
        muted = high & in_period & (surprise <= cfg.refractory_margin * alert_level)
        alert_level = np.where(high & ~muted, surprise, alert_level)
        surprise = np.where(muted, 0.99 * cfg.refractory_level, surprise)
        since_alert = np.where(high & ~muted, 0, since_alert + ok.astype(np.int64))
        out_score[scored, i] = surprise[scored]
        p = pred[best, rows]
        out_exp[ok, i] = p[ok]
        out_lo[ok, i] = (p - band_z * sc)[ok]
        out_hi[ok, i] = (p + band_z * sc)[ok]

        # ---- learn from the point (only where it is not a gap) ----
        okf = ok.astype(np.float64)
        # Warm-up residuals are measured against an error scale that is still forming: kept out
        # of the histograms, or their huge z would make every later real outlier look ordinary.
        hist.add(bins, scored)
        recent.add(bins, scored)
        rc = np.clip(resid, -c * scale_m, c * scale_m)
        # Each forecaster counts its own misses; only those in `_RESTARTS` act on them.
        outlier = np.abs(resid) > c * scale_m
        side = np.sign(resid)
        run = np.where(outlier & (np.sign(run) == side), run + side, np.where(outlier, side, 0.0))
        has = np.stack([np.ones(n_series, dtype=bool), n_day > 0, n_week > 0])
        in_run = ok[None, :] & has & (np.abs(run) >= cfg.shift_run)
        missed = in_run & _RESTARTS[:, None]
        shifted = in_run[best, rows]
        upd = okf[None, :]
        # The seasonal "level" is the deviation from the bucket medians (growth, a new normal);
        # a bucket stores its value less that deviation, clipped like every update.
        level[0] = level[0] + okf * a * rc[0]
        level[1:] = np.where(has[1:], level[1:] + upd * cfg.seasonal_level_alpha * rc[1:], level[1:])
        d_new = np.where(n_day > 0, s_day + rc[1], xi - level[1])
        w_new = np.where(n_week > 0, s_week + rc[2], xi - level[2])
        day_ring[rows[ok], db[ok], day_seen[rows[ok], db[ok]] % cfg.day_memory] = d_new[ok]
        week_ring[rows[ok], wb[ok], week_seen[rows[ok], wb[ok]] % cfg.week_memory] = w_new[ok]
        day_seen[rows[ok], db[ok]] += 1
        he_new = e_hour + np.maximum(g, 1.0 / (hv + 1.0)) * (np.minimum(np.abs(r), c * sc) - e_hour)
        hour_err[rows[ok], db[ok]] = he_new[ok]
        hour_visits[rows[ok], db[ok]] += 1
        week_seen[rows[ok], wb[ok]] += 1
        # A running mean over the first 1/β points, then exponential forgetting.
        rate = np.maximum(b, 1.0 / (seen + 1.0))[None, :]
        capped = np.where(seen[None, :] < cfg.warmup, np.abs(resid), np.minimum(np.abs(resid), c * scale_m))
        err = err + upd * rate * (capped - err)
        sel_err = sel_err + upd * np.maximum(cfg.select_beta, rate) * (np.abs(resid) - sel_err)
        if shifted.any() or missed.any():
            # A level shift: restart the level at the new value, widen the scale to an eighth of
            # the miss (a quarter kept the return from a runaway loop from counting as a shift:
            # the forecast took 15 hours to come back), and (for the forecaster in use) forget
            # the CUSUM, so the shift is one incident rather than days of them.
            restart = xi[None, :] - np.stack([np.zeros(n_series), s_day, s_week])
            level = np.where(missed, restart, level)
            err = np.where(missed, np.maximum(err, np.abs(resid) / (2 * c)), err)
            run = np.where(missed, 0.0, run)
            cus_hi_new[shifted] = 0.0
            cus_lo_new[shifted] = 0.0
        cus_hi = np.where(ok, cus_hi_new, cus_hi)
        cus_lo = np.where(ok, cus_lo_new, cus_lo)
        moving = moving_new
        drift_fast, drift_slow = drift_fast_new, drift_slow_new
        drift_rate = np.maximum(cfg.drift_scale_beta, 1.0 / (seen + 1.0))
        drift_scale = np.where(
            ok, drift_scale + drift_rate * (np.minimum(gap, c * drift_unit) - drift_scale), drift_scale
        )
        mean_abs = np.where(ok, mean_abs + (np.abs(xi) - mean_abs) / np.minimum(seen + 1, 1000), mean_abs)
        run_max = np.where(ok, np.fmax(run_max, xi), run_max)
        run_min = np.where(ok, np.fmin(run_min, xi), run_min)
        fast = fast_new
        fast_max = np.where(ok, np.fmax(fast_max, fast_new), fast_max)
        fast_min = np.where(ok, np.fmin(fast_min, fast_new), fast_min)
        seen += okf

    return Scores(out_score, out_exp, out_lo, out_hi, threshold)


def _smooth(avg: FloatArray, x: FloatArray, ok: npt.NDArray[np.bool_], alpha: float) -> FloatArray:
    """One step of an exponential moving average that starts at the first value and skips gaps."""
    return np.where(ok, np.where(np.isnan(avg), x, avg + alpha * (x - avg)), avg)


def _median(ring: FloatArray, count: npt.NDArray[np.intp]) -> FloatArray:
    """Median of the first `count` values of each row of `ring` (NaN beyond them); 0 where empty."""
    ordered = np.sort(ring, axis=1)  # NaN sort last
    n_rows = ring.shape[0]
    lo = ordered[np.arange(n_rows), np.maximum(count - 1, 0) // 2]
    hi = ordered[np.arange(n_rows), np.maximum(count, 1) // 2 - (count == 0)]
    return np.where(count > 0, 0.5 * (lo + hi), 0.0)


def _bin(stat: FloatArray) -> npt.NDArray[np.intp]:
    return np.searchsorted(_EDGES, np.nan_to_num(stat, nan=0.0), side="right").astype(np.intp)


class _Tails:
    """Decaying histograms of the statistics of every series: (statistic, series, bin) weights,
    with the sums of each block of `_BLOCK` bins and the totals beside them, so that a tail
    probability reads one block's bins and the block sums instead of every bin.

    The decay is lazy: every weight is kept multiplied by a per-series `weight` that grows by
    1/decay at each counted point, and a new count is added at that weight, so nothing is
    multiplied bin by bin per point. A weight that reaches 10¹⁰⁰ is folded back in. (Tail sums
    decayed and filled bin by bin took half the detector's time on 10,000 series.) Indices are
    flat: numpy's one-dimensional take and put are many times faster than fancy indexing."""

    def __init__(self, n_series: int, decay: float, prior_weight: float) -> None:
        # One row per block, block-major: most statistics fall in block 0, whose rows are contiguous.
        self.bins = np.zeros((_N_BLOCKS * _N_STATS * n_series, _BLOCK))
        self.blocks = np.zeros((_N_STATS * n_series, _BLOCK))  # _N_BLOCKS < _BLOCK: the rest stay empty
        self.total = np.zeros((_N_STATS, n_series))
        self.weight = np.ones(n_series)
        self.decay = decay
        self.prior_weight = prior_weight
        self._row = np.arange(_N_STATS * n_series).reshape(_N_STATS, n_series)

    def surprise(self, stat: FloatArray, bins: npt.NDArray[np.intp], prior: FloatArray) -> FloatArray:
        """−log10 P(stat ≥ observed) from the series' histogram, blended with the prior tail
        probability `prior`. `stat`, `bins` and `prior` are (statistic, series)."""
        block, offset = np.divmod(bins, _BLOCK)
        within = (
            self.bins.take((block * self._row.size + self._row).ravel(), axis=0) @ _TAIL_OF
        )  # tails in the block
        above = within.take(self._row.ravel() * _BLOCK + offset.ravel())
        later = self.blocks @ _TAIL_OF_LATER  # tails over the whole blocks after each block
        above += later.take(self._row.ravel() * _BLOCK + block.ravel())
        w = self.prior_weight * self.weight
        p = (above.reshape(bins.shape) + w * prior) / (self.total + w)
        return np.asarray(-np.log10(np.maximum(p, 1e-300)))

    def add(self, bins: npt.NDArray[np.intp], counted: npt.NDArray[np.bool_]) -> None:
        """Decay the histograms of the `counted` series by one point and count `bins` in them."""
        self.weight = np.where(counted, self.weight / self.decay, self.weight)
        w = np.broadcast_to(np.where(counted, self.weight, 0.0), bins.shape)
        block = bins // _BLOCK
        self.bins.reshape(-1)[((block * self._row.size + self._row) * _BLOCK + bins % _BLOCK).ravel()] += (
            w.ravel()
        )
        self.blocks.reshape(-1)[(self._row * _BLOCK + block).ravel()] += w.ravel()
        self.total += w
        big = self.weight > 1e100
        if big.any():
            scale = self.weight[big]
            self.bins.reshape(_N_BLOCKS, _N_STATS, -1, _BLOCK)[:, :, big] /= scale[:, None]
            self.blocks.reshape(_N_STATS, -1, _BLOCK)[:, big] /= scale[:, None]
            self.total[:, big] /= scale
            self.weight[big] = 1.0
