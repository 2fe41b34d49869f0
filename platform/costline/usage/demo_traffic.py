"""Demo traffic: a small company's LLM features, hour by hour, as the OTLP exports its services send.

Five services of a made-up company call OpenAI, Anthropic and a self-hosted vLLM, each instrumented
with OpenTelemetry: a root HTTP server span per request (or a job span for the batch worker) and one
client span per model call, named and attributed per the GenAI semantic conventions. Volume follows
office hours and weekends in the organisation's time zone; some calls stream (time to first chunk),
hit prompt caches, reason, fail (rate limits, timeouts, overloads) and are retried.

Plain functions over plain data, no Django: `hour_traces` draws one hour from a random generator seeded
by (seed, hour), so the same hour is always the same traffic with the same trace and span ids, and
`hours_export` encodes hours as one ExportTraceServiceRequest. That is what makes the demo idempotent:
sending an hour again stores nothing new, because the collector skips spans it already has.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.common.v1 import common_pb2

from collector.fingerprint import prompt_evidence

NS = 1_000_000_000
HOUR = timedelta(hours=1)

SPAN_KIND_INTERNAL, SPAN_KIND_SERVER, SPAN_KIND_CLIENT = 1, 2, 3
STATUS_ERROR = 2

OPENAI_SCOPE = "opentelemetry.instrumentation.openai_v2"
ANTHROPIC_SCOPE = "opentelemetry.instrumentation.anthropic"
SELF_HOSTED_MODEL = "meta-llama/Llama-3.1-8B-Instruct"

# --- Models ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Model:
    provider: str  # gen_ai.provider.name
    name: str  # gen_ai.request.model
    snapshot: str  # gen_ai.response.model: the dated version that answered
    address: str  # server.address
    scope: str  # the instrumentation library that reports the call
    sdk: str  # the client library, which names the exceptions (error.type)
    first_token_s: float  # median time to the first token
    tokens_per_s: float  # output speed
    id_prefix: str  # of gen_ai.response.id


def _openai(
    name: str, snapshot: str, first_token_s: float, tokens_per_s: float, id_prefix: str = "chatcmpl-"
) -> Model:
    return Model(
        "openai",
        name,
        snapshot,
        "api.openai.com",
        OPENAI_SCOPE,
        "openai",
        first_token_s,
        tokens_per_s,
        id_prefix,
    )


def _anthropic(name: str, first_token_s: float, tokens_per_s: float) -> Model:
    return Model(
        "anthropic",
        name,
        name,
        "api.anthropic.com",
        ANTHROPIC_SCOPE,
        "anthropic",
        first_token_s,
        tokens_per_s,
        "msg_01",
    )


GPT_4O_MINI = _openai("gpt-4o-mini", "gpt-4o-mini-2024-07-18", 0.35, 95)
GPT_41_MINI = _openai("gpt-4.1-mini", "gpt-4.1-mini-2025-04-14", 0.4, 85)
GPT_4O = _openai("gpt-4o", "gpt-4o-2024-08-06", 0.5, 70)
O4_MINI = _openai("o4-mini", "o4-mini-2025-04-16", 1.8, 130)
EMBEDDING = _openai("text-embedding-3-small", "text-embedding-3-small", 0.09, 0, id_prefix="")
SONNET = _anthropic("claude-sonnet-4-20250514", 0.9, 60)
HAIKU = _anthropic("claude-3-5-haiku-20241022", 0.5, 110)
# The company's own vLLM deployment, reached with the OpenAI client (hence its exceptions).
LLAMA = Model(
    "vllm",
    SELF_HOSTED_MODEL,
    SELF_HOSTED_MODEL,
    "vllm.inference.svc.cluster.local",
    OPENAI_SCOPE,
    "openai",
    0.12,
    170,
    "chatcmpl-",
)

# --- Spans and traces (plain data, then protobuf) ----------------------------------------------------


@dataclass
class Span:
    span_id: bytes
    parent_id: bytes
    name: str
    kind: int
    start_ns: int
    end_ns: int
    attrs: dict[str, Any]
    scope: str
    status_code: int = 0
    status_message: str = ""


@dataclass
class Trace:
    service: str
    environment: str
    trace_id: bytes
    spans: list[Span] = field(default_factory=list)

    @property
    def start_ns(self) -> int:
        return min(s.start_ns for s in self.spans)

    @property
    def end_ns(self) -> int:
        return max(s.end_ns for s in self.spans)

    @property
    def calls(self) -> int:
        return sum(1 for s in self.spans if s.kind == SPAN_KIND_CLIENT)


# --- Who uses it: people of the company and customers of its product --------------------------------

EMPLOYEES = (
    "ana.silva",
    "ben.okafor",
    "chen.wei",
    "dana.kowalski",
    "eli.haddad",
    "farah.nasser",
    "gus.lindqvist",
    "hana.sato",
    "ivan.petrov",
    "jules.martin",
    "kofi.mensah",
    "lena.fischer",
)


# The advisor's evidence, as the gateway sends it (hashes of prompts, never text): each kind of request has
# a long system prompt of its own (a shared prefix), and a share of its questions come from a small pool of
# common ones (exact repeats), a few of them reworded (near-duplicates). Drawn from a generator of their
# own, so the rest of the demo draws the same numbers as without them.
REPEATED_QUESTIONS = {"/v1/search": 0.4, "/v1/answer": 0.3, "POST /api/chat": 0.25}
DEFAULT_REPEATED = 0.1


def _prompt_attributes(
    family: str, start_ns: int, input_tokens: int, temperature: float | None, max_tokens: int | None
) -> dict[str, Any]:
    rng = seeded("prompt", family, start_ns)
    system = f"You are Acme's assistant for {family}. " + "Answer from the knowledge base, cite it. " * 80
    share = REPEATED_QUESTIONS.get(family, DEFAULT_REPEATED)
    draw = rng.random()
    common = min(int(rng.paretovariate(1.1)), 40)
    if draw < share:
        question = f"How do I do common task number {common} with {family}?"
    elif draw < share * 1.2:
        question = f"how do i do common task number {common} with {family}, please"
    else:
        question = f"Question {rng.getrandbits(64):016x} about {family}: details {rng.getrandbits(64):x}"
    evidence = prompt_evidence(
        [{"role": "system", "content": system}, {"role": "user", "content": question}],
        parameters={"temperature": temperature, "max_tokens": max_tokens},
        input_tokens=input_tokens,
    )
    return evidence.span_attributes() if evidence is not None else {}


def seeded(*parts: object) -> random.Random:
    """A generator that draws the same numbers for the same seed and parts, on every run and machine."""
    return random.Random(":".join(["costline-demo", *map(str, parts)]))  # noqa: S311 - reproducible, not secret


def customers(seed: int, count: int = 30) -> tuple[str, ...]:
    rng = seeded(seed, "customers")
    return tuple(f"cus_{rng.getrandbits(40):010x}" for _ in range(count))


def zipf_weights(count: int, exponent: float = 1.0) -> list[float]:
    """A few heavy users and a long tail, as every product has."""
    return [1 / (rank + 1) ** exponent for rank in range(count)]


# --- When they use it -----------------------------------------------------------------------------------

# Relative volume by local hour of day, and by weekday (Monday first).
OFFICE_HOURS = (
    0.05, 0.04, 0.03, 0.03, 0.04, 0.08, 0.2, 0.45, 0.85, 1.0, 1.0, 0.95,
    0.8, 0.95, 1.0, 1.0, 0.9, 0.7, 0.45, 0.3, 0.2, 0.15, 0.1, 0.07,
)  # fmt: skip
CUSTOMER_HOURS = (
    0.25, 0.18, 0.12, 0.1, 0.1, 0.15, 0.3, 0.55, 0.8, 0.95, 1.0, 1.0,
    0.95, 0.95, 1.0, 1.0, 0.95, 0.9, 0.85, 0.8, 0.7, 0.6, 0.45, 0.35,
)  # fmt: skip
OFFICE_WEEK = (1.0, 1.05, 1.05, 1.0, 0.9, 0.12, 0.08)
CUSTOMER_WEEK = (1.0, 1.0, 1.0, 1.0, 0.95, 0.55, 0.5)


def hourly_rate(
    requests_per_weekday: float, hours: tuple[float, ...], week: tuple[float, ...], local: datetime
) -> float:
    """Expected requests in the local hour starting at `local`."""
    return requests_per_weekday * hours[local.hour] / sum(hours) * week[local.weekday()]


def day_factor(seed: int, service: str, day: date) -> float:
    """Busy and quiet days (±10%) and a slow six-week swell (±12%), the same on every run."""
    rng = seeded(seed, service, day.isoformat())
    return math.exp(rng.gauss(0, 0.1)) * (1 + 0.12 * math.sin(2 * math.pi * day.toordinal() / 42))


@dataclass(frozen=True)
class Incident:
    """An hour in which one provider fails a quarter of the calls (rate limits or overloads)."""

    provider: str
    local_hour: int
    error: str


def incident_of(seed: int, day: date) -> Incident | None:
    rng = seeded(seed, "incident", day.isoformat())
    if rng.random() >= 0.2:  # about one day a week
        return None
    provider, error = rng.choice((("openai", "rate_limit"), ("anthropic", "overloaded")))
    return Incident(provider, rng.randrange(9, 18), error)


# --- A request in progress ---------------------------------------------------------------------------

ERRORS: dict[str, tuple[str, str]] = {
    # kind → (exception class after the SDK name, status message); the collector classifies them.
    "rate_limit": (
        "RateLimitError",
        "Error code: 429 - Rate limit reached for requests. Please try again later.",
    ),
    "timeout": ("APITimeoutError", "Request timed out."),
    "overloaded": (
        "InternalServerError",
        "Error code: 529 - {'type': 'error', 'error': {'type': 'overloaded_error', 'message': 'Overloaded'}}",
    ),
    "server_error": (
        "InternalServerError",
        "Error code: 500 - The server had an error processing your request.",
    ),
    "connection": ("APIConnectionError", "Connection error."),
}
BASE_ERROR_RATES = (("rate_limit", 0.005), ("timeout", 0.002), ("server_error", 0.002))
INCIDENT_ERROR_RATE = 0.25
CLIENT_TIMEOUT_S = 30.0


def lognormal(rng: random.Random, median: float, sigma: float) -> float:
    return median * math.exp(rng.gauss(0, sigma))


def tokens(rng: random.Random, median: float, sigma: float, low: int, high: int) -> int:
    return max(low, min(high, round(lognormal(rng, median, sigma))))


class Request:
    """Builds one trace: a root span, then model calls one after another, each after the last ends."""

    def __init__(
        self,
        rng: random.Random,
        trace: Trace,
        root: Span,
        incident: Incident | None,
        local_hour: int,
    ) -> None:
        self.rng = rng
        self.trace = trace
        self.root = root
        self.clock = root.start_ns + round(lognormal(rng, 4, 0.5) * 1e6)  # routing, auth, database
        self.incident = incident
        self.local_hour = local_hour
        self.failed = False
        trace.spans.append(root)

    def span_id(self) -> bytes:
        return (self.rng.getrandbits(64) | 1).to_bytes(8, "big")

    def pause(self, median_ms: float) -> None:
        self.clock += round(lognormal(self.rng, median_ms, 0.6) * 1e6)

    def _error(self, model: Model) -> str | None:
        rng = self.rng
        if (
            self.incident is not None
            and self.incident.provider == model.provider
            and self.incident.local_hour == self.local_hour
            and rng.random() < INCIDENT_ERROR_RATE
        ):
            return self.incident.error
        draw = rng.random()
        for kind, rate in BASE_ERROR_RATES:
            if draw < rate:
                if model.provider == "anthropic" and kind == "server_error":
                    return "overloaded"
                if model.provider == "vllm" and kind != "timeout":
                    return "connection"
                return kind
            draw -= rate
        return None

    def call(
        self,
        model: Model,
        *,
        input_tokens: int,
        output_tokens: int = 0,
        cache_read: int = 0,
        cache_write: int = 0,
        reasoning: int = 0,
        stream: bool = False,
        max_tokens: int | None = None,
        temperature: float | None = None,
        finish: str = "stop",
        feature: str | None = None,
        retries: int = 1,
    ) -> bool:
        """One model call (and the app's retries of a rate-limited one); False when it finally failed."""
        for attempt in range(retries + 1):
            error = self._error(model)
            self._call_span(
                model,
                error=error,
                input_tokens=input_tokens,
                output_tokens=output_tokens,
                cache_read=cache_read,
                cache_write=cache_write,
                reasoning=reasoning,
                stream=stream,
                max_tokens=max_tokens,
                temperature=temperature,
                finish=finish,
                feature=feature,
            )
            if error is None:
                return True
            if error not in ("rate_limit", "overloaded") or attempt == retries:
                self.failed = True
                return False
            self.pause(1500 * (attempt + 1))  # back off, then try again
        return False

    def _call_span(
        self,
        model: Model,
        *,
        error: str | None,
        input_tokens: int,
        output_tokens: int,
        cache_read: int,
        cache_write: int,
        reasoning: int,
        stream: bool,
        max_tokens: int | None,
        temperature: float | None,
        finish: str,
        feature: str | None,
    ) -> None:
        rng = self.rng
        embeddings = model is EMBEDDING
        operation = "embeddings" if embeddings else "chat"
        self.pause(3)
        start = self.clock
        first_token = lognormal(rng, model.first_token_s, 0.3)
        if cache_read:
            first_token *= 0.8  # a cached prefix is not computed again
        if embeddings:
            duration = first_token + input_tokens / 50_000
        else:
            duration = first_token + output_tokens / lognormal(rng, model.tokens_per_s, 0.15)
            if rng.random() < 0.02:
                duration *= 2.5  # the slow tail every provider has
        attrs: dict[str, Any] = {
            "gen_ai.operation.name": operation,
            "gen_ai.provider.name": model.provider,
            "gen_ai.request.model": model.name,
            "server.address": model.address,
            "server.port": 443 if model.provider != "vllm" else 8000,
        }
        if max_tokens is not None:
            attrs["gen_ai.request.max_tokens"] = max_tokens
        if temperature is not None:
            attrs["gen_ai.request.temperature"] = temperature
        if stream:
            attrs["gen_ai.request.stream"] = True
        if feature is not None:
            attrs["costline.feature"] = feature
        if not embeddings:
            family = feature or str(self.root.attrs.get("http.route") or self.root.name)
            attrs.update(_prompt_attributes(family, start, input_tokens, temperature, max_tokens))
        status_code, status_message = 0, ""
        if error is not None:
            exception, status_message = ERRORS[error]
            attrs["error.type"] = f"{model.sdk}.{exception}"
            status_code = STATUS_ERROR
            if error == "timeout":
                duration = CLIENT_TIMEOUT_S
            elif error == "connection":
                duration = lognormal(rng, 0.02, 0.5)
            else:
                duration = lognormal(rng, 0.25, 0.4)
        else:
            attrs["gen_ai.response.model"] = model.snapshot
            if model.id_prefix:
                attrs["gen_ai.response.id"] = f"{model.id_prefix}{rng.getrandbits(96):024x}"
            attrs["gen_ai.usage.input_tokens"] = input_tokens
            if not embeddings:
                attrs["gen_ai.usage.output_tokens"] = output_tokens
                attrs["gen_ai.response.finish_reasons"] = [finish]
            if cache_read:
                attrs["gen_ai.usage.cache_read.input_tokens"] = cache_read
            if cache_write:
                attrs["gen_ai.usage.cache_creation.input_tokens"] = cache_write
            if reasoning:
                attrs["gen_ai.usage.reasoning.output_tokens"] = reasoning
            if stream:
                attrs["gen_ai.response.time_to_first_chunk"] = round(first_token, 4)
        end = start + round(duration * NS)
        name = f"{operation} {model.name}"
        self.trace.spans.append(
            Span(
                self.span_id(),
                self.root.span_id,
                name,
                SPAN_KIND_CLIENT,
                start,
                end,
                attrs,
                model.scope,
                status_code,
                status_message,
            )
        )
        self.clock = end

    def finish(self) -> Trace:
        self.pause(2)
        root = self.root
        root.end_ns = self.clock
        if "http.route" in root.attrs:
            root.attrs["http.response.status_code"] = 504 if self.failed else 200
        if self.failed:
            root.status_code = STATUS_ERROR
        return self.trace


# --- The services -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Audience:
    """Who sends the requests of one hour, and in which sessions."""

    users: tuple[str, ...]
    weights: list[float]
    day: date

    def user(self, rng: random.Random) -> str:
        return rng.choices(self.users, self.weights)[0]

    def session(self, rng: random.Random, user: str, prefix: str) -> str:
        # A person has one to three sessions of a kind a day.
        number = rng.randrange(3)
        digest = hashlib.blake2b(f"{prefix}:{user}:{self.day}:{number}".encode(), digest_size=6).hexdigest()
        return f"{prefix}_{digest}"


def _http_root(
    rng: random.Random,
    start_ns: int,
    method: str,
    route: str,
    path: str,
    scope: str,
    extra: dict[str, Any],
) -> Span:
    attrs: dict[str, Any] = {
        "http.request.method": method,
        "http.route": route,
        "url.path": path,
        "url.scheme": "https",
        **extra,
    }
    return Span(
        (rng.getrandbits(64) | 1).to_bytes(8, "big"),
        b"",
        f"{method} {route}",
        SPAN_KIND_SERVER,
        start_ns,
        start_ns,
        attrs,
        scope,
    )


@dataclass(frozen=True)
class Service:
    name: str
    environments: tuple[tuple[str, float], ...]  # (deployment.environment.name, share of the traffic)
    requests_per_weekday: float
    hours: tuple[float, ...]
    week: tuple[float, ...]
    request: Callable[[random.Random, Request, Audience], None]
    root: Callable[[random.Random, int], Span]
    audience: str  # "customers" or "employees"


def _support_root(rng: random.Random, start_ns: int) -> Span:
    if rng.random() < 0.1:
        ticket = rng.randrange(10_000, 99_999)
        return _http_root(
            rng,
            start_ns,
            "POST",
            "/v1/tickets/{ticket_id}/summary",
            f"/v1/tickets/{ticket}/summary",
            "opentelemetry.instrumentation.fastapi",
            {"costline.feature": "ticket-summary"},
        )
    return _http_root(
        rng,
        start_ns,
        "POST",
        "/v1/chat",
        "/v1/chat",
        "opentelemetry.instrumentation.fastapi",
        {"costline.feature": "support-chat"},
    )


def _support_request(rng: random.Random, req: Request, audience: Audience) -> None:
    user = audience.user(rng)
    req.root.attrs["user.id"] = user
    req.root.attrs["session.id"] = audience.session(rng, user, "chat")
    if req.root.attrs["costline.feature"] == "ticket-summary":
        req.call(
            HAIKU,
            input_tokens=tokens(rng, 3500, 0.4, 600, 20_000),
            output_tokens=tokens(rng, 220, 0.3, 40, 800),
            max_tokens=1024,
            temperature=0.3,
        )
        return
    # Route the question with a small model, then answer it with a strong one, streaming.
    prompt = tokens(rng, 1250, 0.1, 1030, 1800)
    if not req.call(
        GPT_4O_MINI,
        input_tokens=prompt,
        output_tokens=tokens(rng, 12, 0.5, 2, 60),
        cache_read=1024 if rng.random() < 0.6 else 0,
        max_tokens=64,
        temperature=0.0,
    ):
        return
    system = 2816  # system prompt and tool definitions: the cached prefix
    history = tokens(rng, 900, 0.8, 50, 30_000)
    draw = rng.random()
    cache_read, cache_write = (system, 0) if draw < 0.75 else (0, system) if draw < 0.85 else (0, 0)
    tool_use = rng.random() < 0.12
    if not req.call(
        SONNET,
        input_tokens=system + history,
        output_tokens=tokens(rng, 280, 0.5, 20, 4000),
        cache_read=cache_read,
        cache_write=cache_write,
        stream=True,
        max_tokens=4096,
        temperature=0.4,
        finish="tool_use" if tool_use else "end_turn",
    ):
        return
    if tool_use:
        req.pause(120)  # the tool runs (order lookup)
        req.call(
            SONNET,
            input_tokens=system + history + tokens(rng, 600, 0.5, 50, 8000),
            output_tokens=tokens(rng, 240, 0.5, 20, 4000),
            cache_read=system,
            stream=True,
            max_tokens=4096,
            temperature=0.4,
            finish="end_turn",
        )


def _search_root(rng: random.Random, start_ns: int) -> Span:
    if rng.random() < 0.45:
        return _http_root(
            rng, start_ns, "GET", "/v1/search", "/v1/search", "opentelemetry.instrumentation.fastapi", {}
        )
    return _http_root(
        rng, start_ns, "POST", "/v1/answer", "/v1/answer", "opentelemetry.instrumentation.fastapi", {}
    )


def _search_request(rng: random.Random, req: Request, audience: Audience) -> None:
    if rng.random() < 0.6:  # signed-in visitors
        user = audience.user(rng)
        req.root.attrs["user.id"] = user
        req.root.attrs["session.id"] = audience.session(rng, user, "web")
    if not req.call(EMBEDDING, input_tokens=tokens(rng, 14, 0.5, 2, 200)):
        return
    req.pause(25)  # vector search
    if req.root.attrs["http.route"] == "/v1/answer":
        req.call(
            GPT_41_MINI,
            input_tokens=tokens(rng, 2600, 0.35, 1100, 12_000),
            output_tokens=tokens(rng, 220, 0.45, 30, 1500),
            cache_read=1024 if rng.random() < 0.4 else 0,
            stream=True,
            max_tokens=1024,
            temperature=0.2,
        )


def _docs_root(rng: random.Random, start_ns: int) -> Span:
    if rng.random() < 0.15:
        doc = rng.randrange(1000, 9999)
        return _http_root(
            rng,
            start_ns,
            "POST",
            "/v1/documents/{doc_id}/translate",
            f"/v1/documents/{doc}/translate",
            "opentelemetry.instrumentation.flask",
            {},
        )
    return _http_root(
        rng, start_ns, "POST", "/v1/summaries", "/v1/summaries", "opentelemetry.instrumentation.flask", {}
    )


def _docs_request(rng: random.Random, req: Request, audience: Audience) -> None:
    req.root.attrs["user.id"] = audience.user(rng)
    if req.root.attrs["http.route"].endswith("/translate"):
        size = tokens(rng, 2500, 0.5, 200, 14_000)
        req.call(
            GPT_4O,
            input_tokens=size + 350,
            output_tokens=round(size * lognormal(rng, 1.1, 0.1)),
            max_tokens=16_384,
            temperature=0.2,
        )
        return
    # Map-reduce: summarise each chunk, then summarise the summaries.
    summaries = 0
    for _ in range(rng.randint(2, 6)):
        out = tokens(rng, 320, 0.35, 60, 1200)
        if not req.call(
            GPT_41_MINI,
            input_tokens=tokens(rng, 5000, 0.3, 800, 8000),
            output_tokens=out,
            max_tokens=1500,
            temperature=0.3,
        ):
            return
        summaries += out
    final = GPT_4O if rng.random() < 0.7 else HAIKU
    req.call(
        final,
        input_tokens=summaries + 800,
        output_tokens=tokens(rng, 600, 0.35, 100, 3000),
        max_tokens=4096,
        temperature=0.3,
        finish="length" if rng.random() < 0.03 else "stop",
    )


def _review_root(rng: random.Random, start_ns: int) -> Span:
    return _http_root(
        rng,
        start_ns,
        "POST",
        "/webhooks/github",
        "/webhooks/github",
        "opentelemetry.instrumentation.fastapi",
        {"costline.feature": "pr-review"},
    )


def _review_request(rng: random.Random, req: Request, audience: Audience) -> None:
    req.root.attrs["user.id"] = audience.user(rng)
    diff = tokens(rng, 3500, 0.7, 200, 60_000)
    # The self-hosted model triages every pull request; a reasoning model reviews the real ones.
    if not req.call(
        LLAMA,
        input_tokens=diff + 900,
        output_tokens=tokens(rng, 40, 0.4, 5, 200),
        cache_read=768 if rng.random() < 0.7 else 0,
        max_tokens=256,
        temperature=0.0,
    ):
        return
    if rng.random() < 0.8:
        reasoning = tokens(rng, 1400, 0.6, 100, 20_000)
        req.call(
            O4_MINI,
            input_tokens=diff + 2200,
            output_tokens=reasoning + tokens(rng, 700, 0.5, 50, 4000),
            reasoning=reasoning,
            cache_read=2048 if rng.random() < 0.3 else 0,
            max_tokens=25_000,
        )


def _tagger_root(rng: random.Random, start_ns: int) -> Span:
    return Span(
        (rng.getrandbits(64) | 1).to_bytes(8, "big"),
        b"",
        "tag-tickets",
        SPAN_KIND_INTERNAL,
        start_ns,
        start_ns,
        {"costline.feature": "ticket-tagging"},
        "batch_tagger.jobs",
    )


def _tagger_request(rng: random.Random, req: Request, audience: Audience) -> None:
    # A job tags the tickets of the last hour with the self-hosted model; its prompt prefix is cached
    # by vLLM. Answers it cannot parse go to a hosted model, a feature of their own (the call's
    # costline.feature attribute wins over the job's).
    for _ in range(rng.randint(30, 70)):
        ok = req.call(
            LLAMA,
            input_tokens=tokens(rng, 700, 0.35, 300, 4000),
            output_tokens=tokens(rng, 18, 0.4, 3, 80),
            cache_read=512 if rng.random() < 0.85 else 0,
            max_tokens=64,
            temperature=0.0,
            retries=0,
        )
        if not ok or rng.random() < 0.04:
            req.call(
                GPT_4O_MINI,
                input_tokens=tokens(rng, 700, 0.35, 300, 4000),
                output_tokens=tokens(rng, 18, 0.4, 3, 80),
                max_tokens=64,
                temperature=0.0,
                feature="ticket-tagging-fallback",
            )
        req.pause(40)


NIGHTLY = (0, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)  # five jobs, 01:00-05:59
EVERY_DAY = (1, 1, 1, 1, 1, 1, 1)

SERVICES = (
    Service(
        "support-bot",
        (("production", 0.95), ("staging", 0.05)),
        950,
        CUSTOMER_HOURS,
        CUSTOMER_WEEK,
        _support_request,
        _support_root,
        "customers",
    ),
    Service(
        "search-api",
        (("production", 0.94), ("staging", 0.06)),
        1150,
        CUSTOMER_HOURS,
        CUSTOMER_WEEK,
        _search_request,
        _search_root,
        "customers",
    ),
    Service(
        "docs-summariser",
        (("production", 1.0),),
        120,
        OFFICE_HOURS,
        OFFICE_WEEK,
        _docs_request,
        _docs_root,
        "employees",
    ),
    Service(
        "code-review",
        (("production", 1.0),),
        130,
        OFFICE_HOURS,
        OFFICE_WEEK,
        _review_request,
        _review_root,
        "employees",
    ),
    Service(
        "batch-tagger",
        (("production", 1.0),),
        10,
        NIGHTLY,
        EVERY_DAY,
        _tagger_request,
        _tagger_root,
        "employees",
    ),
)

RESOURCE = {
    "telemetry.sdk.language": "python",
    "telemetry.sdk.name": "opentelemetry",
    "telemetry.sdk.version": "1.27.0",
}
VERSIONS = {
    "support-bot": "2.14.1",
    "search-api": "1.8.0",
    "docs-summariser": "0.9.3",
    "code-review": "1.2.0",
    "batch-tagger": "3.0.2",
}


# --- One hour -------------------------------------------------------------------------------------------


def poisson(rng: random.Random, mean: float) -> int:
    if mean <= 0:
        return 0
    if mean > 30:  # the normal approximation is close enough here, and one draw instead of `mean`
        return max(0, round(rng.gauss(mean, math.sqrt(mean))))
    limit, count, product = math.exp(-mean), 0, rng.random()
    while product > limit:
        count += 1
        product *= rng.random()
    return count


def hour_traces(seed: int, hour: datetime, zone: ZoneInfo) -> list[Trace]:
    """Every request that starts in the UTC hour `hour`, always the same for the same seed and hour."""
    local = hour.astimezone(zone)
    day = local.date()
    rng = seeded(seed, int(hour.timestamp()))
    incident = incident_of(seed, day)
    people = {
        "customers": Audience(customers(seed), zipf_weights(30, 0.9), day),
        "employees": Audience(EMPLOYEES, zipf_weights(len(EMPLOYEES), 0.6), day),
    }
    hour_ns = int(hour.timestamp()) * NS
    traces: list[Trace] = []
    for service in SERVICES:
        mean = hourly_rate(service.requests_per_weekday, service.hours, service.week, local)
        count = poisson(rng, mean * day_factor(seed, service.name, day))
        environments = [env for env, _ in service.environments]
        shares = [share for _, share in service.environments]
        for _ in range(count):
            start = hour_ns + rng.randrange(3600 * NS)
            environment = rng.choices(environments, shares)[0] if len(environments) > 1 else environments[0]
            trace = Trace(service.name, environment, rng.getrandbits(128).to_bytes(16, "big"))
            request = Request(rng, trace, service.root(rng, start), incident, local.hour)
            service.request(rng, request, people[service.audience])
            traces.append(request.finish())
    return traces


# --- Encoding: what an OpenTelemetry SDK (through an OpenTelemetry Collector) sends ----------------------


def _any_value(value: Any) -> common_pb2.AnyValue:
    if isinstance(value, bool):
        return common_pb2.AnyValue(bool_value=value)
    if isinstance(value, int):
        return common_pb2.AnyValue(int_value=value)
    if isinstance(value, float):
        return common_pb2.AnyValue(double_value=value)
    if isinstance(value, list | tuple):
        return common_pb2.AnyValue(array_value=common_pb2.ArrayValue(values=[_any_value(v) for v in value]))
    return common_pb2.AnyValue(string_value=str(value))


def key_values(attrs: dict[str, Any]) -> list[common_pb2.KeyValue]:
    return [common_pb2.KeyValue(key=key, value=_any_value(value)) for key, value in attrs.items()]


def export_request(traces: Iterable[Trace]) -> trace_service_pb2.ExportTraceServiceRequest:
    """One ExportTraceServiceRequest: a resource per (service, environment), a scope per library."""
    request = trace_service_pb2.ExportTraceServiceRequest()
    scopes: dict[tuple[str, str], dict[str, Any]] = {}
    resources: dict[tuple[str, str], Any] = {}
    for trace in traces:
        key = (trace.service, trace.environment)
        resource_spans = resources.get(key)
        if resource_spans is None:
            resource_spans = request.resource_spans.add()
            resource_spans.resource.attributes.extend(
                key_values(
                    {
                        "service.name": trace.service,
                        "service.version": VERSIONS.get(trace.service, "1.0.0"),
                        "deployment.environment.name": trace.environment,
                        **RESOURCE,
                    }
                )
            )
            resources[key] = resource_spans
            scopes[key] = {}
        for span in trace.spans:
            scope_spans = scopes[key].get(span.scope)
            if scope_spans is None:
                scope_spans = resource_spans.scope_spans.add()
                scope_spans.scope.name = span.scope
                scopes[key][span.scope] = scope_spans
            out = scope_spans.spans.add()
            out.trace_id = trace.trace_id
            out.span_id = span.span_id
            if span.parent_id:
                out.parent_span_id = span.parent_id
            out.name = span.name
            out.kind = span.kind
            out.start_time_unix_nano = span.start_ns
            out.end_time_unix_nano = span.end_ns
            out.attributes.extend(key_values(span.attrs))
            if span.status_code:
                out.status.code = span.status_code
                out.status.message = span.status_message
    return request


@dataclass(frozen=True)
class Export:
    body: bytes  # a serialized ExportTraceServiceRequest; empty when no trace was ready
    calls: list[int]  # per hour
    spans: int


def hours_export(
    seed: int, hours: Sequence[datetime], zone: ZoneInfo, *, start: datetime, end: datetime
) -> Export:
    """One export of the hours' traces that lie wholly in [start, end).

    A span is exported once it has ended, so a trace still running at `end` (now) is left for the next
    run, which draws the same hour again and sends it whole. Several hours go in one export, as an
    OpenTelemetry Collector in front of Costline batches its services' spans.
    """
    start_ns, end_ns = int(start.timestamp() * NS), int(end.timestamp() * NS)
    traces: list[Trace] = []
    calls = []
    for hour in hours:
        ready = [t for t in hour_traces(seed, hour, zone) if t.start_ns >= start_ns and t.end_ns <= end_ns]
        traces += ready
        calls.append(sum(t.calls for t in ready))
    body = export_request(traces).SerializeToString() if traces else b""
    return Export(body, calls, sum(len(t.spans) for t in traces))


def floor_hour(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
