"""JSON shapes of the advisor's API: money is a decimal string, never a JSON number."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from costline.advisor.findings import ReplayResult


class RecommendationSerializer(serializers.Serializer[Any]):
    id = serializers.IntegerField()
    kind = serializers.CharField()
    key = serializers.CharField()
    title = serializers.CharField()
    summary = serializers.CharField()
    how_to = serializers.CharField()
    monthly_saving_usd = serializers.DecimalField(max_digits=24, decimal_places=12)
    confidence = serializers.FloatField()
    evidence = serializers.JSONField()
    policy = serializers.JSONField()
    scope = serializers.JSONField()
    window_days = serializers.IntegerField()
    status = serializers.CharField()
    dismissed_reason = serializers.CharField()
    dismissed_at = serializers.DateTimeField(allow_null=True)
    applied_at = serializers.DateTimeField(allow_null=True)
    realised_saving_usd = serializers.DecimalField(max_digits=24, decimal_places=12, allow_null=True)
    realised_measured_at = serializers.DateTimeField(allow_null=True)
    first_seen = serializers.DateTimeField()
    last_seen = serializers.DateTimeField()


def replay_json(result: ReplayResult) -> dict[str, Any]:
    return {
        "start": result.start.isoformat(),
        "end": result.end.isoformat(),
        "calls": result.calls,
        "baseline_usd": str(result.baseline_usd),
        "replayed_usd": str(result.replayed_usd),
        "saving_usd": str(result.saving_usd),
        "days": [
            {
                "day": d.day.isoformat(),
                "baseline_usd": str(d.baseline_usd),
                "replayed_usd": str(d.replayed_usd),
            }
            for d in result.days
        ],
        "by_model": {
            model: {"baseline_usd": str(base), "replayed_usd": str(replayed)}
            for model, (base, replayed) in result.by_model.items()
        },
    }
