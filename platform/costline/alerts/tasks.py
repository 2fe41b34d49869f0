"""Celery tasks of notification sending (queue `notifications`, by the names' prefix).

Back-off waits live on the Delivery row (`next_attempt_at`), not in Celery countdowns: a wait of 2 h
would outlast the broker's visibility timeout (celery.py), and a row survives a lost message. The
periodic `deliver_due` queues what is due; `attempt` claims a delivery before sending, so a delivery
queued twice is sent once.
"""

from __future__ import annotations

from costline.alerts.delivery import attempt, due
from costline.celery import costline_task


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
