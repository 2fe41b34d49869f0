"""The Alerts page and an incident's page: chart, causes, acknowledge/resolve, roles, isolation."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import timedelta

import pytest

from costline.alerts.models import AlertIncident, AlertRule, IncidentStatus
from costline.alerts.monitoring import detect
from costline.tenancy.models import Role
from tests.platform.alerts.conftest import Member
from tests.platform.alerts.monitoring_fixtures import hour_end, steady_then_spike

pytestmark = pytest.mark.django_db


def _spike_incident(member: Member) -> AlertIncident:
    end = hour_end()
    steady_then_spike(member.org, end)
    AlertRule.objects.create(organization=member.org, name="Spend watch", metric="cost_usd")
    detect(member.org.id, end + timedelta(minutes=5))
    return AlertIncident.objects.get(tenant=member.org)


def test_the_alerts_page_lists_incidents_and_rules(sign_in: Callable[..., Member]) -> None:
    member = sign_in(Role.VIEWER)
    incident = _spike_incident(member)

    page = member.client.get(member.url("alerts/"))

    assert page.status_code == 200
    html = page.content.decode()
    assert f'data-incident="{incident.id}"' in html
    assert "Spend watch" in html
    assert 'aria-current="page">Alerts</a>' in html


def test_the_incident_page_charts_the_series_band_and_anomalous_hours(sign_in: Callable[..., Member]) -> None:
    member = sign_in(Role.VIEWER)
    incident = _spike_incident(member)

    page = member.client.get(member.url(f"alerts/incidents/{incident.id}/"))

    assert page.status_code == 200
    html = page.content.decode()
    figure = json.loads(re.search(r'id="incident-figure"[^>]*>(.*?)</script>', html, re.S).group(1))  # type: ignore[union-attr]
    names = [t["name"] for t in figure["data"]]
    assert names == ["Expected low", "Expected band", "Expected", "cost_usd", "Anomalous hours"]
    assert len(figure["data"][4]["x"]) == 3  # the three spike hours
    assert figure["data"][3]["y"][-1] == pytest.approx(0.60)
    assert 'id="acknowledge"' not in html  # a viewer reads only


def test_a_member_acknowledges_then_resolves(sign_in: Callable[..., Member]) -> None:
    member = sign_in(Role.MEMBER)
    incident = _spike_incident(member)
    base = member.url(f"alerts/incidents/{incident.id}/")

    assert member.client.post(base + "acknowledge/").status_code == 302
    incident.refresh_from_db()
    assert incident.status == IncidentStatus.ACKNOWLEDGED
    assert member.client.post(base + "resolve/").status_code == 302
    incident.refresh_from_db()
    assert incident.status == IncidentStatus.RESOLVED

    detect(member.org.id, hour_end() + timedelta(minutes=10))  # the job keeps a person's "resolved"
    incident.refresh_from_db()
    assert incident.status == IncidentStatus.RESOLVED


def test_a_viewer_cannot_resolve_and_other_orgs_are_404(sign_in: Callable[..., Member]) -> None:
    member = sign_in(Role.MEMBER)
    incident = _spike_incident(member)
    viewer = sign_in(Role.VIEWER, org=member.org)
    outsider = sign_in(Role.OWNER)

    assert viewer.client.post(viewer.url(f"alerts/incidents/{incident.id}/resolve/")).status_code == 403
    assert outsider.client.get(outsider.url(f"alerts/incidents/{incident.id}/")).status_code == 404
    assert outsider.client.post(outsider.url(f"alerts/incidents/{incident.id}/resolve/")).status_code == 404
    incident.refresh_from_db()
    assert incident.status == IncidentStatus.OPEN


def test_an_incident_closed_by_the_job_says_why_on_its_page_and_in_the_api(
    sign_in: Callable[..., Member],
) -> None:
    member = sign_in(Role.VIEWER)
    incident = _spike_incident(member)
    AlertRule.objects.filter(id=incident.rule_id).update(enabled=False)

    detect(member.org.id, hour_end() + timedelta(minutes=10))

    html = member.client.get(member.url(f"alerts/incidents/{incident.id}/")).content.decode()
    assert 'id="resolved-reason"' in html
    assert "The rule was disabled while the incident was open." in html
    api = member.client.get(f"/api/v1/incidents/{incident.id}").json()
    assert (api["status"], api["resolved_reason"]) == (
        "resolved",
        "The rule was disabled while the incident was open.",
    )


def test_a_member_creates_and_edits_a_rule_in_the_form(sign_in: Callable[..., Member]) -> None:
    from costline.alerts.models import Channel

    member = sign_in(Role.MEMBER)
    channel = Channel.objects.create(organization=member.org, name="Ops", kind="webhook", target="https://x")
    form = {
        "name": "Tokens by model",
        "kind": "threshold",
        "metric": "cost_usd",
        "model": "gpt-4o",
        "comparison": "above",
        "threshold_value": "12.5",
        "window_hours": "3",
        "min_impact_usd": "5",
        "quiet_minutes": "30",
        "channels": [str(channel.id)],
        "enabled": "true",
    }

    created = member.client.post(member.url("alerts/rules/new/"), form)

    assert created.status_code == 302
    rule = AlertRule.objects.get(organization=member.org)
    assert (rule.kind, rule.model, str(rule.threshold_value), rule.window_hours) == (
        "threshold",
        "gpt-4o",
        "12.500000",
        3,
    )
    assert list(rule.channels.all()) == [channel]
    edit = member.url(f"alerts/rules/{rule.id}/")
    assert 'value="Tokens by model"' in member.client.get(edit).content.decode()
    # Unticking every channel and the enabled box clears them.
    unticked = {k: v for k, v in form.items() if k not in ("channels", "enabled")}  # as a browser sends
    changed = member.client.post(edit, {**unticked, "name": "Renamed"})
    assert changed.status_code == 302
    rule.refresh_from_db()
    assert (rule.name, rule.enabled, rule.channels.count()) == ("Renamed", False, 0)


def test_the_rule_form_says_what_is_wrong_and_viewers_and_outsiders_cannot_save(
    sign_in: Callable[..., Member],
) -> None:
    member = sign_in(Role.MEMBER)
    viewer = sign_in(Role.VIEWER, org=member.org)
    outsider = sign_in(Role.OWNER)
    rule = AlertRule.objects.create(organization=member.org, name="Spend watch", metric="cost_usd")

    bad = member.client.post(
        member.url("alerts/rules/new/"),
        {
            "name": "No value",
            "kind": "threshold",
            "metric": "cost_usd",
            "window_hours": "1",
            "min_impact_usd": "0",
            "quiet_minutes": "60",
        },
    )

    assert bad.status_code == 400
    assert "A threshold rule needs a value." in bad.content.decode()
    assert viewer.client.post(viewer.url("alerts/rules/new/"), {"name": "x"}).status_code == 403
    assert outsider.client.get(outsider.url(f"alerts/rules/{rule.id}/")).status_code == 404
    assert AlertRule.objects.filter(organization=member.org).count() == 1
