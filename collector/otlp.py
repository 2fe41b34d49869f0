"""OTLP trace export decoding (protobuf and OTLP/JSON) into plain span views, and OTLP responses.

Both encodings decode to the same `SpanView`, so one normaliser serves them. OTLP/JSON follows the
spec's deviations from proto3 JSON: trace and span ids are hex strings, enums are integers, 64-bit
integers may be strings, and unknown fields are ignored.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import DecodeError
from google.rpc import status_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.common.v1 import common_pb2

from collector.attributes import _decisions, wanted

PROTOBUF = "application/x-protobuf"
_NOT_PROTOBUF = (
    "the body is not a valid OTLP ExportTraceServiceRequest protobuf ({}); "
    "send the serialized message with Content-Type: application/x-protobuf"
)
_UNSET: Any = object()
_decode_wire: Any = _UNSET
JSON = "application/json"

STATUS_CODE_ERROR = 2
SPAN_KIND_SERVER = 2
SPAN_KIND_CLIENT = 3

_KIND_NAMES = {
    "SPAN_KIND_UNSPECIFIED": 0,
    "SPAN_KIND_INTERNAL": 1,
    "SPAN_KIND_SERVER": 2,
    "SPAN_KIND_CLIENT": 3,
    "SPAN_KIND_PRODUCER": 4,
    "SPAN_KIND_CONSUMER": 5,
}
_STATUS_NAMES = {"STATUS_CODE_UNSET": 0, "STATUS_CODE_OK": 1, "STATUS_CODE_ERROR": 2}


class MalformedExport(ValueError):
    """The body is not a valid ExportTraceServiceRequest; the message says what is wrong."""


class Event:
    name: str
    time_ns: int
    attrs: dict[str, Any]

    def __init__(self, name: str, time_ns: int, attrs: dict[str, Any]) -> None:
        self.name = name
        self.time_ns = time_ns
        self.attrs = attrs

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Event) and (self.name, self.time_ns, self.attrs) == (
            other.name,
            other.time_ns,
            other.attrs,
        )

    def __repr__(self) -> str:
        return f"Event({self.name!r}, {self.time_ns}, {self.attrs!r})"


class SpanView:
    """One span as the normaliser reads it.

    `attrs` holds only the attributes the normaliser reads (collector.attributes); resource and event
    attributes are kept whole. A plain class, not a dataclass, so that its constructor is native code
    when compiled (collector.speedups): one is built for every span received.
    """

    trace_id: str  # 32 lowercase hex digits
    span_id: str  # 16 lowercase hex digits
    parent_span_id: str  # "" when the span is a root
    name: str
    kind: int
    start_ns: int
    end_ns: int
    status_code: int
    status_message: str
    attrs: dict[str, Any]
    resource: dict[str, Any]
    scope_name: str
    events: list[Event]

    def __init__(
        self,
        trace_id: str,
        span_id: str,
        parent_span_id: str,
        name: str,
        kind: int,
        start_ns: int,
        end_ns: int,
        status_code: int,
        status_message: str,
        attrs: dict[str, Any],
        resource: dict[str, Any],
        scope_name: str,
        events: list[Event],
    ) -> None:
        self.trace_id = trace_id
        self.span_id = span_id
        self.parent_span_id = parent_span_id
        self.name = name
        self.kind = kind
        self.start_ns = start_ns
        self.end_ns = end_ns
        self.status_code = status_code
        self.status_message = status_message
        self.attrs = attrs
        self.resource = resource
        self.scope_name = scope_name
        self.events = events

    def _fields(self) -> tuple[Any, ...]:
        return (
            self.trace_id,
            self.span_id,
            self.parent_span_id,
            self.name,
            self.kind,
            self.start_ns,
            self.end_ns,
            self.status_code,
            self.status_message,
            self.attrs,
            self.resource,
            self.scope_name,
            self.events,
        )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SpanView) and self._fields() == other._fields()

    def __repr__(self) -> str:
        return f"SpanView{self._fields()!r}"


@dataclass(slots=True)
class DecodedExport:
    spans: list[SpanView]
    received: int  # spans in the body, valid or not
    invalid: list[str]  # one reason per span that could not be read


# --- protobuf --------------------------------------------------------------------------------------


def _pb_value(value: common_pb2.AnyValue) -> Any:
    text = value.string_value  # most attributes are strings: one attribute read, no oneof lookup
    if text:
        return text
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [_pb_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return _pb_attrs(value.kvlist_value.values)
    return getattr(value, kind)


def _pb_attrs(kvs: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kv in kvs:
        value = kv.value
        text = value.string_value
        out[kv.key] = text if text else _pb_value(value)
    return out


def _pb_span_attrs(kvs: Any) -> dict[str, Any]:
    """A span's attributes the normaliser reads. This loop runs for every attribute of every span."""
    out: dict[str, Any] = {}
    decisions = _decisions
    for kv in kvs:
        key = kv.key
        keep = decisions.get(key)
        if keep is None:
            keep = wanted(key)
        if keep:
            value = kv.value
            text = value.string_value  # most attributes are strings: one read, no oneof lookup
            out[key] = text if text else _pb_value(value)
    return out


def _wire_decoder() -> Callable[[bytes], DecodedExport] | None:
    """The direct wire-format reader, when compiled (interpreted, it is slower than the message one)."""
    from collector import wire

    return wire.decode_protobuf_wire if str(getattr(wire, "__file__", "")).endswith(".so") else None


def decode_protobuf(body: bytes) -> DecodedExport:
    global _decode_wire
    if _decode_wire is _UNSET:
        _decode_wire = _wire_decoder()
    if _decode_wire is not None:
        try:
            return _decode_wire(body)
        except (MalformedExport, IndexError, ValueError) as exc:
            raise MalformedExport(_NOT_PROTOBUF.format(exc)) from None
    return decode_protobuf_message(body)


def decode_protobuf_message(body: bytes) -> DecodedExport:
    """Decode through the protobuf runtime's message classes."""
    try:
        request = trace_service_pb2.ExportTraceServiceRequest.FromString(body)
    except DecodeError as exc:
        raise MalformedExport(_NOT_PROTOBUF.format(exc)) from None
    return decode_message(request)


_ZERO_TRACE = bytes(16)
_ZERO_SPAN = bytes(8)


def decode_message(request: trace_service_pb2.ExportTraceServiceRequest) -> DecodedExport:
    """Spans of an already parsed request (the gRPC server hands over the message).

    This loop runs for every span the collector receives; it reads each protobuf field once.
    """
    spans: list[SpanView] = []
    append = spans.append
    invalid: list[str] = []
    received = 0
    trace_hex: dict[bytes, str] = {}  # the spans of one trace share its id
    for rs in request.resource_spans:
        resource = _pb_attrs(rs.resource.attributes)
        for ss in rs.scope_spans:
            scope_name = ss.scope.name
            for s in ss.spans:
                received += 1
                trace_id = s.trace_id
                span_id = s.span_id
                if len(trace_id) != 16 or trace_id == _ZERO_TRACE:
                    invalid.append("trace_id must be 16 bytes and not all zero")
                    continue
                if len(span_id) != 8 or span_id == _ZERO_SPAN:
                    invalid.append("span_id must be 8 bytes and not all zero")
                    continue
                trace = trace_hex.get(trace_id)
                if trace is None:
                    trace = trace_hex[trace_id] = trace_id.hex()
                parent = s.parent_span_id
                status = s.status
                events = s.events
                append(
                    SpanView(
                        trace,
                        span_id.hex(),
                        parent.hex() if len(parent) == 8 and parent != _ZERO_SPAN else "",
                        s.name,
                        s.kind,
                        s.start_time_unix_nano,
                        s.end_time_unix_nano,
                        status.code,
                        status.message,
                        _pb_span_attrs(s.attributes),
                        resource,
                        scope_name,
                        [Event(e.name, e.time_unix_nano, _pb_attrs(e.attributes)) for e in events]
                        if events
                        else [],
                    )
                )
    return DecodedExport(spans, received, invalid)


# --- OTLP/JSON -------------------------------------------------------------------------------------


def _json_int(value: Any, what: str) -> int:
    if isinstance(value, bool):
        raise MalformedExport(f"{what} must be an integer, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.lstrip("-").isdigit():
        return int(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    raise MalformedExport(f"{what} must be an integer (or a decimal string), got {value!r}")


def _json_value(value: Any) -> Any:
    if not isinstance(value, dict):
        return None
    if "stringValue" in value:
        return value["stringValue"]
    if "intValue" in value:
        return _json_int(value["intValue"], "intValue")
    if "doubleValue" in value:
        raw = value["doubleValue"]
        return float(raw) if isinstance(raw, int | float | str) and not isinstance(raw, bool) else None
    if "boolValue" in value:
        return bool(value["boolValue"])
    if "arrayValue" in value:
        return [_json_value(v) for v in (value["arrayValue"] or {}).get("values") or []]
    if "kvlistValue" in value:
        return _json_attrs((value["kvlistValue"] or {}).get("values"))
    if "bytesValue" in value:
        try:
            return base64.b64decode(value["bytesValue"])
        except (binascii.Error, TypeError):
            return None
    return None


def _json_attrs(kvs: Any, *, span: bool = False) -> dict[str, Any]:
    if not kvs:
        return {}
    if not isinstance(kvs, list):
        raise MalformedExport("attributes must be a list of {key, value} objects")
    out: dict[str, Any] = {}
    for kv in kvs:
        if isinstance(kv, dict):
            key = kv.get("key")
            if isinstance(key, str) and (not span or wanted(key)):
                out[key] = _json_value(kv.get("value"))
    return out


def _json_enum(value: Any, names: dict[str, int], what: str) -> int:
    if value is None:
        return 0
    if isinstance(value, str) and value in names:
        return names[value]
    return _json_int(value, what)


def _hex_id(value: Any, size: int) -> str | None:
    if not isinstance(value, str) or len(value) != size * 2:
        return None
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        return None
    return value.lower() if any(raw) else None


def _objects(container: Any, key: str, where: str) -> Iterator[dict[str, Any]]:
    items = container.get(key) if isinstance(container, dict) else None
    if items is None:
        return
    if not isinstance(items, list):
        raise MalformedExport(f"{where}.{key} must be a list")
    for item in items:
        if not isinstance(item, dict):
            raise MalformedExport(f"every entry of {where}.{key} must be an object")
        yield item


def decode_json(body: bytes) -> DecodedExport:
    try:
        doc = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MalformedExport(f"the body is not valid JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise MalformedExport("an OTLP/JSON export must be a JSON object with a resourceSpans list")
    spans: list[SpanView] = []
    invalid: list[str] = []
    received = 0
    for rs in _objects(doc, "resourceSpans", "request"):
        resource = _json_attrs((rs.get("resource") or {}).get("attributes"))
        for ss in _objects(rs, "scopeSpans", "resourceSpans[]"):
            scope = ss.get("scope") or {}
            scope_name = scope.get("name") if isinstance(scope, dict) else ""
            for s in _objects(ss, "spans", "scopeSpans[]"):
                received += 1
                trace_id = _hex_id(s.get("traceId"), 16)
                span_id = _hex_id(s.get("spanId"), 8)
                if trace_id is None:
                    invalid.append("traceId must be 32 hex digits (OTLP/JSON ids are hex, not base64)")
                    continue
                if span_id is None:
                    invalid.append("spanId must be 16 hex digits (OTLP/JSON ids are hex, not base64)")
                    continue
                status = s.get("status") or {}
                spans.append(
                    SpanView(
                        trace_id=trace_id,
                        span_id=span_id,
                        parent_span_id=_hex_id(s.get("parentSpanId"), 8) or "",
                        name=str(s.get("name") or ""),
                        kind=_json_enum(s.get("kind"), _KIND_NAMES, "kind"),
                        start_ns=_json_int(s.get("startTimeUnixNano", 0), "startTimeUnixNano"),
                        end_ns=_json_int(s.get("endTimeUnixNano", 0), "endTimeUnixNano"),
                        status_code=_json_enum(status.get("code"), _STATUS_NAMES, "status.code"),
                        status_message=str(status.get("message") or ""),
                        attrs=_json_attrs(s.get("attributes"), span=True),
                        resource=resource,
                        scope_name=str(scope_name or ""),
                        events=[
                            Event(
                                str(e.get("name") or ""),
                                _json_int(e.get("timeUnixNano", 0), "timeUnixNano"),
                                _json_attrs(e.get("attributes")),
                            )
                            for e in _objects(s, "events", "spans[]")
                        ],
                    )
                )
    return DecodedExport(spans, received, invalid)


def decode(body: bytes, content_type: str) -> DecodedExport:
    if content_type == PROTOBUF:
        return decode_protobuf(body)
    return decode_json(body)


# --- responses -------------------------------------------------------------------------------------


def export_response(content_type: str, rejected: int = 0, message: str = "") -> bytes:
    """An ExportTraceServiceResponse, with partial_success only when something was rejected or noted."""
    if content_type == JSON:
        if not rejected and not message:
            return b"{}"
        return json.dumps(
            {"partialSuccess": {"rejectedSpans": str(rejected), "errorMessage": message}}
        ).encode()
    response = trace_service_pb2.ExportTraceServiceResponse()
    if rejected or message:
        response.partial_success.rejected_spans = rejected
        response.partial_success.error_message = message
    return response.SerializeToString()


def status_body(content_type: str, grpc_code: int, message: str) -> bytes:
    """A google.rpc.Status body, as OTLP/HTTP requires for every 4xx and 5xx answer."""
    if content_type == PROTOBUF:
        return status_pb2.Status(code=grpc_code, message=message).SerializeToString()
    return json.dumps({"code": grpc_code, "message": message}).encode()
