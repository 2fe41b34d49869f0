"""Budgets, their state per period, the events they raise, and the audit log of every change.

A budget's scope is a set of filters, all of which a call must match (values within one filter are
alternatives): {} is the whole organisation; {"project": ["search"], "model": ["gpt-4o"]} is gpt-4o
calls of the search project. Filter names are SCOPE_KEYS. Periods follow the organisation's time zone.
"""

from __future__ import annotations

from django.db import models
from django.utils import timezone

from costline.alerts.models import Channel
from costline.tenancy.models import Organization, User

# Scope filters: the usage query layer's dimensions a budget may filter on, plus `team` (the projects
# a team owns) and `gateway_key` (calls made through one gateway key: enforced by reservations).
SCOPE_KEYS = (
    "project",
    "team",
    "gateway_key",
    "user",
    "model",
    "feature",
    "service",
    "provider",
    "environment",
)
DEFAULT_THRESHOLDS = [50, 80, 100]


class Period(models.TextChoices):
    DAILY = "daily", "Daily"
    WEEKLY = "weekly", "Weekly (from Monday)"
    MONTHLY = "monthly", "Monthly"
    CUSTOM = "custom", "Custom (start and length)"


class Action(models.TextChoices):
    NOTIFY = "notify", "Notify only"
    THROTTLE = "throttle", "Throttle (requests per minute)"
    DOWNGRADE = "downgrade", "Downgrade to a cheaper model"
    BLOCK = "block", "Block"


class State(models.TextChoices):
    """Enforcement state of a budget now, the order of severity."""

    OK = "ok", "OK"
    WARN = "warn", "Warning"
    THROTTLE = "throttle", "Throttled"
    DOWNGRADE = "downgrade", "Downgraded"
    BLOCK = "block", "Blocked"


class Budget(models.Model):
    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="budgets")
    name = models.CharField(max_length=200)
    scope = models.JSONField(default=dict, blank=True)
    period = models.CharField(max_length=16, choices=Period.choices, default=Period.MONTHLY)
    custom_start = models.DateTimeField(null=True, blank=True)  # Period.CUSTOM: the first period's start
    custom_length_days = models.PositiveIntegerField(null=True, blank=True)  # Period.CUSTOM: its length
    amount_usd = models.DecimalField(max_digits=18, decimal_places=6)
    thresholds = models.JSONField(default=list)  # percentages of the amount, e.g. [50, 80, 100]
    action = models.CharField(max_length=16, choices=Action.choices, default=Action.NOTIFY)
    throttle_rpm = models.PositiveIntegerField(null=True, blank=True)  # Action.THROTTLE
    downgrade_model = models.CharField(max_length=200, blank=True, default="")  # Action.DOWNGRADE
    paused = models.BooleanField(default=False)
    channels = models.ManyToManyField(Channel, blank=True, related_name="budgets")
    created_by = models.ForeignKey(User, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        indexes = [models.Index(fields=["organization", "name"], name="budget_org_name")]

    def __str__(self) -> str:
        return self.name


class BudgetPeriodState(models.Model):
    """What the evaluation job last computed for one budget and period (upserted: reruns converge)."""

    budget = models.ForeignKey(Budget, on_delete=models.CASCADE, related_name="period_states")
    period_start = models.DateTimeField()
    period_end = models.DateTimeField()
    spend_usd = models.DecimalField(max_digits=24, decimal_places=12)
    forecast_usd = models.DecimalField(max_digits=24, decimal_places=12, null=True, blank=True)
    forecast_low_usd = models.DecimalField(max_digits=24, decimal_places=12, null=True, blank=True)
    forecast_high_usd = models.DecimalField(max_digits=24, decimal_places=12, null=True, blank=True)
    projected_limit_at = models.DateTimeField(null=True, blank=True)  # when the forecast reaches the amount
    state = models.CharField(max_length=16, choices=State.choices, default=State.OK)
    # The spend is complete for calls ingested before this instant (rollups' watermark + newest raw).
    spend_through = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["budget", "period_start"], name="budget_state_once_per_period")
        ]

    def __str__(self) -> str:
        return f"{self.budget_id} from {self.period_start:%Y-%m-%d}: {self.spend_usd} ({self.state})"


class EventKind(models.TextChoices):
    THRESHOLD = "threshold", "Threshold crossed"
    FORECAST = "forecast", "Forecast to exceed the limit"


class BudgetEvent(models.Model):
    """Raised once per budget, period, kind and threshold (the unique constraint makes reruns no-ops)."""

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    budget = models.ForeignKey(Budget, on_delete=models.CASCADE, related_name="events")
    period_start = models.DateTimeField()
    kind = models.CharField(max_length=16, choices=EventKind.choices)
    threshold = models.PositiveIntegerField(default=0)  # percent; 0 for a forecast event
    spend_usd = models.DecimalField(max_digits=24, decimal_places=12)
    forecast_usd = models.DecimalField(max_digits=24, decimal_places=12, null=True, blank=True)
    projected_limit_at = models.DateTimeField(null=True, blank=True)
    message = models.TextField()
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["budget", "period_start", "kind", "threshold"], name="budget_event_once"
            )
        ]
        indexes = [models.Index(fields=["organization", "-created_at"], name="budget_event_org_recent")]

    def __str__(self) -> str:
        return self.message


class AuditAction(models.TextChoices):
    CREATED = "created", "Created"
    UPDATED = "updated", "Updated"
    PAUSED = "paused", "Paused"
    RESUMED = "resumed", "Resumed"
    DELETED = "deleted", "Deleted"


class BudgetAuditEntry(models.Model):
    """Who changed a budget, when, and its values before and after (kept after the budget is deleted)."""

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    budget = models.ForeignKey(Budget, null=True, blank=True, on_delete=models.SET_NULL, related_name="audit")
    budget_name = models.CharField(max_length=200)
    actor = models.ForeignKey(User, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    actor_label = models.CharField(max_length=300)  # the email, or "api token …" for a token
    action = models.CharField(max_length=16, choices=AuditAction.choices)
    old = models.JSONField(null=True, blank=True)
    new = models.JSONField(null=True, blank=True)
    at = models.DateTimeField(default=timezone.now)

    class Meta:
        indexes = [models.Index(fields=["organization", "-at"], name="budget_audit_org_recent")]

    def __str__(self) -> str:
        return f"{self.budget_name} {self.action} by {self.actor_label}"
