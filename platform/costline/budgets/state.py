"""Budget state in Redis, for the gateway's enforcement: money as integer nanodollars (1e-9 USD).

- `costline:budget:{id}` HASH: tenant, state (ok|warn|throttle|downgrade|block), action, limit,
  spent (settled spend known from the database), period_start, period_end (epoch seconds),
  throttle_rpm, downgrade_model, paused (0/1), updated_at (epoch seconds);
- `costline:budgets:{tenant_id}` HASH: budget id → JSON scope with teams expanded
  ({"project": [...], "model": [...], ...}; {} = the whole organisation);
- PUBLISH on `costline:budget-state` a JSON {"budget", "tenant", "state", "remaining_usd"} whenever a
  budget's state changes (remaining_usd: the limit less the spend, a decimal string, negative when
  over; null when the budget was deleted or paused, published as state "ok": it no longer applies).

`publish(budget_id)` rewrites both from the database (the budget and its BudgetPeriodState for the
period containing now): the evaluation calls it after each run, the budgets UI and API after every
create, update and delete. A paused or deleted budget's hash and index entry are deleted.

A reader past `period_end` is looking at a period the evaluation has not rolled over yet: it should
treat spent as 0 and the state as ok (the evaluation runs every 2 s, so this lasts seconds).
"""

from __future__ import annotations

import json
import time
from decimal import ROUND_CEILING, Decimal
from typing import TYPE_CHECKING, Any

from django.utils import timezone

from costline.redis_client import client

if TYPE_CHECKING:
    from costline.budgets.models import Budget, BudgetPeriodState

CHANNEL = "costline:budget-state"
NANO = Decimal("1e9")


def budget_key(budget_id: int) -> str:
    return f"costline:budget:{budget_id}"


def index_key(tenant_id: int) -> str:
    return f"costline:budgets:{tenant_id}"


def settled_key(budget_id: int) -> str:
    return f"costline:budget:{budget_id}:settled"


def to_nanos(amount: Decimal, *, ceiling: bool = False) -> int:
    """USD → integer nanodollars: exact for the limit (6 places); spend rounds up (never under-counts)."""
    scaled = amount * NANO
    return int(scaled.to_integral_value(rounding=ROUND_CEILING) if ceiling else scaled.to_integral_value())


def from_nanos(nanos: int) -> Decimal:
    return Decimal(nanos) / NANO


# Write the hash and index entry; PUBLISH when the state changed. Atomic, so two evaluators racing
# never both miss (or both announce) one change. Returns the previous state ('' when none).
_WRITE = """
local old = redis.call('HGET', KEYS[1], 'state') or ''
redis.call('HSET', KEYS[1], unpack(ARGV, 4))
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
local new = redis.call('HGET', KEYS[1], 'state')
if old ~= new then redis.call('PUBLISH', KEYS[3], ARGV[3]) end
return old
"""
# Delete the hash and index entry; announce "ok" when the budget was enforcing something.
_DELETE = """
local old = redis.call('HGET', KEYS[1], 'state') or ''
redis.call('DEL', KEYS[1])
redis.call('HDEL', KEYS[2], ARGV[1])
if old ~= '' and old ~= 'ok' then redis.call('PUBLISH', KEYS[3], ARGV[2]) end
return old
"""


def _message(budget_id: int, tenant_id: int, state: str, remaining: Decimal | None) -> str:
    return json.dumps(
        {
            "budget": budget_id,
            "tenant": tenant_id,
            "state": state,
            "remaining_usd": None if remaining is None else f"{remaining.normalize():f}",
        }
    )


def unpublish(budget_id: int, tenant_id: int) -> str:
    """Remove a budget from Redis (deleted or paused); returns the state it had ('' when none)."""
    old = client().eval(
        _DELETE,
        3,
        budget_key(budget_id),
        index_key(tenant_id),
        CHANNEL,
        str(budget_id),
        _message(budget_id, tenant_id, "ok", None),
    )
    return old.decode() if isinstance(old, bytes) else str(old or "")


def write(
    budget: Budget,
    state: str,
    spent: Decimal,
    period_start: Any,
    period_end: Any,
    scope: dict[str, list[str]],
) -> str:
    """Write a budget's hash and index entry; PUBLISH when its state changed. Returns the old state."""
    limit = budget.amount_usd
    fields: dict[str, str | int] = {
        "tenant": budget.organization_id,
        "state": state,
        "action": budget.action,
        "limit": to_nanos(limit),
        "spent": to_nanos(spent, ceiling=True),
        "period_start": int(period_start.timestamp()),
        "period_end": int(period_end.timestamp()),
        "throttle_rpm": budget.throttle_rpm or 0,
        "downgrade_model": budget.downgrade_model or "",
        "paused": int(budget.paused),
        "updated_at": int(time.time()),
    }
    flat: list[str | int] = []
    for name, value in fields.items():
        flat += [name, value]
    old = client().eval(
        _WRITE,
        3,
        budget_key(budget.id),
        index_key(budget.organization_id),
        CHANNEL,
        str(budget.id),
        json.dumps(scope, sort_keys=True),
        _message(budget.id, budget.organization_id, state, limit - spent),
        *flat,
    )
    return old.decode() if isinstance(old, bytes) else str(old or "")


def publish(budget_id: int) -> None:
    """(Re)write a budget's Redis state from the database; delete it for a deleted or paused budget.

    Uses the BudgetPeriodState of the current period (spend 0 and state ok before the first evaluation
    of a period). Call it after every create, update and delete.
    """
    from costline.budgets.models import Budget, BudgetPeriodState
    from costline.budgets.periods import current_period
    from costline.budgets.spend import expanded_scope

    budget = Budget.objects.select_related("organization").filter(id=budget_id).first()
    if budget is None:
        tenant = _tenant_of_deleted(budget_id)
        if tenant is not None:
            unpublish(budget_id, tenant)
        return
    if budget.paused:
        unpublish(budget.id, budget.organization_id)
        return
    start, end = current_period(budget, timezone.now())
    row: BudgetPeriodState | None = BudgetPeriodState.objects.filter(
        budget=budget, period_start=start
    ).first()
    spent = row.spend_usd if row else Decimal(0)
    state = row.state if row else "ok"
    if row is not None:
        # The budget may have changed since (a new amount or action): recompute the state from the spend.
        from costline.budgets.evaluation import state_for

        state = state_for(budget, spent)
    try:
        scope = expanded_scope(budget)
    except ValueError:
        scope = {k: [str(v) for v in vs] for k, vs in (budget.scope or {}).items() if isinstance(vs, list)}
    write(budget, state, spent, start, end, scope)


def _tenant_of_deleted(budget_id: int) -> int | None:
    raw = client().hget(budget_key(budget_id), "tenant")
    return int(raw) if raw is not None else None


def read(budget_id: int) -> dict[str, str]:
    """A budget's hash as text (for tests and diagnostics)."""
    raw: dict[bytes, bytes] = client().hgetall(budget_key(budget_id))  # type: ignore[assignment]
    return {k.decode(): v.decode() for k, v in raw.items()}
