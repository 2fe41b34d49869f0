"""Prompt evidence: what the collector keeps of a prompt for the advisor (hashes, never the text)."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest

from collector.fingerprint import from_openai_request, hamming
from costline.usage.models import LLMCall
from tests.conftest import RunningCollector, TenantKeys
from tests.otlp_builders import chat_attrs, export, span, to_protobuf

SYSTEM = "You are the support assistant of Acme. Answer briefly, cite the help centre, never guess prices."
NOW = time.time_ns() - 60 * 10**9
QUESTION = (
    "My order 1234 arrived yesterday but the blue jacket is the wrong size, it is a medium and I ordered "
    "a large. Can I exchange it at a store near Lyon or do I have to send it back by post?"
)


def messages_attr(system: str, user: str) -> str:
    return json.dumps(
        [
            {"role": "system", "parts": [{"type": "text", "content": system}]},
            {"role": "user", "parts": [{"type": "text", "content": user}]},
        ]
    )


def send(collector: RunningCollector, tenant: TenantKeys, *spans: dict[str, Any]) -> list[LLMCall]:
    response = httpx.post(
        collector.http_url + "/v1/traces",
        content=to_protobuf(export(*spans)),
        headers={"Content-Type": "application/x-protobuf", **tenant.auth},
        timeout=30,
    )
    assert response.status_code == 200
    return list(LLMCall.objects.filter(tenant_id=tenant.id).order_by("start_time"))


@pytest.fixture
def tenant(make_live_tenant: Any) -> TenantKeys:
    return make_live_tenant()  # type: ignore[no-any-return]


def test_it_stores_hashes_token_lengths_and_a_fingerprint_of_a_span_with_content(
    collector: RunningCollector, tenant: TenantKeys
) -> None:
    attrs = chat_attrs(input_tokens=80, **{"gen_ai.input.messages": messages_attr(SYSTEM, QUESTION)})

    (call,) = send(collector, tenant, span(attrs=attrs))

    assert call.prompt_hash is not None
    assert call.prefix_hash is not None
    assert call.prompt_simhash is not None
    assert call.prompt_tokens == 80  # the emitter's count
    share = len(SYSTEM) / (len(SYSTEM) + len(QUESTION))
    assert call.prefix_tokens == round(80 * share)
    stored = {f.attname: getattr(call, f.attname) for f in LLMCall._meta.concrete_fields}
    assert not any(isinstance(v, str) and "jacket" in v for v in stored.values())  # never the text


def test_the_same_prompt_gets_the_same_hash_and_a_shared_system_prompt_the_same_prefix(
    collector: RunningCollector, tenant: TenantKeys
) -> None:
    same = messages_attr(SYSTEM, QUESTION)
    other = messages_attr(SYSTEM, "Where is my refund for order 998?")
    spans = [
        span(start_ns=NOW + i * 10**9, attrs=chat_attrs(**{"gen_ai.input.messages": m}))
        for i, m in enumerate([same, same, other])
    ]

    first, second, third = send(collector, tenant, *spans)

    assert first.prompt_hash == second.prompt_hash != third.prompt_hash
    assert first.prefix_hash == second.prefix_hash == third.prefix_hash


def test_a_near_duplicate_lies_a_few_bits_away_and_an_unrelated_prompt_far(
    collector: RunningCollector, tenant: TenantKeys
) -> None:
    near = QUESTION.replace("Lyon", "Nantes")
    unrelated = "Write a haiku about autumn leaves falling on a quiet pond at dawn, in French, please."
    spans = [
        span(
            start_ns=NOW + i * 10**9, attrs=chat_attrs(**{"gen_ai.input.messages": messages_attr(SYSTEM, q)})
        )
        for i, q in enumerate([QUESTION, near, unrelated])
    ]

    base, close, far = send(collector, tenant, *spans)

    assert base.prompt_hash != close.prompt_hash
    assert hamming(base.prompt_simhash, close.prompt_simhash) <= 8
    assert hamming(base.prompt_simhash, far.prompt_simhash) >= 16


def test_a_span_without_content_has_no_evidence(collector: RunningCollector, tenant: TenantKeys) -> None:
    (call,) = send(collector, tenant, span(attrs=chat_attrs()))

    assert (
        call.prompt_hash,
        call.prefix_hash,
        call.prompt_tokens,
        call.prefix_tokens,
        call.prompt_simhash,
    ) == (
        None,
        None,
        None,
        None,
        None,
    )


def test_it_reads_openinference_flattened_messages_and_estimates_tokens_without_a_count(
    collector: RunningCollector, tenant: TenantKeys
) -> None:
    attrs = {
        "openinference.span.kind": "LLM",
        "llm.model_name": "gpt-4o-mini",
        "llm.provider": "openai",
        "llm.input_messages.0.message.role": "system",
        "llm.input_messages.0.message.content": SYSTEM,
        "llm.input_messages.1.message.role": "user",
        "llm.input_messages.1.message.content": QUESTION,
    }

    (call,) = send(collector, tenant, span(name="ChatCompletion", attrs=attrs))

    # No token count on the span: 4 characters a token.
    assert call.prompt_tokens == -(-(len(SYSTEM) + len(QUESTION)) // 4)
    assert call.prefix_tokens == -(-len(SYSTEM) // 4)


def test_it_keeps_the_gateways_evidence_which_equals_what_it_computes_from_the_request(
    collector: RunningCollector, tenant: TenantKeys
) -> None:
    body = {
        "model": "gpt-4o-mini",
        "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": QUESTION}],
    }
    evidence = from_openai_request(body, input_tokens=80)
    assert evidence is not None
    from_content = chat_attrs(input_tokens=80, **{"gen_ai.input.messages": messages_attr(SYSTEM, QUESTION)})
    from_gateway = chat_attrs(input_tokens=80, **evidence.span_attributes())

    gateway_call, content_call = send(
        collector,
        tenant,
        span(start_ns=NOW, attrs=from_gateway),
        span(start_ns=NOW + 10**9, attrs=from_content),
    )

    assert gateway_call.prompt_hash == evidence.prompt_hash == content_call.prompt_hash
    assert gateway_call.prefix_hash == content_call.prefix_hash
    assert gateway_call.prompt_simhash == content_call.prompt_simhash
    assert (gateway_call.prompt_tokens, gateway_call.prefix_tokens) == (80, evidence.prefix_tokens)
