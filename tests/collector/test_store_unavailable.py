"""When PostgreSQL cannot be reached, exports get a retryable answer and nothing is acknowledged."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import httpx
import pytest
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc

from collector.pipeline import Pipeline
from collector.server import CollectorServer
from costline.usage.ingest import PostgresSink
from tests.conftest import serving
from tests.otlp_builders import chat_attrs, export, span, to_message, to_protobuf

RETRY_AFTER = 7


@pytest.fixture(scope="module")
def collector_without_database() -> Iterator[CollectorServer]:
    # Port 9 (discard) has no PostgreSQL: every connection attempt fails, as when the server is down.
    sink = PostgresSink(
        "host=127.0.0.1 port=9 dbname=costline user=postgres connect_timeout=1",
        pool_size=1,
        connect_timeout=1,
    )
    pipeline = Pipeline(sink, retention_days=30, max_future_skew_seconds=3600)
    server = CollectorServer(
        pipeline,
        host="127.0.0.1",
        http_port=0,
        grpc_port=0,
        max_body_bytes=1 << 20,
        retry_after_seconds=RETRY_AFTER,
    )
    server.app.on_startup.append(sink.open)
    server.app.on_shutdown.append(sink.close)
    with serving(server):
        yield server


def test_it_answers_503_with_retry_after(collector_without_database: CollectorServer) -> None:
    body = to_protobuf(export(span(attrs=chat_attrs())))

    response = httpx.post(
        f"http://127.0.0.1:{collector_without_database.ports.http}/v1/traces",
        content=body,
        headers={"Content-Type": "application/x-protobuf", "Authorization": "Bearer clik_any"},
        timeout=30,
    )

    assert response.status_code == 503
    assert response.headers["retry-after"] == str(RETRY_AFTER)
    assert "retry" in status_pb2.Status.FromString(response.content).message


def test_it_answers_grpc_unavailable_with_a_retry_delay(collector_without_database: CollectorServer) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{collector_without_database.ports.grpc}") as channel:
        stub = trace_service_pb2_grpc.TraceServiceStub(channel)
        with pytest.raises(grpc.RpcError) as failure:
            stub.Export(
                to_message(export(span(attrs=chat_attrs()))),
                metadata=[("authorization", "Bearer clik_any")],
                timeout=30,
            )

    assert failure.value.code() == grpc.StatusCode.UNAVAILABLE
    status = rpc_status.from_call(failure.value)  # type: ignore[arg-type]
    assert status is not None
    retry = error_details_pb2.RetryInfo()
    assert status.details[0].Unpack(retry)
    assert retry.retry_delay.seconds == RETRY_AFTER
