"""Changing budgets: create, update, pause, resume, delete. Each writes one audit entry and republishes.

The web forms and the REST API validate their input (costline.budgets.forms.BudgetForm and the API's
serializer share the checks of costline.budgets.validation) and then call exactly one function here.
An audit entry holds who, when, and the budget's values before and after as JSON (`snapshot`), so the
log reads the same after the budget is deleted. After the transaction commits, the budget's enforcement
state is (re)published to Redis (`costline.budgets.state.publish`), so the gateway sees a new limit,
action or pause within a second.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from django.db import transaction
from django.utils import timezone

from costline.alerts.models import Channel
from costline.budgets.models import AuditAction, Budget, BudgetAuditEntry
from costline.tenancy.models import Organization, User

# The budget fields a caller may set, in the order an audit diff lists them.
FIELDS = (
    "name",
    "scope",
    "period",
    "custom_start",
    "custom_length_days",
    "amount_usd",
    "thresholds",
    "action",
    "throttle_rpm",
    "downgrade_model",
    "paused",
    "channels",
)


@dataclass(frozen=True)
class Actor:
    """Who makes a change: a person (user set) or an organisation-wide API token (user None)."""

    user: User | None
    label: str  # the email, or "api token <name> (<prefix>…)"


def snapshot(budget: Budget) -> dict[str, Any]:
    """The budget's settable values as JSON: money as a string, times in ISO 8601, channels by id."""
    start: datetime | None = budget.custom_start
    return {
        "name": budget.name,
        "scope": budget.scope or {},
        "period": budget.period,
        "custom_start": start.isoformat() if start else None,
        "custom_length_days": budget.custom_length_days,
        # As stored (6 places), so an entry written before the row is re-read compares equal to one after.
        "amount_usd": str(Decimal(budget.amount_usd).quantize(Decimal("0.000001"))),
        "thresholds": list(budget.thresholds or []),
        "action": budget.action,
        "throttle_rpm": budget.throttle_rpm,
        "downgrade_model": budget.downgrade_model or "",
        "paused": budget.paused,
        "channels": sorted(budget.channels.values_list("id", flat=True)) if budget.pk else [],
    }


def diff(old: dict[str, Any] | None, new: dict[str, Any] | None) -> list[tuple[str, Any, Any]]:
    """(field, old value, new value) for every field that differs, in FIELDS order."""
    old, new = old or {}, new or {}
    return [(name, old.get(name), new.get(name)) for name in FIELDS if old.get(name) != new.get(name)]


def _apply(budget: Budget, values: dict[str, Any]) -> list[Channel] | None:
    channels = values.get("channels")
    for name, value in values.items():
        if name == "channels":
            continue
        if name not in FIELDS:
            raise ValueError(f"unknown budget field {name!r}")
        if name == "amount_usd":
            value = Decimal(value)
        setattr(budget, name, value)
    return None if channels is None else list(channels)


def _audit(
    budget: Budget, actor: Actor, action: str, old: dict[str, Any] | None, new: dict[str, Any] | None
) -> None:
    BudgetAuditEntry.objects.create(
        organization_id=budget.organization_id,
        budget=budget if budget.pk else None,
        budget_name=(new or old or {}).get("name", budget.name),
        actor=actor.user,
        actor_label=actor.label,
        action=action,
        old=old,
        new=new,
        at=timezone.now(),
    )


def _publish_after_commit(budget_id: int) -> None:
    def publish() -> None:
        from costline.budgets.state import publish as publish_state

        publish_state(budget_id)

    transaction.on_commit(publish)


def _check_channels(organization: Organization, channels: Iterable[Channel] | None) -> None:
    for channel in channels or ():
        if channel.organization_id != organization.id:
            raise ValueError(f"channel {channel.id} belongs to another organisation")


@transaction.atomic
def create_budget(organization: Organization, actor: Actor, values: dict[str, Any]) -> Budget:
    """A new budget from validated `values` (FIELDS; channels as Channel rows of `organization`)."""
    budget = Budget(organization=organization, created_by=actor.user)
    channels = _apply(budget, values)
    _check_channels(organization, channels)
    budget.save()
    if channels:
        budget.channels.set(channels)
    _audit(budget, actor, AuditAction.CREATED, None, snapshot(budget))
    _publish_after_commit(budget.id)
    return budget


@transaction.atomic
def update_budget(budget: Budget, actor: Actor, values: dict[str, Any]) -> Budget:
    """Change some of a budget's values; no audit entry when nothing changed."""
    budget = Budget.objects.select_for_update().get(pk=budget.pk)
    old = snapshot(budget)
    channels = _apply(budget, values)
    _check_channels(budget.organization, channels)
    budget.save()
    if channels is not None:
        budget.channels.set(channels)
    new = snapshot(budget)
    if diff(old, new):
        action = AuditAction.UPDATED
        if [name for name, _, _ in diff(old, new)] == ["paused"]:
            action = AuditAction.PAUSED if new["paused"] else AuditAction.RESUMED
        _audit(budget, actor, action, old, new)
        _publish_after_commit(budget.id)
    return budget


def set_paused(budget: Budget, actor: Actor, paused: bool) -> Budget:
    """Pause (stop evaluating and enforcing) or resume a budget."""
    return update_budget(budget, actor, {"paused": paused})


@transaction.atomic
def delete_budget(budget: Budget, actor: Actor) -> None:
    """Delete a budget; its audit entries stay, the last one saying who deleted it."""
    old = snapshot(budget)
    budget_id = budget.id
    _audit(budget, actor, AuditAction.DELETED, old, None)
    budget.delete()
    _publish_after_commit(budget_id)
