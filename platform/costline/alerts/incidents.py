"""Scored hours → incidents: one incident per anomalous episode, not one alert per hour.

Pure functions over the arrays `costline.alerts.detection` returns; the anomaly task stores what
`group_incidents` returns (its natural key: series and `start`), so a rerun over the same hours
finds the same incidents.

An incident opens at the first point whose score reaches the threshold. It then stays open while
the series is outside the band it had *when the incident opened* (the detector itself learns a
level shift within a couple of points and stops scoring it, but spend that is still twice what it
was is still the incident), for at most `max_hold` points after the last scoring one, and resolves
after `resolve_after` points back inside that band.
Its dollar impact is the spend beyond the forecast (for a drop, the spend missing below it) over
the incident; `paged_at` is the first point at which the
impact reached the organisation's minimum, so a small tenant is not paged for cents and a slow
runaway is paged as soon as it has cost enough.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from costline.alerts.detection import Scores


class Severity(enum.StrEnum):
    MINOR = "minor"
    MAJOR = "major"
    CRITICAL = "critical"


@dataclass(frozen=True)
class IncidentPolicy:
    """How scored points become incidents, per organisation."""

    # An incident pages once it has cost this much outside its band (0: page on the first point).
    min_dollar_impact: float = 0.0
    # Points back inside the band that resolve an incident. 3 hours: shorter split one runaway loop
    # with a quiet hour into two incidents in `bench/spend_anomalies.py`.
    resolve_after: int = 3
    # Points outside the frozen band but no longer scoring after which the new level is accepted
    # as normal: the frozen band of a night-time start would otherwise hold the incident open
    # through the next working day of an office-hours tenant.
    max_hold: int = 24
    # Surprise above the threshold that makes an incident major / critical (10² and 10⁴ times rarer).
    major_margin: float = 2.0
    critical_margin: float = 4.0


@dataclass(frozen=True)
class Incident:
    """One anomalous episode of one series; indexes are positions in the scored arrays."""

    start: int
    end: int  # last point outside the band (the last anomalous point)
    resolved_at: int | None  # None while open: the series has not been back for `resolve_after`
    direction: int  # +1 above the band, −1 below
    peak_score: float
    peak_at: int
    severity: Severity
    dollar_impact: float  # dollars beyond the forecast over the incident
    paged_at: int | None  # first point with impact ≥ the policy's minimum; None: never worth a page

    @property
    def is_open(self) -> bool:
        return self.resolved_at is None


def group_incidents(
    scores: Scores,
    values: npt.ArrayLike,
    policy: IncidentPolicy | None = None,
    dollars_per_unit: float | npt.ArrayLike = 1.0,
) -> list[Incident]:
    """Group one series' scored points into incidents.

    `values` are the series the scores were computed on; `dollars_per_unit` converts a point's
    distance outside the band into dollars (1.0 for a cost series, a price per token for tokens, 0
    for latency or error rate, whose incidents then page only when `min_dollar_impact` is 0).
    """
    pol = policy or IncidentPolicy()
    x = np.asarray(values, dtype=np.float64)
    price = np.broadcast_to(np.asarray(dollars_per_unit, dtype=np.float64), x.shape)
    s = np.nan_to_num(scores.score, nan=0.0)
    n = x.size
    incidents: list[Incident] = []
    i = 0
    while i < n:
        if s[i] < scores.threshold or np.isnan(x[i]):
            i += 1
            continue
        start = i
        direction = 1 if x[i] >= scores.expected[i] else -1
        # The band just before the incident is what "normal" was; with seasonal series the
        # detector's band moves with the hour, so take the tighter of the two at each point.
        ref = start - 1 if start > 0 and not np.isnan(scores.high[start - 1]) else start
        frozen_hi, frozen_lo, frozen_exp = scores.high[ref], scores.low[ref], scores.expected[ref]
        impact, paged_at, peak, peak_at, end, quiet, since_scored = 0.0, None, s[i], i, i, 0, 0
        j = i
        while j < n:
            xj = x[j]
            hi = np.fmin(scores.high[j], frozen_hi)
            lo = np.fmax(scores.low[j], frozen_lo)
            # A score counts for the incident only on its own side, at least half a band out: the
            # drop back to normal after a runaway loop scores too, and must not prolong it.
            half_band = 0.5 * (frozen_hi - frozen_exp if direction > 0 else frozen_exp - frozen_lo)
            scoring = s[j] >= scores.threshold and (
                j == start or (not np.isnan(xj) and (xj - frozen_exp) * direction > half_band)
            )
            beyond = not np.isnan(xj) and ((direction > 0 and xj > hi) or (direction < 0 and xj < lo))
            since_scored = 0 if scoring else since_scored + 1
            if scoring or (beyond and since_scored <= pol.max_hold):
                quiet = 0
                end = j
                if not np.isnan(xj):
                    # Dollars are counted from the forecast, not the band edge: the band is where
                    # a point becomes surprising, the forecast is what the hour should have cost.
                    normal = np.fmin(scores.expected[j], frozen_exp) if direction > 0 else scores.expected[j]
                    excess = xj - normal if direction > 0 else normal - xj
                    impact += max(float(excess), 0.0) * float(price[j])
                if s[j] > peak:
                    peak, peak_at = s[j], j
                if paged_at is None and impact >= pol.min_dollar_impact:
                    paged_at = j
            else:
                quiet += 1
                if quiet >= pol.resolve_after:
                    break
            j += 1
        resolved_at = j if j < n else None
        margin = peak - scores.threshold
        severity = (
            Severity.CRITICAL
            if margin >= pol.critical_margin
            else Severity.MAJOR
            if margin >= pol.major_margin
            else Severity.MINOR
        )
        incidents.append(
            Incident(
                start=start,
                end=end,
                resolved_at=resolved_at,
                direction=direction,
                peak_score=float(peak),
                peak_at=peak_at,
                severity=severity,
                dollar_impact=impact,
                paged_at=paged_at,
            )
        )
        i = j + 1 if resolved_at is not None else n
    return incidents
