"""Helpers of the evaluation tests: budgets, calls at recent times, rollups, a clean Redis."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from costline.budgets.models import Budget
from costline.tenancy.models import Organization
from costline.usage.models import LLMCall
from tests.platform.dashboards.conftest import roll_up
from tests.platform.usage.factories import make_calls


def make_budget(org: Organization, **fields: Any) -> Budget:
    values: dict[str, Any] = {
        "name": "Search",
        "period": "monthly",
        "amount_usd": Decimal("10"),
        "thresholds": [50, 80, 100],
        "action": "notify",
    }
    values.update(fields)
    return Budget.objects.create(organization=org, **values)


def spend(
    org: Organization, total: Decimal, *, at: datetime | None = None, count: int = 1, **fields: Any
) -> list[LLMCall]:
    """`count` calls costing `total` in all, started at `at` (a minute ago by default)."""
    at = at or datetime.now(UTC) - timedelta(minutes=1)
    each = (total / count).quantize(Decimal("0.000000000001"))
    calls = make_calls(org, [at + timedelta(milliseconds=i) for i in range(count)], cost_usd=each, **fields)
    return calls


__all__ = ["make_budget", "roll_up", "spend"]
