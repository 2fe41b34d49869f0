"""A call's cost by token kind (costline.usage.breakdown): the lines add up to the price, exactly."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import pytest
from genai_prices import data_snapshot

from costline.usage.breakdown import CostBreakdown, explain_cost
from costline.usage.models import LLMCall, PriceOverride
from costline.usage.pricing import MTOK, Override, TokenUsage, price_call
from costline.usage.reprice import load_overrides
from tests.conftest import TenantKeys
from tests.platform.usage.factories import NOON

NOW = datetime(2026, 11, 23, 12, tzinfo=UTC)
# OpenTelemetry provider names and the catalogue's provider ids they stand for.
PROVIDERS = {
    "openai": "openai",
    "anthropic": "anthropic",
    "gcp.gemini": "google",
    "aws.bedrock": "aws",
    "mistral_ai": "mistral",
    "x_ai": "x-ai",
    "deepseek": "deepseek",
    "groq": "groq",
    "cohere": "cohere",
    "perplexity": "perplexity",
}


def call(**fields: Any) -> LLMCall:
    """An unsaved call (the breakdown reads only its fields), priced as the collector would price it."""
    values: dict[str, Any] = {
        "tenant_id": 1,
        "trace_id": "0" * 32,
        "span_id": "1" * 16,
        "start_time": NOON,
        "provider": "openai",
        "operation": "chat",
        "request_model": "gpt-4o",
        "response_model": None,
        "model": "gpt-4o",
        "input_tokens": 1200,
        "output_tokens": 300,
        "status": "ok",
        **fields,
    }
    overrides = values.pop("overrides", [])
    price = price_call(
        provider=values["provider"],
        request_model=values["request_model"],
        response_model=values["response_model"],
        operation=values["operation"],
        usage=TokenUsage(
            values["input_tokens"],
            values["output_tokens"],
            values.get("cache_read_tokens"),
            values.get("cache_write_tokens"),
            values.get("reasoning_tokens"),
        ),
        when=values["start_time"],
        failed=values["status"] == "error",
        overrides=overrides,
    )
    # As numeric(20, 12) stores it: PostgreSQL rounds half away from zero.
    stored = price.cost_usd.quantize(Decimal("1e-12"), ROUND_HALF_UP) if price.cost_usd is not None else None
    values.setdefault("cost_usd", stored)
    return LLMCall(**values)


def assert_consistent(breakdown: CostBreakdown) -> None:
    """Lines sum to the total exactly, and each is its quantity at its unit price (to the last place)."""
    assert breakdown.lines_total == breakdown.total
    for line in breakdown.lines:
        per = 1 if line.per_request else MTOK
        assert abs(line.cost - line.quantity * line.unit_price / per) <= Decimal("1e-11"), line


def test_lines_add_up_for_every_model_of_the_main_providers() -> None:
    rng = random.Random(11)
    snapshot = data_snapshot.get_snapshot()
    checked = 0
    for otel_name, provider_id in PROVIDERS.items():
        provider = next(p for p in snapshot.providers if p.id == provider_id)
        for model in provider.models:
            input_tokens = rng.choice([12, 900, 150_000, 250_000])  # crosses 200k tiers
            cache_read = rng.randint(0, input_tokens // 2)
            cache_write = rng.randint(0, (input_tokens - cache_read) // 2)
            output = rng.choice([7, 480, 40_000])
            the_call = call(
                provider=otel_name,
                request_model=model.id,
                model=model.id,
                start_time=NOW,
                input_tokens=input_tokens,
                output_tokens=output,
                cache_read_tokens=cache_read,
                cache_write_tokens=cache_write,
                reasoning_tokens=rng.randint(0, output),
            )
            breakdown = explain_cost(the_call, [])
            if breakdown.total is None:
                continue  # a model priced only by units Costline does not observe
            assert_consistent(breakdown)
            assert breakdown.total == the_call.cost_usd, f"{otel_name}/{model.id}"
            assert breakdown.matches_stored
            checked += 1
    assert checked > 300


def test_cache_tokens_without_a_price_of_their_own_show_at_the_input_rate() -> None:
    # gpt-4o prices cache reads, not cache writes: writes bill as input.
    breakdown = explain_cost(call(input_tokens=1000, cache_read_tokens=100, cache_write_tokens=300), [])

    lines = {line.kind: (line.quantity, line.unit_price, line.cost) for line in breakdown.lines}
    assert lines == {
        "input_tokens": (600, Decimal("2.5"), Decimal("0.001500000000")),
        "cache_read_tokens": (100, Decimal("1.25"), Decimal("0.000125000000")),
        "cache_write_tokens": (300, Decimal("2.5"), Decimal("0.000750000000")),
        "output_tokens": (300, Decimal("10"), Decimal("0.003000000000")),
    }
    assert breakdown.lines_total == breakdown.total == Decimal("0.005375")


def test_a_long_prompt_is_priced_at_its_tier() -> None:
    breakdown = explain_cost(
        call(
            provider="anthropic",
            request_model="claude-sonnet-4-5",
            model="claude-sonnet-4-5",
            input_tokens=250_000,
        ),
        [],
    )

    rates = {line.kind: line.unit_price for line in breakdown.lines}
    assert rates["input_tokens"] == Decimal("6")  # above 200k input tokens: $6, not $3
    assert rates["output_tokens"] == Decimal("22.5")
    assert_consistent(breakdown)


def override(**fields: Any) -> Override:
    values = {"id": 1, "model_pattern": "gpt-4o*", "provider": "", "effective_from": NOON - timedelta(days=1)}
    return Override(updated_at=NOON, **{**values, **fields})


@pytest.mark.parametrize(
    "the_override",
    [
        override(
            input_per_mtok=Decimal("1.1"), output_per_mtok=Decimal("3.3"), cache_read_per_mtok=Decimal("0.11")
        ),
        override(input_per_mtok=Decimal("0.333333333333")),  # the rest from the catalogue
        override(discount_percent=Decimal("33.333")),
        override(discount_percent=Decimal(100)),
    ],
    ids=["explicit", "partial", "discount", "free"],
)
def test_an_override_priced_call_adds_up_to_its_stored_cost(the_override: Override) -> None:
    the_call = call(
        overrides=[the_override],
        input_tokens=987_654,
        output_tokens=12_345,
        cache_read_tokens=4321,
        reasoning_tokens=99,
    )

    breakdown = explain_cost(the_call, [the_override])

    assert breakdown.source == "override"
    assert breakdown.override == the_override
    assert breakdown.lines_total == the_call.cost_usd
    assert breakdown.matches_stored


def test_a_self_hosted_model_priced_by_an_override() -> None:
    deployment = override(
        model_pattern="meta-llama/*",
        provider="vllm",
        input_per_mtok=Decimal("0.02"),
        output_per_mtok=Decimal("0.06"),
    )
    the_call = call(
        overrides=[deployment],
        provider="vllm",
        request_model="meta-llama/Llama-3.1-8B-Instruct",
        model="meta-llama/Llama-3.1-8B-Instruct",
    )

    breakdown = explain_cost(the_call, [deployment])

    assert [(line.kind, line.cost) for line in breakdown.lines] == [
        ("input_tokens", Decimal("0.000024000000")),
        ("cache_read_tokens", Decimal("0E-12")),
        ("cache_write_tokens", Decimal("0E-12")),
        ("output_tokens", Decimal("0.000018000000")),
    ]
    assert breakdown.lines_total == the_call.cost_usd


def test_rounding_to_the_stored_places_never_loses_a_picodollar() -> None:
    # A third off: every line has endless decimals; rounded apart they would not sum to the stored cost.
    third = override(discount_percent=Decimal("33.333333"))
    the_call = call(overrides=[third], input_tokens=1001, output_tokens=333, cache_read_tokens=77)

    breakdown = explain_cost(the_call, [third])

    assert all(line.cost == line.cost.quantize(Decimal("1e-12")) for line in breakdown.lines)
    assert breakdown.lines_total == the_call.cost_usd


def test_a_changed_price_shows_todays_total_beside_the_stored_one() -> None:
    the_call = call(cost_usd=Decimal("0.009000000000"))  # priced before the catalogue changed

    breakdown = explain_cost(the_call, [])

    assert breakdown.stored_cost == Decimal("0.009")
    assert breakdown.total == Decimal("0.006")
    assert not breakdown.matches_stored
    assert breakdown.lines_total == breakdown.total


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"input_tokens": None, "output_tokens": None}, "no token counts"),
        ({"output_tokens": None}, "only part of the token usage"),
        ({"request_model": "my-finetune", "model": "my-finetune"}, "has no price for model 'my-finetune'"),
        ({"provider": "vllm", "request_model": "qwen3", "model": "qwen3"}, "self-hosted models"),
    ],
)
def test_an_unpriced_call_says_why(fields: dict[str, Any], reason: str) -> None:
    breakdown = explain_cost(call(**fields), [])

    assert breakdown.total is None
    assert breakdown.lines == ()
    assert reason in (breakdown.unpriced_reason or "")


def test_a_failed_call_without_usage_bills_nothing() -> None:
    breakdown = explain_cost(call(status="error", input_tokens=None, output_tokens=None), [])

    assert breakdown.source == "unbilled-error"
    assert breakdown.total == 0
    assert breakdown.lines == ()


def test_it_uses_the_tenants_stored_overrides(db: None, make_tenant: Any) -> None:
    tenant: TenantKeys = make_tenant()
    PriceOverride.objects.create(
        tenant=tenant.org,
        model_pattern="gpt-4o",
        effective_from=NOON - timedelta(days=1),
        discount_percent=Decimal(20),
    )
    overrides = load_overrides(tenant.id)
    the_call = call(tenant_id=tenant.id, overrides=overrides)

    breakdown = explain_cost(the_call, overrides)

    assert breakdown.total == Decimal("0.0048")  # $0.006 at the catalogue price, 20% off
    assert breakdown.lines_total == the_call.cost_usd
