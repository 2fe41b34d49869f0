"""Each recommendation on traffic built so the right answer is known; none where the evidence is absent."""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest

from costline.advisor.findings import Finding, Kind, ModelSwap, Policy
from costline.advisor.recommend import QUANTISATION_SPEEDUP, recommend
from costline.advisor.replay import whatif
from costline.tenancy.models import Organization
from costline.usage.models import Deployment
from tests.platform.advisor.conftest import COST, NOW

Writer = Callable[[Organization, list[dict[str, Any]]], Any]
MONTH = Decimal(30) / Decimal(7)  # the tests ask for 7 days of evidence, scaled to 30


def of_kind(findings: list[Finding], kind: Kind) -> list[Finding]:
    return [f for f in findings if f.kind == kind]


def monthly(amount: Decimal) -> Decimal:
    return (amount * MONTH).quantize(Decimal("0.01"))


def test_no_recommendation_without_evidence(org: Organization, write_calls: Writer) -> None:
    write_calls(org, [{} for _ in range(200)])  # interactive, no prompt evidence, no failures

    assert recommend(org.id, NOW, days=7) == []


def test_thirty_percent_exact_repeats_save_exactly_their_cost(org: Organization, write_calls: Writer) -> None:
    rows: list[dict[str, Any]] = []
    for block in range(100):  # 7 new prompts, then 3 of them again within minutes
        fresh = [{"prompt_hash": 1000 + 7 * block + j} for j in range(7)]
        rows += fresh + fresh[:3]
    write_calls(org, rows)

    (finding,) = of_kind(recommend(org.id, NOW, days=7), Kind.RESPONSE_CACHE)

    assert finding.evidence["repeats"] == 300
    assert finding.monthly_saving_usd == monthly(300 * COST)
    assert finding.scope == {"model": "gpt-4o"}
    replayed = whatif(org.id, NOW - timedelta(days=7), NOW, finding.policy)
    assert replayed.saving_usd == 300 * COST
    assert replayed.baseline_usd == 1000 * COST


def test_repeats_outside_the_cache_window_are_misses(org: Organization, write_calls: Writer) -> None:
    write_calls(org, [{"prompt_hash": 7} for _ in range(20)])
    start = NOW - timedelta(days=7)

    in_window = whatif(org.id, start, NOW, Policy(response_cache_window_s=3600))
    too_short = whatif(org.id, start, NOW, Policy(response_cache_window_s=30))  # calls are 60 s apart

    assert in_window.saving_usd == 19 * COST
    assert too_short.saving_usd == 0


def test_near_duplicates_hit_a_semantic_cache_beyond_exact_repeats(
    org: Organization, write_calls: Writer
) -> None:
    base = 0x0F0F_0F0F_0F0F_0F0F
    rows = [{"prompt_hash": 5000 + i, "prompt_simhash": base ^ (1 << (i % 3))} for i in range(200)]

    write_calls(org, rows)

    (finding,) = of_kind(recommend(org.id, NOW, days=7), Kind.SEMANTIC_CACHE)

    # Every call after the first lies ≤ 2 bits from an earlier one; none is an exact repeat.
    assert finding.evidence["near_duplicates"] == 199
    assert finding.monthly_saving_usd == monthly(199 * COST)
    assert of_kind(recommend(org.id, NOW, days=7), Kind.RESPONSE_CACHE) == []


def test_a_long_shared_prefix_is_billed_at_the_cache_read_price(
    org: Organization, write_calls: Writer
) -> None:
    write_calls(
        org, [{"prefix_hash": 42, "prefix_tokens": 2000, "prompt_hash": 9000 + i} for i in range(400)]
    )

    (finding,) = of_kind(recommend(org.id, NOW, days=7), Kind.PREFIX_CACHE)

    # Calls a minute apart, inside the 5-minute cache lifetime: 399 read 2,000 tokens at $1.25, not $2.50.
    assert finding.monthly_saving_usd == monthly(399 * 2000 * (Decimal("2.50") - Decimal("1.25")) / 10**6)


def test_a_short_prefix_is_not_cacheable(org: Organization, write_calls: Writer) -> None:
    write_calls(org, [{"prefix_hash": 42, "prefix_tokens": 500, "prompt_hash": 9000 + i} for i in range(20)])

    assert of_kind(recommend(org.id, NOW, days=7), Kind.PREFIX_CACHE) == []


def test_a_classification_feature_on_gpt_4o_is_right_sized_to_gpt_4o_mini(
    org: Organization, write_calls: Writer
) -> None:
    write_calls(
        org, [{"feature": "classify-ticket", "input_tokens": 1000, "output_tokens": 20} for _ in range(40)]
    )
    on_4o = Decimal(1000 * 250 + 20 * 1000) / 10**8  # the cost recorded: $2.50 and $10 per million
    on_mini = (Decimal(1000) * Decimal("0.15") + 20 * Decimal("0.60")) / 10**6

    (finding,) = of_kind(recommend(org.id, NOW, days=7), Kind.RIGHT_SIZE)

    assert finding.scope == {"model": "gpt-4o", "feature": "classify-ticket"}
    assert finding.policy.swaps[0].to_model == "gpt-4o-mini"
    assert finding.monthly_saving_usd == monthly(40 * (COST - on_mini))  # recorded COST, re-priced on mini
    cascade = Decimal(finding.evidence["cascade_saving_usd"])
    assert cascade == 40 * (COST - on_mini - Decimal("0.2") * COST)
    assert on_4o > on_mini


def test_answers_far_longer_than_the_median_get_an_output_limit(
    org: Organization, write_calls: Writer
) -> None:
    rows = [{"feature": "summarise"} for _ in range(1000)] + [
        {"feature": "summarise", "output_tokens": 1000}
    ] * 100
    write_calls(org, rows)

    (finding,) = of_kind(recommend(org.id, NOW, days=7), Kind.OUTPUT_LIMIT)

    assert finding.evidence["cap"] == 208  # twice the median (100), rounded up to 16
    assert finding.monthly_saving_usd == monthly(100 * (1000 - 208) * Decimal(10) / 10**6)


def test_non_interactive_calls_go_to_the_batch_api_at_half_price(
    org: Organization, write_calls: Writer
) -> None:
    write_calls(org, [{"user_id": None, "streaming": False} for _ in range(200)] + [{} for _ in range(200)])

    (finding,) = of_kind(recommend(org.id, NOW, days=7), Kind.BATCH_API)

    assert finding.evidence["non_interactive_calls"] == 200
    assert finding.monthly_saving_usd == monthly(200 * COST / 2)


def test_self_hosting_pays_when_the_api_bill_exceeds_the_gpus(
    org: Organization, write_calls: Writer, settings: Any
) -> None:
    settings.ADVISOR_GPU_HOUR_USD = "1.00"
    write_calls(org, [{"cost_usd": Decimal("10")} for _ in range(100)])  # $1,000 a week

    (finding,) = of_kind(recommend(org.id, NOW, days=7), Kind.SELF_HOST)

    # 100 output tokens a minute is far below one GPU's throughput: one GPU, 730 hours at $1.
    assert finding.evidence["options"]["bf16"]["gpus"] == 1
    assert finding.monthly_saving_usd == monthly(Decimal(1000)) - Decimal("730.00")


def _api_traffic_and_deployments(org: Organization, write_calls: Writer) -> None:
    """100 gpt-4o calls a minute apart ($1,000 a week), 60 of them in the first hour: 60 × 60,000
    output tokens in an hour. A GPU deployment decodes 6,000 tokens in 20 s, batching two calls; a
    faster CPU one never sizes GPUs."""
    write_calls(org, [{"cost_usd": Decimal("10"), "output_tokens": 60_000} for _ in range(100)])
    Deployment.objects.create(
        tenant=org,
        name="H100 tier",
        model_pattern="llama-*",
        hourly_usd=Decimal("4"),
        hardware="1× NVIDIA H100",
    )
    Deployment.objects.create(
        tenant=org, name="CPU tier", model_pattern="smollm2-*", hourly_usd=Decimal("0.1"), hardware="2 vCPU"
    )
    t0 = NOW - timedelta(days=1)
    vllm = {"provider": "vllm", "latency_ms": 10_000, "ttft_ms": 1_000}
    write_calls(
        org,
        [
            # Decoding from 1 s to 10 s and from 3 s to 12 s: 11 s of the server, not 18.
            {**vllm, "model": "llama-3.1-8b", "start_time": t0, "output_tokens": 1650},
            {**vllm, "model": "llama-3.1-8b", "start_time": t0 + timedelta(seconds=2), "output_tokens": 1650},
            {**vllm, "model": "llama-3.1-8b", "start_time": t0 + timedelta(minutes=1), "output_tokens": 2700},
            {**vllm, "model": "smollm2-135m", "start_time": t0 + timedelta(minutes=5), "output_tokens": 9000},
        ],
    )


def _break_even(gpus: int, gpu_hour: Decimal) -> int:
    """What the finding's break-even must be for the traffic above at `gpus` GPUs."""
    api_monthly = monthly(Decimal(1000))
    monthly_tokens = Decimal(100 * 60_000) * MONTH
    return int(gpu_hour * gpus * Decimal(730) / (api_monthly / monthly_tokens))


def test_self_hosting_sizes_gpus_by_the_measured_throughput_of_a_gpu_deployment(
    org: Organization, write_calls: Writer, settings: Any
) -> None:
    settings.ADVISOR_GPU_HOUR_USD = "1.00"
    _api_traffic_and_deployments(org, write_calls)
    measured = (1650 + 1650 + 2700) / ((12 - 1) + (10 - 1))
    peak = 60 * 60_000 / 3600
    gpus = {q: math.ceil(peak / (measured * speedup)) for q, speedup in QUANTISATION_SPEEDUP.items()}

    (finding,) = of_kind(recommend(org.id, NOW, days=7), Kind.SELF_HOST)

    assert finding.evidence["gpu_tokens_per_s"] == measured
    assert finding.evidence["gpu_tokens_per_s_source"] == "measured on deployment H100 tier"
    assert finding.evidence["gpu_tokens_per_s_measured_on"] == {
        "deployment": "H100 tier",
        "hardware": "1× NVIDIA H100",
        "output_tokens": 6000,
        "decode_seconds": 20.0,
    }
    assert {q: o["gpus"] for q, o in finding.evidence["options"].items()} == gpus
    assert finding.evidence["break_even_tokens_per_month"] == _break_even(min(gpus.values()), Decimal(1))
    assert "measured on deployment H100 tier (1× NVIDIA H100)" in finding.how_to


def test_a_cpu_deployment_does_not_size_gpus(org: Organization, write_calls: Writer, settings: Any) -> None:
    settings.ADVISOR_GPU_HOUR_USD = "1.00"
    settings.ADVISOR_GPU_TOKENS_PER_S = 400.0
    _api_traffic_and_deployments(org, write_calls)
    Deployment.objects.filter(tenant=org, name="H100 tier").delete()

    (finding,) = of_kind(recommend(org.id, NOW, days=7), Kind.SELF_HOST)

    assert finding.evidence["gpu_tokens_per_s"] == 400.0
    assert finding.evidence["gpu_tokens_per_s_source"] == "setting COSTLINE_ADVISOR_GPU_TOKENS_PER_S"
    assert finding.evidence["gpu_tokens_per_s_measured_on"] is None
    assert finding.evidence["options"]["bf16"]["gpus"] == math.ceil(60 * 60_000 / 3600 / 400.0)


def test_self_hosting_falls_back_to_the_setting_without_measured_decoding(
    org: Organization, write_calls: Writer, settings: Any
) -> None:
    settings.ADVISOR_GPU_HOUR_USD = "1.00"
    settings.ADVISOR_GPU_TOKENS_PER_S = 400.0
    write_calls(org, [{"cost_usd": Decimal("10"), "output_tokens": 60_000} for _ in range(100)])
    # A deployment whose only call is older than the window has nothing measured in it.
    Deployment.objects.create(tenant=org, name="H100 tier", model_pattern="*", hourly_usd=4, hardware="H100")
    write_calls(org, [{"provider": "vllm", "model": "llama", "start_time": NOW - timedelta(days=8)}])
    peak = 60 * 60_000 / 3600
    gpus = {q: math.ceil(peak / (400.0 * speedup)) for q, speedup in QUANTISATION_SPEEDUP.items()}

    (finding,) = of_kind(recommend(org.id, NOW, days=7), Kind.SELF_HOST)

    assert finding.evidence["gpu_tokens_per_s"] == 400.0
    assert finding.evidence["gpu_tokens_per_s_source"] == "setting COSTLINE_ADVISOR_GPU_TOKENS_PER_S"
    assert finding.evidence["gpu_tokens_per_s_measured_on"] is None
    assert {q: o["gpus"] for q, o in finding.evidence["options"].items()} == gpus
    assert finding.evidence["break_even_tokens_per_month"] == _break_even(min(gpus.values()), Decimal(1))
    assert "setting COSTLINE_ADVISOR_GPU_TOKENS_PER_S" in finding.how_to


def test_no_self_hosting_for_a_small_bill(org: Organization, write_calls: Writer) -> None:
    write_calls(org, [{} for _ in range(100)])

    assert of_kind(recommend(org.id, NOW, days=7), Kind.SELF_HOST) == []


def test_billed_failures_are_waste(org: Organization, write_calls: Writer) -> None:
    write_calls(
        org, [{"status": "error", "error_type": "timeout"} for _ in range(200)] + [{} for _ in range(200)]
    )

    (finding,) = of_kind(recommend(org.id, NOW, days=7), Kind.WASTE)

    assert finding.key == "waste:failed_calls"
    assert finding.monthly_saving_usd == monthly(200 * COST)


def test_conversations_resending_their_whole_history_are_waste(
    org: Organization, write_calls: Writer
) -> None:
    rows = [
        {"session_id": f"s-{s}", "input_tokens": 1000 * (turn + 1), "cost_usd": Decimal("0")}
        for s in range(50)
        for turn in range(8)
    ]
    for row in rows:  # priced as recorded: $2.50 per million input, $10 per million output
        row["cost_usd"] = (Decimal(row["input_tokens"]) * Decimal("2.5") + 100 * Decimal(10)) / 10**6
    write_calls(org, rows)

    (finding,) = of_kind(recommend(org.id, NOW, days=7), Kind.WASTE)

    # Turns 5..8 of each session send 5,000..8,000 tokens: those above 4,000 are saved.
    trimmed = 50 * (1000 + 2000 + 3000 + 4000)
    assert finding.key == "waste:conversation_history"
    assert finding.monthly_saving_usd == monthly(trimmed * Decimal("2.5") / 10**6)


def test_another_tenants_calls_never_count(
    org: Organization, other_org: Organization, write_calls: Writer
) -> None:
    write_calls(other_org, [{"prompt_hash": 1} for _ in range(50)])
    write_calls(org, [{"prompt_hash": 100 + i} for i in range(50)])

    assert recommend(org.id, NOW, days=7) == []
    assert whatif(org.id, NOW - timedelta(days=7), NOW, Policy(response_cache_window_s=3600)).saving_usd == 0
    assert of_kind(recommend(other_org.id, NOW, days=7), Kind.RESPONSE_CACHE)[0].evidence["repeats"] == 49


def test_a_swap_reprices_the_tokens_on_the_other_model(org: Organization, write_calls: Writer) -> None:
    write_calls(org, [{"feature": "chat"} for _ in range(10)] + [{"feature": "report"} for _ in range(10)])
    policy = Policy(swaps=(ModelSwap("gpt-4o", "gpt-4o-mini", feature="chat"),))

    result = whatif(org.id, NOW - timedelta(days=7), NOW, policy)

    on_mini = (3000 * Decimal("0.15") + 100 * Decimal("0.60")) / 10**6
    assert result.calls == 20
    assert result.replayed_usd == 10 * on_mini + 10 * COST
    assert result.by_model == {"gpt-4o": (20 * COST, 10 * on_mini + 10 * COST)}
    assert sum(d.replayed_usd for d in result.days) == result.replayed_usd


def test_a_policy_that_makes_no_sense_is_refused(org: Organization) -> None:
    with pytest.raises(ValueError, match="semantic_cache_threshold"):
        whatif(org.id, NOW - timedelta(days=7), NOW, Policy(semantic_cache_threshold=1.5))
