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
