"""The real OpenTelemetry SDK exporters, configured as a service would, deliver priced calls."""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.trace import SpanKind

from costline.usage.models import LLMCall
from tests.conftest import RunningCollector


def exporter_for(protocol: str, collector: RunningCollector, key: str) -> SpanExporter:
    if protocol == "http/protobuf":
        return HttpSpanExporter(
            endpoint=collector.http_url + "/v1/traces", headers={"authorization": f"Bearer {key}"}
        )
    return GrpcSpanExporter(
        endpoint=collector.grpc_target, insecure=True, headers={"authorization": f"Bearer {key}"}
    )


@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
def test_the_sdk_exporter_delivers_a_request_with_its_llm_calls(
    collector: RunningCollector, make_live_tenant: Any, protocol: str
) -> None:
    tenant = make_live_tenant()
    provider = TracerProvider(
        resource=Resource.create({"service.name": "support-bot", "deployment.environment.name": "staging"})
    )
    provider.add_span_processor(BatchSpanProcessor(exporter_for(protocol, collector, tenant.ingest_key)))
    tracer = provider.get_tracer("support-bot")

    with tracer.start_as_current_span("POST /tickets/answer", kind=SpanKind.SERVER) as root:
        root.set_attribute("http.route", "/tickets/answer")
        root.set_attribute("user.id", "agent-17")
        for model, tokens in (("gpt-4o-mini", 800), ("claude-sonnet-4-5-20250929", 1200)):
            with tracer.start_as_current_span(f"chat {model}", kind=SpanKind.CLIENT) as call:
                call.set_attribute("gen_ai.operation.name", "chat")
                call.set_attribute("gen_ai.provider.name", "anthropic" if "claude" in model else "openai")
                call.set_attribute("gen_ai.request.model", model)
                call.set_attribute("gen_ai.usage.input_tokens", tokens)
                call.set_attribute("gen_ai.usage.output_tokens", 100)
    assert provider.force_flush(30_000)
    provider.shutdown()

    calls = {c.model: c for c in LLMCall.objects.filter(tenant_id=tenant.id)}
    assert set(calls) == {"gpt-4o-mini", "claude-sonnet-4-5"}
    for call in calls.values():
        assert (call.service, call.environment, call.feature, call.user_id) == (
            "support-bot",
            "staging",
            "/tickets/answer",
            "agent-17",
        )
        assert call.cost_usd is not None
        assert call.cost_usd > 0
