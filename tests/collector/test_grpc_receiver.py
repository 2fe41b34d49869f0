"""OTLP/gRPC: TraceService/Export on the collector's gRPC port."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc

from costline.usage.models import LLMCall
from tests.conftest import RunningCollector, TenantKeys
from tests.otlp_builders import chat_attrs, export, span, to_message


@pytest.fixture
def stub(collector: RunningCollector) -> Iterator[trace_service_pb2_grpc.TraceServiceStub]:
    with grpc.insecure_channel(collector.grpc_target) as channel:
        yield trace_service_pb2_grpc.TraceServiceStub(channel)


@pytest.fixture
def tenant(make_live_tenant: Any) -> TenantKeys:
    return make_live_tenant()  # type: ignore[no-any-return]


def test_it_stores_calls_exported_over_grpc(
    stub: trace_service_pb2_grpc.TraceServiceStub, tenant: TenantKeys
) -> None:
    request = to_message(export(span(attrs=chat_attrs()), span(attrs=chat_attrs(model="gpt-4o"))))

    response = stub.Export(request, metadata=[("authorization", f"Bearer {tenant.ingest_key}")], timeout=30)

    assert not response.HasField("partial_success")
    assert sorted(LLMCall.objects.filter(tenant_id=tenant.id).values_list("model", flat=True)) == [
        "gpt-4o",
        "gpt-4o-mini",
    ]


def test_it_answers_unauthenticated_without_a_key(
    stub: trace_service_pb2_grpc.TraceServiceStub, db: None
) -> None:
    with pytest.raises(grpc.RpcError) as failure:
        stub.Export(to_message(export(span(attrs=chat_attrs()))), timeout=30)

    assert failure.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "ingest key" in (failure.value.details() or "")


def test_it_reports_rejected_spans_as_partial_success(
    stub: trace_service_pb2_grpc.TraceServiceStub, tenant: TenantKeys
) -> None:
    future = span(attrs=chat_attrs(), start_ns=4_000_000_000 * 10**9)  # year 2096: a broken clock

    response = stub.Export(
        to_message(export(span(attrs=chat_attrs()), future)),
        metadata=[("authorization", f"Bearer {tenant.ingest_key}")],
        timeout=30,
    )

    assert response.partial_success.rejected_spans == 1
    assert "clock" in response.partial_success.error_message
    assert LLMCall.objects.filter(tenant_id=tenant.id).count() == 1


def test_it_answers_unavailable_with_a_retry_delay_when_overloaded(
    collector: RunningCollector, stub: trace_service_pb2_grpc.TraceServiceStub, tenant: TenantKeys
) -> None:
    pipeline = collector.server.pipeline  # type: ignore[attr-defined]
    saved = pipeline.max_in_flight
    pipeline.max_in_flight = 0
    try:
        with pytest.raises(grpc.RpcError) as failure:
            stub.Export(
                to_message(export(span(attrs=chat_attrs()))),
                metadata=[("authorization", f"Bearer {tenant.ingest_key}")],
                timeout=30,
            )
    finally:
        pipeline.max_in_flight = saved

    assert failure.value.code() == grpc.StatusCode.UNAVAILABLE
    status = rpc_status.from_call(failure.value)  # type: ignore[arg-type]
    assert status is not None
    retry = error_details_pb2.RetryInfo()
    assert status.details[0].Unpack(retry)
    assert retry.retry_delay.seconds > 0


def test_it_answers_invalid_argument_for_a_malformed_message(
    collector: RunningCollector, tenant: TenantKeys
) -> None:
    with grpc.insecure_channel(collector.grpc_target) as channel:
        export_raw = channel.unary_unary("/opentelemetry.proto.collector.trace.v1.TraceService/Export")
        with pytest.raises(grpc.RpcError) as failure:
            export_raw(
                b"\x0a\xff\xff\xff", metadata=[("authorization", f"Bearer {tenant.ingest_key}")], timeout=30
            )

    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not a valid OTLP ExportTraceServiceRequest" in (failure.value.details() or "")
