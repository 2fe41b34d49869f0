"""Prices: exactly genai-prices' own arithmetic, tenant overrides first, never a guessed $0."""

from __future__ import annotations

import random
import warnings
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from genai_prices import Usage, data_snapshot

from costline.usage.pricing import (
    CATALOGUE_SOURCE,
    OVERRIDE_SOURCE,
    UNBILLED_ERROR_SOURCE,
    CompiledPrice,
    Override,
    TokenUsage,
    price_call,
)

NOW = datetime(2026, 11, 23, 12, tzinfo=UTC)


def test_compiled_prices_equal_genai_prices_for_every_model_in_the_snapshot() -> None:
    rng = random.Random(7)
    snapshot = data_snapshot.get_snapshot()
    checked = 0
    for provider in snapshot.providers:
        for model in provider.models:
            model_price = model.get_prices(NOW)
            compiled = CompiledPrice(model_price)
            for _ in range(5):
                input_tokens = rng.choice([0, 12, 900, 150_000, 250_000, 3_000_000])  # crosses 200k tiers
                cache_read = rng.randint(0, input_tokens // 2)
                cache_write = rng.randint(0, (input_tokens - cache_read) // 2)
                output = rng.choice([0, 7, 480, 40_000])
                reasoning = rng.randint(0, output)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    reference = model_price.calc_price(
                        Usage(
                            input_tokens=input_tokens,
                            cache_read_tokens=cache_read,
                            cache_write_tokens=cache_write,
                            output_tokens=output,
                            output_reasoning_tokens=reasoning,
                        )
                    )["total_price"]
                usage = TokenUsage(input_tokens, output, cache_read, cache_write, reasoning)
                assert compiled.cost(usage.as_usage_keys()) == reference, f"{provider.id}/{model.id}"
                checked += 1
    assert checked > 5000


def test_it_prices_anthropic_cache_reads_and_writes_at_their_own_rates() -> None:
    price = price_call(
        provider="anthropic",
        request_model="claude-sonnet-4-5",
        response_model="claude-sonnet-4-5-20250929",
        operation="chat",
        usage=TokenUsage(
            input_tokens=2906, output_tokens=266, cache_read_tokens=2299, cache_write_tokens=500
        ),
        when=NOW,
        failed=False,
    )

    # 107 uncached at $3 + 2,299 reads at $0.30 + 500 writes at $3.75 + 266 out at $15, per million.
    assert price.cost_usd == Decimal("0.0068757")
    assert (price.source, price.model, price.provider) == (CATALOGUE_SOURCE, "claude-sonnet-4-5", "anthropic")


def test_it_infers_the_provider_from_the_model_when_the_span_names_none() -> None:
    price = price_call(
        provider=None,
        request_model=None,
        response_model="text-embedding-3-small",
        operation="embeddings",
        usage=TokenUsage(input_tokens=50, output_tokens=None),
        when=NOW,
        failed=False,
    )

    assert (price.provider, price.cost_usd) == ("openai", Decimal("0.000001"))


def test_an_unknown_model_is_unpriced_not_free() -> None:
    price = price_call(
        provider="openai",
        request_model="gpt-9-ultra",
        response_model=None,
        operation="chat",
        usage=TokenUsage(1000, 100),
        when=NOW,
        failed=False,
    )

    assert price.cost_usd is None
    assert price.model == "gpt-9-ultra"


def test_a_self_hosted_model_is_unpriced_until_its_deployment_is_priced() -> None:
    price = price_call(
        provider="vllm",
        request_model="gpt-4o-mini",  # a local model served under a familiar name
        response_model=None,
        operation="chat",
        usage=TokenUsage(1000, 100),
        when=NOW,
        failed=False,
    )

    assert price.cost_usd is None


def test_a_failed_call_without_usage_costs_nothing() -> None:
    price = price_call(
        provider="openai",
        request_model="gpt-4o-mini",
        response_model=None,
        operation="chat",
        usage=TokenUsage(None, None),
        when=NOW,
        failed=True,
    )

    assert (price.cost_usd, price.source) == (Decimal(0), UNBILLED_ERROR_SOURCE)


def test_half_known_usage_is_not_priced() -> None:
    price = price_call(
        provider="openai",
        request_model="gpt-4o-mini",
        response_model=None,
        operation="chat",
        usage=TokenUsage(input_tokens=1000, output_tokens=None),
        when=NOW,
        failed=False,
    )

    assert price.cost_usd is None


def _override(**fields: object) -> Override:
    values: dict[str, object] = {
        "id": 1,
        "model_pattern": "gpt-4o*",
        "provider": "",
        "effective_from": datetime(2026, 1, 1, tzinfo=UTC),
        "updated_at": datetime(2026, 1, 1, tzinfo=UTC),
    }
    values.update(fields)
    return Override(**values)  # type: ignore[arg-type]


def test_an_override_price_wins_and_unset_rates_fall_back_to_the_catalogue() -> None:
    override = _override(input_per_mtok=Decimal("0.10"))

    price = price_call(
        provider="openai",
        request_model="gpt-4o-mini",
        response_model=None,
        operation="chat",
        usage=TokenUsage(input_tokens=1_000_000, output_tokens=1_000_000),
        when=NOW,
        failed=False,
        overrides=[override],
    )

    assert price.cost_usd == Decimal("0.10") + Decimal("0.60")  # output stays at the listed $0.60
    assert price.source == OVERRIDE_SOURCE
    assert price.version is not None
    assert price.version.startswith("override 1")


def test_a_discount_override_scales_the_catalogue_price() -> None:
    price = price_call(
        provider="openai",
        request_model="gpt-4o-mini",
        response_model=None,
        operation="chat",
        usage=TokenUsage(input_tokens=1_000_000, output_tokens=0),
        when=NOW,
        failed=False,
        overrides=[_override(discount_percent=Decimal("20"))],
    )

    assert price.cost_usd == Decimal("0.12")


@pytest.mark.parametrize(
    ("when", "expected"),
    [
        (datetime(2025, 12, 31, tzinfo=UTC), Decimal("0.15")),  # before any override
        (datetime(2026, 3, 1, tzinfo=UTC), Decimal("0.10")),
        (datetime(2026, 9, 1, tzinfo=UTC), Decimal("0.05")),
    ],
)
def test_the_latest_override_in_effect_at_the_call_time_applies(when: datetime, expected: Decimal) -> None:
    overrides = [
        _override(id=1, input_per_mtok=Decimal("0.10"), effective_from=datetime(2026, 1, 1, tzinfo=UTC)),
        _override(id=2, input_per_mtok=Decimal("0.05"), effective_from=datetime(2026, 6, 1, tzinfo=UTC)),
        _override(id=3, model_pattern="claude*", input_per_mtok=Decimal("9"), effective_from=NOW),
    ]

    price = price_call(
        provider="openai",
        request_model="gpt-4o-mini",
        response_model=None,
        operation="chat",
        usage=TokenUsage(input_tokens=1_000_000, output_tokens=0),
        when=when,
        failed=False,
        overrides=overrides,
    )

    assert price.cost_usd == expected
