"""The OTLP/gRPC receiver: `opentelemetry.proto.collector.trace.v1.TraceService/Export` on port 4317."""

from __future__ import annotations

import logging

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

from collector.otlp import MalformedExport, decode_protobuf
from collector.pipeline import Overloaded, Pipeline, Unauthenticated
from collector.sink import SinkUnavailable

logger = logging.getLogger(__name__)

SERVICE_NAME = "opentelemetry.proto.collector.trace.v1.TraceService"


def _retryable(message: str, retry_after_seconds: int) -> grpc.Status:
    """UNAVAILABLE with a RetryInfo detail: the backpressure signal OTLP/gRPC clients honour."""
    detail = any_pb2.Any()
    detail.Pack(error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=retry_after_seconds)))
    return rpc_status.to_status(
        status_pb2.Status(code=code_pb2.UNAVAILABLE, message=message, details=[detail])
    )


class TraceService:
    """TraceService/Export, handed the request's raw bytes so the collector's own reader decodes them."""

    def __init__(self, pipeline: Pipeline, *, retry_after_seconds: int) -> None:
        self.pipeline = pipeline
        self.retry_after_seconds = retry_after_seconds

    async def export(self, body: bytes, context: grpc.aio.ServicerContext) -> bytes:
        metadata = dict(context.invocation_metadata() or ())
        try:
            tenant = await self.pipeline.authenticate(metadata.get("authorization"))
            async with self.pipeline.admitted():
                outcome = await self.pipeline.export(tenant, decode_protobuf(body))
        except MalformedExport as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except Unauthenticated as exc:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, str(exc))
        except Overloaded as exc:
            await context.abort_with_status(_retryable(str(exc), self.retry_after_seconds))
        except SinkUnavailable as exc:
            logger.warning("export refused, store unavailable: %s", exc)
            await context.abort_with_status(
                _retryable(
                    "storage is temporarily unavailable; nothing from this export was stored, retry it",
                    self.retry_after_seconds,
                )
            )
        except Exception:
            logger.exception("export failed")
            await context.abort(grpc.StatusCode.INTERNAL, "the collector failed to process this export")
        response = trace_service_pb2.ExportTraceServiceResponse()
        if outcome.rejected_spans or outcome.message:
            response.partial_success.rejected_spans = outcome.rejected_spans
            response.partial_success.error_message = outcome.message
        return response.SerializeToString()


def make_server(pipeline: Pipeline, *, max_message_bytes: int, retry_after_seconds: int) -> grpc.aio.Server:
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", 4 * 1024 * 1024),
        ]
    )
    service = TraceService(pipeline, retry_after_seconds=retry_after_seconds)
    # No request deserializer: the handler receives the bytes (and no response serializer: it returns
    # bytes), the same path as OTLP/HTTP protobuf bodies.
    handler = grpc.method_handlers_generic_handler(
        SERVICE_NAME, {"Export": grpc.unary_unary_rpc_method_handler(service.export)}
    )
    server.add_generic_rpc_handlers((handler,))
    return server
