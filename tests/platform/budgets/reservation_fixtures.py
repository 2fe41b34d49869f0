"""Budgets published to Redis for the reservation tests: what the gateway and the check API read."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.utils import timezone

from costline.budgets import state
from costline.budgets.models import Budget


def publish_budget(
    org: Any,
    amount: str = "1.00",
    *,
    action: str = "block",
    scope: dict[str, list[str]] | None = None,
    enforcement: str = "ok",
    spent: str = "0",
    period: tuple[datetime, datetime] | None = None,
    **fields: Any,
) -> Budget:
    """A budget in the database and its state in Redis as the evaluation publishes it."""
    budget = Budget.objects.create(
        organization=org,
        name=f"{action} {amount}",
        scope=scope or {},
        amount_usd=Decimal(amount),
        action=action,
        thresholds=[50, 80, 100],
        **fields,
    )
    now = timezone.now()
    start, end = period or (now - timedelta(hours=1), now + timedelta(hours=1))
    state.write(budget, enforcement, Decimal(spent), start, end, scope or {})
    return budget
