"""Causes of an incident: which values carry the extra spend, from constructed calls."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest

from costline.alerts.causes import explain, explain_incident
from costline.alerts.models import AlertIncident, AlertRule
from costline.tenancy.actions import create_organization
from tests.platform.alerts.monitoring_fixtures import hour_end
from tests.platform.dashboards.conftest import roll_up
from tests.platform.usage.factories import make_calls

pytestmark = pytest.mark.django_db


def _calls(org, start, n, feature, cost, model="gpt-4o", user_id="u1"):  # type: ignore[no-untyped-def]
    return make_calls(
        org,
        [start + timedelta(seconds=10 + i) for i in range(n)],
        feature=feature,
        model=model,
        user_id=user_id,
        cost_usd=Decimal(cost),
    )


def test_the_feature_whose_spend_grew_explains_the_increase() -> None:
    org = create_organization("Causes")
    start = hour_end() - timedelta(hours=2)
    week_ago = start - timedelta(days=7)
    calls = []
    for at in (week_ago, start):  # chat spends the same in both weeks
        calls += _calls(org, at, 10, "chat", "0.100000")
    calls += _calls(org, week_ago, 2, "summarize", "0.100000")
    calls += _calls(
        org, start, 84, "summarize", "0.100000", model="gpt-4.1"
    )  # +$8.20 for summarize, +$8.40 for gpt-4.1
    calls += _calls(org, start + timedelta(hours=1), 18, "translate", "0.100000")  # +$1.80
    roll_up(calls)

    causes = explain(org.id, start, start + timedelta(hours=2))

    # Total increase $10: gpt-4.1 went from 0 to $8.40, summarize from $0.20 to $8.40.
    assert [c["text"] for c in causes[:2]] == [
        "84% of the extra spend: model gpt-4.1",
        "82% of the extra spend: feature summarize",
    ]
    assert causes[0]["extra_usd"] == "8.400000"
    assert causes[1]["share"] == 0.82
    assert causes[2] == {
        "dimension": "feature",
        "value": "translate",
        "extra_usd": "1.800000",
        "share": 0.18,
        "text": "18% of the extra spend: feature translate",
    }
    assert len(causes) == 3


def test_no_increase_no_causes_and_the_incident_stores_them() -> None:
    org = create_organization("Flat")
    start = hour_end() - timedelta(hours=1)
    roll_up(_calls(org, start, 5, "chat", "0.1") + _calls(org, start - timedelta(days=7), 5, "chat", "0.1"))
    rule = AlertRule.objects.create(organization=org, name="Spend")
    incident = AlertIncident.objects.create(tenant=org, rule=rule, started_at=start, last_anomalous_at=start)

    assert explain_incident(incident) == []
    incident.refresh_from_db()
    assert incident.cause == []


def test_users_are_compared_over_the_incident_hours_only() -> None:
    org = create_organization("Users")
    start = hour_end() - timedelta(hours=2)
    calls = _calls(org, start - timedelta(hours=5), 50, "chat", "1", user_id="earlier")  # outside the hours
    calls += _calls(org, start, 10, "chat", "1", user_id="u2")
    calls += _calls(org, start, 5, "chat", "1", user_id="u1")
    roll_up(calls)

    causes = explain(org.id, start, start + timedelta(hours=2))

    assert [c["text"] for c in causes] == [
        "67% of the extra spend: user u2",
        "33% of the extra spend: user u1",
    ]
