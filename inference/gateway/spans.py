"""The gateway's spans as OTLP protobuf bytes, and the thread that ships them to the collector.

The OTel SDK cost the gateway ~150 µs of Python per call: ~45 µs to make its span object and ~105 µs
for its exporter to encode it. The exporter's thread encoded 512-span batches at once, 55 ms of holding
the GIL, and the event loop stalled meanwhile: at 500 calls/s over 50 connections the gateway's p99
was 80–110 ms with its spans exported and 5.6 ms without (`bench/gateway.py`). Here a finished call is
encoded once, as the protobuf `Span` it is (`encode_span`, a few µs), and the shipper's thread only
joins bytes and posts them.

Wire format: https://protobuf.dev/programming-guides/encoding/; field numbers from
opentelemetry/proto/{collector/trace/v1/trace_service,trace/v1/trace,common/v1/common}.proto, the
ones `collector/wire.py` reads.
"""

from __future__ import annotations

import functools
import http.client
import logging
import struct
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

log = logging.getLogger(__name__)

_FIXED64 = struct.Struct("<Q")
_DOUBLE = struct.Struct("<d")
_SPAN_KIND_CLIENT = 3
_STATUS_ERROR = 2
# Answers worth trying again (the collector's own retryable answers, and a proxy's).
_RETRYABLE = frozenset({408, 429, 500, 502, 503, 504})


_BYTE = [bytes((i,)) for i in range(256)]
_SCALARS = frozenset({str, int, bool, float})  # hashable: their encoded attributes are remembered


def _varint(n: int) -> bytes:
    if n < 0x80:
        return _BYTE[n]
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited field: tag, length, payload."""
    size = len(payload)
    return _BYTE[number << 3 | 2] + (_BYTE[size] if size < 0x80 else _varint(size)) + payload


def _any_value(value: Any) -> bytes:
    if isinstance(value, str):  # most attributes
        return _field(1, value.encode())
    if isinstance(value, bool):  # before int: a bool is an int
        return b"\x10\x01" if value else b"\x10\x00"
    if isinstance(value, int):
        return b"\x18" + _varint(value & 0xFFFF_FFFF_FFFF_FFFF)  # int64, two's complement
    if isinstance(value, float):
        return b"\x21" + _DOUBLE.pack(value)
    if isinstance(value, (list, tuple)):
        return _field(5, b"".join([_field(1, _any_value(item)) for item in value]))
    raise TypeError(f"a span attribute cannot be {type(value).__name__}: {value!r}")


@functools.lru_cache(maxsize=1024)
def _key(key: str) -> bytes:
    """The KeyValue.key field of an attribute key (the gateway's keys are few: each is encoded once)."""
    return _field(1, key.encode())


def _key_value(key: str, value: Any) -> bytes:
    return _key(key) + _field(2, _any_value(value))


@functools.lru_cache(maxsize=4096, typed=True)  # typed: True, 1 and 1.0 encode apart
def _attribute(key: str, value: str | int | float) -> bytes:
    """A span's attribute field (a KeyValue), remembered: most of a call's attributes (its operation,
    model, project, upstream, budget decision, ...) are those of the calls before it. The rest (ids,
    hashes) pass through and are the first to be forgotten."""
    return _field(9, _key_value(key, value))


def encode_span(
    *,
    trace_id: int,
    span_id: int,
    name: str,
    start_ns: int,
    end_ns: int,
    attributes: Mapping[str, Any],
    error: str | None = None,
) -> bytes:
    """One client span as an OTLP `Span` message; attributes whose value is None are left out."""
    parts = [
        _field(1, trace_id.to_bytes(16, "big")),
        _field(2, span_id.to_bytes(8, "big")),
        _field(5, name.encode()),
        b"\x30" + _varint(_SPAN_KIND_CLIENT),
        b"\x39" + _FIXED64.pack(start_ns),
        b"\x41" + _FIXED64.pack(end_ns),
    ]
    parts += [
        _attribute(k, v) if type(v) in _SCALARS else _field(9, _key_value(k, v))
        for k, v in attributes.items()
        if v is not None
    ]
    if error:
        parts.append(_field(9, _key_value("error.type", error)))
        parts.append(_field(15, _field(2, error.encode()) + b"\x18" + _varint(_STATUS_ERROR)))
    return b"".join(parts)


def export_request(resource: Mapping[str, Any], scope: str, spans: Sequence[bytes]) -> bytes:
    """An `ExportTraceServiceRequest` of encoded spans from one resource and instrumentation scope."""
    resource_part = _field(1, b"".join(_field(1, _key_value(k, v)) for k, v in resource.items()))
    scope_spans = _field(1, _field(1, scope.encode())) + b"".join(_field(2, span) for span in spans)
    return _field(1, resource_part + _field(2, scope_spans))


class SpanShipper:
    """Batches encoded spans per gateway key and posts them to the collector's OTLP/HTTP endpoint with
    that key as the credential, from a thread of its own.

    A batch goes when `batch_size` spans are waiting or `delay_s` after the last one went. An answer
    that may succeed later (a connection error, 429, 503, ...) keeps the spans and retries after the
    answer's `Retry-After`, else after a backoff that doubles up to 30 s; an answer that cannot (400,
    401, 413) drops the batch with an error in the log. Spans beyond `max_queued` are dropped and
    counted (`on_dropped`), never queued without bound.
    """

    def __init__(
        self,
        otlp_url: str,
        resource: Mapping[str, Any],
        scope: str,
        *,
        batch_size: int = 128,
        delay_s: float = 0.2,
        max_queued: int = 50_000,
        timeout_s: float = 10.0,
        on_exported: Callable[[int], None] = lambda n: None,
        on_dropped: Callable[[int], None] = lambda n: None,
    ) -> None:
        parts = urlsplit(otlp_url.rstrip("/") + "/v1/traces")
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"the gateway's OTLP URL must be http(s)://host[:port], got {otlp_url!r}")
        self._https = parts.scheme == "https"
        self._host, self._port, self._path = parts.hostname, parts.port, parts.path
        self._resource, self._scope = dict(resource), scope
        self.batch_size = batch_size
        self.delay_s = delay_s
        self.max_queued = max_queued
        self.timeout_s = timeout_s
        self._on_exported, self._on_dropped = on_exported, on_dropped
        self._pending: dict[str, list[bytes]] = {}  # gateway key → its encoded spans, oldest first
        self._queued = 0
        self._lock = threading.Lock()  # guards _pending and _queued
        self._shipping = threading.Lock()  # one shipment at a time (the thread, or a flush)
        self._wake = threading.Event()
        self._stopping = False
        self._retry_at = 0.0  # monotonic time before which nothing is posted after a failure
        self._backoff_s = 0.0
        self._connection: http.client.HTTPConnection | None = None
        self._thread = threading.Thread(target=self._run, name="costline-span-shipper", daemon=True)
        self._thread.start()

    def add(self, secret: str, span: bytes) -> None:
        """Queue one encoded span, to be exported with the gateway key `secret`."""
        with self._lock:
            full = self._queued >= self.max_queued
            if not full:
                self._pending.setdefault(secret, []).append(span)
                self._queued += 1
                if self._queued >= self.batch_size:
                    self._wake.set()
        if full:
            self._on_dropped(1)
            log.error("dropping a gateway span: %d are waiting for the collector already", self.max_queued)

    @property
    def queued(self) -> int:
        return self._queued

    def force_flush(self, timeout_s: float = 30.0) -> bool:
        """Post everything queued now (after a failed post, once its retry time has come); True when
        nothing is left waiting."""
        deadline = time.monotonic() + timeout_s
        while True:
            self._ship()
            if self._queued == 0:
                return True
            wait = max(0.01, self._retry_at - time.monotonic())
            if time.monotonic() + wait > deadline:
                return False
            time.sleep(wait)

    def shutdown(self, timeout_s: float = 30.0) -> None:
        """Stop the thread after posting what is queued (for at most `timeout_s`)."""
        self._stopping = True
        self._wake.set()
        self._thread.join(timeout=5)
        if not self.force_flush(timeout_s):
            self._on_dropped(self._queued)
            log.error("dropping %d gateway spans at shutdown: the collector did not take them", self._queued)
        if self._connection is not None:
            self._connection.close()

    def _run(self) -> None:
        while not self._stopping:
            self._wake.wait(self.delay_s)
            self._wake.clear()
            self._ship()

    def _ship(self) -> None:
        """Post what was queued when this round began. Spans that arrive meanwhile wait for the next
        round (`delay_s` on, or at once when a full batch is queued): draining until nothing is left
        made each post's few milliseconds a window for the next, and the batches a stream of 5-span
        posts that cost the collector ten times the CPU per span."""
        with self._shipping:
            with self._lock:
                due = {secret: len(spans) for secret, spans in self._pending.items()}
            for secret, count in due.items():
                while count > 0:
                    if time.monotonic() < self._retry_at:
                        return
                    with self._lock:
                        spans = self._pending[secret][: min(count, self.batch_size)]
                    outcome = self._post(secret, export_request(self._resource, self._scope, spans))
                    if outcome == "retry":
                        return  # the spans stay queued, first in line
                    with self._lock:
                        rest = self._pending[secret][len(spans) :]
                        if rest:
                            self._pending[secret] = rest
                        else:
                            del self._pending[secret]
                        self._queued -= len(spans)
                    count -= len(spans)
                    (self._on_exported if outcome == "ok" else self._on_dropped)(len(spans))

    def _post(self, secret: str, body: bytes) -> str:
        """Post one batch; the outcome is "ok", "retry" (the spans stay queued) or "drop"."""
        headers = {
            "Content-Type": "application/x-protobuf",
            "Authorization": f"Bearer {secret}",
            "Content-Length": str(len(body)),
        }
        for attempt in (1, 2):
            reused = self._connection is not None
            try:
                connection = self._connect()
                connection.request("POST", self._path, body=body, headers=headers)
                answer = connection.getresponse()
                detail = answer.read()
                break
            except (OSError, http.client.HTTPException) as exc:
                self._close()
                if not (reused and attempt == 1):  # else the collector had closed an idle connection
                    return self._later(None, f"cannot reach the collector: {exc}")
        if 200 <= answer.status < 300:
            self._backoff_s = 0.0
            return "ok"
        if answer.status in _RETRYABLE:
            return self._later(answer.getheader("Retry-After"), f"the collector answered {answer.status}")
        log.error(
            "dropping a batch of gateway spans: the collector refused it with %d: %s",
            answer.status,
            detail[:300].decode(errors="replace"),
        )
        return "drop"

    def _later(self, retry_after: str | None, why: str) -> str:
        try:
            wait = float(retry_after) if retry_after else 0.0
        except ValueError:
            wait = 0.0
        self._backoff_s = min(30.0, max(0.5, self._backoff_s * 2))
        wait = wait or self._backoff_s
        self._retry_at = time.monotonic() + wait
        log.warning("%s; the gateway's spans wait %.1f s and are sent again", why, wait)
        return "retry"

    def _connect(self) -> http.client.HTTPConnection:
        if self._connection is None:
            kind = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
            self._connection = kind(self._host, self._port, timeout=self.timeout_s)
        return self._connection

    def _close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None
