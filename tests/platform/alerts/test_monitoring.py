"""The hourly alert job: rule series from the rollups → incidents → one notification each."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from decimal import Decimal

import pytest

from costline.alerts.models import AlertIncident, AlertRule, Channel, Delivery, IncidentStatus, RuleKind
from costline.alerts.monitoring import detect, hourly_series
from costline.tenancy.actions import create_organization
from tests.platform.alerts.monitoring_fixtures import hour_end, steady_then_spike

pytestmark = pytest.mark.django_db


def _rule(org, channels: list[Channel] = (), **fields) -> AlertRule:  # type: ignore[no-untyped-def,assignment]
    rule = AlertRule.objects.create(organization=org, name=fields.pop("name", "Spend"), **fields)
    rule.channels.set(channels)
    return rule


def test_a_spend_spike_opens_one_incident_and_notifies_once(make_channel: Callable[..., Channel]) -> None:
    org = create_organization("Spiky")
    end = hour_end()
    steady_then_spike(org, end)
    channel = make_channel(org, kind="email")
    rule = _rule(org, [channel], metric="cost_usd")

    first = detect(org.id, end + timedelta(minutes=5))
    second = detect(org.id, end + timedelta(minutes=6))

    incidents = list(AlertIncident.objects.filter(rule=rule))
    assert len(incidents) == 1, incidents
    incident = incidents[0]
    assert incident.tenant_id == org.id
    assert incident.status == IncidentStatus.OPEN
    assert incident.started_at == end - timedelta(hours=3)
    assert incident.direction == 1
    assert incident.impact_usd > Decimal("1")  # ~3 h × ~57 extra calls × $0.01
    assert incident.observed is not None
    assert incident.observed == pytest.approx(0.60)
    assert incident.notified_at is not None
    assert incident.cause == []  # one feature, one model: nothing to tell apart (see test_causes)
    deliveries = list(Delivery.objects.filter(channel=channel))
    assert [d.source for d in deliveries] == [f"incident:{incident.id}"]
    assert first["notified"] == 1
    assert second["notified"] == 0
    assert second["incidents"] == first["incidents"] == 1


def test_min_impact_keeps_a_small_spike_quiet(make_channel: Callable[..., Channel]) -> None:
    org = create_organization("Small")
    end = hour_end()
    steady_then_spike(org, end)
    channel = make_channel(org, kind="email")
    rule = _rule(org, [channel], metric="cost_usd", min_impact_usd=Decimal("1000"))

    detect(org.id, end + timedelta(minutes=5))

    assert AlertIncident.objects.filter(rule=rule).count() == 1  # recorded…
    assert AlertIncident.objects.get(rule=rule).notified_at is None  # …but not worth a page
    assert not Delivery.objects.filter(channel=channel).exists()


def test_threshold_rule_opens_then_resolves(make_channel: Callable[..., Channel]) -> None:
    org = create_organization("Threshold")
    end = hour_end()
    steady_then_spike(org, end, spike_hours=1, spike_calls=50)
    channel = make_channel(org, kind="email")
    rule = _rule(
        org,
        [channel],
        kind=RuleKind.THRESHOLD,
        metric="requests",
        comparison="above",
        threshold_value=Decimal("10"),
        quiet_minutes=0,
    )

    detect(org.id, end + timedelta(minutes=1))
    detect(org.id, end + timedelta(minutes=2))
    incident = AlertIncident.objects.get(rule=rule)
    assert incident.status == IncidentStatus.OPEN
    assert incident.observed == 50
    assert Delivery.objects.filter(channel=channel).count() == 1

    detect(org.id, end + timedelta(hours=1, minutes=1))  # the next hour had no calls at all
    incident.refresh_from_db()
    assert incident.status == IncidentStatus.RESOLVED
    assert incident.resolved_at == end + timedelta(hours=1)


def test_rates_leave_hours_without_calls_empty() -> None:
    org = create_organization("Gaps")
    end = hour_end()
    steady_then_spike(org, end, spike_hours=0)
    rule = _rule(org, metric="error_rate")
    series = hourly_series(rule, end - timedelta(days=30), end)
    # The two days before the calls began have no calls: no rate, not a rate of 0.
    assert sum(1 for v in series.values if v != v) == 48
    assert series.values[-1] == 0.0


def test_rules_of_another_tenant_are_not_run(make_channel: Callable[..., Channel]) -> None:
    org, other = create_organization("Mine"), create_organization("Theirs")
    end = hour_end()
    steady_then_spike(other, end)
    rule = _rule(other, metric="cost_usd")

    assert detect(org.id, end + timedelta(minutes=5))["rules"] == 0
    assert not AlertIncident.objects.filter(rule=rule).exists()


def test_the_hourly_task_runs_each_tenant_and_is_scheduled() -> None:
    from costline.alerts.tasks import detect as detect_task
    from costline.celery import BEAT_SCHEDULE

    org = create_organization("Tasked")
    _rule(org, metric="cost_usd")
    _rule(create_organization("Paused"), metric="cost_usd", enabled=False)

    result = detect_task.apply().get()

    assert result == {"tenants": 1, "rules": 1, "incidents": 0, "notified": 0, "closed": 0, "failed": 0}
    entry = BEAT_SCHEDULE["costline.alerts.detect"]
    assert entry["schedule"] == 3600
    assert entry["options"]["queue"] == "alerts"


def test_quiet_minutes_hold_a_new_incident_until_the_quiet_period_ends(
    make_channel: Callable[..., Channel],
) -> None:
    org = create_organization("Quiet")
    end = hour_end()
    steady_then_spike(org, end)
    channel = make_channel(org, kind="email")
    rule = _rule(org, [channel], metric="cost_usd", quiet_minutes=30)
    # An earlier episode of the same rule was notified 10 minutes before the run.
    earlier = end - timedelta(days=10)
    AlertIncident.objects.create(
        tenant=org,
        rule=rule,
        started_at=earlier,
        last_anomalous_at=earlier,
        resolved_at=earlier + timedelta(hours=3),
        status=IncidentStatus.RESOLVED,
        notified_at=end - timedelta(minutes=5),
    )

    assert detect(org.id, end + timedelta(minutes=5))["notified"] == 0
    assert not Delivery.objects.filter(channel=channel).exists()
    assert detect(org.id, end + timedelta(minutes=40))["notified"] == 1
    spike = AlertIncident.objects.get(rule=rule, started_at=end - timedelta(hours=3))
    assert [d.source for d in Delivery.objects.filter(channel=channel)] == [f"incident:{spike.id}"]


def test_an_incident_resolves_when_the_series_is_back_and_is_not_notified_late(
    make_channel: Callable[..., Channel],
) -> None:
    org = create_organization("Back")
    end = hour_end()
    steady_then_spike(org, end, after_hours=6)
    channel = make_channel(org, kind="email")
    rule = _rule(org, [channel], metric="cost_usd")

    detect(org.id, end + timedelta(minutes=5))
    detect(org.id, end + timedelta(minutes=6))

    incident = AlertIncident.objects.get(rule=rule)
    assert incident.started_at == end - timedelta(hours=9)
    assert incident.status == IncidentStatus.RESOLVED
    assert incident.resolved_at is not None
    assert incident.resolved_at <= end
    # Found only after it ended (first run of a new rule): history, not a page.
    assert incident.notified_at is None
    assert not Delivery.objects.filter(channel=channel).exists()


def _open_incident(rule: AlertRule, last_anomalous_at: datetime, **fields: object) -> AlertIncident:
    return AlertIncident.objects.create(
        tenant=rule.organization,
        rule=rule,
        started_at=last_anomalous_at - timedelta(hours=2),
        last_anomalous_at=last_anomalous_at,
        **fields,
    )


def test_an_open_incident_that_left_the_window_is_closed_and_a_current_one_stays_open() -> None:
    org = create_organization("Stale")
    end = hour_end()
    steady_then_spike(org, end)
    rule = _rule(org, metric="cost_usd")
    # Stored by an earlier run, never seen to recover: its last anomalous hour is now 30 days back.
    stale = _open_incident(rule, end - timedelta(days=30), status=IncidentStatus.ACKNOWLEDGED)

    first = detect(org.id, end + timedelta(minutes=5))
    second = detect(org.id, end + timedelta(minutes=6))

    stale.refresh_from_db()
    assert stale.status == IncidentStatus.RESOLVED
    assert stale.resolved_at == end
    assert "left the 28-day detection window" in stale.resolved_reason
    current = AlertIncident.objects.get(rule=rule, started_at=end - timedelta(hours=3))
    assert (current.status, current.resolved_at, current.resolved_reason) == (IncidentStatus.OPEN, None, "")
    assert (first["closed"], second["closed"]) == (1, 0)


def test_the_open_incidents_of_a_disabled_rule_are_closed_by_the_hourly_task() -> None:
    from costline.alerts.tasks import detect as detect_task

    org = create_organization("Switched off")
    end = hour_end()
    rule = _rule(org, metric="cost_usd", enabled=False)
    incident = _open_incident(rule, end - timedelta(hours=2))
    done = _open_incident(
        rule, end - timedelta(days=3), status=IncidentStatus.RESOLVED, resolved_at=end - timedelta(days=2)
    )

    result = detect_task.apply().get()

    incident.refresh_from_db()
    done.refresh_from_db()
    assert (incident.status, incident.resolved_reason) == (
        IncidentStatus.RESOLVED,
        "The rule was disabled while the incident was open.",
    )
    assert (done.resolved_at, done.resolved_reason) == (end - timedelta(days=2), "")  # left as it was
    assert (result["tenants"], result["rules"], result["closed"]) == (1, 0, 1)


def test_an_open_incident_of_a_series_without_usage_is_closed() -> None:
    org = create_organization("Vanished")
    end = hour_end()
    steady_then_spike(org, end)  # all of it on gpt-4o
    rule = _rule(org, metric="cost_usd", model="gpt-4-0613")  # a model nobody calls any more
    incident = _open_incident(rule, end - timedelta(days=2))

    detect(org.id, end + timedelta(minutes=5))

    incident.refresh_from_db()
    assert incident.status == IncidentStatus.RESOLVED
    assert "empty or zero in every hour of the 28 days" in incident.resolved_reason
