"""What the gateway tells about its calls: one OTel GenAI span per call, and Prometheus metrics.

Spans go to the collector over OTLP/HTTP, exported with the caller's own gateway key (the collector
accepts gateway keys as it accepts ingest keys), so each organisation's calls land in that organisation
whichever tenants share a batch. The span carries the GenAI semantic conventions' attributes (the
collector prices it like any other call) and Costline's own:

| attribute | value |
|---|---|
| `costline.cache.hit` | `exact`, `semantic` or `miss` |
| `costline.cache.tokens_saved` | input + output tokens a hit did not spend upstream |
| `costline.budget.decision` | `ok`, `downgrade`, `unchecked` (Redis was unreachable, fail-open) or `none` |
| `costline.upstream` | the upstream/model that answered |
| `costline.gateway_key` | the key's display prefix (never the key) |
| `costline.downgraded_from` | the model asked for, when a budget downgraded the call |
| `costline.prompt.hash`, `.prefix_hash`, `.simhash` | evidence for the advisor (`collector.fingerprint`) |
| `costline.prompt.tokens`, `.prefix_tokens` | the prompt's and its prefix's token lengths (no text is sent) |
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from contextvars import ContextVar
from typing import Any

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

log = logging.getLogger(__name__)

KEY_ATTRIBUTE = "costline.gateway_key"
SCOPE = "costline.gateway"

_PLANNED: ContextVar[tuple[int, int] | None] = ContextVar("costline_gateway_span_ids", default=None)


class _PlannedIds(RandomIdGenerator):
    """The trace and span ids a call chose when it began, used when its span is made at the end.

    The upstream request carried them as its W3C `traceparent`, so vLLM made the gateway's span the parent
    of its own; the collector then stores the call once (the client's span wins, README "Self-hosted
    cost"), not once per process that saw it.
    """

    def generate_trace_id(self) -> int:
        planned = _PLANNED.get()
        return planned[0] if planned else super().generate_trace_id()

    def generate_span_id(self) -> int:
        planned = _PLANNED.get()
        return planned[1] if planned else super().generate_span_id()


class KeyedExporter(SpanExporter):
    """Exports each batch per gateway key, with that key as the OTLP credential."""

    def __init__(self, otlp_url: str) -> None:
        self.endpoint = otlp_url.rstrip("/") + "/v1/traces"
        self._secrets: dict[str, str] = {}
        self._exporters: dict[str, OTLPSpanExporter] = {}
        self._lock = threading.Lock()

    def remember(self, prefix: str, secret: str) -> None:
        """The key of a span's `costline.gateway_key` prefix (set before the span ends)."""
        if self._secrets.get(prefix) != secret:
            with self._lock:
                self._secrets[prefix] = secret
                self._exporters.pop(prefix, None)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        groups: dict[str, list[ReadableSpan]] = {}
        for span in spans:
            prefix = str((span.attributes or {}).get(KEY_ATTRIBUTE, ""))
            groups.setdefault(prefix, []).append(span)
        result = SpanExportResult.SUCCESS
        for prefix, group in groups.items():
            with self._lock:
                secret = self._secrets.get(prefix)
                exporter = self._exporters.get(prefix)
                if exporter is None and secret is not None:
                    exporter = OTLPSpanExporter(
                        endpoint=self.endpoint, headers={"Authorization": f"Bearer {secret}"}, timeout=10
                    )
                    self._exporters[prefix] = exporter
            if exporter is None:
                log.error("dropping %d gateway spans: no key known for prefix %r", len(group), prefix)
                result = SpanExportResult.FAILURE
                continue
            if exporter.export(group) is not SpanExportResult.SUCCESS:
                result = SpanExportResult.FAILURE
        return result

    def shutdown(self) -> None:
        with self._lock:
            exporters = list(self._exporters.values())
        for exporter in exporters:
            exporter.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True


class Telemetry:
    def __init__(self, otlp_url: str | None) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "costline_gateway_requests",
            "Requests answered, by operation, model asked for, status code and cache outcome.",
            ["operation", "model", "status", "cache"],
            registry=self.registry,
        )
        self.request_seconds = Histogram(
            "costline_gateway_request_seconds",
            "Time from a request's arrival to its last byte.",
            ["operation"],
            registry=self.registry,
            buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
        )
        self.overhead_seconds = Histogram(
            "costline_gateway_overhead_seconds",
            "The gateway's own time per request: the request's time less the upstream's.",
            registry=self.registry,
            buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1),
        )
        self.ttft_seconds = Histogram(
            "costline_gateway_time_to_first_token_seconds",
            "Time to the first token of streamed answers.",
            registry=self.registry,
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30),
        )
        self.tokens = Counter(
            "costline_gateway_tokens",
            "Tokens spent upstream, by direction.",
            ["direction"],
            registry=self.registry,
        )
        self.cache = Counter(
            "costline_gateway_cache", "Cache lookups by outcome.", ["outcome"], registry=self.registry
        )
        self.budget = Counter(
            "costline_gateway_budget_decisions",
            "Budget decisions: ok, downgrade, throttle, block, unchecked, unavailable.",
            ["decision"],
            registry=self.registry,
        )
        self.fallbacks = Counter(
            "costline_gateway_fallbacks",
            "Upstream failures that moved a call to the next target.",
            ["upstream"],
            registry=self.registry,
        )
        self.exporter: KeyedExporter | None = None
        self.provider: TracerProvider | None = None
        self.tracer: Tracer | None = None
        if otlp_url:
            self.exporter = KeyedExporter(otlp_url)
            self.provider = TracerProvider(
                resource=Resource.create({"service.name": "costline-gateway"}), id_generator=_PlannedIds()
            )
            # 512-span batches every second: a span reaches the collector within about a second.
            self.provider.add_span_processor(
                BatchSpanProcessor(self.exporter, max_export_batch_size=512, schedule_delay_millis=1000)
            )
            self.tracer = self.provider.get_tracer(SCOPE)

    def metrics_text(self) -> bytes:
        return generate_latest(self.registry)

    def span(
        self,
        *,
        name: str,
        start_ns: int,
        end_ns: int,
        attributes: dict[str, Any],
        secret: str,
        error: str | None = None,
        ids: tuple[int, int] | None = None,
    ) -> None:
        """Record one finished call as a span (exported in the background, batched); `ids` are the
        (trace id, span id) its upstream request announced, if any."""
        if self.tracer is None or self.exporter is None:
            return
        self.exporter.remember(str(attributes[KEY_ATTRIBUTE]), secret)
        planned = _PLANNED.set(ids)
        try:
            span = self.tracer.start_span(
                name,
                kind=SpanKind.CLIENT,
                start_time=start_ns,
                attributes={k: v for k, v in attributes.items() if v is not None},
            )
        finally:
            _PLANNED.reset(planned)
        if error:
            span.set_attribute("error.type", error)
            span.set_status(Status(StatusCode.ERROR, error))
        span.end(end_time=end_ns)

    def shutdown(self) -> None:
        if self.provider is not None:
            self.provider.shutdown()
