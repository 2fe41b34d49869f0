"""One call through the gateway: budget, cache, route (fallbacks, cascade), settle, span.

    answer = await gateway.handle(caller, "chat", body, headers)

The steps, in order:
1. Resolve the model (alias or passthrough); unknown → 404.
2. Reserve the worst-case cost against every budget covering the call. Refused: throttle → 429 with
   Retry-After, block → 429 naming the budget; a budget in state downgrade routes the call to its
   cheaper model (`X-Costline-Downgraded-From`). Redis unreachable: 503 with Retry-After, or the call
   goes ahead unchecked with `COSTLINE_GATEWAY_FAIL_OPEN`.
3. Look the answer up in the exact cache (the lookup is written with the reservation: one round trip
   for both); identical concurrent requests share one upstream call.
4. Call the route's targets in order until one answers (or the cascade's cheap model first).
5. Settle the reservation with the actual cost (catalogue prices) and store the answer in the cache:
   both commands are written to Redis before the answer is sent, and their replies checked after it,
   with the span and the metrics (`Gateway.after`): the caller does not wait for those round trips.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, TypeVar

import aiohttp
import numpy as np
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from collector import fingerprint
from costline.budgets.reservations import Reservation, ReservationError
from inference.gateway import cache as response_cache
from inference.gateway import semantic
from inference.gateway.budget import Budgets, cost, estimate_input_tokens, max_output_tokens
from inference.gateway.callers import Caller, CallerStore
from inference.gateway.http1 import PlainHTTP
from inference.gateway.resp import LeanRedis
from inference.gateway.routes import Route, RouteTable, Target, UnknownModel
from inference.gateway.telemetry import KEY_ATTRIBUTE, Telemetry
from inference.gateway.upstream import Outcome, UpstreamFailure, call, open_stream

log = logging.getLogger(__name__)
T = TypeVar("T")

PATHS = {"chat": "chat/completions", "text_completion": "completions", "embeddings": "embeddings"}
REDIS_RETRY_AFTER_S = 1


@dataclass
class Answer:
    status: int
    body: dict[str, Any] | None = None
    stream: AsyncIterator[bytes] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    raw: bytes | None = None  # a body that is not JSON (/metrics), sent with `content_type`
    content_type: str = "application/json"
    # What the call left until its answer is sent (the server runs it then): see `Gateway.after`.
    after: Callable[[], Awaitable[None]] | None = None


def error(status: int, message: str, kind: str, code: str | None = None, **headers: str) -> Answer:
    """An answer in the OpenAI error format: {"error": {"message", "type", "param", "code"}}."""
    body = {"error": {"message": message, "type": kind, "param": None, "code": code}}
    return Answer(status, body, headers={k.replace("_", "-"): v for k, v in headers.items()})


@dataclass(frozen=True)
class GatewaySettings:
    fail_open: bool = False
    cache_ttl_s: int = 3600
    default_max_tokens: int = 4096


@dataclass
class Call:
    """What is known of one call as it goes through the steps."""

    caller: Caller
    operation: str
    body: dict[str, Any]
    headers: dict[str, str]
    asked_model: str
    route: Route
    start_ns: int = field(default_factory=time.time_ns)
    started: float = field(default_factory=time.perf_counter)
    reservation: Reservation | None = None
    decision: str = "none"
    downgraded_from: str | None = None
    cache_outcome: str = "miss"
    upstream_seconds: float = 0.0
    escalated_cost: Decimal = Decimal(0)  # a cascade's cheap call that was not kept, still paid for
    vector: np.ndarray | None = None  # the conversation's embedding, once the semantic cache made it
    similarity: float | None = None  # a semantic hit's cosine similarity
    # The call's span ids, chosen up front so the upstream request can carry them (W3C trace context).
    trace_id: int = field(default_factory=lambda: random.getrandbits(128) or 1)
    span_id: int = field(default_factory=lambda: random.getrandbits(64) or 1)
    # Left until the answer is sent: the replies of commands already written (settle, cache store), to
    # check, and the span to build.
    later: list[Awaitable[None] | Callable[[], None]] = field(default_factory=list)

    @property
    def traceparent(self) -> str:
        return f"00-{self.trace_id:032x}-{self.span_id:016x}-01"

    @property
    def stream(self) -> bool:
        return bool(self.body.get("stream")) and self.operation != "embeddings"

    @property
    def include_usage(self) -> bool:
        return bool((self.body.get("stream_options") or {}).get("include_usage"))

    def attrs(self) -> dict[str, str]:
        """The call's attributes as budget scopes filter them."""
        target = self.route.targets[0]
        return {
            "project": self.caller.project,
            "gateway_key": self.caller.key_prefix,
            "model": target.model,
            "provider": target.upstream.provider,
            "user": str(self.body.get("user") or ""),
            "feature": self.headers.get("x-costline-feature", ""),
        }


def _new_id(operation: str) -> str:
    return ("chatcmpl-" if operation == "chat" else "cmpl-") + os.urandom(12).hex()


def _replay(operation: str, body: dict[str, Any], include_usage: bool) -> AsyncIterator[bytes]:
    """A whole answer as the SSE chunks of a stream (a cache hit, or a coalesced follower)."""

    async def events() -> AsyncIterator[bytes]:
        base = {"id": body.get("id"), "created": body.get("created"), "model": body.get("model")}
        obj = "chat.completion.chunk" if operation == "chat" else "text_completion"
        for choice in body.get("choices") or []:
            index = choice.get("index", 0)
            if operation == "chat":
                message = choice.get("message") or {}
                delta = {"role": "assistant", "content": message.get("content") or ""}
                first = {"index": index, "delta": delta, "finish_reason": None}
                last = {"index": index, "delta": {}, "finish_reason": choice.get("finish_reason")}
            else:
                first = {"index": index, "text": choice.get("text") or "", "finish_reason": None}
                last = {"index": index, "text": "", "finish_reason": choice.get("finish_reason")}
            for part in (first, last):
                yield f"data: {json.dumps({**base, 'object': obj, 'choices': [part]})}\n\n".encode()
        if include_usage:
            usage: dict[str, Any] = {**base, "object": obj, "choices": [], "usage": body.get("usage")}
            yield f"data: {json.dumps(usage)}\n\n".encode()
        yield b"data: [DONE]\n\n"

    return events()


def _assembled(operation: str, outcome: Outcome) -> dict[str, Any]:
    """The non-streaming answer a stream amounts to (to cache it, or to answer coalesced followers)."""
    usage: dict[str, int] = {
        "prompt_tokens": outcome.input_tokens or 0,
        "completion_tokens": outcome.output_tokens or 0,
        "total_tokens": (outcome.input_tokens or 0) + (outcome.output_tokens or 0),
    }
    if operation == "chat":
        choice: dict[str, Any] = {
            "index": 0,
            "message": {"role": "assistant", "content": outcome.content},
            "finish_reason": outcome.finish_reason,
        }
        obj = "chat.completion"
    else:
        choice = {"index": 0, "text": outcome.content, "finish_reason": outcome.finish_reason}
        obj = "text_completion"
    return {
        "id": outcome.response_id,
        "object": obj,
        "created": int(time.time()),
        "model": outcome.response_model,
        "choices": [choice],
        "usage": usage,
    }


def _escalate(signals: tuple[str, ...], outcome: Outcome | None) -> str | None:
    """The first escalation signal the cheap model's answer shows, or None to keep it."""
    for signal in signals:
        if signal == "error" and outcome is None:
            return signal
        if outcome is None:
            continue
        if signal == "empty" and not outcome.content.strip():
            return signal
        if signal.startswith("finish_reason:") and outcome.finish_reason == signal.split(":", 1)[1]:
            return signal
        if signal.startswith("contains:") and signal.split(":", 1)[1].lower() in outcome.content.lower():
            return signal
    return None


class Gateway:
    def __init__(
        self,
        routes: RouteTable,
        store: CallerStore,
        redis_client: aioredis.Redis,
        telemetry: Telemetry,
        http: aiohttp.ClientSession | None,
        settings: GatewaySettings,
        semantic_settings: semantic.SemanticSettings | None = None,
        *,
        lean: LeanRedis,
    ) -> None:
        self.semantic = semantic_settings or semantic.SemanticSettings()
        self.routes = routes
        self.store = store
        self.redis = redis_client  # the semantic cache's scans
        self.lean = lean  # the commands every call runs: budget scripts, the exact cache
        self.budgets = Budgets(lean)
        self.telemetry = telemetry
        self.http = http  # set when the server starts (an aiohttp session belongs to its event loop)
        self.plain = PlainHTTP()  # non-streaming calls to http:// upstreams
        self.settings = settings
        self.coalescer = response_cache.Coalescer()

    @property
    def session(self) -> aiohttp.ClientSession:
        if self.http is None:
            raise RuntimeError("the gateway's HTTP session is made when its server starts")
        return self.http

    # --- the steps -----------------------------------------------------------------------------------

    async def handle(
        self, caller: Caller, operation: str, body: dict[str, Any], headers: dict[str, str]
    ) -> Answer:
        model = body.get("model")
        if not isinstance(model, str) or not model:
            return error(
                400, "The request needs a 'model' (GET /v1/models lists them).", "invalid_request_error"
            )
        try:
            route = self.routes.resolve(model)
        except UnknownModel as exc:
            return error(404, str(exc), "invalid_request_error", "model_not_found")
        c = Call(caller, operation, body, headers, model, route)
        policy = response_cache.policy(headers, caller.cache_enabled)
        key = ""  # the cache is neither read nor written
        if policy.read or policy.write:
            key = response_cache.cache_key(caller.organization_id, operation, route.alias, body)
        # The cache lookup and the reservation go to Redis together: one round trip for both.
        with self.lean.together():
            lookup = self.lean.start("GET", key) if policy.read else None
            reserving = self._reserve_soon(c)
        refusal = await self._reserved(c, reserving)
        found = await self._cached(lookup) if lookup is not None else None
        if refusal is not None:
            return refusal
        try:
            answer = await self._answer(c, policy, key if c.route is route else None, found)
        except BaseException:
            self._close(c, None)
            await self.after(c)
            raise
        answer.after = functools.partial(self.after, c)
        answer.headers.setdefault("x-costline-budget", c.decision)
        answer.headers["x-costline-trace-id"] = f"{c.trace_id:032x}"  # the call's trace in Costline
        if c.downgraded_from:
            answer.headers["x-costline-downgraded-from"] = c.downgraded_from
            answer.headers["x-costline-model"] = c.route.alias
        return answer

    def _reserve_soon(self, c: Call) -> Awaitable[Reservation]:
        """The reservation of the call's worst-case cost, written to Redis now: its first target's, and
        a cascade's cheap call before it."""
        input_tokens = estimate_input_tokens(c.body)
        output_tokens = max_output_tokens(c.body, c.operation, self.settings.default_max_tokens)
        cascade = c.route.cascade
        estimate = Decimal(0)
        for target in [c.route.targets[0], *([cascade.first] if cascade else [])]:
            price = cost(target.upstream.provider, target.model, c.operation, input_tokens, output_tokens)
            estimate += price or Decimal(0)
        return self.budgets.reserve_soon(c.caller.organization_id, c.attrs(), estimate)

    async def _reserved(self, c: Call, reserving: Awaitable[Reservation]) -> Answer | None:
        """None when the reservation admits the call (perhaps downgraded), else the refusal."""
        try:
            held = await reserving
        except RedisError as exc:
            log.warning("budget reservation failed (%s): %s", type(exc).__name__, exc)
            if self.settings.fail_open:
                c.decision = "unchecked"
                self.telemetry.budget.labels("unchecked").inc()
                return None
            self.telemetry.budget.labels("unavailable").inc()
            return error(
                503,
                "Budget enforcement is unavailable (Redis cannot be reached); retry shortly.",
                "server_error",
                "budget_unavailable",
                retry_after=str(REDIS_RETRY_AFTER_S),
            )
        except ReservationError as exc:
            return error(400, str(exc), "invalid_request_error")
        c.reservation = held
        c.decision = held.decision
        self.telemetry.budget.labels(held.decision).inc()
        if held.admitted:
            if held.decision == "downgrade" and held.downgrade_model:
                try:
                    cheaper = self.routes.resolve(held.downgrade_model)
                except UnknownModel:
                    log.error(
                        "budget downgrade model %r is not routable; keeping %s",
                        held.downgrade_model,
                        c.route.alias,
                    )
                else:
                    c.downgraded_from, c.route = c.route.alias, cheaper
            return None
        refusing = [b.id for b in held.budgets if b.verdict == held.decision]
        names = await self.store.budget_names(c.caller.organization_id, refusing)
        named = ", ".join(f"'{names[i]}'" if i in names else f"#{i}" for i in refusing)
        if held.decision == "throttle":
            retry = str(held.retry_after_s or 60)
            return error(
                429,
                f"Throttled by budget {named}: its requests per minute are used up; retry after {retry} s.",
                "rate_limit_error",
                "budget_throttled",
                retry_after=retry,
            )
        return error(
            429,
            f"Blocked by budget {named}: this call's estimated cost would pass its limit for the period. "
            "Ask the budget's owner to raise it, or wait for the next period.",
            "rate_limit_error",
            "budget_exceeded",
        )

    async def after(self, c: Call) -> None:
        """What a call left until its answer was sent: the replies of the settle and the cache store,
        written to Redis before the answer (whatever reads the budget or the cache once the answer
        arrived finds them there; the round trips are not the caller's wait), and the span."""
        while c.later:
            work = c.later.pop(0)
            if callable(work):
                work()
            else:
                await work

    async def _answer(
        self, c: Call, policy: response_cache.CachePolicy, key: str | None, cached: dict[str, Any] | None
    ) -> Answer:
        """`cached` is what the cache holds at `key`; no key when a downgrade changed the route (and so
        the key) after the lookup."""
        if key is None:
            key = response_cache.cache_key(c.caller.organization_id, c.operation, c.route.alias, c.body)
            cached = await self._cache_get(key) if policy.read else None
        if policy.read:
            if cached is not None:
                return await self._hit(c, cached)
            similar = await self._semantic_lookup(c)
            if similar is not None:
                return await self._hit(c, similar, outcome="semantic")
        if c.stream:
            leader = self.coalescer.leader_of(key) if policy.read else None
            if leader is not None:
                return await self._follow(c, leader)
            return await self._stream(c, key if policy.write else None)
        try:
            if policy.read:
                (outcome, shared) = await self.coalescer.run(key, lambda: self._call(c))
            else:
                outcome, shared = await self._call(c), False
        except UpstreamFailure as exc:
            return await self._failed(c, exc)
        if shared:
            return await self._hit(c, outcome.body or {}, outcome="coalesced")
        keep = policy.write and outcome.body and response_cache.cacheable(c.operation, outcome.body)
        await self._store_and_finish(c, outcome, (key, outcome.raw or _dumps(outcome.body)) if keep else None)
        return Answer(200, outcome.body, raw=outcome.raw, headers=self._headers(c, outcome.target))

    async def _call(self, c: Call) -> Outcome:
        """The route's answer: the cascade's cheap model if it will do, else the targets in order."""
        path = PATHS[c.operation]
        cascade = c.route.cascade
        if cascade is not None:
            first: Outcome | None
            try:
                first = await self._timed(
                    c, call(self.session, cascade.first, path, c.body, plain=self.plain)
                )
            except UpstreamFailure as exc:
                if not exc.retryable:
                    raise
                first = None
            signal = _escalate(cascade.escalate_on, first)
            if first is not None and signal is None:
                return first
            if first is not None:
                self._settle_part(c, first)  # the cheap call was made and paid for
        return await self._first_to_answer(
            c, lambda target: call(self.session, target, path, c.body, c.traceparent, plain=self.plain)
        )

    async def _first_to_answer(self, c: Call, attempt: Callable[[Target], Awaitable[T]]) -> T:
        """The route's targets in order until one answers; a client error (not retryable) ends it."""
        failures: list[UpstreamFailure] = []
        for target in c.route.targets:
            try:
                return await self._timed(c, attempt(target))
            except UpstreamFailure as exc:
                if not exc.retryable:
                    raise
                failures.append(exc)
                self.telemetry.fallbacks.labels(target.upstream.name).inc()
        raise _all_failed(failures)

    async def _timed(self, c: Call, work: Awaitable[T]) -> T:
        started = time.perf_counter()
        try:
            return await work
        finally:
            c.upstream_seconds += time.perf_counter() - started

    async def _stream(self, c: Call, cache_key: str | None) -> Answer:
        path = PATHS[c.operation]
        try:
            stream = await self._first_to_answer(
                c,
                lambda target: open_stream(
                    self.session, target, path, c.body, c.include_usage, c.traceparent
                ),
            )
        except UpstreamFailure as exc:
            return await self._failed(c, exc)
        waiting = self.coalescer.begin(cache_key) if cache_key else None

        async def relay() -> AsyncIterator[bytes]:
            complete = False
            try:
                async for chunk in stream.chunks():
                    yield chunk
                complete = stream.outcome.finish_reason is not None
            finally:
                outcome = stream.outcome
                body = _assembled(c.operation, outcome)
                if waiting is not None:
                    self.coalescer.end(cache_key or "", waiting, body if complete else None)
                keep = complete and cache_key and int(c.body.get("n") or 1) == 1
                c.upstream_seconds += outcome.latency_s
                await self._store_and_finish(
                    c,
                    outcome,
                    (cache_key, _dumps(body)) if keep and cache_key else None,
                    partial=not complete,
                )
                await self.after(c)

        return Answer(200, stream=relay(), headers=self._headers(c, stream.outcome.target))

    async def _follow(self, c: Call, leader: Any) -> Answer:
        """An identical request is already streaming: answer this one with its whole answer."""
        try:
            body = await leader
        except Exception:
            body = None
        if not body:
            return await self._stream(c, None)
        return await self._hit(c, body, outcome="coalesced")

    async def _hit(self, c: Call, body: dict[str, Any], outcome: str = "exact") -> Answer:
        """Answer from the cache (or a coalesced call): nothing spent upstream, the reservation given back."""
        c.cache_outcome = outcome
        body = {**body, "id": _new_id(c.operation), "created": int(time.time())}
        self._close(c, Decimal(0))
        self.telemetry.cache.labels(outcome).inc()
        usage = body.get("usage") or {}
        saved = int(usage.get("prompt_tokens") or 0) + int(usage.get("completion_tokens") or 0)
        self._record(c, status=200, target=None, outcome=None, body=body, tokens_saved=saved)
        headers = {"x-costline-cache": "hit" if outcome == "exact" else outcome}
        if c.similarity is not None:
            headers["x-costline-cache-similarity"] = f"{c.similarity:.4f}"
        if c.stream:
            return Answer(200, stream=_replay(c.operation, body, c.include_usage), headers=headers)
        return Answer(200, body, headers=headers)

    async def _failed(self, c: Call, exc: UpstreamFailure) -> Answer:
        self._close(c, Decimal(0))
        self._record(
            c, status=exc.status, target=exc.target, outcome=None, body=None, error=type(exc).__name__
        )
        if not exc.retryable and isinstance(exc.body, dict) and "error" in exc.body:
            return Answer(exc.status, exc.body, headers={"x-costline-upstream": exc.target.label})
        status = 400 if not exc.retryable else 502
        return error(
            status,
            f"The upstream failed: {exc}",
            "upstream_error" if exc.retryable else "invalid_request_error",
        )

    async def _store_and_finish(
        self, c: Call, outcome: Outcome, store: tuple[str, bytes] | None, partial: bool = False
    ) -> None:
        """Store the answer in the cache (`store`: its key and JSON) and settle the call: the two
        commands go to Redis together, unless the answer has a semantic entry to store as well."""
        if store is not None and c.vector is not None:
            await self._cache_put_similar(*store, c)
            store = None
        with self.lean.together():
            if store is not None:
                self._cache_put(*store, c)
            self._finish(c, outcome, partial)

    def _finish(self, c: Call, outcome: Outcome, partial: bool = False) -> None:
        actual = _actual_cost(c.operation, outcome)
        # A stream cut off before its usage arrived (the client left): the reservation keeps its estimate.
        self._close(c, actual, keep_estimate=partial and outcome.input_tokens is None)
        if outcome.input_tokens:
            self.telemetry.tokens.labels("input").inc(outcome.input_tokens)
        if outcome.output_tokens:
            self.telemetry.tokens.labels("output").inc(outcome.output_tokens)
        if outcome.ttft_s is not None and c.stream:
            self.telemetry.ttft_seconds.observe(outcome.ttft_s)
        self.telemetry.cache.labels("miss").inc()
        self._record(c, status=200, target=outcome.target, outcome=outcome, body=None)

    def _settle_part(self, c: Call, outcome: Outcome) -> None:
        """A cascade's cheap call that was not kept still cost money: it is a call of its own, and its
        cost is settled with the call's."""
        c.escalated_cost += _actual_cost(c.operation, outcome) or Decimal(0)
        self._record(c, status=200, target=outcome.target, outcome=outcome, body=None, cascade="escalated")

    def _close(self, c: Call, actual: Decimal | None, keep_estimate: bool = False) -> None:
        """Settle the reservation: the command is written now, its result checked after the answer."""
        held = c.reservation
        if held is None or held.id is None:
            return
        c.reservation = None
        if keep_estimate:
            return  # the reservation expires on its own and counts its estimate until then
        spent = (actual or Decimal(0)) + c.escalated_cost
        settling = self.budgets.settle_soon(c.caller.organization_id, held.id, spent)
        c.later.append(_logged(settling, "could not settle reservation %s; it expires on its own", held.id))

    # --- what is told ----------------------------------------------------------------------------------

    def _headers(self, c: Call, target: Target) -> dict[str, str]:
        return {"x-costline-cache": "miss", "x-costline-upstream": target.label}

    def _record(self, c: Call, **details: Any) -> None:
        """The call's metrics and span, as of now, made once its answer is sent."""
        c.later.append(
            functools.partial(self._emit, c, time.perf_counter() - c.started, time.time_ns(), **details)
        )

    def _emit(
        self,
        c: Call,
        elapsed: float,
        end_ns: int,
        *,
        status: int,
        target: Target | None,
        outcome: Outcome | None,
        body: dict[str, Any] | None,
        tokens_saved: int = 0,
        error: str | None = None,
        cascade: str | None = None,
    ) -> None:
        self.telemetry.requests.labels(c.operation, c.asked_model, str(status), c.cache_outcome).inc()
        self.telemetry.request_seconds.labels(c.operation).observe(elapsed)
        self.telemetry.overhead_seconds.observe(max(0.0, elapsed - c.upstream_seconds))
        chosen = target or c.route.targets[0]
        usage = (body or {}).get("usage") or {}
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": c.operation,
            "gen_ai.provider.name": chosen.upstream.provider,
            "gen_ai.request.model": chosen.model,
            "gen_ai.response.model": outcome.response_model if outcome else (body or {}).get("model"),
            "gen_ai.response.id": (outcome.response_id if outcome else (body or {}).get("id")),
            # A cache hit carries the tokens it would have spent: the collector prices them as savings.
            "gen_ai.usage.input_tokens": outcome.input_tokens if outcome else usage.get("prompt_tokens"),
            "gen_ai.usage.output_tokens": outcome.output_tokens
            if outcome
            else usage.get("completion_tokens"),
            "gen_ai.usage.cache_read.input_tokens": outcome.cached_tokens if outcome else None,
            "gen_ai.request.stream": c.stream,
            "gen_ai.server.time_to_first_token": outcome.ttft_s if outcome and c.stream else None,
            "gen_ai.conversation.id": c.headers.get("x-costline-session") or None,
            "user.id": str(c.body.get("user") or "") or None,
            "costline.feature": c.headers.get("x-costline-feature") or None,
            "costline.project": c.caller.project or None,
            "costline.team": c.caller.team or None,
            # A coalesced follower spent nothing upstream either: an exact hit on its leader's answer.
            "costline.cache.hit": {"exact": "exact", "coalesced": "exact", "semantic": "semantic"}.get(
                c.cache_outcome, "miss"
            ),
            "costline.cache.coalesced": c.cache_outcome == "coalesced" or None,
            "costline.cache.similarity": c.similarity,
            "costline.cache.tokens_saved": tokens_saved or None,
            "costline.budget.decision": c.decision,
            "costline.upstream": chosen.label,
            "costline.downgraded_from": c.downgraded_from,
            "costline.cascade": cascade,
            "costline.requested_model": c.asked_model,
            KEY_ATTRIBUTE: c.caller.key_prefix,
        }
        if outcome is not None and outcome.finish_reason:
            attributes["gen_ai.response.finish_reasons"] = [outcome.finish_reason]
        if c.operation != "embeddings":
            # The advisor's evidence (repeats, shared prefixes, near-duplicates): hashes, never text,
            # computed by the function the collector uses for spans that carry content.
            evidence = fingerprint.from_openai_request(c.body, attributes["gen_ai.usage.input_tokens"])
            if evidence is not None:
                attributes.update(evidence.span_attributes())
        verb = {"chat": "chat", "text_completion": "text_completion", "embeddings": "embeddings"}[c.operation]
        self.telemetry.span(
            name=f"{verb} {chosen.model}",
            start_ns=c.start_ns,
            end_ns=end_ns,
            attributes=attributes,
            secret=c.caller.secret,
            error=error,
            ids=(c.trace_id, c.span_id),
        )

    # --- the cache ---------------------------------------------------------------------------------------

    async def _cache_get(self, key: str) -> dict[str, Any] | None:
        return await self._cached(self.lean.start("GET", key))

    async def _cached(self, reply: Awaitable[Any]) -> dict[str, Any] | None:
        """The answer a GET's reply holds, or None."""
        try:
            raw = await reply
        except RedisError:
            return None  # a cache that cannot be read is a miss, never an error
        if raw is None:
            return None
        try:
            value: dict[str, Any] = json.loads(raw)
        except ValueError:
            return None
        return value

    def _cache_put(self, key: str, answer: bytes, c: Call) -> None:
        """Written to Redis now, before the answer is sent; its reply is checked after."""
        if self.settings.cache_ttl_s <= 0:
            return
        storing = self.lean.start("SET", key, answer, "EX", self.settings.cache_ttl_s)
        c.later.append(_logged(storing, "could not store a cached answer"))

    async def _cache_put_similar(self, key: str, answer: bytes, c: Call) -> None:
        """The answer and its semantic entry, stored before the answer is sent: a similar request next
        finds them."""
        if self.settings.cache_ttl_s <= 0 or c.vector is None:
            return
        try:
            await self.lean.execute("SET", key, answer, "EX", self.settings.cache_ttl_s)
            space = semantic.namespace(c.caller.organization_id, c.route.alias, c.body)
            if await self.redis.hlen(space) < semantic.MAX_ENTRIES:
                async with self.redis.pipeline(transaction=False) as pipe:
                    pipe.hset(space, key, c.vector.tobytes())
                    pipe.expire(space, self.settings.cache_ttl_s)
                    await pipe.execute()
        except RedisError:
            log.warning("could not store a cached answer", exc_info=True)

    # --- the semantic cache --------------------------------------------------------------------------

    async def _semantic_lookup(self, c: Call) -> dict[str, Any] | None:
        """An answer to a request that means the same, or None; leaves the embedding on the call."""
        if not self.semantic.enabled or c.operation != "chat":
            return None
        text = semantic.conversation_text(c.body)
        if text is None:
            return None
        try:
            target = self.routes.resolve(self.semantic.model).targets[0]
            started, started_ns = time.perf_counter(), time.time_ns()
            ids = (random.getrandbits(128) or 1, random.getrandbits(64) or 1)
            embedded = await call(
                self.session,
                target,
                "embeddings",
                {"input": text},
                f"00-{ids[0]:032x}-{ids[1]:016x}-01",
                plain=self.plain,
            )
            c.upstream_seconds += time.perf_counter() - started
            self._record_lookup(c, embedded, started_ns, ids)
            c.vector = semantic.normalised((embedded.body or {})["data"][0]["embedding"])
            space = semantic.namespace(c.caller.organization_id, c.route.alias, c.body)
            entries = await self.redis.hgetall(space)
        except (UnknownModel, UpstreamFailure, RedisError, KeyError, IndexError, TypeError) as exc:
            log.warning("semantic cache unavailable: %s", exc)
            return None
        match = semantic.best_match(c.vector, entries)
        if match is None or match[1] < self.semantic.threshold:
            return None
        cached = await self._cache_get(match[0])
        if cached is None:
            await self.redis.hdel(space, match[0])  # its answer has expired
            return None
        c.similarity = match[1]
        return cached

    def _record_lookup(self, c: Call, embedded: Outcome, start_ns: int, ids: tuple[int, int]) -> None:
        """The semantic cache's embedding of a call's conversation is a call of its own, made for the
        caller: it is priced and counted in the caller's organisation, as its own trace."""
        target = embedded.target
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": "embeddings",
            "gen_ai.provider.name": target.upstream.provider,
            "gen_ai.request.model": target.model,
            "gen_ai.response.model": embedded.response_model,
            "gen_ai.response.id": embedded.response_id,
            "gen_ai.usage.input_tokens": embedded.input_tokens,
            "user.id": str(c.body.get("user") or "") or None,
            "costline.feature": c.headers.get("x-costline-feature") or None,
            "costline.project": c.caller.project or None,
            "costline.team": c.caller.team or None,
            "costline.tags": ["semantic-cache-lookup"],  # the Explore page filters by tag
            "costline.upstream": target.label,
            KEY_ATTRIBUTE: c.caller.key_prefix,
        }
        self.telemetry.span(
            name=f"embeddings {target.model}",
            start_ns=start_ns,
            end_ns=time.time_ns(),
            attributes=attributes,
            secret=c.caller.secret,
            ids=ids,
        )


def _actual_cost(operation: str, outcome: Outcome) -> Decimal | None:
    """What an upstream call cost at catalogue prices, by the usage it reported."""
    target = outcome.target
    return cost(
        target.upstream.provider,
        target.model,
        operation,
        outcome.input_tokens,
        outcome.output_tokens,
        outcome.cached_tokens or 0,
    )


def _dumps(body: dict[str, Any] | None) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode()


async def _logged(reply: Awaitable[Any], message: str, *args: Any) -> None:
    """Wait for a reply whose failure the call survives: it is logged."""
    try:
        await reply
    except (RedisError, ReservationError):
        log.warning(message, *args, exc_info=True)


def _all_failed(failures: list[UpstreamFailure]) -> UpstreamFailure:
    last = failures[-1]
    tried = "; ".join(str(f) for f in failures)
    return UpstreamFailure(last.target, 502, f"every upstream failed: {tried}", retryable=True)
