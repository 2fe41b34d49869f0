"""What the collector hands to its sink: normalised LLM calls and trace roots, as plain data.

Nothing here knows about Django or PostgreSQL. Token fields are `None` when the emitter did not report
them (unknown), never 0.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

# Preference when two emitters report the same provider request: lower wins. The provider's own SDK
# instrumentation sees the raw response (ids, exact usage); framework wrappers re-derive it.
EMITTER_RANK = {
    "provider-sdk": 0,
    "semconv": 1,
    "openllmetry": 2,
    "openinference": 3,
    "ai-sdk": 4,
    "openlit": 5,
    "langfuse": 6,
    "vllm": 9,  # server-side view of a call; a client span of the same call is better
}


class CallRecord:
    """One billable model call, normalised from whichever convention the span used.

    A plain class rather than a dataclass: compiled with mypyc (collector.speedups) its constructor is
    native code, where a dataclass keeps an interpreted `__init__` (~6 µs a call, 1,000 calls an export).
    """

    trace_id: str  # 32 lowercase hex digits
    span_id: str  # 16 lowercase hex digits
    parent_span_id: str  # "" for a root span
    start_ns: int  # Unix nanoseconds, UTC
    end_ns: int
    provider: str | None
    operation: str
    request_model: str | None
    response_model: str | None
    input_tokens: int | None
    output_tokens: int | None
    cache_read_tokens: int | None
    cache_write_tokens: int | None
    reasoning_tokens: int | None
    emitter_cost_usd: Decimal | None
    latency_ms: float | None
    ttft_ms: float | None
    streaming: bool | None
    status: str
    error_type: str | None
    finish_reason: str | None
    service: str
    environment: str
    project_slug: str | None
    feature: str | None
    feature_source: str | None  # "attribute" | "root" | None (root not seen yet)
    user_id: str | None
    session_id: str | None
    tags: list[str] | None
    response_id: str | None
    request_id: str | None
    emitter: str  # instrumentation scope name, e.g. "opentelemetry.instrumentation.openai_v2"
    emitter_kind: str  # a key of EMITTER_RANK
    server_side: bool  # the model server's own span (vLLM), not the caller's
    # Answered from the gateway's response cache (`costline.cache.hit` exact or semantic): its tokens are
    # what the call would have spent, priced as savings, never as cost.
    gateway_cache_hit: bool
    # Prompt evidence (collector.fingerprint), None when the span carried no content: hashes and a
    # fingerprint, never the text.
    prompt_hash: int | None
    prefix_hash: int | None
    prompt_tokens: int | None
    prefix_tokens: int | None
    prompt_simhash: int | None

    def __init__(
        self,
        trace_id: str,
        span_id: str,
        parent_span_id: str,
        start_ns: int,
        end_ns: int,
        provider: str | None,
        operation: str,
        request_model: str | None,
        response_model: str | None,
        *,
        input_tokens: int | None = None,
        output_tokens: int | None = None,
        cache_read_tokens: int | None = None,
        cache_write_tokens: int | None = None,
        reasoning_tokens: int | None = None,
        emitter_cost_usd: Decimal | None = None,
        latency_ms: float | None = None,
        ttft_ms: float | None = None,
        streaming: bool | None = None,
        status: str = "ok",
        error_type: str | None = None,
        finish_reason: str | None = None,
        service: str = "",
        environment: str = "",
        project_slug: str | None = None,
        feature: str | None = None,
        feature_source: str | None = None,
        user_id: str | None = None,
        session_id: str | None = None,
        tags: list[str] | None = None,
        response_id: str | None = None,
        request_id: str | None = None,
        emitter: str = "",
        emitter_kind: str = "semconv",
        server_side: bool = False,
        gateway_cache_hit: bool = False,
        prompt_hash: int | None = None,
        prefix_hash: int | None = None,
        prompt_tokens: int | None = None,
        prefix_tokens: int | None = None,
        prompt_simhash: int | None = None,
    ) -> None:
        self.trace_id = trace_id
        self.span_id = span_id
        self.parent_span_id = parent_span_id
        self.start_ns = start_ns
        self.end_ns = end_ns
        self.provider = provider
        self.operation = operation
        self.request_model = request_model
        self.response_model = response_model
        self.input_tokens = input_tokens
        self.output_tokens = output_tokens
        self.cache_read_tokens = cache_read_tokens
        self.cache_write_tokens = cache_write_tokens
        self.reasoning_tokens = reasoning_tokens
        self.emitter_cost_usd = emitter_cost_usd
        self.latency_ms = latency_ms
        self.ttft_ms = ttft_ms
        self.streaming = streaming
        self.status = status
        self.error_type = error_type
        self.finish_reason = finish_reason
        self.service = service
        self.environment = environment
        self.project_slug = project_slug
        self.feature = feature
        self.feature_source = feature_source
        self.user_id = user_id
        self.session_id = session_id
        self.tags = tags
        self.response_id = response_id
        self.request_id = request_id
        self.emitter = emitter
        self.emitter_kind = emitter_kind
        self.server_side = server_side
        self.gateway_cache_hit = gateway_cache_hit
        self.prompt_hash = prompt_hash
        self.prefix_hash = prefix_hash
        self.prompt_tokens = prompt_tokens
        self.prefix_tokens = prefix_tokens
        self.prompt_simhash = prompt_simhash

    @property
    def rank(self) -> int:
        return EMITTER_RANK.get(self.emitter_kind, 5)

    @property
    def provider_keys(self) -> tuple[str, ...]:
        if self.request_id is None:
            return (self.response_id,) if self.response_id else ()
        return (self.response_id, self.request_id) if self.response_id else (self.request_id,)

    def adopt_context(self, other: CallRecord | RootRecord) -> None:
        """Fill attribution this call lacks from a duplicate, wrapper or root of the same request."""
        if self.user_id is None:
            self.user_id = other.user_id
        if self.session_id is None:
            self.session_id = other.session_id
        if self.feature_source is None and other.feature is not None:
            self.feature = other.feature
            self.feature_source = other.feature_source or "root"
        if isinstance(other, CallRecord):
            if self.tags is None:
                self.tags = other.tags
            if self.project_slug is None:
                self.project_slug = other.project_slug


class RootRecord:
    """The root span of a trace: the feature (route or name) and identity of the request it served."""

    trace_id: str
    start_ns: int
    feature: str | None
    user_id: str | None
    session_id: str | None
    feature_source: str

    def __init__(
        self,
        trace_id: str,
        start_ns: int,
        feature: str | None,
        user_id: str | None = None,
        session_id: str | None = None,
        feature_source: str = "root",
    ) -> None:
        self.trace_id = trace_id
        self.start_ns = start_ns
        self.feature = feature
        self.user_id = user_id
        self.session_id = session_id
        self.feature_source = feature_source


@dataclass(slots=True)
class Batch:
    """One export request, normalised."""

    calls: list[CallRecord] = field(default_factory=list)
    roots: list[RootRecord] = field(default_factory=list)
    spans_received: int = 0
    rejected_spans: int = 0
    rejection_reasons: list[str] = field(default_factory=list)

    def reject(self, count: int, reason: str) -> None:
        self.rejected_spans += count
        if reason not in self.rejection_reasons:
            self.rejection_reasons.append(reason)
