"""The anomaly detector on series whose answer is known (no database: plain arrays in and out)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from costline.alerts.detection import DetectorConfig, Scores, score, score_many
from costline.alerts.incidents import IncidentPolicy, group_incidents
from tests.conftest import shared_path

HOUR = 3600
START = int(np.datetime64("2026-03-02T00:00", "s").astype(np.int64))  # a Monday


def hourly(n: int) -> np.ndarray:
    return START + HOUR * np.arange(n, dtype=np.int64)


def office_spend(weeks: int = 4, seed: int = 1) -> np.ndarray:
    """Dollars per hour of an office-hours tenant: busy 9–18 on weekdays, quiet otherwise."""
    rng = np.random.default_rng(seed)
    n = weeks * 168
    hour, day = np.arange(n) % 24, (np.arange(n) // 24) % 7
    busy = (hour >= 9) & (hour < 18) & (day < 5)
    mean = np.where(busy, 40.0, 4.0)
    return rng.poisson(mean * 10) / 10.0


def test_it_flags_a_spike_above_the_threshold() -> None:
    spend = office_spend()
    spend[500] *= 6  # a Thursday 20:00: six times the usual quiet hour

    scores = score(spend, hourly(spend.size))

    assert scores.score[500] >= scores.threshold
    assert scores.anomalous[500]
    assert spend[500] > scores.high[500]


def test_it_does_not_flag_a_daily_and_weekly_pattern() -> None:
    spend = office_spend(weeks=6)

    scores = score(spend, hourly(spend.size))

    # Past the first week, the working day is the forecast, not an anomaly.
    assert not scores.anomalous[168:].any()
    busy = np.arange(168 * 5 + 10, 168 * 5 + 17)  # a Friday afternoon of week 6
    assert np.all(np.abs(scores.expected[busy] - 40.0) < 8.0)


def test_it_flags_a_level_shift_then_absorbs_it() -> None:
    rng = np.random.default_rng(2)
    spend = 100 + rng.normal(0, 5, 800)
    spend[500:] += 60  # a model change: the new cost is the new normal

    scores = score(spend, hourly(spend.size))

    assert scores.anomalous[500:503].any()
    assert not scores.anomalous[520:].any()
    assert abs(scores.expected[-1] - 160) < 10


def test_a_zero_heavy_tenant_is_not_paged_for_its_usual_bursts() -> None:
    rng = np.random.default_rng(3)
    spend = np.where(rng.random(1500) < 0.05, rng.exponential(0.02, 1500), 0.0)  # a call a day

    scores = score(spend, hourly(spend.size))
    incidents = group_incidents(scores, spend, IncidentPolicy(min_dollar_impact=1.0))

    assert scores.anomalous[300:].mean() < 0.01
    assert [i for i in incidents if i.paged_at is not None] == []


def test_gaps_have_no_score_and_detection_carries_on_after_them() -> None:
    rng = np.random.default_rng(4)
    latency = 800 + rng.normal(0, 30, 600)
    latency[200:260] = np.nan  # hours with no calls have no latency
    latency[400] = 2500

    scores = score(latency, hourly(latency.size))

    assert np.isnan(scores.score[200:260]).all()
    assert not scores.anomalous[260:400].any()
    assert scores.anomalous[400]


def test_a_new_series_is_quiet_while_it_learns() -> None:
    rng = np.random.default_rng(5)
    spend = 2.0 + rng.normal(0, 0.3, 40)

    scores = score(spend, hourly(spend.size))

    assert np.isnan(scores.score[: DetectorConfig().warmup]).all()
    assert not scores.anomalous.any()


def test_appending_future_points_never_changes_past_scores() -> None:
    spend = office_spend(weeks=3, seed=6)
    spend[300] *= 5
    ts = hourly(spend.size)

    past = score(spend[:350], ts[:350])
    full = score(spend, ts)

    for field in ("score", "expected", "low", "high"):
        np.testing.assert_array_equal(getattr(past, field), getattr(full, field)[:350])


def test_scoring_many_series_at_once_equals_scoring_each() -> None:
    a, b = office_spend(weeks=2, seed=7), office_spend(weeks=2, seed=8) * 100
    ts = hourly(a.size)

    batch = score_many(np.stack([a, b]), ts)

    np.testing.assert_allclose(batch.score[1], score(b, ts).score, equal_nan=True)


def test_each_series_of_a_batch_is_scored_as_alone_whatever_the_gaps_and_clocks_of_the_others() -> None:
    rng = np.random.default_rng(10)
    latency = 800 + rng.normal(0, 30, (3, 600))
    latency[:, 450] = 2500  # the same outlier in every series
    for row, (start, stop) in enumerate([(200, 260), (300, 301), (449, 450)]):
        latency[row, start:stop] = np.nan  # hours with no calls, a different one in each series
    latency[1, [299, 301]] += 400  # two misses in a row, across a gap: a level shift
    latency[1, 440:449] += 300  # a shift that ends where the third series has its gap
    clocks = np.stack([hourly(600), hourly(600) + 5 * HOUR, hourly(600) - 30 * HOUR])  # time zones

    batch = score_many(latency, clocks)

    for row in range(3):
        alone = score(latency[row], clocks[row])
        for field in ("score", "expected", "low", "high"):
            np.testing.assert_array_equal(getattr(batch, field)[row], getattr(alone, field))
    assert batch.anomalous[:, 450].all()


@pytest.mark.parametrize("sensitivity", [0.5, 1.0])
def test_one_sensitivity_gives_the_same_false_alarm_rate_on_smooth_and_bursty_series(
    sensitivity: float,
) -> None:
    # Four series of each kind, so that one seed's luck in the tails does not decide the test.
    rngs = [np.random.default_rng(seed) for seed in (1, 2, 3, 9)]
    smooth = np.stack([50 + rng.normal(0, 1, 4000) for rng in rngs])
    bursty = np.stack([1000 * rng.standard_t(2, 4000) + 20_000 for rng in rngs])  # heavy tails, another unit
    config = DetectorConfig(sensitivity=sensitivity)
    allowed = 10**-config.threshold * 4000

    rates = [
        score_many(s, hourly(4000), config).anomalous[:, 500:].sum(axis=1).mean() for s in (smooth, bursty)
    ]

    assert all(r <= 3 * allowed + 2 for r in rates)


def test_a_new_record_scores_at_least_log10_of_half_the_values_seen() -> None:
    # A bounded sensor-like series: a value a hair above everything before it is no large residual,
    # but the last of n exchangeable values is a new high or low with probability 2/n only.
    rng = np.random.default_rng(21)
    level = rng.uniform(10.0, 11.0, 4000)
    level[300] = level[:300].max() + 0.001
    level[3000] = level[:3000].max() + 0.001
    config = DetectorConfig(sensitivity=0.75)  # threshold 3: a 1-in-1,000 event

    scores = score(level, hourly(level.size), config)

    assert scores.score[300] >= np.log10(300 / 2)
    assert scores.score[3000] >= np.log10(3000 / 2)
    assert scores.anomalous[3000]
    assert not scores.anomalous[300]  # 1 in 150: not yet an anomaly


@pytest.mark.parametrize("seed", range(5))
def test_a_series_that_starts_flapping_is_flagged_though_no_point_of_it_stands_out(seed: int) -> None:
    # A latency that alternates ±2.8 noise deviations around its usual level: each point is a
    # 1-in-200 event, inside the range the series has seen, and the CUSUM of alternating misses
    # stays near zero; only their moving size is unusual.
    rng = np.random.default_rng(seed)
    n = 2000
    values = 100.0 + rng.normal(0.0, 1.0, n + 30)
    values[n:] = 100.0 + 2.8 * np.where(np.arange(30) % 2 == 0, 1.0, -1.0) + rng.normal(0.0, 0.1, 30)
    assert values[:n].min() < values[n:].min()
    assert values[n:].max() < values[:n].max()
    config = DetectorConfig(sensitivity=0.75)  # threshold 3: a 1-in-1,000 event

    scores = score(values, hourly(values.size), config)

    assert scores.anomalous[n:].any()


def test_the_threshold_falls_as_sensitivity_rises() -> None:
    assert (
        DetectorConfig(sensitivity=1.0).threshold
        < DetectorConfig().threshold
        < DetectorConfig(sensitivity=0).threshold
    )


def nab_series(rel: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Values, timestamps and which rows are inside the anomaly window of a one-window NAB file."""
    nab = shared_path("data", "nab")
    with (nab / "data" / rel).open(newline="") as f:
        rows = list(csv.DictReader(f))
    values = np.array([float(r["value"]) for r in rows])
    stamps = np.array([r["timestamp"] for r in rows], dtype="datetime64[s]")
    ((start, end),) = json.loads((nab / "labels" / "combined_windows.json").read_text())[rel]
    inside = (stamps >= np.datetime64(start[:19])) & (stamps <= np.datetime64(end[:19]))
    return values, stamps, inside


def test_it_finds_the_jump_in_nab_art_daily_jumpsup() -> None:
    values, stamps, inside = nab_series("artificialWithAnomaly/art_daily_jumpsup.csv")

    scores: Scores = score(values, stamps)

    s = np.nan_to_num(scores.score)
    assert s[inside].max() > s[~inside][int(0.15 * s.size) :].max()


def test_spikes_that_come_closer_together_are_flagged_though_each_is_as_high_as_ever() -> None:
    # NAB art_increase_spike_density: the same spike every ~100 rows, then three within 12 rows.
    # No spike is higher than before and normal rows between them reset the CUSUM; the drift (a
    # fast moving average of the values leaving the slow one) is what sees the cluster.
    values, stamps, inside = nab_series("artificialWithAnomaly/art_increase_spike_density.csv")
    after_probation = np.arange(values.size) >= int(0.15 * values.size)

    flagged = score(values, stamps, DetectorConfig(sensitivity=0.75)).anomalous  # threshold 3

    assert flagged[inside].any()
    assert not flagged[~inside & after_probation].any()


def test_a_gap_leaves_the_forecast_and_band_as_they_were() -> None:
    rng = np.random.default_rng(12)
    latency = 800 + rng.normal(0, 30, 400)
    gapped = latency.copy()
    gapped[300:310] = np.nan

    before, after = score(gapped, hourly(gapped.size)), score(latency, hourly(latency.size))

    assert np.isfinite(before.expected[310:]).all()
    width = after.high[310] - after.expected[310]
    assert abs(before.high[310] - after.high[310]) < 0.2 * width
    assert not before.anomalous[310:].any()
    assert not after.anomalous[300:].any()
