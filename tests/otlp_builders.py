"""Build OTLP trace exports for tests, as OTLP/JSON or protobuf, from a few readable arguments."""

from __future__ import annotations

import base64
import copy
import json
import os
import time
from typing import Any

from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

CLIENT, SERVER, INTERNAL = 3, 2, 1


def new_trace_id() -> str:
    return os.urandom(16).hex()


def new_span_id() -> str:
    return os.urandom(8).hex()


def _any(value: Any) -> dict[str, Any]:
    if isinstance(value, bool):
        return {"boolValue": value}
    if isinstance(value, int):
        return {"intValue": str(value)}
    if isinstance(value, float):
        return {"doubleValue": value}
    if isinstance(value, list | tuple):
        return {"arrayValue": {"values": [_any(v) for v in value]}}
    return {"stringValue": str(value)}


def attributes(values: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"key": k, "value": _any(v)} for k, v in values.items()]


def span(
    *,
    trace_id: str | None = None,
    span_id: str | None = None,
    parent: str = "",
    name: str = "chat gpt-4o-mini",
    kind: int = CLIENT,
    start_ns: int | None = None,
    duration_ms: float = 250.0,
    attrs: dict[str, Any] | None = None,
    status: int = 0,
    status_message: str = "",
    events: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    start = start_ns if start_ns is not None else time.time_ns() - 5_000_000_000
    out: dict[str, Any] = {
        "traceId": trace_id or new_trace_id(),
        "spanId": span_id or new_span_id(),
        "name": name,
        "kind": kind,
        "startTimeUnixNano": str(start),
        "endTimeUnixNano": str(start + int(duration_ms * 1_000_000)),
        "attributes": attributes(attrs or {}),
        "status": {"code": status, **({"message": status_message} if status_message else {})},
    }
    if parent:
        out["parentSpanId"] = parent
    if events:
        out["events"] = events
    return out


def chat_attrs(
    *,
    model: str = "gpt-4o-mini",
    provider: str = "openai",
    input_tokens: int | None = 1000,
    output_tokens: int | None = 200,
    response_model: str | None = "",
    response_id: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """Attributes of an OTel GenAI semconv chat span (the response model defaults to the requested one)."""
    values: dict[str, Any] = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": provider,
        "gen_ai.request.model": model,
    }
    if response_model is not None:
        values["gen_ai.response.model"] = response_model or model
    if response_id:
        values["gen_ai.response.id"] = response_id
    if input_tokens is not None:
        values["gen_ai.usage.input_tokens"] = input_tokens
    if output_tokens is not None:
        values["gen_ai.usage.output_tokens"] = output_tokens
    values.update(extra)
    return values


def export(
    *spans: dict[str, Any],
    service: str = "checkout-api",
    scope: str = "opentelemetry.instrumentation.openai_v2",
    resource: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """An ExportTraceServiceRequest in OTLP/JSON form (a dict)."""
    resource_attrs = {
        "service.name": service,
        "deployment.environment.name": "production",
        **(resource or {}),
    }
    return {
        "resourceSpans": [
            {
                "resource": {"attributes": attributes(resource_attrs)},
                "scopeSpans": [{"scope": {"name": scope}, "spans": list(spans)}],
            }
        ]
    }


def merge(*exports: dict[str, Any]) -> dict[str, Any]:
    return {"resourceSpans": [rs for e in exports for rs in e["resourceSpans"]]}


def to_json(request: dict[str, Any]) -> bytes:
    return json.dumps(request).encode()


def to_message(request: dict[str, Any]) -> trace_service_pb2.ExportTraceServiceRequest:
    """The same request as a protobuf message (OTLP/JSON ids are hex; proto3 JSON wants base64)."""
    doc = copy.deepcopy(request)
    for rs in doc["resourceSpans"]:
        for ss in rs["scopeSpans"]:
            for s in ss["spans"]:
                for key in ("traceId", "spanId", "parentSpanId"):
                    if s.get(key):
                        s[key] = base64.b64encode(bytes.fromhex(s[key])).decode()
    message = trace_service_pb2.ExportTraceServiceRequest()
    json_format.ParseDict(doc, message)
    return message


def to_protobuf(request: dict[str, Any]) -> bytes:
    return to_message(request).SerializeToString()
