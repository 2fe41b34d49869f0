"""Notify an organisation's channels: the one entry point budgets (and later anomaly alerts) call.

    delivery_ids = notify(org.id, [c.id for c in budget.channels.all()], f"budget_event:{event.id}",
                          "Budget 'Search' reached 80%", {"kind": "budget.threshold", ...})

One Delivery per channel, unique on (channel, source): calling again with the same source (a rerun of
the job that raised the event) creates nothing and queues nothing new. The sending happens on the
`notifications` queue once the caller's transaction commits, so a rolled-back event notifies nobody;
if queueing fails (broker down), the periodic `costline.notifications.deliver_due` sends it later.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder
from django.db import transaction

from costline.alerts.models import Channel, Delivery

log = logging.getLogger(__name__)

SOURCE_MAX_LENGTH = Delivery._meta.get_field("source").max_length or 100
SUBJECT_MAX_LENGTH = Delivery._meta.get_field("subject").max_length or 300


def notify(
    organization_id: int, channel_ids: list[int], source: str, subject: str, payload: dict[str, Any]
) -> list[int]:
    """Queue `payload` to each enabled channel of the organisation in `channel_ids`; the delivery ids.

    Channels of another organisation, deleted or disabled ones are skipped. `source` names what caused
    the message ("budget_event:42", "test:<uuid>"). `payload` is JSON; a Decimal or datetime in it is
    stored as its string (DjangoJSONEncoder), so money stays exact. Returns the ids of the deliveries
    for (channel, source), those created by an earlier call included.
    """
    if not source or len(source) > SOURCE_MAX_LENGTH:
        raise ValueError(f"source must be 1 to {SOURCE_MAX_LENGTH} characters, got {source!r}")
    body = json.loads(json.dumps(payload, cls=DjangoJSONEncoder))
    if not isinstance(body, dict):
        raise ValueError("payload must be a JSON object")
    subject = subject if len(subject) <= SUBJECT_MAX_LENGTH else subject[: SUBJECT_MAX_LENGTH - 1] + "…"
    channels = list(
        Channel.objects.filter(organization_id=organization_id, id__in=channel_ids, enabled=True).values_list(
            "id", flat=True
        )
    )
    if not channels:
        return []
    existing = set(
        Delivery.objects.filter(channel_id__in=channels, source=source).values_list("channel_id", flat=True)
    )
    Delivery.objects.bulk_create(
        [
            Delivery(
                organization_id=organization_id, channel_id=c, source=source, subject=subject, payload=body
            )
            for c in channels
            if c not in existing
        ],
        ignore_conflicts=True,  # a concurrent call with the same source created it first
    )
    deliveries = dict(
        Delivery.objects.filter(channel_id__in=channels, source=source).values_list("channel_id", "id")
    )
    created = [deliveries[c] for c in channels if c not in existing and c in deliveries]
    if created:
        transaction.on_commit(lambda: _queue(created), robust=True)
    return [deliveries[c] for c in channels if c in deliveries]


def _queue(delivery_ids: list[int]) -> None:
    from costline.alerts.tasks import deliver  # tasks imports the sending, which imports httpx

    for delivery_id in delivery_ids:
        deliver.delay(delivery_id)
