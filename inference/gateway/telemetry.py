"""What the gateway tells about its calls: one OTel GenAI span per call, and Prometheus metrics.

Spans go to the collector over OTLP/HTTP (encoded and shipped by `inference.gateway.spans`), exported
with the caller's own gateway key (the collector accepts gateway keys as it accepts ingest keys), so
each organisation's calls land in that organisation whichever tenants share a batch. The span carries
the GenAI semantic conventions' attributes (the collector prices it like any other call) and
Costline's own:

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

import os
import random
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest, multiprocess

from inference.gateway.spans import SpanShipper, encode_span

KEY_ATTRIBUTE = "costline.gateway_key"
SCOPE = "costline.gateway"
RESOURCE = {"service.name": "costline-gateway", "telemetry.sdk.language": "python"}


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
        self.spans = Counter(
            "costline_gateway_spans",
            "Call spans by outcome: exported to the collector, or dropped (refused, or too many waiting).",
            ["outcome"],
            registry=self.registry,
        )
        # Batches of up to 128 spans, every 0.2 s: a span reaches the collector within about 0.2 s.
        self.shipper = (
            SpanShipper(
                otlp_url,
                RESOURCE,
                SCOPE,
                on_exported=self.spans.labels("exported").inc,
                on_dropped=self.spans.labels("dropped").inc,
            )
            if otlp_url
            else None
        )

    def metrics_text(self) -> bytes:
        """The metrics in Prometheus' text format: of the whole gateway when it runs as several workers
        (`inference.gateway.workers`: each writes its values to files in PROMETHEUS_MULTIPROC_DIR)."""
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry)
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
        """Record one finished call as a span (exported in the background, batched). `ids` are the
        (trace id, span id) its upstream request announced as its W3C `traceparent`, so that vLLM made
        the gateway's span the parent of its own; the collector then stores the call once (the
        client's span wins, README "Self-hosted cost"), not once per process that saw it."""
        if self.shipper is None:
            return
        trace_id, span_id = ids or (random.getrandbits(128) or 1, random.getrandbits(64) or 1)
        self.shipper.add(
            secret,
            encode_span(
                trace_id=trace_id,
                span_id=span_id,
                name=name,
                start_ns=start_ns,
                end_ns=end_ns,
                attributes=attributes,
                error=error,
            ),
        )

    def force_flush(self, timeout_s: float = 30.0) -> bool:
        """Post the spans waiting now; True when none is left."""
        return self.shipper is None or self.shipper.force_flush(timeout_s)

    def shutdown(self) -> None:
        if self.shipper is not None:
            self.shipper.shutdown()
