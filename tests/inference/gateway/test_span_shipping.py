"""The gateway's own span encoding and shipping: the bytes are the OTLP messages the official protobuf
classes and the collector's readers decode, and a collector that cannot take them now loses none.

The collector's failures are played by a small HTTP server that answers as the collector does when its
database is down (503 with `Retry-After`) or a key is wrong (401); the end-to-end path through the real
collector is `test_spans.py`."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from collector.otlp import decode_protobuf, decode_protobuf_message
from inference.gateway.spans import SpanShipper, encode_span, export_request

ATTRIBUTES = {
    "gen_ai.request.model": "gpt-4o-mini",
    "gen_ai.usage.input_tokens": 11,
    "costline.cache.tokens_saved": None,  # left out
    "costline.temperature": 0.25,
    "costline.streamed": False,
    "costline.offset": -3,
    "gen_ai.response.finish_reasons": ["stop"],
    "costline.tags": ["a", "b"],
}


def one_span(error: str | None = None, span_id: int = 0xA1B2C3D4E5F60718) -> bytes:
    return encode_span(
        trace_id=0x0123456789ABCDEF0123456789ABCDEF,
        span_id=span_id,
        name="chat gpt-4o-mini",
        start_ns=1_780_000_000_000_000_000,
        end_ns=1_780_000_000_250_000_000,
        attributes=ATTRIBUTES,
        error=error,
    )


def test_an_encoded_span_reads_back_with_the_official_protobuf_classes() -> None:
    body = export_request({"service.name": "costline-gateway"}, "costline.gateway", [one_span("timeout")])

    request = ExportTraceServiceRequest.FromString(body)

    (resource_spans,) = request.resource_spans
    assert [(a.key, a.value.string_value) for a in resource_spans.resource.attributes] == [
        ("service.name", "costline-gateway")
    ]
    (scope_spans,) = resource_spans.scope_spans
    assert scope_spans.scope.name == "costline.gateway"
    (span,) = scope_spans.spans
    assert span.trace_id.hex() == "0123456789abcdef0123456789abcdef"
    assert span.span_id.hex() == "a1b2c3d4e5f60718"
    assert (span.name, span.kind) == ("chat gpt-4o-mini", 3)  # SPAN_KIND_CLIENT
    assert (span.start_time_unix_nano, span.end_time_unix_nano) == (
        1_780_000_000_000_000_000,
        1_780_000_000_250_000_000,
    )
    values = {a.key: a.value for a in span.attributes}
    assert "costline.cache.tokens_saved" not in values
    assert values["gen_ai.request.model"].string_value == "gpt-4o-mini"
    assert values["gen_ai.usage.input_tokens"].int_value == 11
    assert values["costline.offset"].int_value == -3
    assert values["costline.temperature"].double_value == 0.25
    assert values["costline.streamed"].WhichOneof("value") == "bool_value"
    assert [v.string_value for v in values["costline.tags"].array_value.values] == ["a", "b"]
    assert values["error.type"].string_value == "timeout"
    assert (span.status.code, span.status.message) == (2, "timeout")  # STATUS_CODE_ERROR


def test_equal_values_of_different_types_keep_their_own_type_from_span_to_span() -> None:
    # Encoded attributes are remembered; True == 1 == 1.0 in Python, but not on the wire.
    spans = [
        encode_span(trace_id=1, span_id=1, name="n", start_ns=1, end_ns=2, attributes={"costline.x": value})
        for value in (True, 1, 1.0, "1")
    ]

    request = ExportTraceServiceRequest.FromString(export_request({}, "s", spans))

    kinds = [
        span.attributes[0].value.WhichOneof("value")
        for span in request.resource_spans[0].scope_spans[0].spans
    ]
    assert kinds == ["bool_value", "int_value", "double_value", "string_value"]


def test_the_collectors_wire_reader_and_message_reader_read_the_same_span() -> None:
    body = export_request(
        {"service.name": "costline-gateway"}, "costline.gateway", [one_span(), one_span(span_id=7)]
    )

    wire, message = decode_protobuf(body), decode_protobuf_message(body)

    assert wire.spans == message.spans
    assert [s.span_id for s in wire.spans] == ["a1b2c3d4e5f60718", "0000000000000007"]
    assert wire.spans[0].attrs["gen_ai.usage.input_tokens"] == 11
    assert wire.spans[0].resource == {"service.name": "costline-gateway"}
    assert wire.invalid == []


class Collector:
    """Answers each POST with the next of `answers` (status, headers), then 200; keeps what it was sent."""

    def __init__(self, answers: list[tuple[int, dict[str, str]]], *, hold_first: bool = False) -> None:
        self.answers = answers
        self.received: list[tuple[str, bytes, int]] = []  # authorization, body, status answered
        # hold_first: the first POST is answered only once `release` is set (`arrived` says it came).
        self.arrived, self.release = threading.Event(), threading.Event()
        if not hold_first:
            self.release.set()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.arrived.set()
                outer.release.wait(timeout=30)
                status, headers = outer.answers.pop(0) if outer.answers else (200, {})
                outer.received.append((self.headers["Authorization"], body, status))
                reply = b'{"error": "the database is unavailable"}' if status != 200 else b""
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def spans_from(self, authorization: str) -> list[str]:
        return [
            s.span_id
            for auth, body, status in self.received
            if auth == authorization and status == 200
            for s in decode_protobuf(body).spans
        ]


@pytest.fixture
def counts() -> dict[str, int]:
    return {"exported": 0, "dropped": 0}


@pytest.fixture
def shipper(counts: dict[str, int]) -> Iterator[Callable[..., SpanShipper]]:
    """Makes shippers that count into `counts`, and shuts them down after the test."""
    made: list[SpanShipper] = []

    def count(kind: str) -> Callable[[int], None]:
        return lambda n: counts.__setitem__(kind, counts[kind] + n)

    def make(url: str, **options: float) -> SpanShipper:
        made.append(
            SpanShipper(
                url,
                {"service.name": "costline-gateway"},
                "costline.gateway",
                delay_s=options.pop("delay_s", 60.0),  # nothing goes but by force_flush unless a test says so
                on_exported=count("exported"),
                on_dropped=count("dropped"),
                **options,  # type: ignore[arg-type]
            )
        )
        return made[-1]

    yield make
    for s in made:
        s.shutdown(timeout_s=1)


def test_each_key_gets_its_own_batches_with_its_own_credential(counts, shipper) -> None:
    collector = Collector([])
    s = shipper(collector.url)
    for n in range(1, 6):
        s.add("key-a" if n % 2 else "key-b", one_span(span_id=n))

    assert s.force_flush(5)

    assert collector.spans_from("Bearer key-a") == [f"{n:016x}" for n in (1, 3, 5)]
    assert collector.spans_from("Bearer key-b") == [f"{n:016x}" for n in (2, 4)]
    assert counts == {"exported": 5, "dropped": 0}


def test_a_collector_that_answers_503_gets_the_same_spans_again_after_its_retry_after(
    counts, shipper
) -> None:
    collector = Collector([(503, {"Retry-After": "0.3"}), (429, {"Retry-After": "0.2"})])
    s = shipper(collector.url, delay_s=0.05)
    for n in range(3):
        s.add("key-a", one_span(span_id=n + 1))

    assert s.force_flush(10)

    statuses = [status for _, _, status in collector.received]
    assert statuses == [503, 429, 200]
    bodies = {body for _, body, _ in collector.received}
    assert len(bodies) == 1  # the very same batch each time, so the collector stores it once
    assert collector.spans_from("Bearer key-a") == [
        "0000000000000001",
        "0000000000000002",
        "0000000000000003",
    ]
    assert counts == {"exported": 3, "dropped": 0}


def test_a_collector_that_is_down_keeps_the_spans_queued_until_it_is_back(counts, shipper) -> None:
    collector = Collector([])
    port = collector.server.server_address[1]
    collector.server.shutdown()
    collector.server.server_close()  # nothing listens on the port now
    s = shipper(f"http://127.0.0.1:{port}")
    s.add("key-a", one_span())

    assert not s.force_flush(1.0)
    assert (s.queued, counts["dropped"]) == (1, 0)


def test_a_refused_batch_is_dropped_and_counted_not_retried_for_ever(counts, shipper) -> None:
    collector = Collector([(401, {})])
    s = shipper(collector.url)
    s.add("revoked-key", one_span())
    s.add("revoked-key", one_span(span_id=2))

    assert s.force_flush(5)

    assert [status for _, _, status in collector.received] == [401]
    assert counts == {"exported": 0, "dropped": 2}


def test_spans_beyond_the_queue_bound_are_dropped_and_counted(counts, shipper) -> None:
    collector = Collector([])
    s = shipper(collector.url, max_queued=3)
    for n in range(5):
        s.add("key-a", one_span(span_id=n + 1))

    assert s.force_flush(5)

    assert collector.spans_from("Bearer key-a") == [
        "0000000000000001",
        "0000000000000002",
        "0000000000000003",
    ]
    assert counts == {"exported": 3, "dropped": 2}


def test_a_full_batch_goes_without_waiting_for_the_delay(counts, shipper) -> None:
    collector = Collector([])
    s = shipper(collector.url, batch_size=4)
    for n in range(4):
        s.add("key-a", one_span(span_id=n + 1))

    for _ in range(50):
        if counts["exported"] == 4:
            break
        time.sleep(0.1)
    assert counts["exported"] == 4  # the delay is 60 s: the batch size sent it


def test_spans_that_arrive_during_a_post_wait_for_the_next_round(counts, shipper) -> None:
    # Draining until nothing was left turned every post's time into a window for the next one: at a
    # few hundred calls a second, 5-span posts that cost the collector ten times the CPU per span.
    collector = Collector([], hold_first=True)
    s = shipper(collector.url)  # the delay is 60 s and a batch 128 spans: no round starts by itself
    s.add("key-a", one_span(span_id=1))
    round_ = threading.Thread(target=s._ship)
    round_.start()
    assert collector.arrived.wait(timeout=10)
    for n in range(5):
        s.add("key-a", one_span(span_id=n + 2))  # while the first post is in flight

    collector.release.set()
    round_.join(timeout=10)

    assert [len(decode_protobuf(body).spans) for _, body, _ in collector.received] == [1]
    assert s.queued == 5
    assert s.force_flush(timeout_s=10)
    assert [len(decode_protobuf(body).spans) for _, body, _ in collector.received] == [1, 5]
    assert counts == {"exported": 6, "dropped": 0}


def test_a_bad_otlp_url_is_refused_with_what_to_write() -> None:
    with pytest.raises(ValueError, match=r"http\(s\)://host\[:port\]"):
        SpanShipper("collector:4318", {}, "costline.gateway")
