"""Celery tasks of the usage app (queue `rollups`): rollups, re-pricing, partitions and retention.

Each task is safe to run twice, late or at the same time as itself: see costline.usage.rollup and
costline.usage.reprice for how.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from typing import Any

from costline.celery import costline_task
from costline.usage.reprice import check_catalogue, process_reprice_requests
from costline.usage.rollup import maintain, process_dirty
from costline.usage.selfhosted import price_settled

log = logging.getLogger(__name__)

# A tick stops taking new days after this long; what is left waits for the next tick, which beat
# sends every 10 s and which another worker process may already be running.
TICK_BUDGET_SECONDS = 40.0
REPRICE_BUDGET_SECONDS = 300.0


@costline_task("costline.usage.rollup_tick")
def rollup_tick() -> dict[str, Any]:
    """Recompute the rollup buckets that new, late, deleted or re-priced calls have marked."""
    run = process_dirty(time_budget=TICK_BUDGET_SECONDS)
    if run.days or run.discarded:
        log.info(
            "rollups: %d minutes in %d tenant-days in %.2fs (%d skipped, %d discarded, %d left)",
            run.minutes,
            run.days,
            run.seconds,
            run.skipped,
            run.discarded,
            run.remaining,
        )
    return asdict(run)


@costline_task("costline.usage.reprice_pending")
def reprice_pending() -> dict[str, Any]:
    """Price stored calls again where an override or the catalogue changed."""
    run = process_reprice_requests(time_budget=REPRICE_BUDGET_SECONDS)
    if run.requests:
        log.info(
            "re-pricing: %d requests, %d calls seen, %d changed in %.1fs",
            run.requests,
            run.calls_seen,
            run.calls_changed,
            run.seconds,
        )
    return asdict(run)


@costline_task("costline.usage.maintain_partitions")
def maintain_partitions() -> dict[str, Any]:
    """Partitions ahead, retention behind, and a re-pricing request when genai-prices changed."""
    result = maintain()
    if result.created or result.dropped or result.deleted_hours or result.deleted_days:
        log.info(
            "partitions: %d created, dropped %s; %d hour and %d day rollups past retention deleted",
            result.created,
            ", ".join(result.dropped) or "none",
            result.deleted_hours,
            result.deleted_days,
        )
    catalogue_changed = check_catalogue()
    return {**asdict(result), "catalogue_changed": catalogue_changed}


@costline_task("costline.usage.price_self_hosted")
def price_self_hosted() -> dict[str, Any]:
    """Share each deployment's hourly price among the self-hosted calls of its last settled minutes."""
    run = price_settled()
    if run.calls_changed:
        log.info(
            "self-hosted: %d calls priced (%d changed) on %d deployments",
            run.calls_priced,
            run.calls_changed,
            run.deployments,
        )
    return asdict(run)
