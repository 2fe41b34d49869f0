"""The demo organisation gets one default anomaly rule on spend, however often its settings are made."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from costline.alerts.models import AlertRule, RuleKind
from costline.tenancy.actions import create_organization
from costline.usage.demo import DEMO_ALERT_RULE, ensure_demo_settings


@pytest.mark.django_db
def test_the_demo_has_one_spend_anomaly_rule() -> None:
    org = create_organization("Demo test")
    since = datetime(2026, 1, 1, tzinfo=UTC)

    ensure_demo_settings(org, since=since)
    ensure_demo_settings(org, since=since)

    rule = AlertRule.objects.get(organization=org)
    assert (rule.name, rule.kind, rule.metric, rule.enabled) == (
        DEMO_ALERT_RULE,
        RuleKind.ANOMALY,
        "cost_usd",
        True,
    )
