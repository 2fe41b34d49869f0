"""Every call through the gateway reaches the collector as a GenAI span, exported with the caller's own
gateway key, and is stored in the caller's organisation and priced; a cache hit is stored as a call that
cost nothing and saved its full price."""

from __future__ import annotations

import time
from decimal import Decimal

import pytest

from costline.usage.models import LLMCall
from inference.gateway.budget import cost

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("redis_db")]


def stored_calls(org, count: int, timeout: float = 20.0) -> list[LLMCall]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        calls = list(LLMCall.objects.filter(tenant=org).order_by("start_time"))
        if len(calls) >= count:
            return calls
        time.sleep(0.2)
    raise AssertionError(f"{count} calls were not stored within {timeout} s: {calls}")


def test_gateway_calls_are_stored_priced_in_the_callers_organisation(gateway, live_key):
    caller, other = live_key(), live_key()
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "price me"}], "user": "u-1"}

    first = gateway.post("/chat/completions", caller.key, body, **{"X-Costline-Feature": "summarize"})
    again = gateway.post("/chat/completions", caller.key, body, **{"X-Costline-Feature": "summarize"})
    gateway.server.app.gateway.telemetry.force_flush()

    miss, hit = stored_calls(caller.org, 2)
    full = cost("openai", "gpt-4o-mini", "chat", 11, 7)
    assert first.headers["x-costline-cache"] == "miss"
    assert again.headers["x-costline-cache"] == "hit"
    assert (miss.provider, miss.model, miss.input_tokens, miss.output_tokens) == (
        "openai",
        "gpt-4o-mini",
        11,
        7,
    )
    assert miss.cost_usd == full
    assert (miss.feature, miss.user_id, miss.emitter) == ("summarize", "u-1", "costline.gateway")
    assert miss.response_id == first.json()["id"]
    assert hit.cost_usd == Decimal(0)
    assert hit.cache_savings_usd == full
    assert hit.price_source == "gateway_cache"
    assert not LLMCall.objects.filter(tenant=other.org).exists()  # nothing crossed to another tenant


def test_a_failed_call_is_stored_as_an_error(gateway, live_key):
    caller = live_key()
    gateway.post(
        "/chat/completions", caller.key, {"model": "all-down", "messages": [{"role": "user", "content": "x"}]}
    )
    gateway.server.app.gateway.telemetry.force_flush()

    (call,) = stored_calls(caller.org, 1)
    assert call.status == "error"
    assert call.cost_usd == Decimal(0)  # providers bill nothing for a failed request


def test_a_gateway_call_carries_its_prompt_evidence_not_its_text(gateway, live_key):
    from collector.fingerprint import from_openai_request

    caller = live_key()
    system = "You are the billing assistant of Acme; answer in one sentence."
    body = {
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": system},
            {"role": "user", "content": "why was I charged twice"},
        ],
    }

    gateway.post("/chat/completions", caller.key, body)
    gateway.server.app.gateway.telemetry.force_flush()

    (call,) = stored_calls(caller.org, 1)
    expected = from_openai_request(body, call.input_tokens)
    assert (call.prompt_hash, call.prefix_hash, call.prompt_simhash) == (
        expected.prompt_hash,
        expected.prefix_hash,
        expected.simhash,
    )
    assert (call.prompt_tokens, call.prefix_tokens) == (call.input_tokens, expected.prefix_tokens)
