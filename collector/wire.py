"""A direct reader of OTLP trace exports in protobuf wire format.

Reading a parsed protobuf message field by field from Python creates a wrapper object for every span,
attribute and value; for 1,000 spans that costs ~20 ms, a third of the collector's time. This reader
walks the bytes of an `ExportTraceServiceRequest` once and builds only what the normaliser reads: span
views with the attributes `collector.attributes.wanted` keeps. Compiled with mypyc (see
`collector/compiled.py`) it reads the same export in a few milliseconds; interpreted, it is slower than
the message-based reader, which therefore serves when the compiled modules are absent.
`tests/collector/test_wire.py` checks both readers agree on every captured body.

Wire format: https://protobuf.dev/programming-guides/encoding/. Field numbers are those of
opentelemetry/proto/{collector/trace/v1/trace_service,trace/v1/trace,common/v1/common}.proto.
The loops read one-byte tags and lengths inline (almost all of them are) and fall back to `_varint`.
"""

from __future__ import annotations

import struct
from typing import Any

from collector.attributes import wanted
from collector.otlp import DecodedExport, Event, MalformedExport, SpanView

_DOUBLE = struct.Struct("<d")
_FIXED64 = struct.Struct("<Q")

VARINT = 0
I64 = 1
LEN = 2
I32 = 5

# Tags (field number << 3 | wire type) of the fields read here.
TAG_RESOURCE_SPANS = 1 << 3 | LEN
TAG_RESOURCE = 1 << 3 | LEN
TAG_SCOPE_SPANS = 2 << 3 | LEN
TAG_SCOPE = 1 << 3 | LEN
TAG_SPANS = 2 << 3 | LEN
TAG_NAME = 1 << 3 | LEN  # InstrumentationScope.name, KeyValue.key
TAG_ATTRIBUTE = 1 << 3 | LEN  # Resource.attributes, KeyValueList.values, ArrayValue.values
TAG_KV_VALUE = 2 << 3 | LEN
TAG_SPAN_TRACE_ID = 1 << 3 | LEN
TAG_SPAN_SPAN_ID = 2 << 3 | LEN
TAG_SPAN_PARENT = 4 << 3 | LEN
TAG_SPAN_NAME = 5 << 3 | LEN
TAG_SPAN_KIND = 6 << 3 | VARINT
TAG_SPAN_START = 7 << 3 | I64
TAG_SPAN_END = 8 << 3 | I64
TAG_SPAN_ATTRIBUTE = 9 << 3 | LEN
TAG_SPAN_EVENT = 11 << 3 | LEN
TAG_SPAN_STATUS = 15 << 3 | LEN
TAG_STATUS_MESSAGE = 2 << 3 | LEN
TAG_STATUS_CODE = 3 << 3 | VARINT
TAG_EVENT_TIME = 1 << 3 | I64
TAG_EVENT_NAME = 2 << 3 | LEN
TAG_EVENT_ATTRIBUTE = 3 << 3 | LEN

ZERO_TRACE = bytes(16)
ZERO_SPAN = bytes(8)


def _varint(data: bytes, pos: int, end: int) -> tuple[int, int]:
    """The varint at `pos` and the position after it."""
    result = 0
    shift = 0
    while True:
        if pos >= end:
            raise MalformedExport("truncated varint in the protobuf body")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise MalformedExport("varint longer than 10 bytes in the protobuf body")


def _skip(data: bytes, pos: int, end: int, wire_type: int) -> int:
    if wire_type == VARINT:
        pos = _varint(data, pos, end)[1]
    elif wire_type == I64:
        pos += 8
    elif wire_type == LEN:
        size, pos = _varint(data, pos, end)
        pos += size
    elif wire_type == I32:
        pos += 4
    else:
        raise MalformedExport(f"unsupported protobuf wire type {wire_type}")
    if pos > end:
        raise MalformedExport("a field runs past the end of its message")
    return pos


def _length(data: bytes, pos: int, end: int) -> tuple[int, int]:
    """The length prefix at `pos`: (end of the field's bytes, start of them)."""
    size = data[pos] if pos < end else 0x80
    if size < 0x80:
        pos += 1
    else:
        size, pos = _varint(data, pos, end)
    stop = pos + size
    if stop > end:
        raise MalformedExport("a length-delimited field runs past the end of its message")
    return stop, pos


def _text(data: bytes, start: int, end: int) -> str:
    try:
        return data[start:end].decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedExport("a string field is not valid UTF-8") from None


def _fixed64(data: bytes, pos: int, end: int) -> int:
    if pos + 8 > end:
        raise MalformedExport("truncated fixed64 field")
    return int(_FIXED64.unpack_from(data, pos)[0])


def _any_value(data: bytes, pos: int, end: int) -> Any:
    value: Any = None
    while pos < end:
        tag = data[pos]
        if tag < 0x80:
            pos += 1
        else:
            tag, pos = _varint(data, pos, end)
        if tag == 0x0A:  # 1: string_value
            stop, pos = _length(data, pos, end)
            value = _text(data, pos, stop)
            pos = stop
        elif tag == 0x18:  # 3: int_value
            raw, pos = _varint(data, pos, end)
            value = raw - (1 << 64) if raw >= 1 << 63 else raw
        elif tag == 0x21:  # 4: double_value
            if pos + 8 > end:
                raise MalformedExport("truncated double value")
            value = float(_DOUBLE.unpack_from(data, pos)[0])
            pos += 8
        elif tag == 0x10:  # 2: bool_value
            raw, pos = _varint(data, pos, end)
            value = raw != 0
        elif tag == 0x2A:  # 5: array_value
            stop, pos = _length(data, pos, end)
            value = _array(data, pos, stop)
            pos = stop
        elif tag == 0x32:  # 6: kvlist_value
            stop, pos = _length(data, pos, end)
            value = _key_values(data, pos, stop)
            pos = stop
        elif tag == 0x3A:  # 7: bytes_value
            stop, pos = _length(data, pos, end)
            value = data[pos:stop]
            pos = stop
        else:
            pos = _skip(data, pos, end, tag & 7)
    return value


def _array(data: bytes, pos: int, end: int) -> list[Any]:
    values: list[Any] = []
    while pos < end:
        tag = data[pos]
        if tag < 0x80:
            pos += 1
        else:
            tag, pos = _varint(data, pos, end)
        if tag == TAG_ATTRIBUTE:
            stop, pos = _length(data, pos, end)
            values.append(_any_value(data, pos, stop))
            pos = stop
        else:
            pos = _skip(data, pos, end, tag & 7)
    return values


def _key_values(data: bytes, pos: int, end: int) -> dict[str, Any]:
    """The KeyValue elements of a KeyValueList (all kept)."""
    out: dict[str, Any] = {}
    while pos < end:
        tag = data[pos]
        if tag < 0x80:
            pos += 1
        else:
            tag, pos = _varint(data, pos, end)
        if tag == TAG_ATTRIBUTE:
            stop, pos = _length(data, pos, end)
            _key_value(data, pos, stop, out, False)
            pos = stop
        else:
            pos = _skip(data, pos, end, tag & 7)
    return out


# Attribute names as they arrive (bytes) → the name as a str if the normaliser reads it, else "".
# Names repeat in every span: this skips decoding (and hashing a new str for) each one, and hands
# out one shared str per name, whose hash is already known when it is inserted into a span's dict.
_span_keys: dict[bytes, str] = {}


def _span_key(raw: bytes) -> str:
    key = _span_keys.get(raw)
    if key is None:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise MalformedExport("a string field is not valid UTF-8") from None
        key = text if wanted(text) else ""
        if len(_span_keys) > 100_000:  # attribute names are few in practice; memory is bounded always
            _span_keys.clear()
        _span_keys[raw] = key
    return key


def _key_value(data: bytes, pos: int, end: int, out: dict[str, Any], filtered: bool) -> None:
    """One KeyValue into `out`; with `filtered`, only when the normaliser reads that key."""
    key = ""
    key_start = -1
    key_end = -1
    value_start = -1
    value_end = -1
    while pos < end:
        tag = data[pos]
        if tag < 0x80:
            pos += 1
        else:
            tag, pos = _varint(data, pos, end)
        if tag == TAG_NAME:
            key_end, key_start = _length(data, pos, end)
            pos = key_end
        elif tag == TAG_KV_VALUE:
            value_end, value_start = _length(data, pos, end)
            pos = value_end
        else:
            pos = _skip(data, pos, end, tag & 7)
    if filtered:
        key = _span_key(data[key_start:key_end]) if key_start >= 0 else ""
        if not key:
            return
    elif key_start >= 0:
        key = _text(data, key_start, key_end)
    out[key] = _any_value(data, value_start, value_end) if value_start >= 0 else None


def _status(data: bytes, pos: int, end: int) -> tuple[int, str]:
    code = 0
    message = ""
    while pos < end:
        tag = data[pos]
        if tag < 0x80:
            pos += 1
        else:
            tag, pos = _varint(data, pos, end)
        if tag == TAG_STATUS_MESSAGE:
            stop, pos = _length(data, pos, end)
            message = _text(data, pos, stop)
            pos = stop
        elif tag == TAG_STATUS_CODE:
            code, pos = _varint(data, pos, end)
        else:
            pos = _skip(data, pos, end, tag & 7)
    return code, message


def _event(data: bytes, pos: int, end: int) -> Event:
    time_ns = 0
    name = ""
    attrs: dict[str, Any] = {}
    while pos < end:
        tag = data[pos]
        if tag < 0x80:
            pos += 1
        else:
            tag, pos = _varint(data, pos, end)
        if tag == TAG_EVENT_TIME:
            time_ns = _fixed64(data, pos, end)
            pos += 8
        elif tag == TAG_EVENT_NAME:
            stop, pos = _length(data, pos, end)
            name = _text(data, pos, stop)
            pos = stop
        elif tag == TAG_EVENT_ATTRIBUTE:
            stop, pos = _length(data, pos, end)
            _key_value(data, pos, stop, attrs, False)
            pos = stop
        else:
            pos = _skip(data, pos, end, tag & 7)
    return Event(name, time_ns, attrs)


def _span(
    data: bytes,
    pos: int,
    end: int,
    resource: dict[str, Any],
    scope_name: str,
    trace_hex: dict[bytes, str],
) -> SpanView | str:
    """A span view, or the reason the span cannot be read."""
    trace_id = b""
    span_id = b""
    parent = b""
    name = ""
    kind = 0
    start_ns = 0
    end_ns = 0
    status_code = 0
    status_message = ""
    attrs: dict[str, Any] = {}
    events: list[Event] = []
    while pos < end:
        tag = data[pos]
        if tag < 0x80:
            pos += 1
        else:
            tag, pos = _varint(data, pos, end)
        if tag == TAG_SPAN_ATTRIBUTE:  # the most frequent field, tested first
            stop, pos = _length(data, pos, end)
            _key_value(data, pos, stop, attrs, True)
            pos = stop
        elif tag == TAG_SPAN_TRACE_ID:
            stop, pos = _length(data, pos, end)
            trace_id = data[pos:stop]
            pos = stop
        elif tag == TAG_SPAN_SPAN_ID:
            stop, pos = _length(data, pos, end)
            span_id = data[pos:stop]
            pos = stop
        elif tag == TAG_SPAN_PARENT:
            stop, pos = _length(data, pos, end)
            parent = data[pos:stop]
            pos = stop
        elif tag == TAG_SPAN_NAME:
            stop, pos = _length(data, pos, end)
            name = _text(data, pos, stop)
            pos = stop
        elif tag == TAG_SPAN_KIND:
            kind, pos = _varint(data, pos, end)
        elif tag == TAG_SPAN_START:
            start_ns = _fixed64(data, pos, end)
            pos += 8
        elif tag == TAG_SPAN_END:
            end_ns = _fixed64(data, pos, end)
            pos += 8
        elif tag == TAG_SPAN_EVENT:
            stop, pos = _length(data, pos, end)
            events.append(_event(data, pos, stop))
            pos = stop
        elif tag == TAG_SPAN_STATUS:
            stop, pos = _length(data, pos, end)
            status_code, status_message = _status(data, pos, stop)
            pos = stop
        else:
            pos = _skip(data, pos, end, tag & 7)
    if len(trace_id) != 16 or trace_id == ZERO_TRACE:
        return "trace_id must be 16 bytes and not all zero"
    if len(span_id) != 8 or span_id == ZERO_SPAN:
        return "span_id must be 8 bytes and not all zero"
    trace = trace_hex.get(trace_id)
    if trace is None:
        trace = trace_id.hex()
        trace_hex[trace_id] = trace
    return SpanView(
        trace,
        span_id.hex(),
        parent.hex() if len(parent) == 8 and parent != ZERO_SPAN else "",
        name,
        kind,
        start_ns,
        end_ns,
        status_code,
        status_message,
        attrs,
        resource,
        scope_name,
        events,
    )


def _scope_name(data: bytes, pos: int, end: int) -> str:
    name = ""
    while pos < end:
        tag = data[pos]
        if tag < 0x80:
            pos += 1
        else:
            tag, pos = _varint(data, pos, end)
        if tag == TAG_NAME:
            stop, pos = _length(data, pos, end)
            name = _text(data, pos, stop)
            pos = stop
        else:
            pos = _skip(data, pos, end, tag & 7)
    return name


def _resource(data: bytes, pos: int, end: int) -> dict[str, Any]:
    attrs: dict[str, Any] = {}
    while pos < end:
        tag = data[pos]
        if tag < 0x80:
            pos += 1
        else:
            tag, pos = _varint(data, pos, end)
        if tag == TAG_ATTRIBUTE:
            stop, pos = _length(data, pos, end)
            _key_value(data, pos, stop, attrs, False)
            pos = stop
        else:
            pos = _skip(data, pos, end, tag & 7)
    return attrs


def decode_protobuf_wire(body: bytes) -> DecodedExport:
    """Decode an OTLP/protobuf `ExportTraceServiceRequest` straight from its bytes."""
    data = bytes(body)
    end = len(data)
    spans: list[SpanView] = []
    invalid: list[str] = []
    received = 0
    trace_hex: dict[bytes, str] = {}
    pos = 0
    while pos < end:
        tag, pos = _varint(data, pos, end)
        if tag != TAG_RESOURCE_SPANS:
            pos = _skip(data, pos, end, tag & 7)
            continue
        rs_end, pos = _length(data, pos, end)
        resource: dict[str, Any] = {}
        scope_spans: list[tuple[int, int]] = []
        while pos < rs_end:
            tag, pos = _varint(data, pos, rs_end)
            if tag == TAG_RESOURCE:
                stop, pos = _length(data, pos, rs_end)
                resource = _resource(data, pos, stop)
                pos = stop
            elif tag == TAG_SCOPE_SPANS:  # kept for after the loop: the resource may come later
                stop, pos = _length(data, pos, rs_end)
                scope_spans.append((pos, stop))
                pos = stop
            else:
                pos = _skip(data, pos, rs_end, tag & 7)
        for ss_pos, ss_end in scope_spans:
            scope_name = ""
            span_regions: list[tuple[int, int]] = []
            while ss_pos < ss_end:
                tag, ss_pos = _varint(data, ss_pos, ss_end)
                if tag == TAG_SCOPE:
                    stop, ss_pos = _length(data, ss_pos, ss_end)
                    scope_name = _scope_name(data, ss_pos, stop)
                    ss_pos = stop
                elif tag == TAG_SPANS:
                    stop, ss_pos = _length(data, ss_pos, ss_end)
                    span_regions.append((ss_pos, stop))
                    ss_pos = stop
                else:
                    ss_pos = _skip(data, ss_pos, ss_end, tag & 7)
            for span_pos, span_end in span_regions:
                received += 1
                view = _span(data, span_pos, span_end, resource, scope_name, trace_hex)
                if isinstance(view, str):
                    invalid.append(view)
                else:
                    spans.append(view)
        pos = rs_end
    return DecodedExport(spans, received, invalid)
