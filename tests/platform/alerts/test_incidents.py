"""Scored hours become incidents: one per episode, with a severity, dollars, and a resolution."""

from __future__ import annotations

import numpy as np

from costline.alerts.detection import Scores, score
from costline.alerts.incidents import IncidentPolicy, Severity, group_incidents

THRESHOLD = 4.0


def scored(values: list[float], surprise: list[float], expected: float = 10.0, band: float = 5.0) -> Scores:
    """Scores as the detector returns them, for a flat series expected at `expected` ± `band`."""
    n = len(values)
    return Scores(
        score=np.array(surprise, dtype=float),
        expected=np.full(n, expected),
        low=np.full(n, expected - band),
        high=np.full(n, expected + band),
        threshold=THRESHOLD,
    )


def test_it_groups_consecutive_anomalous_hours_into_one_incident() -> None:
    values = [10, 10, 60, 70, 65, 10, 10, 10, 10]
    surprise = [0, 0, 9, 5, 4.5, 0, 0, 0, 0]

    (incident,) = group_incidents(scored(values, surprise), values)

    assert (incident.start, incident.end, incident.resolved_at) == (2, 4, 7)
    assert (incident.peak_score, incident.peak_at) == (9, 2)
    assert incident.direction == 1
    assert incident.severity is Severity.CRITICAL  # 9 is 5 above the threshold: 10⁵ times rarer
    assert incident.dollar_impact == 50 + 60 + 55  # spend beyond the forecast of $10 an hour


def test_it_keeps_the_incident_open_while_spend_stays_above_the_band() -> None:
    # The detector stops scoring a new level after a couple of hours; the incident does not end.
    values = [10, 10, 60, 60, 60, 60, 60]
    surprise = [0, 0, 8, 6, 0, 0, 0]

    (incident,) = group_incidents(scored(values, surprise), values)

    assert incident.is_open
    assert incident.end == 6
    assert incident.dollar_impact == 5 * 50


def test_two_episodes_apart_make_two_incidents() -> None:
    values = [10, 40, 10, 10, 10, 10, 40, 10, 10, 10]
    surprise = [0, 5.5, 0, 0, 0, 0, 5.5, 0, 0, 0]

    incidents = group_incidents(scored(values, surprise), values, IncidentPolicy(resolve_after=3))

    assert [(i.start, i.resolved_at) for i in incidents] == [(1, 4), (6, 9)]
    assert all(i.severity is Severity.MINOR for i in incidents)


def test_a_small_tenant_is_not_paged_for_cents() -> None:
    values = [0.01, 0.01, 0.30, 0.01, 0.01, 0.01]
    surprise = [0, 0, 12, 0, 0, 0]
    policy = IncidentPolicy(min_dollar_impact=5.0)

    (incident,) = group_incidents(scored(values, surprise, expected=0.01, band=0.02), values, policy)

    assert incident.paged_at is None
    assert round(incident.dollar_impact, 2) == 0.29


def test_a_slow_runaway_pages_once_it_has_cost_the_minimum() -> None:
    values = [10, 10, 20, 20, 20, 20, 20, 10, 10, 10]
    surprise = [0, 0, 5, 5, 5, 5, 5, 0, 0, 0]

    (incident,) = group_incidents(scored(values, surprise), values, IncidentPolicy(min_dollar_impact=25.0))

    assert incident.paged_at == 4  # $10 over the forecast an hour: $30 by the third hour


def test_a_drop_is_an_incident_below_the_band() -> None:
    values = [10, 10, 0, 0, 0, 10, 10, 10, 10]
    surprise = [0, 0, 7, 3, 3, 0, 0, 0, 0]

    (incident,) = group_incidents(scored(values, surprise), values)

    assert incident.direction == -1
    assert (incident.start, incident.end) == (2, 4)


def test_a_runaway_loop_on_real_scores_is_one_incident_paged_in_its_first_hour() -> None:
    rng = np.random.default_rng(11)
    spend = 20 + rng.normal(0, 2, 600)
    spend[400:410] += 300  # an agent loop for ten hours
    ts = np.datetime64("2026-03-02T00:00", "s") + np.arange(600) * np.timedelta64(1, "h")

    incidents = group_incidents(score(spend, ts), spend, IncidentPolicy(min_dollar_impact=50.0))

    (loop,) = [i for i in incidents if i.paged_at is not None]
    assert (loop.start, loop.paged_at, loop.end) == (400, 400, 409)
    assert loop.resolved_at is not None
    assert 2900 < loop.dollar_impact < 3100
