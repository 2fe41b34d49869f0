"""Celery tasks of notification sending (queue `notifications`, by the names' prefix).

Back-off waits live on the Delivery row (`next_attempt_at`), not in Celery countdowns: a wait of 2 h
would outlast the broker's visibility timeout (celery.py), and a row survives a lost message. The
periodic `deliver_due` queues what is due; `attempt` claims a delivery before sending, so a delivery
queued twice is sent once.
"""

from __future__ import annotations

import logging

from costline.alerts.delivery import attempt, due
from costline.celery import costline_task

log = logging.getLogger(__name__)


@costline_task("costline.notifications.deliver")
def deliver(delivery_id: int) -> str | None:
    """Send one delivery if it is due and not sent; its status after (None: nothing to do)."""
    return attempt(delivery_id)


@costline_task("costline.notifications.deliver_due")
def deliver_due() -> int:
    """Queue every delivery whose retry is due (or whose first message was lost); how many."""
    ids = due()
    for delivery_id in ids:
        deliver.delay(delivery_id)
    return len(ids)


@costline_task("costline.alerts.detect")
def detect() -> dict[str, int]:
    """Run every enabled alert rule over the last complete hours, tenant by tenant. Idempotent: a
    rerun updates the same incidents (natural key: rule, start) and notifies nobody twice. A tenant
    whose rules are all disabled is visited too while it has open incidents, to close them."""
    from costline.alerts.models import AlertIncident, AlertRule, IncidentStatus
    from costline.alerts.monitoring import detect as detect_tenant

    totals = {"tenants": 0, "rules": 0, "incidents": 0, "notified": 0, "closed": 0, "failed": 0}
    tenant_ids = set(
        AlertRule.objects.filter(enabled=True).values_list("organization_id", flat=True).distinct()
    )
    tenant_ids |= set(
        AlertIncident.objects.filter(resolved_at__isnull=True, rule__enabled=False)
        .exclude(status=IncidentStatus.RESOLVED)
        .values_list("tenant_id", flat=True)
        .distinct()
    )
    for tenant_id in sorted(tenant_ids):
        try:
            counts = detect_tenant(tenant_id)
        except Exception:  # one tenant's failure (a bad rule) must not stop the others' alerts
            log.exception("alerts: detection failed for tenant %s", tenant_id)
            totals["failed"] += 1
            continue
        totals["tenants"] += 1
        for name, value in counts.items():
            totals[name] += value
    return totals
