"""Labelled synthetic LLM spend: hourly cost per tenant, with injected anomalies and their labels.

Used by `bench/spend_anomalies.py` and `bench/detect_speed.py` only, so it lives in bench/ rather
than in the product. Deterministic for a seed.

Tenants differ in size (hourly spend log-uniform from $0.02 to $200: the small ones are mostly
zero hours), time zone (UTC−8 to UTC+9), and shape:
* office: weekday working hours of their time zone, quiet nights and weekends;
* consumer: a smooth evening peak every day, busier weekends;
* batch: a nightly job of a few hours on top of a small steady load;
* agents: steady, bursty load around the clock.
They grow (−1 % to +6 % a week) and are noisy (Poisson requests, log-normal cost per request).

Anomalies (labelled, one per tenant at most, after the warm-up): runaway agent loops, retry storms,
model changes (cost per request ×2–4 for good), prompt changes (×1.4–1.8), feature launches (a
ramp to ×2 over a day), outages (spend near zero for hours), slow leaks (+3 % an hour of base
spend for days). Normal events that look unusual (not labelled: an incident there is a false one):
public holidays (office tenants quiet on a weekday), month-end jobs, and provider price cuts.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

HOUR = 3600
ANOMALY_KINDS = (
    "runaway_loop",
    "retry_storm",
    "model_change",
    "prompt_change",
    "feature_launch",
    "outage",
    "slow_leak",
)
SHAPES = ("office", "consumer", "batch", "agents")


@dataclass(frozen=True)
class Anomaly:
    tenant: int
    kind: str
    start: int  # hour index
    end: int  # last hour of the anomaly (a permanent change: start + 24)


@dataclass(frozen=True)
class SpendSet:
    timestamps: npt.NDArray[np.int64]  # epoch seconds, hourly, shared by every tenant
    cost: npt.NDArray[np.float64]  # (tenants, hours) dollars per hour; a normal-only twin in `clean`
    clean: npt.NDArray[np.float64]
    base: npt.NDArray[np.float64]  # typical hourly spend per tenant
    shape: list[str]
    anomalies: list[Anomaly]
    warmup: int  # hours before any anomaly or scored hour


def generate(n_tenants: int = 500, weeks: int = 12, warmup_weeks: int = 4, seed: int = 7) -> SpendSet:
    rng = np.random.default_rng(seed)
    hours = weeks * 7 * 24
    start = np.datetime64("2026-01-05T00:00", "s").astype(np.int64)  # a Monday
    ts = start + HOUR * np.arange(hours, dtype=np.int64)
    utc_hour = np.arange(hours) % 24
    day_index = np.arange(hours) // 24
    base = np.exp(rng.uniform(np.log(0.02), np.log(200.0), n_tenants))
    shapes = [SHAPES[k] for k in rng.integers(0, len(SHAPES), n_tenants)]
    tz = rng.integers(-8, 10, n_tenants)
    growth = rng.uniform(-0.01, 0.06, n_tenants)
    # Cost per request: a few cents, so a $0.02/h tenant makes about one call an hour.
    per_request = np.exp(rng.uniform(np.log(0.005), np.log(0.05), n_tenants))
    holidays = {day for day in (17, 45, 66) if day < weeks * 7}  # three weekdays, all tenants
    price_cut_hour = int(hours * 0.7)

    intensity = np.zeros((n_tenants, hours))
    for k in range(n_tenants):
        local = (utc_hour + tz[k]) % 24
        local_day = (day_index + (utc_hour + tz[k]) // 24) % 7  # 0 = Monday
        weekend = local_day >= 5
        holiday = np.isin(day_index, list(holidays))
        if shapes[k] == "office":
            work = (local >= 9) & (local < 18) & ~weekend & ~holiday
            prof = np.where(work, 1.0 + 0.3 * np.sin((local - 9) / 9 * np.pi), 0.05)
        elif shapes[k] == "consumer":
            prof = 0.5 + 0.8 * (1 + np.cos((local - 20) / 24 * 2 * np.pi)) / 2
            prof = prof * np.where(weekend, 1.25, 1.0)
        elif shapes[k] == "batch":
            job = (local >= 1) & (local < 4)
            prof = np.where(job, 6.0, 0.4)
        else:
            prof = np.full(hours, 1.0)
        # Month-end jobs: batch and office tenants run a report on the last day of the month.
        month_end = np.isin(day_index, [25, 53, 81]) & (local >= 12) & (local < 16)
        if shapes[k] in ("batch", "office"):
            prof = np.where(month_end, prof * 2.0 + 1.0, prof)
        trend = (1.0 + growth[k]) ** (np.arange(hours) / 168.0)
        intensity[k] = prof / prof.mean() * trend
    price = np.where(np.arange(hours) >= price_cut_hour, 0.8, 1.0)  # a provider price cut of 20 %

    anomalies: list[Anomaly] = []
    multiplier = np.ones((n_tenants, hours))
    extra = np.zeros((n_tenants, hours))
    warm = warmup_weeks * 168
    for k in range(n_tenants):
        if rng.random() < 0.3:  # 30 % of tenants stay normal: they measure false incidents
            continue
        kind = ANOMALY_KINDS[rng.integers(0, len(ANOMALY_KINDS))]
        a0 = int(rng.integers(warm, hours - 96))
        if kind == "runaway_loop":
            # An agent stuck in a loop: a steady extra 3–20× its typical spend, around the clock.
            dur = int(rng.integers(3, 13))
            extra[k, a0 : a0 + dur] += base[k] * rng.uniform(3.0, 20.0)
            a1 = a0 + dur - 1
        elif kind == "retry_storm":
            # Failing calls retried with back-off: 3–10× the requests of the hour, for 1–4 hours.
            dur = int(rng.integers(1, 5))
            multiplier[k, a0 : a0 + dur] *= rng.uniform(3.0, 10.0)
            extra[k, a0 : a0 + dur] += base[k] * rng.uniform(1.0, 3.0)
            a1 = a0 + dur - 1
        elif kind in ("model_change", "prompt_change"):
            lo, hi = (2.0, 4.0) if kind == "model_change" else (1.4, 1.8)
            multiplier[k, a0:] *= rng.uniform(lo, hi)
            a1 = a0 + 24
        elif kind == "feature_launch":
            ramp = np.clip((np.arange(hours) - a0) / 24.0, 0.0, 1.0)
            multiplier[k] *= 1.0 + ramp
            a1 = a0 + 48
        elif kind == "outage":
            dur = int(rng.integers(3, 9))
            multiplier[k, a0 : a0 + dur] *= 0.02
            a1 = a0 + dur - 1
        else:  # slow_leak: an unbounded context or a cache that stopped hitting
            dur = min(int(rng.integers(72, 168)), hours - a0)
            extra[k, a0 : a0 + dur] += base[k] * 0.03 * np.arange(dur)
            a1 = a0 + dur - 1
        anomalies.append(Anomaly(k, kind, a0, min(a1, hours - 1)))

    mean_requests = (base / per_request)[:, None] * intensity
    noise = rng.lognormal(0.0, 0.25, (n_tenants, hours))
    clean_requests = rng.poisson(mean_requests)
    clean = clean_requests * per_request[:, None] * noise * price[None, :]
    requests = rng.poisson(mean_requests * multiplier)
    cost = requests * per_request[:, None] * noise * price[None, :]
    cost = cost + rng.poisson(extra / per_request[:, None]) * per_request[:, None] * price[None, :]
    return SpendSet(ts, cost, clean, base, shapes, anomalies, warm)
