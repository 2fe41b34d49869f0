"""Celery tasks of the budgets app (queue `budgets`)."""

from __future__ import annotations

import logging

from costline.celery import costline_task

log = logging.getLogger(__name__)

# Beat sends `costline.budgets.evaluate` every EVALUATE_EVERY_SECONDS; a run that finds nothing new
# costs two small queries. A run expires after one period (celery.every), so an outage is no burst.
EVALUATE_EVERY_SECONDS = 2


@costline_task("costline.budgets.evaluate")
def evaluate() -> dict[str, int]:
    """Evaluate the budgets that are due: new calls in their tenant, a new period, a change, or the
    periodic sweep. Idempotent: a rerun, or two at once, converge on the same state and events."""
    from costline.budgets.evaluation import evaluate_due

    result = evaluate_due()
    if result["evaluated"] or result["failed"]:
        log.info("budgets: %(evaluated)d evaluated, %(changed)d changed state, %(failed)d failed", result)
    return result


@costline_task("costline.budgets.evaluate_one")
def evaluate_one(budget_id: int) -> None:
    """Evaluate one budget now (after it was created or changed, not to wait for the next run)."""
    from costline.budgets.evaluation import evaluate as evaluate_budget

    evaluate_budget(budget_id)
