"""Normalisation of emitters the captured corpus does not cover, straight from decoded spans."""

from __future__ import annotations

import json
import time
from typing import Any

from collector.normalise import normalise
from collector.otlp import decode_json
from collector.records import Batch
from tests.otlp_builders import INTERNAL, SERVER, export, new_trace_id, span, to_json

NOW = time.time_ns()


def normalised(*spans: dict[str, Any], scope: str = "ai", service: str = "web") -> Batch:
    decoded = decode_json(to_json(export(*spans, scope=scope, service=service)))
    # The spans start when they are built, so the window is taken now, not at import: a slow
    # suite reached this file more than the 1,000 s of headroom after collecting it.
    return normalise(decoded, min_start_ns=0, max_start_ns=time.time_ns() + 10**12)


def test_vercel_ai_sdk_legacy_spans_count_only_the_provider_call() -> None:
    trace = new_trace_id()
    outer = span(
        trace_id=trace,
        name="ai.streamText",
        kind=INTERNAL,
        attrs={
            "ai.operationId": "ai.streamText",
            "ai.usage.promptTokens": 500,
            "ai.usage.completionTokens": 80,
            "ai.telemetry.functionId": "chat-answer",
            "ai.telemetry.metadata.userId": "u-3",
        },
    )
    inner = span(
        trace_id=trace,
        parent=outer["spanId"],
        name="ai.streamText.doStream",
        attrs={
            "ai.operationId": "ai.streamText.doStream",
            "ai.model.provider": "openai.chat",
            "ai.model.id": "gpt-4o",
            "ai.response.model": "gpt-4o-2024-08-06",
            "ai.usage.inputTokens": 500,
            "ai.usage.outputTokens": 80,
            "ai.usage.cachedInputTokens": 128,
            "ai.response.msToFirstChunk": 312.5,
            "ai.response.finishReason": "stop",
        },
    )

    (call,) = normalised(outer, inner).calls

    assert (call.provider, call.request_model, call.response_model) == (
        "openai",
        "gpt-4o",
        "gpt-4o-2024-08-06",
    )
    assert (call.input_tokens, call.output_tokens, call.cache_read_tokens) == (500, 80, 128)
    assert (call.streaming, call.ttft_ms, call.finish_reason) == (True, 312.5, "stop")
    assert (call.feature, call.user_id) == ("chat-answer", "u-3")


def test_vercel_ai_sdk_v7_counts_the_chat_span_not_the_agent_totals() -> None:
    trace = new_trace_id()
    agent = span(
        trace_id=trace,
        name="invoke_agent gpt-4o",
        kind=INTERNAL,
        attrs={"gen_ai.operation.name": "invoke_agent", "gen_ai.usage.input_tokens": 900},
    )
    step = span(
        trace_id=trace, parent=agent["spanId"], name="step 1", attrs={"gen_ai.operation.name": "agent_step"}
    )
    chat = span(
        trace_id=trace,
        parent=step["spanId"],
        name="chat gpt-4o",
        attrs={
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": "openai",
            "gen_ai.request.model": "gpt-4o",
            "gen_ai.usage.input_tokens": 900,
            "gen_ai.usage.output_tokens": 40,
            "gen_ai.client.operation.time_to_first_chunk": 0.25,
            "gen_ai.client.operation.duration": 1.5,
        },
    )

    (call,) = normalised(agent, step, chat).calls

    assert (call.input_tokens, call.streaming, call.ttft_ms, call.latency_ms) == (900, True, 250.0, 1500.0)


def test_a_vllm_request_span_is_a_self_hosted_call_with_server_timings() -> None:
    request = span(
        name="llm_request",
        kind=SERVER,
        attrs={
            "gen_ai.request.id": "cmpl-9",
            "gen_ai.usage.prompt_tokens": 1200,
            "gen_ai.usage.completion_tokens": 64,
            "gen_ai.latency.time_to_first_token": 0.08,
            "gen_ai.latency.e2e": 0.9,
            "gen_ai.request.model": "SmolLM2-135M-Instruct",
        },
    )

    (call,) = normalised(request, scope="vllm.llm_engine", service="vllm").calls

    assert (call.provider, call.emitter_kind, call.server_side) == ("vllm", "vllm", True)
    assert (call.input_tokens, call.output_tokens, call.latency_ms) == (1200, 64, 900.0)


def test_openinference_first_token_event_gives_time_to_first_token() -> None:
    start = NOW - 5 * 10**9
    call_span = span(
        start_ns=start,
        name="ChatCompletion",
        kind=INTERNAL,
        attrs={
            "openinference.span.kind": "LLM",
            "llm.system": "openai",
            "llm.invocation_parameters": json.dumps({"model": "gpt-4o-mini", "stream": True}),
            "llm.model_name": "gpt-4o-mini-2024-07-18",
            "llm.token_count.prompt": 10,
            "llm.token_count.completion": 5,
        },
        events=[{"name": "First Token Stream Event", "timeUnixNano": str(start + 42_000_000)}],
    )

    (call,) = normalised(call_span, scope="openinference.instrumentation.openai").calls

    assert (call.request_model, call.streaming, call.ttft_ms) == ("gpt-4o-mini", True, 42.0)


def test_agent_tool_and_workflow_spans_are_not_calls() -> None:
    spans = [
        span(attrs={"gen_ai.operation.name": op, "gen_ai.usage.input_tokens": 10})
        for op in ("invoke_agent", "execute_tool", "invoke_workflow", "retrieval")
    ] + [span(attrs={"openinference.span.kind": "CHAIN"}), span(attrs={"traceloop.span.kind": "workflow"})]

    assert normalised(*spans).calls == []


def test_an_error_type_class_repr_is_classified() -> None:
    failed = span(
        status=2,
        attrs={
            "gen_ai.operation.name": "chat",
            "gen_ai.request.model": "gpt-4o-mini",
            "error.type": "<class 'openai.APITimeoutError'>",
        },
    )

    (call,) = normalised(failed).calls

    assert (call.status, call.error_type) == ("error", "timeout")
