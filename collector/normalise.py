"""Turn decoded spans into billable LLM calls, whichever convention each emitter speaks.

The field-by-field priorities follow `shared/reference/mapping.md`: Langfuse's explicit values first,
then the current OTel GenAI names, the deprecated ones, OpenInference, the Vercel AI SDK, and vendor keys.
Within one export, the normaliser also decides which spans are calls at all:

- only leaf model calls count: a framework span that wraps the provider SDK's own span of the same
  request (Langfuse, OpenInference) gives way to the inner span, and lends it the user, session and
  feature it knows; a model server's span (vLLM's `llm_request`) below a client span of the same call
  gives way to the client span;
- two emitters reporting the same provider request (same response or request id, different
  instrumentation) are stored once, keeping the better-informed span;
- each call inherits user, session and feature from its ancestors, and its feature falls back to the
  route or name of the trace's root span. When the root is not in this export the call's feature stays
  pending (`feature_source` None) until the sink sees the root.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from collector.fingerprint import PromptEvidence, prompt_evidence
from collector.otlp import SPAN_KIND_CLIENT, SPAN_KIND_SERVER, STATUS_CODE_ERROR, DecodedExport, SpanView
from collector.records import Batch, CallRecord, RootRecord

# --- what counts as a model call -------------------------------------------------------------------

BILLABLE_OPERATIONS = frozenset({"chat", "text_completion", "generate_content", "embeddings", "rerank"})
_OPERATION_ALIASES = {
    "completion": "text_completion",
    "completions": "text_completion",
    "generate": "generate_content",
    "embedding": "embeddings",
    "embed": "embeddings",
    "chat_completions": "chat",
}
_OPENINFERENCE_KINDS = {"LLM": "chat", "EMBEDDING": "embeddings", "RERANKER": "rerank"}
_LANGFUSE_TYPES = {"generation": "chat", "embedding": "embeddings"}
_LLM_REQUEST_TYPES = {
    "chat": "chat",
    "completion": "text_completion",
    "embedding": "embeddings",
    "rerank": "rerank",
}

# --- providers --------------------------------------------------------------------------------------

_PROVIDER_ALIASES = {
    "xai": "x_ai",
    "az.ai.openai": "azure.ai.openai",
    "az.ai.inference": "azure.ai.inference",
    "azure": "azure.ai.openai",
    "azure_openai": "azure.ai.openai",
    "vertex_ai": "gcp.vertex_ai",
    "vertexai": "gcp.vertex_ai",
    "gemini": "gcp.gemini",
    "google": "gcp.gen_ai",
    "mistralai": "mistral_ai",
    "mistral": "mistral_ai",
    "ibm.watson.ai": "ibm.watsonx.ai",
    "watsonx": "ibm.watsonx.ai",
    "aws": "aws.bedrock",
    "amazon": "aws.bedrock",
    "bedrock": "aws.bedrock",
    "amazon-bedrock": "aws.bedrock",
    "together": "together_ai",
    "togetherai": "together_ai",
    "fireworks-ai": "fireworks",
    "moonshot": "moonshot_ai",
    "moonshotai": "moonshot_ai",
    "huggingface": "hugging_face",
    "vllm": "vllm",
}
# Hosts that identify the provider when the span names none (OpenAI clients pointed elsewhere).
_HOST_PROVIDERS = [
    ("openai.azure.com", "azure.ai.openai"),
    ("api.openai.com", "openai"),
    ("api.anthropic.com", "anthropic"),
    ("generativelanguage.googleapis.com", "gcp.gemini"),
    ("aiplatform.googleapis.com", "gcp.vertex_ai"),
    ("bedrock-runtime", "aws.bedrock"),
    ("api.mistral.ai", "mistral_ai"),
    ("api.groq.com", "groq"),
    ("api.deepseek.com", "deepseek"),
    ("api.x.ai", "x_ai"),
    ("api.together", "together_ai"),
    ("openrouter.ai", "openrouter"),
    ("api.cohere", "cohere"),
    ("api.perplexity.ai", "perplexity"),
    ("fireworks.ai", "fireworks"),
]

_PROVIDER_SDK_SCOPES = ("com.anthropic", "com.openai", "openai.sdk", "anthropic.sdk")
_OPENLLMETRY_MARKERS = frozenset(
    {
        "gen_ai.is_streaming",
        "llm.is_streaming",
        "llm.request.type",
        "gen_ai.usage.total_tokens",
        "llm.usage.total_tokens",
        "gen_ai.openai.api_base",
        "traceloop.workflow.name",
        "traceloop.span.kind",
    }
)

# --- finish reasons and errors ----------------------------------------------------------------------

_FINISH_REASONS = {
    "stop": "stop",
    "end_turn": "stop",
    "stop_sequence": "stop",
    "eos": "stop",
    "length": "length",
    "max_tokens": "length",
    "max_output_tokens": "length",
    "tool_calls": "tool_call",
    "tool_call": "tool_call",
    "tool_use": "tool_call",
    "function_call": "tool_call",
    "content_filter": "content_filter",
    "safety": "content_filter",
    "refusal": "content_filter",
    "error": "error",
}

# Canonical error classes, tried in order against everything the span says about its failure. The
# emitters disagree (`RateLimitError`, `<class 'openai.RateLimitError'>`, `rate_limited`, `429`), and
# a dashboard grouped by error type needs one name per cause.
_ERROR_CLASSES = [
    ("rate_limit", re.compile(r"rate.?limit|\b429\b|too.?many.?requests|quota", re.I)),
    ("timeout", re.compile(r"time.?out|timedout|deadline|\b408\b|\b504\b", re.I)),
    ("overloaded", re.compile(r"overload|\b529\b", re.I)),
    ("authentication", re.compile(r"authenticat|unauthori[sz]ed|\b401\b|api.?key", re.I)),
    ("permission_denied", re.compile(r"permission|forbidden|\b403\b", re.I)),
    ("not_found", re.compile(r"not.?found|\b404\b", re.I)),
    ("content_filter", re.compile(r"content.?filter|safety", re.I)),
    ("context_length", re.compile(r"context.?length|too.?long|maximum context", re.I)),
    ("invalid_request", re.compile(r"bad.?request|invalid.?request|unprocessable|\b400\b|\b422\b", re.I)),
    ("connection_error", re.compile(r"connect", re.I)),
    ("server_error", re.compile(r"internal.?server|api_error|server.?error|unavailable|\b50[0-3]\b", re.I)),
]
_CLASS_REPR = re.compile(r"^<class '([^']+)'>$")
_REQUEST_ID_IN_TEXT = re.compile(r"""request[_-]?id['"]?\s*[:=]\s*['"]?(req_[A-Za-z0-9]+)""")


# --- value helpers ----------------------------------------------------------------------------------


def _int(value: Any) -> int | None:
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    if isinstance(value, float):
        return int(value) if value >= 0 and value.is_integer() else None
    if isinstance(value, str):
        text = value.strip()
        if text.isdigit():
            return int(text)
        try:
            number = float(text)
        except ValueError:
            return None
        return int(number) if number >= 0 and number.is_integer() else None
    return None


def _float(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _str(value: Any) -> str | None:
    if isinstance(value, str):
        if not value:
            return None
        if value[0].isspace() or value[-1].isspace():  # rare: strip only then (it copies)
            return value.strip() or None
        return value
    if value is None or isinstance(value, bool | bytes):
        return None
    return str(value).strip() or None


def _bool(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        if value.lower() in ("true", "1"):
            return True
        if value.lower() in ("false", "0"):
            return False
    if isinstance(value, int):
        return bool(value)
    return None


def _json(value: Any) -> Any:
    """A JSON attribute: emitters send a JSON string or a structured (kvlist/array) value."""
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return None
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            return None
    return value


def _unquote(value: Any) -> str | None:
    """Langfuse sometimes JSON-encodes string attributes twice: '"2026-11-23T14:25:28Z"'."""
    text = _str(value)
    if text and len(text) >= 2 and text[0] == text[-1] == '"':
        decoded = _json(text)
        return decoded if isinstance(decoded, str) else text
    return text


def _decimal(value: Any) -> Decimal | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        # str() first: Decimal(0.1) would carry the binary float's 55 digits.
        number = Decimal(str(value))
    except (InvalidOperation, ValueError):
        return None
    return number if number.is_finite() and number >= 0 else None


def _first(attrs: dict[str, Any], keys: tuple[str, ...]) -> Any:
    for key in keys:
        value = attrs.get(key)
        if value is not None and value != "":
            return value
    return None


# The key lists are tuple constants: a varargs call would build a tuple at every call (1,000s an export).
def _first_int(attrs: dict[str, Any], keys: tuple[str, ...]) -> int | None:
    for key in keys:
        raw = attrs.get(key)
        if raw is not None:
            value = _int(raw)
            if value is not None:
                return value
    return None


def _first_str(attrs: dict[str, Any], keys: tuple[str, ...]) -> str | None:
    for key in keys:
        raw = attrs.get(key)
        if raw is not None:
            value = _str(raw)
            if value is not None:
                return value
    return None


def _dig(data: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(data, dict):
            return None
        data = data.get(key)
    return data


def _iso_to_ns(text: str) -> int | None:
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        return None
    return int(moment.timestamp() * 1_000_000) * 1000


# --- emitter and operation --------------------------------------------------------------------------


def emitter_kind(span: SpanView) -> str:
    attrs = span.attrs
    scope = span.scope_name
    if scope.startswith(_PROVIDER_SDK_SCOPES):
        return "provider-sdk"
    if scope == "langfuse-sdk" or "langfuse.observation.type" in attrs:
        return "langfuse"
    if "openinference.span.kind" in attrs:
        return "openinference"
    if attrs.get("telemetry.sdk.name") == "openlit" or scope.startswith("openlit"):
        return "openlit"
    if scope == "ai" or "ai.operationId" in attrs:
        return "ai-sdk"
    if span.name == "llm_request" and span.kind == SPAN_KIND_SERVER:
        return "vllm"
    if not _OPENLLMETRY_MARKERS.isdisjoint(attrs):
        return "openllmetry"
    return "semconv"


def call_operation(span: SpanView) -> str | None:
    """The billable operation of a model-call span, or None for every other span."""
    attrs = span.attrs
    op = _str(attrs.get("gen_ai.operation.name"))
    if op is not None:
        op = op.lower()
        op = _OPERATION_ALIASES.get(op, op)
        return op if op in BILLABLE_OPERATIONS else None
    kind = _str(attrs.get("openinference.span.kind"))
    if kind is not None:
        return _OPENINFERENCE_KINDS.get(kind.upper())
    request_type = _str(attrs.get("llm.request.type"))
    if request_type is not None:
        return _LLM_REQUEST_TYPES.get(request_type.lower())
    ai_op = _str(attrs.get("ai.operationId"))
    if ai_op is not None:
        if ai_op.endswith((".doGenerate", ".doStream")):
            return "chat"
        if ai_op.endswith(".doEmbed"):
            return "embeddings"
        return None
    lf_type = _str(attrs.get("langfuse.observation.type"))
    if lf_type is not None:
        return _LANGFUSE_TYPES.get(lf_type.lower())
    if span.name == "llm_request" and span.kind == SPAN_KIND_SERVER:
        return "chat"
    return None


def _normal_provider(value: str) -> str:
    value = value.strip().lower()
    return _PROVIDER_ALIASES.get(value, value)


def provider_of(span: SpanView, kind: str) -> str | None:
    attrs = span.attrs
    explicit = _first_str(attrs, ("gen_ai.provider.name", "gen_ai.system"))
    if explicit is not None:
        if kind == "ai-sdk" and "." in explicit:  # AI SDK legacy sends raw ids: openai.chat
            explicit = re.split(r"[.\-]", explicit, maxsplit=1)[0]
        return _normal_provider(explicit)
    host = _str(attrs.get("llm.provider"))
    system = _str(attrs.get("llm.system"))
    if host is not None and host.lower() in ("azure", "aws", "google"):
        return _normal_provider(host)
    if system is not None or host is not None:
        return _normal_provider(system or host or "")
    ai_provider = _str(attrs.get("ai.model.provider"))
    if ai_provider is not None:
        return _normal_provider(re.split(r"[.\-]", ai_provider, maxsplit=1)[0])
    address = _first_str(attrs, ("server.address", "gen_ai.openai.api_base", "url.full"))
    if address is not None:
        for needle, provider in _HOST_PROVIDERS:
            if needle in address:
                return provider
    if kind == "vllm":
        return "vllm"
    return None  # the pricer may still infer it from the model name


# --- the call record --------------------------------------------------------------------------------


def _usage_from_langfuse(details: Any) -> dict[str, int | None] | None:
    """Token counts from `langfuse.observation.usage_details`, in Costline's semantics."""
    if not isinstance(details, dict) or not details:
        return None
    if "prompt_tokens" in details or "completion_tokens" in details:
        # The OpenAI integration passes the provider's usage object through: prompt includes cached.
        return {
            "input": _int(details.get("prompt_tokens")),
            "output": _int(details.get("completion_tokens")),
            "cache_read": _int(_dig(details, "prompt_tokens_details", "cached_tokens")),
            "cache_write": None,
            "reasoning": _int(_dig(details, "completion_tokens_details", "reasoning_tokens")),
        }
    # Langfuse's own convention: `input` excludes cache reads and writes, `output` excludes reasoning
    # and audio, each reported as a usage type of its own.
    uncached = _first_int(details, ("input", "input_tokens"))
    cache_read = _first_int(details, ("input_cached_tokens", "cache_read_input_tokens", "input_cache_read"))
    cache_write = _first_int(
        details, ("input_cache_creation", "cache_creation_input_tokens", "input_cache_write")
    )
    if cache_write is None:
        split = [_int(details.get(k)) for k in ("input_cache_creation_5m", "input_cache_creation_1h")]
        cache_write = sum(v for v in split if v is not None) if any(v is not None for v in split) else None
    output = _first_int(details, ("output", "output_tokens"))
    reasoning = _int(details.get("output_reasoning_tokens"))
    audio_out = _int(details.get("output_audio_tokens"))
    total_input = None if uncached is None else uncached + (cache_read or 0) + (cache_write or 0)
    total_output = None if output is None else output + (reasoning or 0) + (audio_out or 0)
    return {
        "input": total_input,
        "output": total_output,
        "cache_read": cache_read,
        "cache_write": cache_write,
        "reasoning": reasoning,
    }


def _ttft_ms(span: SpanView, attrs: dict[str, Any], invocation: Any) -> float | None:
    seconds = _float(
        _first(
            attrs,
            (
                "gen_ai.response.time_to_first_chunk",
                "gen_ai.client.operation.time_to_first_chunk",
                "gen_ai.latency.time_to_first_token",
            ),
        )
    )
    if seconds is not None:
        return seconds * 1000.0
    millis = _float(_first(attrs, ("ai.response.msToFirstChunk", "ai.stream.msToFirstChunk")))
    if millis is not None:
        return millis
    for event in span.events:
        if event.name in ("First Token Stream Event", "ai.stream.firstChunk") and event.time_ns:
            return (event.time_ns - span.start_ns) / 1e6
    completion_start = _unquote(attrs.get("langfuse.observation.completion_start_time"))
    if completion_start:
        moment = _iso_to_ns(completion_start)
        if moment is not None:
            return (moment - span.start_ns) / 1e6
    if attrs.get("telemetry.sdk.name") == "openlit":
        # OpenLIT records this on every call; it equals the whole duration unless the call streamed.
        openlit_s = _float(attrs.get("gen_ai.server.time_to_first_token"))
        if openlit_s is not None:
            return openlit_s * 1000.0
    return None


def _streaming(span: SpanView, attrs: dict[str, Any], invocation: Any) -> bool:
    flag = _bool(_first(attrs, ("gen_ai.request.stream", "gen_ai.is_streaming", "llm.is_streaming")))
    if flag is not None:
        return flag
    if isinstance(invocation, dict) and "stream" in invocation:
        return bool(invocation.get("stream"))
    if (
        "gen_ai.response.time_to_first_chunk" in attrs
        or "gen_ai.client.operation.time_to_first_chunk" in attrs
    ):
        return True
    if any(e.name in ("First Token Stream Event", "ai.stream.firstChunk") for e in span.events):
        return True
    ai_op = _str(attrs.get("ai.operationId")) or ""
    if "doStream" in ai_op or "stream" in span.name.lower():
        return True
    # A semconv emitter sets gen_ai.request.stream only when streaming, so its absence means false.
    return "langfuse.observation.completion_start_time" in attrs


def _finish_reason(attrs: dict[str, Any]) -> str | None:
    raw = _first(
        attrs,
        (
            "gen_ai.response.finish_reasons",
            "llm.finish_reason",
            "gen_ai.completion.0.finish_reason",
            "llm.response.finish_reason",
            "ai.response.finishReason",
            "langfuse.observation.metadata.finish_reason",
            "anthropic.message.stop_reason",
        ),
    )
    if isinstance(raw, str) and raw.startswith("["):
        raw = _json(raw)
    if isinstance(raw, list):
        raw = raw[0] if raw else None
    reason = _unquote(raw)
    if reason is None:
        return None
    reason = reason.lower()
    return _FINISH_REASONS.get(reason, reason[:64])


def _error_type(span: SpanView, attrs: dict[str, Any]) -> str | None:
    """The canonical error class of a failed call, or None when it succeeded."""
    raw_type = _str(attrs.get("error.type"))
    level = _str(attrs.get("langfuse.observation.level"))
    failed = span.status_code == STATUS_CODE_ERROR or raw_type is not None or level == "ERROR"
    if not failed:
        return None
    if raw_type is not None:
        match = _CLASS_REPR.match(raw_type)  # opentelemetry-instrumentation-openai-v2 writes a repr
        raw_type = match.group(1) if match else raw_type
    exception_type = next(
        (_str(e.attrs.get("exception.type")) for e in span.events if e.name == "exception"), None
    )
    http_status = _int(_first(attrs, ("http.response.status_code", "http.status_code")))
    evidence = " ".join(
        part
        for part in (
            raw_type,
            exception_type,
            str(http_status) if http_status and http_status >= 400 else None,
            span.status_message,
            _str(attrs.get("langfuse.observation.status_message")),
        )
        if part
    )
    for name, pattern in _ERROR_CLASSES:
        if pattern.search(evidence):
            return name
    return (raw_type or exception_type or "_OTHER")[:200]


def _request_id(span: SpanView, attrs: dict[str, Any]) -> str | None:
    explicit = _first_str(attrs, ("anthropic.request.id", "openai.request.id", "gen_ai.request.id"))
    if explicit is not None:
        return explicit
    # Anthropic error bodies name the request; wrappers keep the body only in the status message.
    for text in (span.status_message, _str(attrs.get("langfuse.observation.status_message"))):
        match = _REQUEST_ID_IN_TEXT.search(text) if text else None
        if match:
            return match.group(1)
    return None


def _user_id(attrs: dict[str, Any]) -> str | None:
    return _first_str(
        attrs,
        (
            "langfuse.user.id",
            "user.id",
            "enduser.id",
            "traceloop.association.properties.user_id",
            "gen_ai.user",
            "llm.user",
            "gen_ai.request.user",
            "ai.telemetry.metadata.userId",
            "ai.settings.context.userId",
            "langfuse.trace.metadata.langfuse_user_id",
        ),
    )


def _session_id(attrs: dict[str, Any]) -> str | None:
    return _first_str(
        attrs,
        (
            "langfuse.session.id",
            "session.id",
            "gen_ai.conversation.id",
            "traceloop.association.properties.session_id",
            "ai.telemetry.metadata.sessionId",
            "ai.settings.context.sessionId",
            "langfuse.trace.metadata.langfuse_session_id",
        ),
    )


def _tags(attrs: dict[str, Any]) -> list[str] | None:
    for key in ("costline.tags", "langfuse.trace.tags", "tag.tags"):
        value = attrs.get(key)
        if isinstance(value, str):
            value = _json(value) if value.startswith("[") else [value]
        if isinstance(value, list):
            tags = [str(t) for t in value if t not in (None, "")]
            if tags:
                return tags[:50]
    return None


def root_feature(span: SpanView) -> str | None:
    """The feature a root span stands for: explicit, else its route, else its workflow or name."""
    attrs = span.attrs
    # A client span's http.route names the provider's endpoint (/v1/messages), not the app's feature.
    route = _str(attrs.get("http.route")) if span.kind != SPAN_KIND_CLIENT else None
    value = (
        _str(attrs.get("costline.feature"))
        or route
        or _first_str(
            attrs,
            (
                "traceloop.workflow.name",
                "langfuse.trace.name",
                "gen_ai.workflow.name",
                "ai.telemetry.functionId",
                "gen_ai.agent.name",
            ),
        )
        or _str(span.name)
    )
    return value[:300] if value else None


# --- prompt evidence -----------------------------------------------------------------------------------

_CONTENT_EVENTS = ("gen_ai.client.inference.operation.details",)
_LEGACY_MESSAGE_EVENTS = {
    "gen_ai.system.message": "system",
    "gen_ai.user.message": "user",
    "gen_ai.assistant.message": "assistant",
    "gen_ai.tool.message": "tool",
}
_PARAMETER_ATTRIBUTES = (
    ("gen_ai.request.temperature", "temperature"),
    ("gen_ai.request.top_p", "top_p"),
    ("gen_ai.request.max_tokens", "max_tokens"),
    ("gen_ai.request.seed", "seed"),
    ("gen_ai.request.stop_sequences", "stop"),
)


def _flattened(attrs: dict[str, Any], prefix: str, role_key: str, content_key: str) -> list[dict[str, Any]]:
    """Messages flattened as `<prefix><i>.<role_key>` / `<prefix><i>.<content_key>` (OpenInference,
    OpenLLMetry's legacy `gen_ai.prompt.<i>.*`)."""
    messages = []
    for i in range(1000):
        role = attrs.get(f"{prefix}{i}.{role_key}")
        content = attrs.get(f"{prefix}{i}.{content_key}")
        if role is None and content is None:
            break
        messages.append({"role": role or "user", "content": content})
    return messages


def _messages_of(span: SpanView, attrs: dict[str, Any]) -> tuple[list[Any], str | None, Any] | None:
    """(messages, system instructions, tools) from whichever content the emitter recorded."""
    system_attr = _json(attrs.get("gen_ai.system_instructions"))
    tools = _json(attrs.get("gen_ai.tool.definitions"))
    system = canonical_system(system_attr)
    messages = _json(attrs.get("gen_ai.input.messages"))
    if isinstance(messages, list):
        return messages, system, tools
    for event in span.events:  # GenAI v1.37+: the same attributes on one event
        if event.name in _CONTENT_EVENTS:
            found = _json(event.attrs.get("gen_ai.input.messages"))
            if isinstance(found, list):
                return (
                    found,
                    canonical_system(_json(event.attrs.get("gen_ai.system_instructions"))),
                    _json(event.attrs.get("gen_ai.tool.definitions")),
                )
    legacy = [
        {"role": _LEGACY_MESSAGE_EVENTS[e.name], "content": e.attrs.get("content")}
        for e in span.events
        if e.name in _LEGACY_MESSAGE_EVENTS
    ]
    if legacy:
        return legacy, None, None
    if "llm.input_messages.0.message.role" in attrs or "llm.input_messages.0.message.content" in attrs:
        oi_tools = [_json(attrs.get(f"llm.tools.{i}.tool.json_schema")) for i in range(100)]
        oi_tools = [t for t in oi_tools if t is not None]
        return (
            _flattened(attrs, "llm.input_messages.", "message.role", "message.content"),
            None,
            oi_tools or None,
        )
    if "gen_ai.prompt.0.content" in attrs:
        return _flattened(attrs, "gen_ai.prompt.", "role", "content"), None, None
    ai_messages = _json(attrs.get("ai.prompt.messages"))
    if isinstance(ai_messages, list):
        return ai_messages, None, _json(attrs.get("ai.prompt.tools"))
    langfuse = _json(attrs.get("langfuse.observation.input"))
    if isinstance(langfuse, dict) and isinstance(langfuse.get("messages"), list):
        return langfuse["messages"], None, langfuse.get("tools")
    if isinstance(langfuse, list) and all(isinstance(m, dict) for m in langfuse):
        return langfuse, None, None
    return None


def canonical_system(value: Any) -> str | None:
    if isinstance(value, str):
        return value or None
    if isinstance(value, list):
        text = "\n".join(str(p.get("content", "")) if isinstance(p, dict) else str(p) for p in value)
        return text or None
    return None


def _prompt_evidence(
    span: SpanView, attrs: dict[str, Any], invocation: Any, input_tokens: int | None
) -> PromptEvidence | None:
    """The gateway's own evidence when it put it on the span, else computed from the span's content."""
    given = attrs.get("costline.prompt.hash")
    if given is not None:
        prompt_hash = _signed64(given)
        if prompt_hash is not None:
            return PromptEvidence(
                prompt_hash=prompt_hash,
                prefix_hash=_signed64(attrs.get("costline.prompt.prefix_hash")),
                prompt_tokens=_int(attrs.get("costline.prompt.tokens")) or 0,
                prefix_tokens=_int(attrs.get("costline.prompt.prefix_tokens")) or 0,
                simhash=_signed64(attrs.get("costline.prompt.simhash")) or 0,
            )
    found = _messages_of(span, attrs)
    if found is None:
        return None
    messages, system, tools = found
    parameters: dict[str, Any] = dict(invocation) if isinstance(invocation, dict) else {}
    for key, name in _PARAMETER_ATTRIBUTES:
        value = attrs.get(key)
        if value is not None:
            parameters.setdefault(name, value)
    try:
        return prompt_evidence(
            messages, tools=tools, system=system, parameters=parameters, input_tokens=input_tokens
        )
    except (TypeError, ValueError):
        return None  # content of a shape no emitter documents: no evidence rather than a lost call


def _signed64(value: Any) -> int | None:
    number = value if isinstance(value, int) and not isinstance(value, bool) else None
    if number is None and isinstance(value, str):
        try:
            number = int(value)
        except ValueError:
            return None
    if number is None or not -(2**63) <= number < 2**64:
        return None
    return number - 2**64 if number >= 2**63 else number


@dataclass(frozen=True, slots=True)
class _ResourceFields:
    service: str
    environment: str
    project: str | None
    feature: str | None


# Resources are shared by every span of a batch from one process; read their fields once. Keyed by
# the dict's id, which stays valid while the batch (which holds the dict) is being normalised.
_resource_cache: dict[int, tuple[dict[str, Any], _ResourceFields]] = {}


def _resource_fields(resource: dict[str, Any]) -> _ResourceFields:
    hit = _resource_cache.get(id(resource))
    if hit is not None and hit[0] is resource:
        return hit[1]
    fields = _ResourceFields(
        service=(_str(resource.get("service.name")) or "")[:200],
        environment=_first_str(
            resource, ("deployment.environment.name", "deployment.environment", "langfuse.environment")
        )
        or "",
        project=_str(resource.get("costline.project")),
        feature=_str(resource.get("costline.feature")),
    )
    if len(_resource_cache) > 4096:
        _resource_cache.clear()
    _resource_cache[id(resource)] = (resource, fields)
    return fields


def extract_call(span: SpanView) -> CallRecord | None:
    """Normalise one span into a call record, or None when it is not a billable model call."""
    operation = call_operation(span)
    if operation is None:
        return None
    attrs = span.attrs
    kind = emitter_kind(span)
    invocation = _json(attrs.get("llm.invocation_parameters") or attrs.get("embedding.invocation_parameters"))

    request_model = _first_str(attrs, ("gen_ai.request.model", "llm.request.model_name"))
    if request_model is None and isinstance(invocation, dict):
        request_model = _str(invocation.get("model"))
    if request_model is None:
        request_model = _first_str(attrs, ("embedding.model_name", "ai.model.id"))
    response_model = _first_str(
        attrs, ("gen_ai.response.model", "llm.response.model_name", "ai.response.model")
    )
    if response_model is None:
        # OpenInference's llm.model_name and Langfuse's model name hold the model that answered, or,
        # when nothing answered (a failed call), the model that was asked for.
        either = _first_str(attrs, ("llm.model_name", "langfuse.observation.model.name"))
        failed = span.status_code == STATUS_CODE_ERROR or attrs.get("langfuse.observation.level") == "ERROR"
        if failed:
            request_model = request_model or either
        else:
            response_model = either
    if request_model is None and response_model is None and kind == "vllm":
        # vLLM releases before the GenAI opt-in name no model on their spans; Costline's launcher puts
        # the served name on the resource (inference/vllm/launch.py).
        request_model = _str(span.resource.get("vllm.served_model_name"))
    if (
        request_model is None
        and response_model is None
        and kind != "vllm"
        and not any(k.startswith(("gen_ai.usage.", "llm.token_count.")) for k in attrs)
    ):
        return None  # no model and no usage: nothing to price or attribute (OpenLIT's failed calls)

    # Tokens. Langfuse's explicit usage wins over everything (rule 2 of the mapping).
    usage = _usage_from_langfuse(_json(attrs.get("langfuse.observation.usage_details")))
    if usage is not None:
        input_tokens, output_tokens = usage["input"], usage["output"]
        cache_read, cache_write, reasoning = usage["cache_read"], usage["cache_write"], usage["reasoning"]
    else:
        input_tokens = _first_int(
            attrs,
            (
                "gen_ai.usage.input_tokens",
                "gen_ai.usage.prompt_tokens",
                "llm.token_count.prompt",
                "ai.usage.inputTokens",
                "ai.usage.promptTokens",
            ),
        )
        output_tokens = _first_int(
            attrs,
            (
                "gen_ai.usage.output_tokens",
                "gen_ai.usage.completion_tokens",
                "llm.token_count.completion",
                "ai.usage.outputTokens",
                "ai.usage.completionTokens",
            ),
        )
        cache_read = _first_int(
            attrs,
            (
                "gen_ai.usage.cache_read.input_tokens",
                "gen_ai.usage.cache_read_input_tokens",
                "llm.token_count.prompt_details.cache_read",
                "gen_ai.usage.prompt_tokens_details.cached_tokens",
                "ai.usage.inputTokenDetails.cacheReadTokens",
                "ai.usage.cachedInputTokens",
                "gen_ai.usage.cached_tokens",
            ),
        )
        cache_write = _first_int(
            attrs,
            (
                "gen_ai.usage.cache_write.input_tokens",
                "gen_ai.usage.cache_creation.input_tokens",
                "gen_ai.usage.cache_creation_input_tokens",
                "llm.token_count.prompt_details.cache_write",
                "gen_ai.usage.prompt_tokens_details.cache_creation_tokens",
                "ai.usage.inputTokenDetails.cacheWriteTokens",
            ),
        )
        reasoning = _first_int(
            attrs,
            (
                "gen_ai.usage.reasoning.output_tokens",
                "gen_ai.usage.reasoning_tokens",
                "llm.usage.reasoning_tokens",
                "llm.token_count.completion_details.reasoning",
                "gen_ai.usage.completion_tokens_details.reasoning_tokens",
                "ai.usage.outputTokenDetails.reasoningTokens",
                "ai.usage.reasoningTokens",
            ),
        )
        if input_tokens is None:
            input_tokens = _first_int(attrs, ("ai.usage.tokens",))  # AI SDK embeddings
    provider = provider_of(span, kind)
    if kind == "openlit" and provider == "anthropic" and input_tokens is not None:
        # OpenLIT writes Anthropic's raw input_tokens, which exclude cache reads and writes.
        input_tokens += (cache_read or 0) + (cache_write or 0)
    if operation == "embeddings" and output_tokens is None and input_tokens is not None:
        output_tokens = 0  # embeddings produce no tokens: zero is known, not assumed

    cost = _first(attrs, ("langfuse.observation.cost_details",))
    emitter_cost: Decimal | None = None
    cost_details = _json(cost)
    if isinstance(cost_details, dict) and cost_details:
        emitter_cost = _decimal(cost_details.get("total"))
        if emitter_cost is None:
            parts = [_decimal(v) for v in cost_details.values()]
            emitter_cost = sum((p for p in parts if p is not None), Decimal(0))
    else:
        openlit_cost = _decimal(attrs.get("gen_ai.usage.cost"))
        emitter_cost = openlit_cost if openlit_cost else None  # OpenLIT writes 0 for unknown models
        if emitter_cost is None:
            emitter_cost = _decimal(attrs.get("llm.cost.total"))
        if emitter_cost is None:
            prompt, completion = (
                _decimal(attrs.get("llm.cost.prompt")),
                _decimal(attrs.get("llm.cost.completion")),
            )
            if prompt is not None or completion is not None:
                emitter_cost = (prompt or Decimal(0)) + (completion or Decimal(0))

    streaming = _streaming(span, attrs, invocation)
    # A model server measures its first token whether or not the answer was streamed to the client.
    ttft = _ttft_ms(span, attrs, invocation) if streaming or kind == "vllm" else None
    latency_s = _float(_first(attrs, ("gen_ai.client.operation.duration", "gen_ai.latency.e2e")))
    if latency_s is not None:
        latency_ms: float | None = latency_s * 1000.0
    elif span.end_ns >= span.start_ns > 0:
        latency_ms = (span.end_ns - span.start_ns) / 1e6
    else:
        latency_ms = None

    error_type = _error_type(span, attrs)
    res = _resource_fields(span.resource)
    evidence = _prompt_evidence(span, attrs, invocation, input_tokens) if operation != "embeddings" else None
    explicit_feature = _str(attrs.get("costline.feature")) or res.feature
    return CallRecord(
        trace_id=span.trace_id,
        span_id=span.span_id,
        parent_span_id=span.parent_span_id,
        start_ns=span.start_ns,
        end_ns=span.end_ns,
        provider=provider,
        operation=operation,
        request_model=request_model,
        response_model=response_model,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cache_read_tokens=cache_read,
        cache_write_tokens=cache_write,
        reasoning_tokens=reasoning,
        emitter_cost_usd=emitter_cost,
        latency_ms=latency_ms,
        ttft_ms=ttft,
        streaming=streaming,
        status="error" if error_type is not None else "ok",
        error_type=error_type,
        finish_reason=_finish_reason(attrs),
        service=res.service or (_str(attrs.get("service.name")) or "")[:200],
        environment=(
            _first_str(
                attrs, ("langfuse.environment", "deployment.environment.name", "deployment.environment")
            )
            or res.environment
        )[:100],
        project_slug=_str(attrs.get("costline.project")) or res.project,
        feature=explicit_feature[:300] if explicit_feature else None,
        feature_source="attribute" if explicit_feature else None,
        user_id=_user_id(attrs),
        session_id=_session_id(attrs),
        tags=_tags(attrs),
        response_id=_first_str(attrs, ("gen_ai.response.id", "ai.response.id")),
        request_id=_request_id(span, attrs),
        emitter=span.scope_name[:200],
        emitter_kind=kind,
        server_side=kind == "vllm",
        gateway_cache_hit=attrs.get("costline.cache.hit") in ("exact", "semantic"),
        prompt_hash=evidence.prompt_hash if evidence else None,
        prefix_hash=evidence.prefix_hash if evidence else None,
        prompt_tokens=evidence.prompt_tokens if evidence else None,
        prefix_tokens=evidence.prefix_tokens if evidence else None,
        prompt_simhash=evidence.simhash if evidence else None,
    )


# --- one export --------------------------------------------------------------------------------------

_MAX_DEPTH = 64  # parent chains longer than this are cut (and a cycle cannot loop forever)


def normalise(decoded: DecodedExport, *, min_start_ns: int, max_start_ns: int) -> Batch:
    """Normalise one export: calls to store, roots to remember, and what had to be rejected.

    Calls that start before `min_start_ns` (older than raw retention) or after `max_start_ns` (a
    clock far in the future) are rejected with a reason, as OTLP partial success expects.
    """
    batch = Batch(spans_received=decoded.received)
    for reason in decoded.invalid:
        batch.reject(1, reason)

    by_id: dict[tuple[str, str], SpanView] = {(s.trace_id, s.span_id): s for s in decoded.spans}
    calls: dict[tuple[str, str], CallRecord] = {}
    for span in decoded.spans:
        call = extract_call(span)
        if call is None:
            continue
        if not min_start_ns <= call.start_ns <= max_start_ns:
            batch.reject(
                1,
                "span start time outside the accepted window (older than raw retention or in the future); "
                "check the sender's clock",
            )
            continue
        calls[(span.trace_id, span.span_id)] = call

    def ancestors(trace_id: str, parent_span_id: str) -> list[SpanView]:
        chain: list[SpanView] = []
        while parent_span_id and len(chain) < _MAX_DEPTH:
            parent = by_id.get((trace_id, parent_span_id))
            if parent is None:
                break
            chain.append(parent)
            parent_span_id = parent.parent_span_id
        return chain

    # Leaf calls only: a call with a call below it is a wrapper of that call (or, for a model
    # server's own span, the call's client is kept and the server span dropped).
    dropped: set[tuple[str, str]] = set()
    for key, call in calls.items():
        for ancestor in ancestors(call.trace_id, call.parent_span_id):
            outer = calls.get((call.trace_id, ancestor.span_id))
            if outer is None:
                continue
            if call.server_side and not outer.server_side:
                dropped.add(key)
                if outer.ttft_ms is None:
                    outer.ttft_ms = call.ttft_ms  # the server's first token: self-hosted prefill vs decode
            else:
                dropped.add((call.trace_id, ancestor.span_id))
            break
    kept = {key: call for key, call in calls.items() if key not in dropped}

    # Attribution from ancestors (nearest first) and the trace's root span. An ancestor's own
    # attribution is read once, however many calls sit below it.
    span_context: dict[int, tuple[str | None, str | None, str | None, list[str] | None]] = {}

    def context_of(span: SpanView) -> tuple[str | None, str | None, str | None, list[str] | None]:
        found = span_context.get(id(span))
        if found is None:
            attrs = span.attrs
            found = (_user_id(attrs), _session_id(attrs), _str(attrs.get("costline.feature")), _tags(attrs))
            span_context[id(span)] = found
        return found

    for call in kept.values():
        chain = ancestors(call.trace_id, call.parent_span_id)
        for ancestor in chain:
            wrapper = calls.get((call.trace_id, ancestor.span_id))
            if wrapper is not None:
                call.adopt_context(wrapper)
            user, session, explicit, tags = context_of(ancestor)
            if call.user_id is None:
                call.user_id = user
            if call.session_id is None:
                call.session_id = session
            if call.feature_source is None and explicit is not None:
                call.feature, call.feature_source = explicit[:300], "attribute"
            if call.tags is None:
                call.tags = tags
        top = chain[-1] if chain else None
        if call.feature_source is None:
            if not call.parent_span_id:  # the call is its own trace's root
                call.feature, call.feature_source = root_feature(by_id[(call.trace_id, call.span_id)]), "root"
            elif top is not None and not top.parent_span_id:
                call.feature, call.feature_source = root_feature(top), "root"

    # One call per provider request when several emitters report it (different instrumentation).
    survivors = _dedupe_across_emitters(list(kept.values()))
    batch.calls = survivors

    for span in decoded.spans:
        if span.parent_span_id or (span.trace_id, span.span_id) in calls:
            continue
        user, session, _, _ = context_of(span)
        batch.roots.append(
            RootRecord(
                trace_id=span.trace_id,
                start_ns=span.start_ns,
                feature=root_feature(span),
                user_id=user,
                session_id=session,
            )
        )
    return batch


def _dedupe_across_emitters(calls: list[CallRecord]) -> list[CallRecord]:
    by_key: dict[str, list[CallRecord]] = {}
    for call in calls:
        for key in call.provider_keys:
            by_key.setdefault(key, []).append(call)
    losers: set[int] = set()
    for group in by_key.values():
        if len(group) < 2 or len({c.emitter for c in group}) < 2:
            continue  # the same instrumentation never reports one request twice
        best = min(group, key=lambda c: (c.rank, c.start_ns))
        for other in group:
            if other is not best and other.emitter != best.emitter:
                best.adopt_context(other)
                losers.add(id(other))
    return [c for c in calls if id(c) not in losers]
