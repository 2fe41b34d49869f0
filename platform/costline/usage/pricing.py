"""Exact prices for LLM calls: the `genai-prices` catalogue (offline snapshot) plus tenant overrides.

`genai_prices.calc_price` takes about 200 µs a call, which alone would cap one collector at 5,000
calls/s. The catalogue lookup is cached, and each model's price is compiled once into the few unit
prices that token usage touches; the arithmetic below then reproduces genai-prices' own rules (each
priced unit bills its usage minus what its more specific priced units bill; tiered prices switch on
total input tokens) in a few microseconds. `tests/platform/usage/test_pricing.py` checks the result
equals `calc_price` for every model of the snapshot.

Money is `Decimal` end to end; nothing here touches a float.
"""

from __future__ import annotations

import fnmatch
import functools
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import genai_prices
from genai_prices import data_snapshot
from genai_prices.types import ModelPrice, TieredPrices
from genai_prices.units import _get_registry

CATALOGUE_SOURCE = "genai-prices"
CATALOGUE_VERSION = f"genai-prices {genai_prices.__version__}"
OVERRIDE_SOURCE = "override"
UNBILLED_ERROR_SOURCE = "unbilled-error"

# OpenTelemetry provider names (gen_ai.provider.name) → genai-prices provider ids.
_CATALOGUE_PROVIDERS = {
    "openai": "openai",
    "anthropic": "anthropic",
    "gcp.gemini": "google",
    "gcp.vertex_ai": "google",
    "gcp.gen_ai": "google",
    "aws.bedrock": "aws",
    "azure.ai.openai": "azure",
    "azure.ai.inference": "azure",
    "mistral_ai": "mistral",
    "x_ai": "x-ai",
    "deepseek": "deepseek",
    "groq": "groq",
    "cohere": "cohere",
    "perplexity": "perplexity",
    "moonshot_ai": "moonshotai",
    "together_ai": "together",
    "fireworks": "fireworks",
    "openrouter": "openrouter",
    "cerebras": "cerebras",
}
# Providers whose calls never come from the public catalogue: self-hosted engines are priced by
# their deployment's cost, not by a list price.
SELF_HOSTED_PROVIDERS = frozenset({"vllm", "ollama", "hugging_face", "tgi", "llama.cpp"})
# The inverse, for calls whose span named no provider: the catalogue infers one from the model.
_OTEL_PROVIDERS = {
    "openai": "openai",
    "anthropic": "anthropic",
    "google": "gcp.gen_ai",
    "aws": "aws.bedrock",
    "azure": "azure.ai.openai",
    "mistral": "mistral_ai",
    "x-ai": "x_ai",
    "moonshotai": "moonshot_ai",
    "together": "together_ai",
}

# Providers that make the models they sell, tried in order when a span names no provider.
_MODEL_MAKERS = ("openai", "anthropic", "google", "mistral", "cohere", "x-ai", "deepseek", "meta", "voyageai")

MTOK = Decimal(1_000_000)
_BILLABLE_USAGE_KEYS = frozenset(
    {
        "input_tokens",
        "output_tokens",
        "cache_read_tokens",
        "cache_write_tokens",
        "output_reasoning_tokens",
        "requests",
    }
)


class TokenUsage:
    """Token counts of one call (a plain class: its constructor runs once per call, natively compiled)."""

    input_tokens: int | None  # all input, cache reads and writes included
    output_tokens: int | None  # all output, reasoning included
    cache_read_tokens: int | None
    cache_write_tokens: int | None
    reasoning_tokens: int | None

    def __init__(
        self,
        input_tokens: int | None,
        output_tokens: int | None,
        cache_read_tokens: int | None = None,
        cache_write_tokens: int | None = None,
        reasoning_tokens: int | None = None,
    ) -> None:
        self.input_tokens = input_tokens
        self.output_tokens = output_tokens
        self.cache_read_tokens = cache_read_tokens
        self.cache_write_tokens = cache_write_tokens
        self.reasoning_tokens = reasoning_tokens

    def as_usage_keys(self) -> dict[str, int]:
        """genai-prices usage keys; an unknown count bills as 0, as genai-prices itself assumes."""
        return {
            "input_tokens": self.input_tokens or 0,
            "output_tokens": self.output_tokens or 0,
            "cache_read_tokens": self.cache_read_tokens or 0,
            "cache_write_tokens": self.cache_write_tokens or 0,
            "output_reasoning_tokens": self.reasoning_tokens or 0,
        }


@dataclass(frozen=True, slots=True)
class Override:
    """A tenant's price override (see `costline.usage.models.PriceOverride`), as plain data."""

    id: int
    model_pattern: str
    provider: str
    effective_from: datetime
    updated_at: datetime
    input_per_mtok: Decimal | None = None
    output_per_mtok: Decimal | None = None
    cache_read_per_mtok: Decimal | None = None
    cache_write_per_mtok: Decimal | None = None
    discount_percent: Decimal | None = None

    def matches(self, provider: str | None, models: tuple[str, ...], when: datetime) -> bool:
        if when < self.effective_from:
            return False
        if self.provider and self.provider != provider:
            return False
        return any(fnmatch.fnmatchcase(m.lower(), self.model_pattern.lower()) for m in models if m)

    @property
    def version(self) -> str:
        return f"override {self.id} @ {self.updated_at:%Y-%m-%dT%H:%M:%S}"


class Price:
    """The price of one call (a plain class, for the same reason as TokenUsage)."""

    cost_usd: Decimal | None  # None: unpriced (unknown model or unknown usage)
    source: str | None
    version: str | None
    model: str  # the model name to group by: the catalogue's id when the catalogue knew it
    provider: str | None  # as given, or inferred from the catalogue when the span named none
    # What the prompt cache saved: the cache reads billed at the input rate, less what they cost.
    # None when the call is unpriced; 0 without cache reads or without a cheaper cache-read rate.
    cache_savings_usd: Decimal | None

    def __init__(
        self,
        cost_usd: Decimal | None,
        source: str | None,
        version: str | None,
        model: str,
        provider: str | None,
        cache_savings_usd: Decimal | None = None,
    ) -> None:
        self.cost_usd = cost_usd
        self.source = source
        self.version = version
        self.model = model
        self.provider = provider
        self.cache_savings_usd = cache_savings_usd

    def __repr__(self) -> str:
        return (
            f"Price({self.cost_usd!r}, {self.source!r}, {self.version!r}, {self.model!r}, {self.provider!r}, "
            f"{self.cache_savings_usd!r})"
        )


@dataclass(frozen=True, slots=True)
class _Unit:
    usage_key: str
    per: int
    price: Decimal | TieredPrices
    descendants: tuple[str, ...]
    # Price of one unit (one token, one request): the listed price scaled by `per`, exactly
    # (`per` is a power of ten for every unit billed here), as (threshold, rate) tiers, highest first.
    rates: tuple[tuple[int, Decimal], ...]

    def rate(self, total_input_tokens: int) -> Decimal:
        for start, rate in self.rates:
            if total_input_tokens > start:
                return rate
        return self.rates[-1][1]


class CompiledPrice:
    """One catalogue `ModelPrice`, reduced to the units that can be billed from usage counts."""

    __slots__ = ("units",)

    def __init__(self, model_price: ModelPrice) -> None:
        registry = _get_registry()
        priced = []
        for key, value in vars(model_price).items():
            if value is None or key.startswith("_"):
                continue
            try:
                unit = registry.unit_for_price_key(key)
            except KeyError:
                continue
            priced.append((unit, value))
        priced.sort(key=lambda pair: (-len(pair[0].dimensions), pair[0].usage_key))
        units = []
        for unit, value in priced:
            if unit.usage_key not in _BILLABLE_USAGE_KEYS:
                # Usage Costline cannot observe (audio seconds, web searches) bills as 0 and, being
                # 0, changes no other unit's share; skipping it keeps the arithmetic per call short.
                continue
            descendants = tuple(
                other.usage_key
                for other, _ in priced
                if other is not unit
                and other.usage_key in _BILLABLE_USAGE_KEYS
                and unit.dimensions.items() <= other.dimensions.items()
            )
            units.append(_Unit(unit.usage_key, unit.per, value, descendants, _unit_rates(value, unit.per)))
        self.units: tuple[_Unit, ...] = tuple(units)

    def unit_price(self, usage_key: str, input_tokens: int = 0) -> Decimal | None:
        """Price per million of one usage kind (tier chosen by input size), for breakdowns and what-ifs."""
        for unit in self.units:
            if unit.usage_key == usage_key:
                return _applicable(unit.price, input_tokens) * MTOK / unit.per
        return None

    def cost(self, usage: dict[str, int]) -> Decimal:
        leaves: dict[str, int] = {}
        total = Decimal(0)
        total_input = usage.get("input_tokens", 0)
        for unit in self.units:
            if unit.usage_key == "requests":
                count = 1
            else:
                count = usage.get(unit.usage_key, 0)
                for descendant in unit.descendants:
                    count -= leaves[descendant]
                # Emitters occasionally report more cached than total input; bill what is known.
                if count < 0:
                    count = 0
            leaves[unit.usage_key] = count
            if count:
                total += unit.rate(total_input) * count
        return total

    def cache_savings(self, usage: dict[str, int]) -> Decimal:
        """What the cache reads would have cost more at the input rate (0 without a cache-read rate)."""
        cache_read = usage.get("cache_read_tokens", 0)
        if cache_read <= 0:
            return Decimal(0)
        total_input = usage.get("input_tokens", 0)
        input_rate = cache_rate = None
        for unit in self.units:
            if unit.usage_key == "input_tokens":
                input_rate = unit.rate(total_input)
            elif unit.usage_key == "cache_read_tokens":
                cache_rate = unit.rate(total_input)
        if input_rate is None or cache_rate is None or cache_rate >= input_rate:
            return Decimal(0)
        return (input_rate - cache_rate) * cache_read


def _unit_rates(price: Decimal | TieredPrices, per: int) -> tuple[tuple[int, Decimal], ...]:
    exponent = len(str(per)) - 1
    if 10**exponent != per:
        raise ValueError(f"unit per {per} is not a power of ten")

    def scaled(value: Decimal) -> Decimal:
        return value.scaleb(-exponent)

    if isinstance(price, TieredPrices):
        tiers = sorted(price.tiers, key=lambda t: t.start, reverse=True)
        return (*((t.start, scaled(t.price)) for t in tiers), (-1, scaled(price.base)))
    return ((-1, scaled(price)),)


def _applicable(price: Decimal | TieredPrices, total_input_tokens: int) -> Decimal:
    if isinstance(price, TieredPrices):
        for tier in reversed(price.tiers):
            if total_input_tokens > tier.start:
                return tier.price
        return price.base
    return price


@dataclass(frozen=True, slots=True)
class CatalogueModel:
    provider_id: str  # genai-prices provider id
    model_id: str  # genai-prices model id (canonical name)
    info: Any  # genai_prices.types.ModelInfo

    def compiled(self, when: datetime) -> CompiledPrice:
        # A model's price can change by date and, for a few models, by time of day (off-peak rates);
        # never within a minute. get_prices is interpreted Python: ask it once a minute per model.
        minute = int(when.timestamp()) // 60
        key = (id(self.info), minute)
        hit = _price_at_minute.get(key)
        if hit is None or hit[0] is not self.info:
            if len(_price_at_minute) > 10_000:
                _price_at_minute.clear()
            hit = (self.info, _compile(self.info.get_prices(when)))
            _price_at_minute[key] = hit
        return hit[1]


_compiled_cache: dict[int, tuple[ModelPrice, CompiledPrice]] = {}
_price_at_minute: dict[tuple[int, int], tuple[Any, CompiledPrice]] = {}


def _compile(model_price: ModelPrice) -> CompiledPrice:
    hit = _compiled_cache.get(id(model_price))
    if hit is not None and hit[0] is model_price:
        return hit[1]
    compiled = CompiledPrice(model_price)
    _compiled_cache[id(model_price)] = (model_price, compiled)
    return compiled


@functools.lru_cache(maxsize=8192)
def catalogue_model(provider: str | None, model: str) -> CatalogueModel | None:
    """The catalogue entry for a model as a provider names it, or None when the catalogue lacks it."""
    if provider in SELF_HOSTED_PROVIDERS:
        return None
    provider_id = _CATALOGUE_PROVIDERS.get(provider or "")
    snapshot = data_snapshot.get_snapshot()
    if provider_id is None and provider is not None:
        return None  # a provider the catalogue does not cover
    try:
        found_provider, info = snapshot.find_provider_model(model, None, provider_id, None)
    except LookupError:
        if provider_id is not None:
            return None
        # The span named no provider and the catalogue's own inference knows no provider whose
        # naming scheme fits (text-embedding-3-small): look among the model makers' own catalogues,
        # never a reseller's, whose prices differ.
        for maker in _MODEL_MAKERS:
            candidate = next((p for p in snapshot.providers if p.id == maker), None)
            made = candidate.find_model(model, all_providers=snapshot.providers) if candidate else None
            if candidate is not None and made is not None:
                found_provider, info = candidate, made
                break
        else:
            return None
    return CatalogueModel(provider_id=found_provider.id, model_id=info.id, info=info)


def catalogue_lookup(provider: str | None, *models: str | None) -> CatalogueModel | None:
    """Try each model name in turn (the response's dated snapshot first, then the requested name)."""
    for model in models:
        if model:
            hit = catalogue_model(provider, model.strip().lower())
            if hit is not None:
                return hit
    return None


def otel_provider(catalogue_provider_id: str) -> str:
    return _OTEL_PROVIDERS.get(catalogue_provider_id, catalogue_provider_id)


def choose_override(
    overrides: list[Override], provider: str | None, models: tuple[str, ...], when: datetime
) -> Override | None:
    best: Override | None = None
    for override in overrides:
        if not override.matches(provider, models, when):
            continue
        if best is None or (override.effective_from, len(override.model_pattern)) > (
            best.effective_from,
            len(best.model_pattern),
        ):
            best = override
    return best


def _override_cost(
    override: Override, usage: TokenUsage, catalogue: CompiledPrice | None
) -> tuple[Decimal, Decimal] | None:
    """(cost, cache savings) of a call under an override, None when the override cannot price it."""
    if override.discount_percent is not None:
        if catalogue is None:
            return None
        keys = usage.as_usage_keys()
        share = (Decimal(100) - override.discount_percent) / Decimal(100)
        return catalogue.cost(keys) * share, catalogue.cache_savings(keys) * share

    def rate(explicit: Decimal | None, usage_key: str, fallback: Decimal | None) -> Decimal | None:
        if explicit is not None:
            return explicit
        if catalogue is not None:
            listed = catalogue.unit_price(usage_key, usage.input_tokens or 0)
            if listed is not None:
                return listed
        return fallback

    input_rate = rate(override.input_per_mtok, "input_tokens", None)
    output_rate = rate(override.output_per_mtok, "output_tokens", None)
    if input_rate is None or output_rate is None:
        return None
    cache_read_rate = rate(override.cache_read_per_mtok, "cache_read_tokens", input_rate)
    cache_write_rate = rate(override.cache_write_per_mtok, "cache_write_tokens", input_rate)
    cache_read = usage.cache_read_tokens or 0
    cache_write = usage.cache_write_tokens or 0
    uncached = max((usage.input_tokens or 0) - cache_read - cache_write, 0)
    assert cache_read_rate is not None
    assert cache_write_rate is not None
    cost = (
        uncached * input_rate
        + cache_read * cache_read_rate
        + cache_write * cache_write_rate
        + (usage.output_tokens or 0) * output_rate
    ) / MTOK
    savings = cache_read * max(input_rate - cache_read_rate, Decimal(0)) / MTOK
    return cost, savings


def price_call(
    *,
    provider: str | None,
    request_model: str | None,
    response_model: str | None,
    operation: str,
    usage: TokenUsage,
    when: datetime,
    failed: bool,
    overrides: list[Override] | None = None,
) -> Price:
    """Price one call exactly, or say it cannot be priced (cost None), never guessing $0."""
    entry = catalogue_lookup(provider, response_model, request_model)
    if entry is not None and provider is None:
        provider = otel_provider(entry.provider_id)
    model = entry.model_id if entry is not None else (request_model or response_model or "unknown")

    if usage.input_tokens is None and usage.output_tokens is None:
        if failed:
            # Providers bill no tokens for a request they refused or failed (429, 5xx).
            return Price(Decimal(0), UNBILLED_ERROR_SOURCE, None, model, provider, Decimal(0))
        return Price(None, None, None, model, provider)
    if usage.input_tokens is None or (usage.output_tokens is None and operation != "embeddings"):
        return Price(None, None, None, model, provider)  # half the usage is unknown: no honest price

    catalogue = entry.compiled(when) if entry is not None else None
    names = tuple(n for n in (model, request_model, response_model) if n)
    override = choose_override(overrides or [], provider, names, when)
    if override is not None:
        priced = _override_cost(override, usage, catalogue)
        if priced is not None:
            return Price(priced[0], OVERRIDE_SOURCE, override.version, model, provider, priced[1])
    if catalogue is None:
        return Price(None, None, None, model, provider)
    keys = usage.as_usage_keys()
    return Price(
        catalogue.cost(keys),
        CATALOGUE_SOURCE,
        CATALOGUE_VERSION,
        model,
        provider,
        catalogue.cache_savings(keys),
    )


GATEWAY_CACHE_SOURCE = "gateway_cache"


def as_gateway_cache_hit(price: Price) -> Price:
    """A call the gateway answered from its cache: it cost nothing; its full price is what it saved."""
    if price.cost_usd is None:
        return price
    saved = price.cost_usd + (price.cache_savings_usd or Decimal(0))
    return Price(Decimal(0), GATEWAY_CACHE_SOURCE, price.version, price.model, price.provider, saved)
