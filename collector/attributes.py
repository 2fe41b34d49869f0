"""The span attributes the normaliser reads; the decoder keeps only these.

Spans carry many attributes Costline never reads (request parameters, URLs, and above all message
content, which can be kilobytes a span). Copying each into a Python object is the collector's largest
cost, so the decoders keep a span attribute only when `wanted(key)` says the normaliser may read it.
`tests/collector/test_attributes.py` checks every attribute name in `normalise.py` is wanted here.
"""

from __future__ import annotations

# Families read by prefix (usage details, identity properties, explicit Costline attributes).
WANTED_PREFIXES = (
    "gen_ai.usage.",
    "llm.token_count.",
    "llm.cost.",
    "ai.usage.",
    "ai.settings.context.",
    "ai.telemetry.metadata.",
    "traceloop.association.properties.",
    "langfuse.trace.metadata.",
    "costline.",
    # Prompt content, read only to hash and fingerprint it (collector.fingerprint), never stored.
    "llm.input_messages.",
    "llm.tools.",
    "gen_ai.prompt.",
)

WANTED_KEYS = frozenset(
    {
        # operation, provider, models
        "gen_ai.operation.name",
        "gen_ai.provider.name",
        "gen_ai.system",
        "gen_ai.request.model",
        "gen_ai.response.model",
        "gen_ai.response.id",
        "gen_ai.request.id",
        "gen_ai.response.finish_reasons",
        "gen_ai.completion.0.finish_reason",
        "gen_ai.request.stream",
        "gen_ai.is_streaming",
        "gen_ai.request.user",
        "gen_ai.user",
        "gen_ai.conversation.id",
        "gen_ai.response.time_to_first_chunk",
        "gen_ai.client.operation.time_to_first_chunk",
        "gen_ai.client.operation.duration",
        "gen_ai.server.time_to_first_token",
        "gen_ai.latency.time_to_first_token",
        "gen_ai.latency.e2e",
        "gen_ai.openai.api_base",
        "gen_ai.workflow.name",
        "gen_ai.agent.name",
        "server.address",
        "url.full",
        "service.name",
        "deployment.environment",
        "deployment.environment.name",
        "telemetry.sdk.name",
        "error.type",
        "http.response.status_code",
        "http.status_code",
        "http.route",
        "user.id",
        "enduser.id",
        "session.id",
        "tag.tags",
        # vendor ids and stop reasons
        "anthropic.request.id",
        "anthropic.message.stop_reason",
        "openai.request.id",
        # OpenInference
        "openinference.span.kind",
        "llm.provider",
        "llm.system",
        "llm.model_name",
        "llm.request.model_name",
        "llm.response.model_name",
        "llm.invocation_parameters",
        "llm.finish_reason",
        "llm.response.finish_reason",
        "llm.user",
        "llm.is_streaming",
        "llm.request.type",
        "llm.usage.total_tokens",
        "llm.usage.reasoning_tokens",
        "embedding.model_name",
        "embedding.invocation_parameters",
        # OpenLLMetry / Traceloop
        "traceloop.workflow.name",
        "traceloop.span.kind",
        # Vercel AI SDK
        "ai.operationId",
        "ai.model.id",
        "ai.model.provider",
        "ai.response.id",
        "ai.response.model",
        "ai.response.finishReason",
        "ai.response.msToFirstChunk",
        "ai.stream.msToFirstChunk",
        "ai.telemetry.functionId",
        # Langfuse (its output is content and stays out; its input is hashed, see below)
        "langfuse.observation.type",
        "langfuse.observation.model.name",
        "langfuse.observation.usage_details",
        "langfuse.observation.cost_details",
        "langfuse.observation.completion_start_time",
        "langfuse.observation.level",
        "langfuse.observation.status_message",
        "langfuse.observation.metadata.finish_reason",
        "langfuse.environment",
        "langfuse.user.id",
        "langfuse.session.id",
        "langfuse.trace.name",
        "langfuse.trace.tags",
        "vllm.served_model_name",  # a resource attribute of Costline's vLLM tier (read there, kept here too)
        # prompt content and the parameters that change an answer (hashed, never stored)
        "gen_ai.input.messages",
        "gen_ai.system_instructions",
        "gen_ai.tool.definitions",
        "gen_ai.request.temperature",
        "gen_ai.request.top_p",
        "gen_ai.request.max_tokens",
        "gen_ai.request.seed",
        "gen_ai.request.stop_sequences",
        "ai.prompt.messages",
        "ai.prompt.tools",
        "langfuse.observation.input",
    }
)

_decisions: dict[str, bool] = {}


def wanted(key: str) -> bool:
    """Whether the normaliser may read a span attribute named `key` (memoised: keys repeat)."""
    decision = _decisions.get(key)
    if decision is None:
        decision = key in WANTED_KEYS or key.startswith(WANTED_PREFIXES)
        if len(_decisions) > 100_000:  # attribute names are bounded in practice; memory is, always
            _decisions.clear()
        _decisions[key] = decision
    return decision
