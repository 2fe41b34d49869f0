"""Spans of one request that arrive in different exports are still counted once and attributed right.

Exporters send spans as they end: a provider SDK's span before the framework span wrapping it, calls
before the root span of their trace. Two instrumentations may report the same provider request in
different traces. Whatever the order, each provider request is one stored call.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from costline.usage.models import LLMCall
from tests.conftest import RunningCollector, TenantKeys
from tests.otlp_builders import (
    INTERNAL,
    SERVER,
    chat_attrs,
    export,
    new_trace_id,
    span,
    to_json,
)

JSON = {"Content-Type": "application/json"}


def send(collector: RunningCollector, tenant: TenantKeys, request: dict[str, Any]) -> None:
    response = httpx.post(
        collector.http_url + "/v1/traces", content=to_json(request), headers={**JSON, **tenant.auth}
    )
    assert response.status_code == 200, response.text


def calls_of(tenant: TenantKeys) -> list[LLMCall]:
    return list(LLMCall.objects.filter(tenant_id=tenant.id).order_by("start_time"))


@pytest.fixture
def tenant(make_live_tenant: Any) -> TenantKeys:
    return make_live_tenant()  # type: ignore[no-any-return]


def test_a_root_span_exported_after_its_calls_names_their_feature(
    collector: RunningCollector, tenant: TenantKeys
) -> None:
    trace = new_trace_id()
    root = span(
        trace_id=trace, name="POST /api/summarize", kind=SERVER, attrs={"http.route": "/api/summarize"}
    )
    calls = [span(trace_id=trace, parent=root["spanId"], attrs=chat_attrs()) for _ in range(2)]

    send(collector, tenant, export(*calls))
    pending = [c.feature_source for c in calls_of(tenant)]
    send(collector, tenant, export(root))

    assert pending == [None, None]
    assert [(c.feature, c.feature_source) for c in calls_of(tenant)] == [("/api/summarize", "root")] * 2


def test_calls_exported_after_their_root_take_its_feature(
    collector: RunningCollector, tenant: TenantKeys
) -> None:
    trace = new_trace_id()
    root = span(
        trace_id=trace,
        name="nightly-digest",
        kind=INTERNAL,
        attrs={"user.id": "u-42", "session.id": "s-7"},
    )
    call = span(trace_id=trace, parent=root["spanId"], attrs=chat_attrs())

    send(collector, tenant, export(root, service="gateway"))
    send(collector, tenant, export(call, service="digest-worker"))

    (stored,) = calls_of(tenant)
    assert (stored.feature, stored.user_id, stored.session_id) == ("nightly-digest", "u-42", "s-7")


def test_an_explicit_costline_feature_wins_over_the_root(
    collector: RunningCollector, tenant: TenantKeys
) -> None:
    trace = new_trace_id()
    root = span(trace_id=trace, name="POST /chat", kind=SERVER, attrs={"http.route": "/chat"})
    call = span(
        trace_id=trace, parent=root["spanId"], attrs=chat_attrs(**{"costline.feature": "smart-reply"})
    )

    send(collector, tenant, export(call))
    send(collector, tenant, export(root))

    (stored,) = calls_of(tenant)
    assert (stored.feature, stored.feature_source) == ("smart-reply", "attribute")


def _langfuse_wrapper(trace: str) -> dict[str, Any]:
    return span(
        trace_id=trace,
        name="anthropic.messages.create",
        kind=INTERNAL,
        attrs={
            "langfuse.observation.type": "generation",
            "langfuse.observation.model.name": "claude-sonnet-4-5-20250929",
            "langfuse.observation.usage_details": json.dumps({"input": 107, "output": 266}),
            "user.id": "u-1",
        },
    )


def _anthropic_sdk_span(trace: str, parent: str, response_id: str = "msg_01") -> dict[str, Any]:
    return span(
        trace_id=trace,
        parent=parent,
        name="anthropic.messages.create",
        attrs=chat_attrs(
            provider="anthropic",
            model="claude-sonnet-4-5",
            response_model="claude-sonnet-4-5-20250929",
            response_id=response_id,
            input_tokens=2906,
            output_tokens=266,
            **{"gen_ai.usage.cache_read.input_tokens": 2299, "gen_ai.usage.cache_write.input_tokens": 500},
        ),
    )


@pytest.mark.parametrize("order", ["leaf first", "wrapper first"])
def test_a_framework_span_wrapping_the_sdk_span_is_not_counted_again(
    collector: RunningCollector, tenant: TenantKeys, order: str
) -> None:
    trace = new_trace_id()
    wrapper = _langfuse_wrapper(trace)
    leaf = _anthropic_sdk_span(trace, parent=wrapper["spanId"])
    exports = [
        export(leaf, scope="com.anthropic.sdk.python"),
        export(wrapper, scope="langfuse-sdk"),
    ]
    if order == "wrapper first":
        exports.reverse()

    for request in exports:
        send(collector, tenant, request)

    (stored,) = calls_of(tenant)
    assert stored.span_id == leaf["spanId"]
    assert (stored.input_tokens, stored.cache_read_tokens, stored.cache_write_tokens) == (2906, 2299, 500)
    assert stored.user_id == "u-1"  # lent by the wrapper, which knew the user


def _openllmetry_span(response_id: str) -> dict[str, Any]:
    return span(
        name="anthropic.chat",
        attrs=chat_attrs(
            provider="anthropic",
            model="claude-sonnet-4-5",
            response_model="claude-sonnet-4-5-20250929",
            response_id=response_id,
            input_tokens=2906,
            output_tokens=267,  # off by one, as the streaming wrapper counts
            **{"gen_ai.usage.total_tokens": 3173, "traceloop.association.properties.user_id": "u-9"},
        ),
    )


@pytest.mark.parametrize("order", ["sdk first", "wrapper first"])
def test_two_instrumentations_reporting_one_request_count_once(
    collector: RunningCollector, tenant: TenantKeys, order: str
) -> None:
    sdk = _anthropic_sdk_span(new_trace_id(), parent="", response_id="msg_0x42")
    wrapper = _openllmetry_span("msg_0x42")
    exports = [
        export(sdk, scope="com.anthropic.sdk.python"),
        export(wrapper, scope="opentelemetry.instrumentation.anthropic"),
    ]
    if order == "wrapper first":
        exports.reverse()

    for request in exports:
        send(collector, tenant, request)

    (stored,) = calls_of(tenant)
    assert stored.span_id == sdk["spanId"]  # the provider SDK's own span saw the exact usage
    assert stored.output_tokens == 266
    assert stored.user_id == "u-9"


def test_one_instrumentation_repeating_a_response_id_is_not_deduplicated(
    collector: RunningCollector, tenant: TenantKeys
) -> None:
    first = span(attrs=chat_attrs(response_id="resp_same"))
    second = span(attrs=chat_attrs(response_id="resp_same"))

    send(collector, tenant, export(first))
    send(collector, tenant, export(second))

    assert len(calls_of(tenant)) == 2


def test_a_model_server_span_below_the_client_span_is_not_counted_again(
    collector: RunningCollector, tenant: TenantKeys
) -> None:
    trace = new_trace_id()
    client = span(trace_id=trace, attrs=chat_attrs(provider="vllm", model="smollm2", response_model=None))
    server = span(
        trace_id=trace,
        parent=client["spanId"],
        name="llm_request",
        kind=SERVER,
        attrs={
            "gen_ai.usage.prompt_tokens": 1000,
            "gen_ai.usage.completion_tokens": 200,
            "gen_ai.latency.time_to_first_token": 0.05,
        },
    )

    send(collector, tenant, export(server, service="vllm", scope="vllm.llm_engine"))
    send(collector, tenant, export(client, service="gateway"))

    (stored,) = calls_of(tenant)
    assert stored.span_id == client["spanId"]
    assert stored.ttft_ms == 50.0  # the server's first token, which a non-streaming client never sees


@pytest.mark.parametrize("server_first", [True, False])
def test_a_client_span_without_a_first_token_takes_the_servers(
    collector: RunningCollector, tenant: TenantKeys, server_first: bool
) -> None:
    trace = new_trace_id()
    client = span(trace_id=trace, attrs=chat_attrs(provider="vllm", model="smollm2", response_model=None))
    server = span(
        trace_id=trace,
        parent=client["spanId"],
        name="llm_request",
        kind=SERVER,
        attrs={"gen_ai.usage.prompt_tokens": 10, "gen_ai.latency.time_to_first_token": 0.125},
    )
    exports = [export(server, service="vllm", scope="vllm.llm_engine"), export(client, service="gateway")]

    for request in exports if server_first else exports[::-1]:
        send(collector, tenant, request)

    (stored,) = calls_of(tenant)
    assert (stored.span_id, stored.ttft_ms) == (client["spanId"], 125.0)
