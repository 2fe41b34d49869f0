"""Causal anomaly scores for usage series: one detector for spend, tokens, latency and errors.

Arrays in, arrays out, no Django: the anomaly task reads a series' hourly rollups and calls `score`
(`score_many` takes a matrix, one row per series); `costline.alerts.incidents` turns the scored hours
into incidents. The loop over points is compiled with numba: 10,000 series of 12 weeks of hours score
in about 7 s on one core (`bench/spend_anomalies.py --tenants 10000`), where the same arithmetic as
numpy operations over all series at once took 42 s; one series alone takes under 1 ms (it took 0.9 s).
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
from typing import NamedTuple

import numba
import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

_HOUR = 3600
_DAY_BUCKETS = 24
_WEEK_BUCKETS = 168
# Histogram of past statistics (in error scales): log-spaced edges from 1 to ~1,000.
_EDGES = np.exp(np.linspace(0.0, math.log(1000.0), 49))
_N_BINS = _EDGES.size + 1
_N_STATS = 4  # scored statistics: point, CUSUM, moving average, drift
# The scoring loop is compiled with numba (cached beside this file, or in the user's cache when
# that is read-only): one series point by point, as the docstring reads, without holding the GIL.
# Division follows numpy (x/0 is inf or NaN, no exception).
_compiled = numba.njit(cache=True, nogil=True, error_model="numpy")
# Which forecasters (level, daily, weekly) restart at a level shift. Letting the seasonal ones
# restart too, on their own runs, made them worse than the level on office tenants (mean error
# 0.8 against 0.1 $/h) and cost 17 points of runaway-loop recall.
_RESTARTS = (True, False, False)


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
    t = _epoch_seconds(timestamps)
    if t.ndim == 1:
        t = t[None, :]  # one clock for every series
    if t.shape[1:] != x.shape[1:] or t.shape[0] not in (1, x.shape[0]):
        raise ValueError(f"timestamps shape {t.shape} does not match values {x.shape}")
    hours = np.floor_divide(t, _HOUR)
    day_bucket = (hours % _DAY_BUCKETS).astype(np.int64)
    # 1970-01-01 was a Thursday: +72 h puts bucket 0 at Monday 00:00 UTC.
    week_bucket = ((hours + 72) % _WEEK_BUCKETS).astype(np.int64)
    out = np.full((4, *x.shape), np.nan)
    _run(np.ascontiguousarray(x), day_bucket, week_bucket, _Params.of(cfg), out)
    return Scores(out[0], out[1], out[2], out[3], cfg.threshold)


def _epoch_seconds(timestamps: npt.ArrayLike) -> npt.NDArray[np.int64]:
    arr = np.asarray(timestamps)
    if np.issubdtype(arr.dtype, np.datetime64):
        return arr.astype("datetime64[s]").astype(np.int64)
    return np.asarray(arr, dtype=np.float64).astype(np.int64)


class _Params(NamedTuple):
    """The settings the compiled kernel reads: a `DetectorConfig`'s fields and what follows from them."""

    level_alpha: float
    seasonal_level_alpha: float
    day_memory: int
    week_memory: int
    season_gamma: float
    hour_scale_floor: float
    hour_prior: float
    scale_beta: float
    select_beta: float
    clip: float
    shift_run: int
    cusum_k: float
    moving_alpha: float
    moving_sd: float  # of the moving average of |z| (each ~Exp(1): mean 1, variance 1)
    drift_fast_alpha: float
    drift_slow_alpha: float
    drift_scale_beta: float
    hist_decay: float
    prior_weight: float
    recent_decay: float
    recent_prior: float
    warmup: int
    novelty_weight: float
    record_alpha: float
    refractory_level: float
    refractory_points: int
    refractory_margin: float
    band_z: float  # Laplace: P(|r| > z·scale) = e^−z, so the band is threshold·ln 10 scales wide

    @classmethod
    def of(cls, cfg: DetectorConfig) -> _Params:
        mov_a = cfg.moving_alpha
        derived = {"moving_sd": math.sqrt(mov_a / (2 - mov_a)), "band_z": cfg.threshold * math.log(10.0)}
        return cls._make(derived[name] if name in derived else getattr(cfg, name) for name in cls._fields)


@_compiled
def _run(x: FloatArray, day_bucket: IntArray, week_bucket: IntArray, p: _Params, out: FloatArray) -> None:
    """Score every row of `x` into `out` (score, expected, low, high; then series, points). Bucket
    arrays have one row per series or one row shared by all."""
    shared = day_bucket.shape[0] == 1
    for s in range(x.shape[0]):
        clock = 0 if shared else s
        _series(x[s], day_bucket[clock], week_bucket[clock], p, out[:, s])


@_compiled
def _series(x: FloatArray, day_bucket: IntArray, week_bucket: IntArray, p: _Params, out: FloatArray) -> None:
    """One series, point by point, into `out` (score, expected, low, high; then points). Index 0, 1,
    2 of the forecaster arrays: level, daily, weekly."""
    out_score, out_exp, out_lo, out_hi = out[0], out[1], out[2], out[3]
    level = np.full(3, np.nan)
    err = np.zeros(3)
    sel_err = np.zeros(3)  # faster, unclipped: which forecaster is right now
    run = np.zeros(3)  # per forecaster: signed count of same-sided outliers in a row
    pred = np.zeros(3)
    resid = np.zeros(3)
    scale_m = np.zeros(3)
    # The seasonal forecasters remember the last few values of each bucket (7 days of an hour of
    # day, 4 weeks of an hour of week) and forecast their median plus a smoothed deviation. A
    # Holt-Winters profile learnt together with its level took ten weeks to find an office's
    # working day (the level chased the daily swing); the median of raw values has nothing to
    # confound and shrugs off one bad week.
    day_ring = np.zeros((_DAY_BUCKETS, p.day_memory))
    day_seen = np.zeros(_DAY_BUCKETS, dtype=np.int64)
    week_ring = np.zeros((_WEEK_BUCKETS, p.week_memory))
    week_seen = np.zeros(_WEEK_BUCKETS, dtype=np.int64)
    hour_err = np.zeros(_DAY_BUCKETS)
    hour_visits = np.zeros(_DAY_BUCKETS)
    scratch = np.zeros(max(p.day_memory, p.week_memory))  # a bucket's values in order (medians)
    cus_hi = cus_lo = 0.0
    mean_abs = 0.0  # long-run mean |x|: floors the error scale of flat series
    seen = 0.0
    run_max, run_min = -np.inf, np.inf  # range of every value seen so far (range novelty)
    alert_level = 0.0  # surprise that started the refractory period
    since_alert = 1 << 62  # points since a refractory start
    # Decaying histograms of the four statistics (point, CUSUM, moving average, drift), long and
    # short memory, kept as tail sums: tails[k, j] is the weight of statistic k in bins j and up.
    hist = np.zeros((_N_STATS, _N_BINS))
    recent = np.zeros((_N_STATS, _N_BINS))
    stats = np.zeros(_N_STATS)
    bins = np.zeros(_N_STATS, dtype=np.int64)
    moving = 1.0  # moving average of |z|, which is 1 on average
    drift_fast = drift_slow = np.nan  # fast and slow moving averages of the values
    drift_scale = 0.0  # mean size of their gap
    fast = np.nan  # moving average of the values, its range (records)
    fast_max, fast_min = -np.inf, np.inf
    c = p.clip

    for i in range(x.size):
        xi = x[i]
        if np.isnan(xi):
            continue  # a gap scores NaN and teaches nothing
        db = day_bucket[i]
        wb = week_bucket[i]
        if np.isnan(level[0]):
            level[:] = xi
            err[:] = 0.0
        n_day = min(day_seen[db], p.day_memory)
        n_week = min(week_seen[wb], p.week_memory)
        s_day = _median(day_ring, db, n_day, scratch)
        s_week = _median(week_ring, wb, n_week, scratch)
        # Per forecaster: values its bucket holds (the level has no bucket) and the bucket's median.
        held = (1, n_day, n_week)
        median = (0.0, s_day, s_week)
        # Error scale floor: 1% of the series' typical magnitude, so a flat series does not score a
        # rounding change as infinite surprise; zero for a series that has only ever been zero.
        floor = max(0.01 * mean_abs, 1e-12)
        best = 0
        for k in range(3):
            # A bucket not seen yet forecasts like the level.
            pred[k] = level[k] + median[k] if held[k] > 0 else level[0]
            resid[k] = xi - pred[k]
            scale_m[k] = max(err[k], floor)
            if sel_err[k] < sel_err[best]:  # ties go to the first: the level, while nothing is learnt
                best = k
        r = resid[best]
        sc_global = scale_m[best]
        # The error scale of the hour of day (see the module docstring), shrunk towards the
        # overall scale by `hour_prior` visits' worth, so an hour seen a few times with
        # near-identical values does not make the next small wobble a 10⁻⁵ event.
        e_hour = hour_err[db]
        hv = hour_visits[db]
        e_hour_eff = (hv * e_hour + p.hour_prior * sc_global) / (hv + p.hour_prior)
        sc = max(e_hour_eff, p.hour_scale_floor * sc_global, floor)
        z_signed = r / sc
        z = abs(z_signed)

        # Surprise of the point, the CUSUM, the moving average and the drift, each against its own
        # histograms.
        zc = min(max(z_signed, -c), c)
        cus_hi_new = max(0.0, cus_hi + zc - p.cusum_k)
        cus_lo_new = max(0.0, cus_lo - zc - p.cusum_k)
        moving_new = moving + p.moving_alpha * (min(z, c) - moving)
        drift_fast_new = _smooth(drift_fast, xi, p.drift_fast_alpha)
        drift_slow_new = _smooth(drift_slow, xi, p.drift_slow_alpha)
        gap = abs(drift_fast_new - drift_slow_new)
        drift_unit = max(drift_scale, floor)
        stats[0] = z
        stats[1] = max(cus_hi_new, cus_lo_new)
        stats[2] = max(0.0, (moving_new - 1.0) / p.moving_sd)
        stats[3] = gap / drift_unit
        # The surprise is the largest over the statistics of the smaller over the two memories:
        # one logarithm of the smallest over the statistics of the larger tail probability.
        p_min = 1.0
        for k in range(_N_STATS):
            bins[k] = _bin(stats[k])
            prior = math.exp(-min(stats[k], 700.0))  # a Laplace tail, P(|r| > z·scale) = e^−z
            p_long = _tail(hist[k], bins[k], prior, p.prior_weight)
            p_min = min(p_min, max(p_long, _tail(recent[k], bins[k], prior, p.recent_prior)))
        surprise = -math.log10(max(p_min, 1e-300))
        # Range novelty, in widths of the past range (floored like the error scale).
        width = max(run_max - run_min, floor)
        beyond = max(xi - run_max, run_min - xi, 0.0)
        novel = beyond / width
        if math.isfinite(novel):  # not before the first value
            surprise += p.novelty_weight * novel
        # Records: at least log10(n/2), of the values and of their moving average (its n counted
        # in independent values).
        fa = p.record_alpha
        fast_new = _smooth(fast, xi, fa)
        n_record = 0.0
        if beyond > 0:
            n_record = seen
        elif fast_new > fast_max or fast_new < fast_min:
            n_record = seen * fa / (2 - fa)
        surprise = max(surprise, math.log10(max(n_record / 2, 1.0)))
        scored = seen >= p.warmup
        # Refractory period: only the first high point of an episode keeps its score. A larger
        # surprise than the one that started the period still scores (and restarts it).
        if scored and surprise >= p.refractory_level:
            if since_alert < p.refractory_points and surprise <= p.refractory_margin * alert_level:
                surprise = 0.99 * p.refractory_level
                since_alert += 1
            else:
                alert_level = surprise
                since_alert = 0
        else:
            since_alert += 1
        if scored:
            out_score[i] = surprise
        out_exp[i] = pred[best]
        out_lo[i] = pred[best] - p.band_z * sc
        out_hi[i] = pred[best] + p.band_z * sc

        # ---- learn from the point ----
        # Warm-up residuals are measured against an error scale that is still forming: kept out
        # of the histograms, or their huge z would make every later real outlier look ordinary.
        if scored:
            _count(hist, bins, p.hist_decay)
            _count(recent, bins, p.recent_decay)
        # A running mean over the first 1/β points, then exponential forgetting.
        rate = max(p.scale_beta, 1.0 / (seen + 1.0))
        shifted = False
        for k in range(3):
            limit = c * scale_m[k]
            size = abs(resid[k])
            rc = min(max(resid[k], -limit), limit)
            # Each forecaster counts its own misses; only the level acts on them (`_RESTARTS`).
            side = np.sign(resid[k])
            if size > limit:
                run[k] = run[k] + side if np.sign(run[k]) == side else side
            else:
                run[k] = 0.0
            has = held[k] > 0
            in_run = has and abs(run[k]) >= p.shift_run
            if k == best:
                shifted = in_run
            # The seasonal "level" is the deviation from the bucket medians (growth, a new
            # normal); a bucket stores its value less that deviation, clipped like every update.
            if k == 0:
                level[0] += p.level_alpha * rc
            elif has:
                level[k] += p.seasonal_level_alpha * rc
            stored = median[k] + rc if has else xi - level[k]
            if k == 1:
                day_ring[db, day_seen[db] % p.day_memory] = stored
            elif k == 2:
                week_ring[wb, week_seen[wb] % p.week_memory] = stored
            err[k] += rate * ((size if seen < p.warmup else min(size, limit)) - err[k])
            sel_err[k] += max(p.select_beta, rate) * (size - sel_err[k])
            if in_run and _RESTARTS[k]:
                # A level shift: restart the level at the new value, widen the scale to an
                # eighth of the miss (a quarter kept the return from a runaway loop from
                # counting as a shift: the forecast took 15 hours to come back).
                level[k] = xi - median[k]
                err[k] = max(err[k], size / (2 * c))
                run[k] = 0.0
        day_seen[db] += 1
        hour_err[db] = e_hour + max(p.season_gamma, 1.0 / (hv + 1.0)) * (min(abs(r), c * sc) - e_hour)
        hour_visits[db] += 1
        week_seen[wb] += 1
        if shifted:
            # ... and (for the forecaster in use) forget the CUSUM, so the shift is one incident
            # rather than days of them.
            cus_hi_new = cus_lo_new = 0.0
        cus_hi, cus_lo = cus_hi_new, cus_lo_new
        moving = moving_new
        drift_fast, drift_slow = drift_fast_new, drift_slow_new
        drift_rate = max(p.drift_scale_beta, 1.0 / (seen + 1.0))
        drift_scale += drift_rate * (min(gap, c * drift_unit) - drift_scale)
        mean_abs += (abs(xi) - mean_abs) / min(seen + 1, 1000)
        run_max, run_min = max(run_max, xi), min(run_min, xi)
        fast = fast_new
        fast_max, fast_min = max(fast_max, fast_new), min(fast_min, fast_new)
        seen += 1.0


@_compiled
def _smooth(avg: float, x: float, alpha: float) -> float:
    """One step of an exponential moving average that starts at the first value."""
    return x if np.isnan(avg) else avg + alpha * (x - avg)


@_compiled
def _median(ring: FloatArray, bucket: int, count: int, scratch: FloatArray) -> float:
    """Median of the first `count` values of `ring[bucket]`; 0 when there are none. `scratch`
    holds the values in order as they are inserted (at most a handful)."""
    if count == 0:
        return 0.0
    for j in range(count):
        v = ring[bucket, j]
        m = j
        while m > 0 and scratch[m - 1] > v:
            scratch[m] = scratch[m - 1]
            m -= 1
        scratch[m] = v
    return 0.5 * (scratch[(count - 1) // 2] + scratch[count // 2])


@_compiled
def _bin(stat: float) -> int:
    if not stat >= _EDGES[0]:  # NaN too
        return 0
    return int(np.searchsorted(_EDGES, stat, side="right"))


@_compiled
def _tail(tails: FloatArray, b: int, prior: float, prior_weight: float) -> float:
    """P(stat ≥ observed) from one statistic's tail sums, blended with the prior tail
    probability `prior` at `prior_weight` points' worth."""
    return (tails[b] + prior_weight * prior) / (tails[0] + prior_weight)


@_compiled
def _count(tails: FloatArray, bins: IntArray, decay: float) -> None:
    """Decay every statistic's tail sums by one point and count the statistic in bin `bins[k]`
    (it is in the tails of that bin and of every bin below)."""
    for k in range(tails.shape[0]):
        b = bins[k]
        for j in range(tails.shape[1]):
            tails[k, j] = tails[k, j] * decay + (1.0 if j <= b else 0.0)
