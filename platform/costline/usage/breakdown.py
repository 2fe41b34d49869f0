"""Why a call cost what it did: its price split by token kind, with the unit price of each.

The split follows `costline.usage.pricing` step by step: the same catalogue entry at the call's time,
the same override choice, the same per-kind arithmetic (each catalogue unit bills its usage less what
its more specific units bill; an override's explicit prices per million, falling back to the
catalogue and then to the input rate for cache tokens; a discount scales every catalogue line). So the
lines add up to what `price_call` answers, and the tests check that they do.

The stored cost is numeric(20, 12); the lines are rounded to the same 12 places and the last fraction of
a picodollar of rounding goes to the largest line, so the lines sum exactly to the stored cost.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal

from costline.usage.models import LLMCall, Status
from costline.usage.pricing import (
    CATALOGUE_SOURCE,
    GATEWAY_CACHE_SOURCE,
    MTOK,
    OVERRIDE_SOURCE,
    SELF_HOSTED_PROVIDERS,
    CompiledPrice,
    Override,
    TokenUsage,
    catalogue_lookup,
    choose_override,
    price_call,
)
from costline.usage.selfhosted import SELF_HOSTED_SOURCE

PLACES = Decimal("0.000000000001")  # the stored cost's 12 places

LABELS = {
    "input_tokens": "Input (uncached)",
    "cache_read_tokens": "Cache read",
    "cache_write_tokens": "Cache write",
    "output_tokens": "Output",
    "output_reasoning_tokens": "Reasoning (output)",
    "requests": "Per request",
    "gateway_cache": "Answered from the gateway's cache (not billed)",
    "prefill_time": "Prefill: share of the deployment's time, arrival to first token",
    "decode_time": "Decode: share of the deployment's time, first token to the end",
}
# Display order: what a reader follows from prompt to answer.
ORDER = tuple(LABELS)


@dataclass(frozen=True)
class Line:
    kind: str  # a key of LABELS
    quantity: int  # tokens (requests for "requests")
    unit_price: Decimal  # USD per million tokens (per request for "requests")
    cost: Decimal  # USD, 12 places

    @property
    def label(self) -> str:
        return LABELS.get(self.kind, self.kind)

    @property
    def per_request(self) -> bool:
        return self.kind == "requests"

    @property
    def priced_by_token(self) -> bool:
        return self.kind not in ("gateway_cache", "prefill_time", "decode_time")


@dataclass(frozen=True)
class CostBreakdown:
    lines: tuple[Line, ...]
    # What today's prices give for this call (12 places); None when it cannot be priced.
    total: Decimal | None
    source: str | None  # genai-prices, override, unbilled-error, gateway_cache, self_hosted; None: unpriced
    version: str | None
    override: Override | None  # the tenant's override that priced it
    stored_cost: Decimal | None  # what the call holds (cost_usd)
    reasoning_tokens: int | None  # billed within output unless the catalogue prices them apart
    unpriced_reason: str | None

    @property
    def matches_stored(self) -> bool:
        return self.total == self.stored_cost

    @property
    def lines_total(self) -> Decimal:
        return sum((line.cost for line in self.lines), Decimal(0))


def explain_cost(call: LLMCall, overrides: list[Override]) -> CostBreakdown:
    """The cost of `call` by token kind, priced as the collector and the re-pricer price it."""
    if call.price_source == SELF_HOSTED_SOURCE:
        # Priced from its deployment's hours (costline.usage.selfhosted), not per token: one line.
        busy = call.cost_usd or Decimal(0)
        prefill = min(call.prefill_cost_usd or Decimal(0), busy)
        return CostBreakdown(
            lines=(
                Line("prefill_time", 0, Decimal(0), prefill),
                Line("decode_time", 0, Decimal(0), busy - prefill),
            ),
            total=busy,
            source=SELF_HOSTED_SOURCE,
            version=call.price_version,
            override=None,
            stored_cost=call.cost_usd,
            reasoning_tokens=call.reasoning_tokens,
            unpriced_reason=None,
        )
    usage = TokenUsage(
        call.input_tokens,
        call.output_tokens,
        call.cache_read_tokens,
        call.cache_write_tokens,
        call.reasoning_tokens,
    )
    price = price_call(
        provider=call.provider,
        request_model=call.request_model,
        response_model=call.response_model,
        operation=call.operation,
        usage=usage,
        when=call.start_time,
        failed=call.status == Status.ERROR,
        overrides=overrides,
    )
    stored = call.cost_usd
    if price.cost_usd is None:
        return CostBreakdown(
            (), None, None, None, None, stored, call.reasoning_tokens, _unpriced_reason(call, usage)
        )
    total = price.cost_usd.quantize(PLACES, ROUND_HALF_UP)

    entry = catalogue_lookup(price.provider, call.response_model, call.request_model)
    catalogue = entry.compiled(call.start_time) if entry is not None else None
    override: Override | None = None
    exact: list[tuple[str, int, Decimal, Decimal]] = []  # kind, quantity, unit price, exact cost
    if price.source == OVERRIDE_SOURCE:
        names = tuple(n for n in (price.model, call.request_model, call.response_model) if n)
        override = choose_override(overrides, price.provider, names, call.start_time)
        assert override is not None  # price_call priced with it a moment ago
        if override.discount_percent is not None:
            assert catalogue is not None  # a discount prices only what the catalogue prices
            share = (Decimal(100) - override.discount_percent) / Decimal(100)
            exact = [(k, q, p * share, c * share) for k, q, p, c in _catalogue_lines(catalogue, usage)]
        else:
            exact = _override_lines(override, usage, catalogue)
    elif price.source == CATALOGUE_SOURCE:
        assert catalogue is not None
        exact = _catalogue_lines(catalogue, usage)
    # Else UNBILLED_ERROR_SOURCE: a failed request without usage bills nothing, so no lines.
    lines = _rounded(exact, total)
    source = price.source
    if call.price_source == GATEWAY_CACHE_SOURCE:
        # What the upstream would have billed, then the cache hit that billed none of it: the saving.
        lines = (*lines, Line("gateway_cache", 0, Decimal(0), -total))
        total, source = Decimal(0).quantize(PLACES), GATEWAY_CACHE_SOURCE

    return CostBreakdown(
        lines=lines,
        total=total,
        source=source,
        version=price.version,
        override=override,
        stored_cost=stored,
        reasoning_tokens=call.reasoning_tokens,
        unpriced_reason=None,
    )


def _catalogue_lines(catalogue: CompiledPrice, usage: TokenUsage) -> list[tuple[str, int, Decimal, Decimal]]:
    """CompiledPrice.cost, one line per billed unit (tiers chosen by the call's input size)."""
    keys = usage.as_usage_keys()
    total_input = keys["input_tokens"]
    leaves: dict[str, int] = {}
    lines: dict[str, tuple[int, Decimal]] = {}
    for unit in catalogue.units:
        if unit.usage_key == "requests":
            count = 1
        else:
            count = keys.get(unit.usage_key, 0) - sum(leaves[d] for d in unit.descendants)
            count = max(count, 0)
        leaves[unit.usage_key] = count
        lines[unit.usage_key] = (count, unit.rate(total_input))
    # Cache tokens the catalogue gives no price of their own bill inside input at the input rate:
    # show them on their own line at that rate (same rate, same sum) so the reader sees each kind.
    if "input_tokens" in lines:
        uncached, input_rate = lines["input_tokens"]
        for kind in ("cache_read_tokens", "cache_write_tokens"):
            if kind not in lines and keys[kind] > 0:
                moved = min(keys[kind], uncached)
                uncached -= moved
                lines[kind] = (moved, input_rate)
        lines["input_tokens"] = (uncached, input_rate)
    return [
        (kind, count, rate * (1 if kind == "requests" else MTOK), rate * count)
        for kind, (count, rate) in sorted(lines.items(), key=lambda item: _order(item[0]))
    ]


def _order(kind: str) -> int:
    return ORDER.index(kind) if kind in ORDER else len(ORDER)


def _override_lines(
    override: Override, usage: TokenUsage, catalogue: CompiledPrice | None
) -> list[tuple[str, int, Decimal, Decimal]]:
    """pricing._override_cost with explicit prices, one line per token kind."""
    input_tokens = usage.input_tokens or 0

    def rate(explicit: Decimal | None, usage_key: str, fallback: Decimal | None) -> Decimal | None:
        if explicit is not None:
            return explicit
        if catalogue is not None:
            listed = catalogue.unit_price(usage_key, input_tokens)
            if listed is not None:
                return listed
        return fallback

    input_rate = rate(override.input_per_mtok, "input_tokens", None)
    output_rate = rate(override.output_per_mtok, "output_tokens", None)
    assert input_rate is not None
    assert output_rate is not None
    cache_read_rate = rate(override.cache_read_per_mtok, "cache_read_tokens", input_rate)
    cache_write_rate = rate(override.cache_write_per_mtok, "cache_write_tokens", input_rate)
    assert cache_read_rate is not None
    assert cache_write_rate is not None
    cache_read = usage.cache_read_tokens or 0
    cache_write = usage.cache_write_tokens or 0
    quantities = (
        ("input_tokens", max(input_tokens - cache_read - cache_write, 0), input_rate),
        ("cache_read_tokens", cache_read, cache_read_rate),
        ("cache_write_tokens", cache_write, cache_write_rate),
        ("output_tokens", usage.output_tokens or 0, output_rate),
    )
    return [(kind, count, per_mtok, count * per_mtok / MTOK) for kind, count, per_mtok in quantities]


def _rounded(exact: list[tuple[str, int, Decimal, Decimal]], target: Decimal) -> tuple[Line, ...]:
    """Lines at 12 places summing exactly to `target`: rounding's remainder goes to the largest line."""
    lines = [
        Line(kind, quantity, unit_price, cost.quantize(PLACES, ROUND_HALF_UP))
        for kind, quantity, unit_price, cost in exact
    ]
    if not lines:
        return ()
    remainder = target - sum((line.cost for line in lines), Decimal(0))
    if remainder:
        largest = max(range(len(lines)), key=lambda i: lines[i].cost)
        line = lines[largest]
        lines[largest] = Line(line.kind, line.quantity, line.unit_price, line.cost + remainder)
    return tuple(lines)


def _unpriced_reason(call: LLMCall, usage: TokenUsage) -> str:
    if usage.input_tokens is None and usage.output_tokens is None:
        return "The emitter reported no token counts for this call, so there is nothing to price."
    if usage.input_tokens is None or (usage.output_tokens is None and call.operation != "embeddings"):
        return (
            "The emitter reported only part of the token usage (input or output is missing); "
            "Costline does not guess the rest."
        )
    if call.provider in SELF_HOSTED_PROVIDERS:
        return (
            f"{call.provider} serves self-hosted models, which have no list price: add a price override "
            f"for {call.model!r} with what a million tokens costs you to run."
        )
    return (
        f"The price catalogue has no price for model {call.model!r} of provider {call.provider!r}, "
        "and none of your price overrides matches it."
    )


def price_changed_reason(pending_since: datetime | None) -> str:
    """Why the stored cost differs from today's price, for a reader comparing the two."""
    if pending_since is not None:
        return (
            "A price change is waiting to be applied: stored calls since "
            f"{pending_since:%Y-%m-%d %H:%M} UTC are being priced again, and this one will then hold "
            "today's price."
        )
    return (
        "The prices changed after this call was stored (a price override was added, changed or removed, "
        "or the price catalogue was updated); the stored cost is what it was priced at then."
    )
