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


@dataclass(slots=True)
class CallRecord:
    """One billable model call, normalised from whichever convention the span used."""

    trace_id: str  # 32 lowercase hex digits
    span_id: str  # 16 lowercase hex digits
    parent_span_id: str  # "" for a root span
    start_ns: int  # Unix nanoseconds, UTC
    end_ns: int

    provider: str | None
    operation: str
    request_model: str | None
    response_model: str | None

    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_read_tokens: int | None = None
    cache_write_tokens: int | None = None
    reasoning_tokens: int | None = None
    emitter_cost_usd: Decimal | None = None

    latency_ms: float | None = None
    ttft_ms: float | None = None
    streaming: bool | None = None
    status: str = "ok"
    error_type: str | None = None
    finish_reason: str | None = None

    service: str = ""
    environment: str = ""
    project_slug: str | None = None
    feature: str | None = None
    feature_source: str | None = None  # "attribute" | "root" | None (root not seen yet)
    user_id: str | None = None
    session_id: str | None = None
    tags: list[str] | None = None

    response_id: str | None = None
    request_id: str | None = None
    emitter: str = ""  # instrumentation scope name, e.g. "opentelemetry.instrumentation.openai_v2"
    emitter_kind: str = "semconv"  # a key of EMITTER_RANK
    server_side: bool = False  # the model server's own span (vLLM), not the caller's

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


@dataclass(slots=True)
class RootRecord:
    """The root span of a trace: the feature (route or name) and identity of the request it served."""

    trace_id: str
    start_ns: int
    feature: str | None
    user_id: str | None = None
    session_id: str | None = None
    feature_source: str = "root"


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
