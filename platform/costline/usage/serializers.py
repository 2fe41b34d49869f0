"""The JSON shape of LLM calls in the REST API."""

from __future__ import annotations

from rest_framework import serializers

from costline.usage.models import LLMCall


class CallSerializer(serializers.ModelSerializer[LLMCall]):
    """One LLM call. Money is a decimal string (exact to 12 places), never a float."""

    timestamp = serializers.DateTimeField(
        source="start_time", read_only=True, help_text="When the call started (UTC)."
    )
    project = serializers.CharField(
        source="project.slug",
        allow_null=True,
        read_only=True,
        help_text="The project's slug; null when unattributed.",
    )
    cost_usd = serializers.DecimalField(
        max_digits=20,
        decimal_places=12,
        coerce_to_string=True,
        allow_null=True,
        read_only=True,
        help_text="What the call cost in USD as a decimal string; null when it could not be priced.",
    )
    emitter_cost_usd = serializers.DecimalField(
        max_digits=20,
        decimal_places=12,
        coerce_to_string=True,
        allow_null=True,
        read_only=True,
        help_text="The cost the instrumentation itself reported, if any.",
    )
    priced = serializers.BooleanField(
        read_only=True, help_text="Whether Costline found a price for the call."
    )

    class Meta:
        model = LLMCall
        fields = (
            "trace_id",
            "span_id",
            "parent_span_id",
            "timestamp",
            "service",
            "environment",
            "project",
            "feature",
            "provider",
            "operation",
            "model",
            "request_model",
            "response_model",
            "input_tokens",
            "output_tokens",
            "cache_read_tokens",
            "cache_write_tokens",
            "reasoning_tokens",
            "cost_usd",
            "emitter_cost_usd",
            "priced",
            "price_source",
            "price_version",
            "latency_ms",
            "ttft_ms",
            "streaming",
            "status",
            "error_type",
            "finish_reason",
            "user_id",
            "session_id",
            "tags",
        )
        read_only_fields = fields


class CallPageSerializer(serializers.Serializer[object]):
    """A page of calls, newest first."""

    results = CallSerializer(many=True)
    next = serializers.URLField(
        allow_null=True, help_text="The URL of the next page (same filters); null on the last page."
    )
