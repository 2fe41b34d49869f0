"""Celery tasks of the advisor (queue `advisor`): daily findings, and the realised savings of applied ones."""

from __future__ import annotations

import logging

from django.utils import timezone

from costline.celery import costline_task

log = logging.getLogger(__name__)

DAY_SECONDS = 24 * 60 * 60
WINDOW_DAYS = 30


@costline_task("costline.advisor.generate")
def generate(tenant_id: int | None = None) -> dict[str, int]:
    """Recompute every tenant's findings (or one tenant's) and store them; a rerun leaves the same rows.
    One tenant's failure is logged and counted; the others' findings are still stored."""
    from costline.advisor.actions import store_findings
    from costline.advisor.recommend import recommend
    from costline.tenancy.models import Organization

    now = timezone.now()
    ids = [tenant_id] if tenant_id is not None else list(Organization.objects.values_list("id", flat=True))
    findings = created = failed = 0
    for tid in ids:
        try:
            found = recommend(tid, now, WINDOW_DAYS)
            created += store_findings(tid, found, now)
        except Exception:
            log.exception("advisor: findings failed for tenant %s", tid)
            failed += 1
            continue
        findings += len(found)
    log.info("advisor: %d tenants, %d findings, %d new, %d failed", len(ids), findings, created, failed)
    return {"tenants": len(ids), "findings": findings, "created": created, "failed": failed}


@costline_task("costline.advisor.measure")
def measure(tenant_id: int | None = None) -> dict[str, int]:
    """Measure the realised saving of every applied recommendation from the rollups."""
    from costline.advisor.actions import measure_applied
    from costline.tenancy.models import Organization

    now = timezone.now()
    ids = [tenant_id] if tenant_id is not None else list(Organization.objects.values_list("id", flat=True))
    measured = failed = 0
    for tid in ids:
        try:
            measured += measure_applied(tid, now)
        except Exception:
            log.exception("advisor: measuring failed for tenant %s", tid)
            failed += 1
    return {"measured": measured, "failed": failed}
