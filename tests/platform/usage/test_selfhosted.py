"""Self-hosted cost: a deployment's hourly price shared among the calls it served, by the time each
occupied it, the rest of each minute kept as idle cost; repeatable, and only for its own calls."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from costline.usage.models import Deployment, DeploymentMinute, LLMCall
from costline.usage.selfhosted import SELF_HOSTED_SOURCE, price_deployment, price_settled
from tests.platform.usage.factories import make_calls

pytestmark = pytest.mark.django_db
T0 = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
SELF_HOSTED = {"provider": "vllm", "model": "smollm2-135m-instruct", "cost_usd": None, "price_source": None}


def vllm_call(org, start: datetime, seconds: float, **fields) -> LLMCall:
    return make_calls(org, [start], **{**SELF_HOSTED, "latency_ms": seconds * 1000, **fields})[0]


def cost_of(call: LLMCall) -> Decimal:
    return LLMCall.objects.get(tenant=call.tenant_id, trace_id=call.trace_id, span_id=call.span_id).cost_usd


@pytest.fixture
def deployment(make_tenant) -> Deployment:
    # $3.60 an hour: a tenth of a cent per second, so the expected costs read at a glance.
    return Deployment.objects.create(
        tenant=make_tenant().org, name="vLLM", model_pattern="smollm2-*", hourly_usd=Decimal("3.6")
    )


def test_calls_running_together_share_the_time_they_occupied(deployment):
    org = deployment.tenant
    a = vllm_call(org, T0 + timedelta(seconds=10), 10)
    b = vllm_call(org, T0 + timedelta(seconds=10), 10)
    alone = vllm_call(org, T0 + timedelta(minutes=1), 30)

    price_deployment(deployment, T0, T0 + timedelta(minutes=5))

    assert cost_of(a) == cost_of(b) == Decimal("0.005")  # 10 busy seconds ($0.01) shared by two
    assert cost_of(alone) == Decimal("0.03")
    first = DeploymentMinute.objects.get(deployment=deployment, minute=T0)
    assert (first.calls, first.busy_seconds) == (2, 10.0)
    assert first.busy_usd == Decimal("0.01")
    assert first.idle_usd == Decimal("0.05")
    idle = DeploymentMinute.objects.get(deployment=deployment, minute=T0 + timedelta(minutes=4))
    assert (idle.busy_usd, idle.idle_usd) == (Decimal(0), Decimal("0.06"))
    stored = LLMCall.objects.get(trace_id=a.trace_id)
    assert stored.price_source == SELF_HOSTED_SOURCE
    assert stored.price_version == f"deployment:{deployment.id}:3.6/h"


def test_each_share_is_split_into_prefill_and_decode_at_the_first_token(deployment):
    org = deployment.tenant
    # Together from 0 s to 10 s: a's first token at 4 s, b's at 6 s; an embedding (no output) is all prefill.
    a = vllm_call(org, T0, 10, ttft_ms=4000, output_tokens=50)
    b = vllm_call(org, T0, 10, ttft_ms=6000, output_tokens=50)
    embedding = vllm_call(org, T0 + timedelta(seconds=20), 2, ttft_ms=None, output_tokens=0)

    price_deployment(deployment, T0, T0 + timedelta(minutes=1))

    stored = {c.trace_id: c for c in LLMCall.objects.filter(tenant=org)}
    assert (stored[a.trace_id].cost_usd, stored[a.trace_id].prefill_cost_usd) == (
        Decimal("0.005"),
        Decimal("0.002"),  # 4 s shared by two at $0.001/s
    )
    assert stored[b.trace_id].prefill_cost_usd == Decimal("0.003")
    only_prefill = stored[embedding.trace_id]
    assert only_prefill.prefill_cost_usd == only_prefill.cost_usd == Decimal("0.002")
    minute = DeploymentMinute.objects.get(deployment=deployment, minute=T0)
    assert (minute.busy_usd, minute.prefill_usd) == (Decimal("0.012"), Decimal("0.007"))


def test_a_call_across_a_minute_boundary_pays_both_parts(deployment):
    call = vllm_call(deployment.tenant, T0 + timedelta(seconds=50), 20)

    price_deployment(deployment, T0, T0 + timedelta(minutes=2))

    assert cost_of(call) == Decimal("0.02")
    minutes = DeploymentMinute.objects.filter(deployment=deployment).order_by("minute")
    assert [m.busy_seconds for m in minutes] == [10.0, 10.0]


def test_pricing_again_changes_nothing(deployment):
    calls = [vllm_call(deployment.tenant, T0 + timedelta(seconds=s), 7) for s in (1, 3, 40)]
    price_deployment(deployment, T0, T0 + timedelta(minutes=1))
    before = [cost_of(c) for c in calls]

    again = price_deployment(deployment, T0, T0 + timedelta(minutes=1))

    assert again.calls_priced == 3
    assert again.calls_changed == 0
    assert [cost_of(c) for c in calls] == before
    # Busy from 1 s to 10 s (the first two together from 3 s to 8 s) and from 40 s to 47 s.
    assert before == [Decimal("0.0045"), Decimal("0.0045"), Decimal("0.007")]


def test_only_the_deployments_own_calls_are_priced(deployment, make_tenant):
    other_model = vllm_call(deployment.tenant, T0, 10, model="llama-3-8b")
    api_call = make_calls(deployment.tenant, [T0], latency_ms=10_000)[0]
    other_tenant = vllm_call(make_tenant().org, T0, 10)

    price_deployment(deployment, T0, T0 + timedelta(minutes=1))

    assert cost_of(other_model) is None
    assert cost_of(api_call) == Decimal("0.006")  # its catalogue price stays
    assert cost_of(other_tenant) is None


def test_the_periodic_run_prices_settled_minutes_since_the_last_run(deployment):
    now = datetime.now(UTC)
    deployment.created_at = now - timedelta(hours=1)
    deployment.save()
    settled = vllm_call(deployment.tenant, now - timedelta(minutes=30), 5)
    recent = vllm_call(deployment.tenant, now - timedelta(seconds=20), 5)

    run = price_settled(now)

    assert run.calls_priced == 1
    assert cost_of(settled) == Decimal("0.005")
    assert cost_of(recent) is None  # its minute has not settled: the next runs price it
