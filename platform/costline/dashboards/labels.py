"""How the pages name metrics, dimensions and group values (one place, so tables, forms, charts and
CSV headers agree)."""

from __future__ import annotations

from collections.abc import Mapping

from costline.usage.metrics import METRICS

METRIC_LABELS: dict[str, str] = {
    "requests": "Requests",
    "errors": "Errors",
    "error_rate": "Error rate",
    "unpriced_requests": "Unpriced requests",
    "input_tokens": "Input tokens",
    "output_tokens": "Output tokens",
    "cache_read_tokens": "Cache read tokens",
    "cache_write_tokens": "Cache write tokens",
    "reasoning_tokens": "Reasoning tokens",
    "cost_usd": "Cost",
    "cost_per_request": "Cost per request",
    "cache_hits": "Cache hits",
    "cache_hit_rate": "Cache hit rate",
    "cache_savings_usd": "Saved by caching",
    "latency_p50": "Latency p50",
    "latency_p95": "Latency p95",
    "latency_p99": "Latency p99",
    "ttft_p50": "Time to first token p50",
    "ttft_p95": "Time to first token p95",
    "ttft_p99": "Time to first token p99",
}
UNIT_LABELS = {"calls": "calls", "tokens": "tokens", "USD": "$", "ms": "ms", "ratio": "%"}
DIMENSION_LABELS: dict[str, str] = {
    "project": "Project",
    "service": "Service",
    "environment": "Environment",
    "feature": "Feature",
    "provider": "Provider",
    "model": "Model",
    "operation": "Operation",
    "status": "Status",
    "user": "User",
}
# Sums over calls: a group's value adds up over buckets and over groups ("other" is meaningful, a
# stacked chart shows a total). Rates, per-request figures and percentiles do not add up.
ADDITIVE_METRICS = frozenset(
    {
        "requests",
        "errors",
        "unpriced_requests",
        "input_tokens",
        "output_tokens",
        "cache_read_tokens",
        "cache_write_tokens",
        "reasoning_tokens",
        "cost_usd",
        "cache_hits",
        "cache_savings_usd",
    }
)
NONE_LABEL = "(none)"  # a group of calls without a value (no feature, no project, no user)


def metric_label(metric: str) -> str:
    """'Cost ($)', 'Latency p95 (ms)', 'Requests (calls)': the name with its unit."""
    return f"{METRIC_LABELS[metric]} ({UNIT_LABELS[METRICS[metric]]})"


def group_label(group: Mapping[str, str | None]) -> str:
    """A series' name: its dimension values joined ('gpt-4o · checkout'); 'All calls' ungrouped."""
    if not group:
        return "All calls"
    return " · ".join(NONE_LABEL if value is None else value for value in group.values())
