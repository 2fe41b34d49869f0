"""Stored recommendations: one row per (tenant, key), refreshed daily while open.

A finding's `key` is stable across days for the same opportunity, so the daily job upserts on it:
open rows get today's numbers, dismissed rows stay dismissed, applied rows keep the estimate made
when they were applied (the realised saving is measured against it).
"""

from __future__ import annotations

from django.db import models
from django.utils import timezone

from costline.advisor.findings import Kind
from costline.tenancy.models import Organization


class Status(models.TextChoices):
    OPEN = "open", "Open"
    DISMISSED = "dismissed", "Dismissed"
    APPLIED = "applied", "Applied"


class Recommendation(models.Model):
    tenant = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="recommendations")
    kind = models.CharField(max_length=32, choices=[(k.value, k.value) for k in Kind])
    key = models.CharField(max_length=300)
    title = models.CharField(max_length=300)
    summary = models.TextField()
    how_to = models.TextField()
    monthly_saving_usd = models.DecimalField(max_digits=24, decimal_places=12)
    confidence = models.FloatField()
    evidence = models.JSONField(default=dict)
    policy = models.JSONField(default=dict)  # costline.advisor.policies.policy_to_json
    scope = models.JSONField(default=dict)
    window_days = models.PositiveIntegerField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.OPEN)
    dismissed_reason = models.TextField(blank=True)
    dismissed_at = models.DateTimeField(null=True, blank=True)
    applied_at = models.DateTimeField(null=True, blank=True)
    # The scope's mean daily cost over the window before applying: what the realised saving is against.
    baseline_daily_usd = models.DecimalField(max_digits=24, decimal_places=12, null=True, blank=True)
    realised_saving_usd = models.DecimalField(max_digits=24, decimal_places=12, null=True, blank=True)
    realised_measured_at = models.DateTimeField(null=True, blank=True)
    first_seen = models.DateTimeField(default=timezone.now)
    last_seen = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["tenant", "key"], name="advisor_recommendation_key")]
        indexes = [models.Index(fields=["tenant", "status", "-monthly_saving_usd"])]

    def __str__(self) -> str:
        return self.title
