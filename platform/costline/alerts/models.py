"""Notification channels of an organisation and every delivery made through them.

Budgets (and, later, anomaly alerts) notify a budget's or rule's channels; `costline.alerts.notify`
queues one Delivery per channel and the `notifications` queue sends it, retrying with back-off.
"""

from __future__ import annotations

from django.db import models
from django.utils import timezone

from costline.tenancy.models import Organization


class ChannelKind(models.TextChoices):
    EMAIL = "email", "Email"
    WEBHOOK = "webhook", "Webhook (JSON, HMAC-signed)"
    SLACK = "slack", "Slack incoming webhook"


class Channel(models.Model):
    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="channels")
    name = models.CharField(max_length=200)
    kind = models.CharField(max_length=16, choices=ChannelKind.choices)
    # email: the addresses; webhook / slack: the URL.
    target = models.TextField(help_text="Email addresses (comma-separated) or the webhook URL.")
    # Webhook only: the HMAC-SHA256 key of the signature header. Shown to admins, who paste it into the
    # receiver; not a credential of Costline's own.
    signing_secret = models.CharField(max_length=100, blank=True, default="")
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"{self.name} ({self.get_kind_display()})"


class DeliveryStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    SENT = "sent", "Sent"
    RETRYING = "retrying", "Retrying"
    FAILED = "failed", "Failed"


class Delivery(models.Model):
    """One message to one channel: what was sent, each attempt's outcome."""

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    channel = models.ForeignKey(Channel, on_delete=models.CASCADE, related_name="deliveries")
    # What caused it, e.g. "budget_event:42" or "test": with the channel, makes a retried notify a no-op.
    source = models.CharField(max_length=100)
    subject = models.CharField(max_length=300)
    payload = models.JSONField()  # the event as JSON (the webhook body; email and Slack render it)
    status = models.CharField(max_length=16, choices=DeliveryStatus.choices, default=DeliveryStatus.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True, default="")
    response_status = models.IntegerField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    sent_at = models.DateTimeField(null=True, blank=True)
    next_attempt_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["channel", "source"], name="delivery_once_per_source"),
        ]
        indexes = [models.Index(fields=["organization", "-created_at"], name="delivery_org_recent")]

    def __str__(self) -> str:
        return f"{self.subject} → {self.channel_id} ({self.status})"


class RuleKind(models.TextChoices):
    ANOMALY = "anomaly", "Anomaly (learnt band)"
    THRESHOLD = "threshold", "Threshold (fixed value)"


# Metrics a rule can watch: names of `costline.usage.metrics.METRICS`.
RULE_METRICS = (
    "cost_usd",
    "requests",
    "errors",
    "error_rate",
    "input_tokens",
    "output_tokens",
    "cost_per_request",
    "latency_p95",
    "latency_p99",
    "ttft_p95",
)


class Sensitivity(models.TextChoices):
    LOW = "low", "Low (fewer alerts)"
    MEDIUM = "medium", "Medium"
    HIGH = "high", "High (more alerts)"


class Comparison(models.TextChoices):
    ABOVE = "above", "Above"
    BELOW = "below", "Below"


class AlertRule(models.Model):
    """What to watch (a metric, optionally of one project or model) and whom to tell."""

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="alert_rules")
    name = models.CharField(max_length=200)
    kind = models.CharField(max_length=16, choices=RuleKind.choices, default=RuleKind.ANOMALY)
    metric = models.CharField(max_length=32, choices=[(m, m) for m in RULE_METRICS], default="cost_usd")
    project = models.CharField(max_length=200, blank=True, default="")  # a project slug; "" = all
    model = models.CharField(max_length=200, blank=True, default="")  # "" = all models
    sensitivity = models.CharField(max_length=8, choices=Sensitivity.choices, default=Sensitivity.MEDIUM)
    comparison = models.CharField(max_length=8, choices=Comparison.choices, default=Comparison.ABOVE)
    threshold_value = models.DecimalField(max_digits=18, decimal_places=6, null=True, blank=True)
    # Threshold rules: the metric over this many trailing hours is compared with the value.
    window_hours = models.PositiveIntegerField(default=1)
    # Anomaly rules page only once the incident's spend beyond the band reaches this.
    min_impact_usd = models.DecimalField(max_digits=18, decimal_places=6, default=0)
    # No second notification for this rule within this many minutes of its last one.
    quiet_minutes = models.PositiveIntegerField(default=60)
    channels = models.ManyToManyField(Channel, blank=True, related_name="alert_rules")
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        indexes = [models.Index(fields=["organization", "name"], name="alertrule_org_name")]

    def __str__(self) -> str:
        return self.name


class IncidentStatus(models.TextChoices):
    OPEN = "open", "Open"
    ACKNOWLEDGED = "acknowledged", "Acknowledged"
    RESOLVED = "resolved", "Resolved"


class AlertIncident(models.Model):
    """One anomalous episode of a rule's series; (rule, started_at) is its natural key."""

    tenant = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="alert_incidents")
    rule = models.ForeignKey(AlertRule, on_delete=models.CASCADE, related_name="incidents")
    started_at = models.DateTimeField()
    last_anomalous_at = models.DateTimeField()
    resolved_at = models.DateTimeField(null=True, blank=True)
    # Why the detection job closed it without seeing the series recover (the rule was disabled, the
    # incident left the window, the series has no usage); "" when it recovered or a person resolved it.
    resolved_reason = models.CharField(max_length=300, blank=True, default="")
    status = models.CharField(max_length=16, choices=IncidentStatus.choices, default=IncidentStatus.OPEN)
    severity = models.CharField(max_length=16, default="minor")
    direction = models.SmallIntegerField(default=1)  # +1 above the band, −1 below
    impact_usd = models.DecimalField(max_digits=18, decimal_places=6, default=0)
    observed = models.FloatField(null=True, blank=True)  # the metric at the peak hour
    expected = models.FloatField(null=True, blank=True)  # the forecast at the peak hour
    cause = models.JSONField(default=list, blank=True)  # top contributors (costline.alerts.causes)
    notified_at = models.DateTimeField(null=True, blank=True)
    acknowledged_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["rule", "started_at"], name="alertincident_once_per_start"),
        ]
        indexes = [models.Index(fields=["tenant", "status", "-started_at"], name="alertincident_org_status")]

    def __str__(self) -> str:
        return f"{self.rule_id} @ {self.started_at:%Y-%m-%d %H:%M} ({self.status})"
