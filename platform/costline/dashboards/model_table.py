"""The Models page: per model over a range, usage and cost (query layer) beside the price it is billed at
(the genai-prices catalogue, and the organisation's price override when one applies)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from costline.dashboards.spans import PageSpan
from costline.usage.metrics import Value, usage
from costline.usage.pricing import Override, catalogue_lookup, choose_override
from costline.usage.reprice import load_overrides

MODEL_METRICS = (
    "cost_usd",
    "requests",
    "input_tokens",
    "output_tokens",
    "cost_per_request",
    "unpriced_requests",
    "latency_p50",
    "latency_p95",
    "latency_p99",
    "errors",
    "error_rate",
)
THOUSAND = Decimal(1000)


@dataclass(frozen=True)
class ListPrice:
    """A model's catalogue price per million tokens (None: the catalogue lists no such price)."""

    input_per_mtok: Decimal | None
    output_per_mtok: Decimal | None
    cache_read_per_mtok: Decimal | None


@dataclass(frozen=True)
class ModelRow:
    provider: str | None
    model: str | None
    totals: dict[str, Value]
    price: ListPrice | None  # None: not in the catalogue (self-hosted, unknown to genai-prices)
    override: Override | None  # the organisation's override that prices this model at the range's end

    @property
    def cost_per_1k_requests(self) -> Decimal | None:
        per_request = self.totals.get("cost_per_request")
        return per_request * THOUSAND if isinstance(per_request, Decimal) else None


def list_price(provider: str | None, model: str | None, when: datetime) -> ListPrice | None:
    entry = catalogue_lookup(provider, model) if model else None
    if entry is None:
        return None
    compiled = entry.compiled(when)
    return ListPrice(
        compiled.unit_price("input_tokens"),
        compiled.unit_price("output_tokens"),
        compiled.unit_price("cache_read_tokens"),
    )


def model_rows(tenant_id: int, span: PageSpan, now: datetime) -> list[ModelRow]:
    """One row per (provider, model) with calls in the span, most expensive first."""
    result = usage(tenant_id, span.query(MODEL_METRICS, ("provider", "model")))
    # Prices as they stand at the range's last instant (not in the future: a price can be announced
    # ahead of its date).
    when = min(span.end, now) - timedelta(microseconds=1)
    overrides = load_overrides(tenant_id)
    rows = []
    for series in result.series:
        provider, model = series.group["provider"], series.group["model"]
        override = choose_override(overrides, provider, (model,), when) if model else None
        rows.append(ModelRow(provider, model, series.totals, list_price(provider, model, when), override))
    return rows
