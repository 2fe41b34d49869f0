"""The JSON shapes of the REST API: LLM calls, usage metrics, errors (and `choice_param`, the 400 for a
query parameter outside its choices)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from rest_framework import serializers
from rest_framework.request import Request

from costline.usage.metrics import INTERVALS, METRICS, MONEY_METRICS, UsageResult, Value
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


class ErrorSerializer(serializers.Serializer[object]):
    """Why a request was refused, and what to do about it."""

    detail = serializers.CharField(help_text="What was wrong and how to fix it.")


# --- GET /api/v1/usage ------------------------------------------------------------------------------
# The answer is shaped by `usage_json` (a plain function: a long series is thousands of points, and
# money must stay an exact decimal string); the serializers below describe that shape for the OpenAPI
# schema, one field per metric so that each metric's type and unit are documented.

_UNIT_DESCRIPTIONS = {
    "calls": "A count of calls",
    "tokens": "A count of tokens",
    "USD": "US dollars as an exact decimal string",
    "ratio": "A ratio from 0 to 1",
    "ms": "Milliseconds",
}
# Figures per call or per measured call: undefined (null) where there was none.
_NULLABLE_METRICS = frozenset(
    name for name, unit in METRICS.items() if unit in {"ratio", "ms"} or name == "cost_per_request"
)


def _metric_field(name: str) -> serializers.Field[Any, Any, Any, Any]:
    unit = METRICS[name]
    nullable = name in _NULLABLE_METRICS
    help_text = (
        _UNIT_DESCRIPTIONS[unit]
        + ("; null where undefined (no calls, or none that measured it)" if nullable else "")
        + ". Present when asked for in `metrics`."
    )
    if name in MONEY_METRICS:
        return serializers.DecimalField(
            max_digits=None,
            decimal_places=None,
            coerce_to_string=True,
            allow_null=nullable,
            required=False,
            help_text=help_text,
        )
    if unit in {"calls", "tokens"}:
        return serializers.IntegerField(min_value=0, required=False, help_text=help_text)
    return serializers.FloatField(allow_null=nullable, required=False, help_text=help_text)


class UsageValuesSerializer(serializers.Serializer[object]):
    """The metrics asked for (and only those), over a whole series or over all of them."""

    def get_fields(self) -> dict[str, serializers.Field[Any, Any, Any, Any]]:
        return {name: _metric_field(name) for name in METRICS}


class UsagePointSerializer(serializers.Serializer[object]):
    """One interval bucket: its start and the metrics asked for."""

    def get_fields(self) -> dict[str, serializers.Field[Any, Any, Any, Any]]:
        start = serializers.DateTimeField(help_text="The bucket's start (UTC); it lasts one `interval`.")
        return {"t": start, **UsageValuesSerializer().get_fields()}


class UsageSeriesSerializer(serializers.Serializer[object]):
    """The calls of one group: one point per bucket, and totals over the range."""

    group = serializers.DictField(
        child=serializers.CharField(allow_null=True),
        help_text=(
            "Each `group_by` dimension and this group's value of it; null for calls without a value "
            "(no feature, no project…). Empty when not grouped."
        ),
    )
    totals = UsageValuesSerializer()
    points = UsagePointSerializer(many=True, help_text="Oldest first.")


class UsageSerializer(serializers.Serializer[object]):
    """Usage metrics over a time range, by interval bucket, optionally grouped."""

    def get_fields(self) -> dict[str, serializers.Field[Any, Any, Any, Any]]:
        return {
            "from": serializers.DateTimeField(
                help_text="Start of the range answered (UTC): `from` snapped down to a whole bucket."
            ),
            "to": serializers.DateTimeField(
                help_text="End of the range answered (UTC, exclusive): `to` snapped up to a whole bucket."
            ),
            "interval": serializers.ChoiceField(
                choices=INTERVALS, help_text="The bucket size used (`auto` resolved)."
            ),
            "tz": serializers.CharField(help_text="The IANA time zone the day buckets follow."),
            "metrics": serializers.ListField(
                child=serializers.ChoiceField(choices=list(METRICS)), help_text="The metrics answered."
            ),
            "units": serializers.DictField(
                child=serializers.CharField(),
                help_text="Each metric's unit: calls, tokens, USD, ratio or ms.",
            ),
            "complete_through": serializers.DateTimeField(
                allow_null=True,
                help_text=(
                    "Every call ingested before this instant is counted; later ones may be missing "
                    "until the next rollup. Null before the first rollup."
                ),
            ),
            "totals": UsageValuesSerializer(help_text="Over every group."),
            "series": UsageSeriesSerializer(many=True),
        }


def usage_json(result: UsageResult, time_zone: str) -> dict[str, Any]:
    """The JSON body of GET /api/v1/usage for `result`, with the metric values of `METRICS`' units."""
    metrics = result.metrics
    return {
        "from": _iso(result.start),
        "to": _iso(result.end),
        "interval": result.interval,
        "tz": time_zone,
        "metrics": list(metrics),
        "units": {name: METRICS[name] for name in metrics},
        "complete_through": None if result.complete_through is None else _iso(result.complete_through),
        "totals": _values(result.totals, metrics),
        "series": [
            {
                "group": series.group,
                "totals": _values(series.totals, metrics),
                "points": [{"t": _iso(start), **_values(values, metrics)} for start, values in series.points],
            }
            for series in result.series
        ],
    }


def _values(values: dict[str, Value], metrics: tuple[str, ...]) -> dict[str, object]:
    # Every metric asked for is in every point and total (UsageResult's contract): a missing one is a
    # bug of the query layer, better a KeyError than a null that reads as "undefined".
    return {name: _value(name, values[name]) for name in metrics}


def _value(name: str, value: Value) -> object:
    if value is None:
        return None
    unit = METRICS[name]
    if unit == "USD":
        if isinstance(value, float):
            raise TypeError(f"{name} must be a Decimal (exact money), got the float {value!r}")
        # Fixed-point, exact: str() would write a small amount as 1.00000E-7.
        return format(Decimal(value), "f")
    if unit in {"calls", "tokens"}:
        return int(value)  # SUM over integers comes back from PostgreSQL as numeric (Decimal)
    return float(value)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def choice_param(request: Request, name: str, choices: Iterable[str]) -> str | None:
    """The query parameter `name` when given (None when absent or empty); a 400 naming the choices when
    it is not one of them."""
    value = request.query_params.get(name)
    if not value:
        return None
    allowed = list(choices)
    if value not in allowed:
        message = f"Unknown {name} {value!r}; use one of {', '.join(allowed)}."
        raise serializers.ValidationError({name: message})
    return value
