"""Calling one upstream: any OpenAI-compatible API as it is, Anthropic's Messages API translated.

Every answer comes back in the OpenAI shape, with what the gateway needs to know of it (`Outcome`:
usage, finish reason, response id and model, time to first token). A failure that another upstream
might not have (connection error, timeout, 429, 5xx) is `UpstreamFailure(retryable=True)`; a client
error (4xx) is not retryable and is answered to the caller as the upstream said it.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from inference.gateway.http1 import PlainHTTP, ProtocolError
from inference.gateway.routes import Target

DEFAULT_ANTHROPIC_MAX_TOKENS = 4096  # the Messages API requires max_tokens; OpenAI's callers may omit it
ANTHROPIC_VERSION = "2023-06-01"
_FINISH = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length", "tool_use": "tool_calls"}


class UpstreamFailure(Exception):
    def __init__(self, target: Target, status: int, message: str, *, retryable: bool, body: Any = None):
        super().__init__(f"{target.label}: {message}")
        self.target = target
        self.status = status
        self.message = message
        self.retryable = retryable
        self.body = body  # the upstream's JSON error, answered as is for a client error


@dataclass
class Outcome:
    """What one call to an upstream gave, filled in as a stream goes by."""

    target: Target
    started: float = field(default_factory=time.perf_counter)
    first_token_at: float | None = None
    finished_at: float | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    cached_tokens: int | None = None
    finish_reason: str | None = None
    response_id: str | None = None
    response_model: str | None = None
    content: str = ""
    body: dict[str, Any] | None = None  # the whole answer (non-streaming, or assembled from a stream)
    raw: bytes | None = None  # `body` as an OpenAI-compatible upstream sent it, to pass on unchanged

    @property
    def ttft_s(self) -> float | None:
        return None if self.first_token_at is None else self.first_token_at - self.started

    @property
    def latency_s(self) -> float:
        return (self.finished_at or time.perf_counter()) - self.started

    def read_usage(self, usage: dict[str, Any] | None) -> None:
        if not usage:
            return
        self.input_tokens = _int(usage.get("prompt_tokens"), self.input_tokens)
        self.output_tokens = _int(usage.get("completion_tokens"), self.output_tokens)
        details = usage.get("prompt_tokens_details") or {}
        self.cached_tokens = _int(details.get("cached_tokens"), self.cached_tokens)


def _int(value: Any, default: int | None) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _headers(target: Target, traceparent: str | None) -> dict[str, str]:
    up = target.upstream
    if up.kind == "anthropic":
        headers = {"x-api-key": up.api_key, "anthropic-version": ANTHROPIC_VERSION}
    else:
        headers = {"Authorization": f"Bearer {up.api_key}"} if up.api_key else {}
    if traceparent:
        headers["traceparent"] = traceparent  # W3C trace context: vLLM's span becomes the call's child
    return headers


def _failure(target: Target, status: int, body: bytes) -> UpstreamFailure:
    try:
        parsed: Any = json.loads(body)
    except ValueError:
        parsed = None
    message = body[:300].decode("utf-8", "replace")
    if isinstance(parsed, dict) and isinstance(parsed.get("error"), dict):
        message = str(parsed["error"].get("message") or message)
    retryable = status == 429 or status >= 500 or status == 408
    return UpstreamFailure(target, status, f"answered {status}: {message}", retryable=retryable, body=parsed)


# --- request translation -----------------------------------------------------------------------------


def _anthropic_request(body: dict[str, Any], model: str, stream: bool) -> dict[str, Any]:
    system: list[str] = []
    messages: list[dict[str, Any]] = []
    for message in body.get("messages") or []:
        role, content = message.get("role"), message.get("content")
        if isinstance(content, list):  # OpenAI content parts: keep the text ones
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
        if role in ("system", "developer"):
            system.append(str(content or ""))
        else:
            messages.append(
                {"role": "assistant" if role == "assistant" else "user", "content": content or ""}
            )
    out: dict[str, Any] = {
        "model": model,
        "messages": messages,
        "max_tokens": body.get("max_completion_tokens")
        or body.get("max_tokens")
        or DEFAULT_ANTHROPIC_MAX_TOKENS,
    }
    if system:
        out["system"] = "\n\n".join(system)
    for name in ("temperature", "top_p"):
        if body.get(name) is not None:
            out[name] = body[name]
    stop = body.get("stop")
    if stop:
        out["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    if stream:
        out["stream"] = True
    return out


def _anthropic_usage(outcome: Outcome, usage: dict[str, Any]) -> None:
    # Anthropic's input_tokens exclude cache reads and writes; OpenAI's prompt_tokens include them.
    cached = _int(usage.get("cache_read_input_tokens"), 0) or 0
    written = _int(usage.get("cache_creation_input_tokens"), 0) or 0
    if "input_tokens" in usage:
        outcome.input_tokens = (_int(usage.get("input_tokens"), 0) or 0) + cached + written
        outcome.cached_tokens = cached
    if "output_tokens" in usage:
        outcome.output_tokens = _int(usage.get("output_tokens"), outcome.output_tokens)


def _openai_usage(outcome: Outcome) -> dict[str, Any]:
    usage: dict[str, Any] = {
        "prompt_tokens": outcome.input_tokens or 0,
        "completion_tokens": outcome.output_tokens or 0,
        "total_tokens": (outcome.input_tokens or 0) + (outcome.output_tokens or 0),
    }
    if outcome.cached_tokens:
        usage["prompt_tokens_details"] = {"cached_tokens": outcome.cached_tokens}
    return usage


def _check_path(target: Target, path: str) -> None:
    if target.upstream.kind == "anthropic" and path != "chat/completions":
        message = f"an Anthropic upstream serves chat completions only, not /v1/{path}"
        raise UpstreamFailure(target, 400, message, retryable=False)


# --- calls -----------------------------------------------------------------------------------------------


# aiohttp, not httpx: its C parser made a call through the gateway cost about half the CPU (httpx was
# 52% of the gateway's time in bench/gateway.py's profile). Non-streaming calls to plain-HTTP upstreams
# (the vLLM tier) take `PlainHTTP`, lighter still.
UNREACHABLE = (aiohttp.ClientError, TimeoutError, OSError, ProtocolError)


async def call(
    client: aiohttp.ClientSession,
    target: Target,
    path: str,
    body: dict[str, Any],
    traceparent: str | None = None,
    *,
    plain: PlainHTTP | None = None,
) -> Outcome:
    """One non-streaming call (`path`: chat/completions, completions or embeddings); over `plain` when
    the upstream's URL is http://."""
    outcome = Outcome(target)
    anthropic = target.upstream.kind == "anthropic"
    _check_path(target, path)
    url = f"{target.upstream.base_url}/{'v1/messages' if anthropic else path}"
    payload = _anthropic_request(body, target.model, False) if anthropic else {**body, "model": target.model}
    headers = _headers(target, traceparent)
    try:
        if plain is not None and url.startswith("http://"):
            encoded = json.dumps(payload, separators=(",", ":")).encode()
            status, raw = await plain.post(url, encoded, headers, target.upstream.timeout_s)
        else:
            async with client.post(
                url,
                json=payload,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=target.upstream.timeout_s),
            ) as response:
                status, raw = response.status, await response.read()
    except UNREACHABLE as exc:
        raise UpstreamFailure(target, 502, f"unreachable ({type(exc).__name__})", retryable=True) from exc
    outcome.finished_at = outcome.first_token_at = time.perf_counter()
    if status != 200:
        raise _failure(target, status, raw)
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise UpstreamFailure(target, 502, "answered a body that is not JSON", retryable=True) from exc
    if anthropic:
        text = "".join(b.get("text", "") for b in data.get("content") or [] if b.get("type") == "text")
        _anthropic_usage(outcome, data.get("usage") or {})
        outcome.finish_reason = _FINISH.get(data.get("stop_reason") or "", data.get("stop_reason"))
        outcome.response_id, outcome.response_model, outcome.content = data.get("id"), data.get("model"), text
        data = {
            "id": outcome.response_id,
            "object": "chat.completion",
            "created": int(time.time()),
            "model": outcome.response_model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": outcome.finish_reason,
                }
            ],
            "usage": _openai_usage(outcome),
        }
    else:
        outcome.raw = raw
        outcome.read_usage(data.get("usage"))
        outcome.response_id, outcome.response_model = data.get("id"), data.get("model")
        choices = data.get("choices") or []
        if choices:
            first = choices[0]
            outcome.finish_reason = first.get("finish_reason")
            message = first.get("message") or {}
            outcome.content = str(message.get("content") or first.get("text") or "")
    outcome.body = data
    return outcome


@dataclass
class Stream:
    """An upstream stream that answered 200: iterate `chunks()` for the OpenAI-format SSE events."""

    outcome: Outcome
    response: aiohttp.ClientResponse
    include_usage: bool  # whether the caller asked for the usage chunk

    async def _lines(self) -> AsyncIterator[str]:
        async for raw in self.response.content:
            yield raw.decode("utf-8", "replace").rstrip("\r\n")

    async def chunks(self) -> AsyncIterator[bytes]:
        try:
            if self.outcome.target.upstream.kind == "anthropic":
                async for chunk in self._anthropic():
                    yield chunk
            else:
                async for chunk in self._openai():
                    yield chunk
        finally:
            self.outcome.finished_at = time.perf_counter()
            self.response.release()

    def _note_content(self, text: str) -> None:
        if text and self.outcome.first_token_at is None:
            self.outcome.first_token_at = time.perf_counter()
        self.outcome.content += text

    async def _openai(self) -> AsyncIterator[bytes]:
        async for line in self._lines():
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if data == "[DONE]":
                yield b"data: [DONE]\n\n"
                return
            try:
                event = json.loads(data)
            except ValueError:
                continue
            self.outcome.read_usage(event.get("usage"))
            self.outcome.response_id = self.outcome.response_id or event.get("id")
            self.outcome.response_model = self.outcome.response_model or event.get("model")
            choices = event.get("choices") or []
            for choice in choices:
                delta = choice.get("delta") or {}
                self._note_content(str(delta.get("content") or choice.get("text") or ""))
                if choice.get("finish_reason"):
                    self.outcome.finish_reason = choice["finish_reason"]
            if not choices and event.get("usage") and not self.include_usage:
                continue  # the usage chunk the gateway asked for on its own behalf
            yield f"data: {json.dumps(event, separators=(',', ':'))}\n\n".encode()

    async def _anthropic(self) -> AsyncIterator[bytes]:
        created = int(time.time())
        outcome = self.outcome

        def chunk(delta: dict[str, Any], finish: str | None = None, usage: bool = False) -> bytes:
            event: dict[str, Any] = {
                "id": outcome.response_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": outcome.response_model,
                "choices": [] if usage else [{"index": 0, "delta": delta, "finish_reason": finish}],
            }
            if usage:
                event["usage"] = _openai_usage(outcome)
            return f"data: {json.dumps(event, separators=(',', ':'))}\n\n".encode()

        async for line in self._lines():
            if not line.startswith("data:"):
                continue
            try:
                event = json.loads(line[5:].strip())
            except ValueError:
                continue
            kind = event.get("type")
            if kind == "message_start":
                message = event.get("message") or {}
                outcome.response_id, outcome.response_model = message.get("id"), message.get("model")
                _anthropic_usage(outcome, message.get("usage") or {})
                yield chunk({"role": "assistant", "content": ""})
            elif kind == "content_block_delta":
                text = str((event.get("delta") or {}).get("text") or "")
                if text:
                    self._note_content(text)
                    yield chunk({"content": text})
            elif kind == "message_delta":
                _anthropic_usage(outcome, event.get("usage") or {})
                reason = (event.get("delta") or {}).get("stop_reason")
                outcome.finish_reason = _FINISH.get(reason or "", reason)
            elif kind == "message_stop":
                yield chunk({}, outcome.finish_reason or "stop")
                if self.include_usage:
                    yield chunk({}, usage=True)
                yield b"data: [DONE]\n\n"
                return


async def open_stream(
    client: aiohttp.ClientSession,
    target: Target,
    path: str,
    body: dict[str, Any],
    include_usage: bool,
    traceparent: str | None = None,
) -> Stream:
    """Start a streaming call; raises UpstreamFailure unless the upstream answered 200."""
    anthropic = target.upstream.kind == "anthropic"
    _check_path(target, path)
    if anthropic:
        url, payload = f"{target.upstream.base_url}/v1/messages", _anthropic_request(body, target.model, True)
    else:
        # Usage always, whatever the caller asked: the gateway prices and settles every call.
        options = {**(body.get("stream_options") or {}), "include_usage": True}
        url = f"{target.upstream.base_url}/{path}"
        payload = {**body, "model": target.model, "stream": True, "stream_options": options}
    outcome = Outcome(target)
    # The timeout bounds the wait for each piece of the stream, not the whole answer.
    timeout = aiohttp.ClientTimeout(
        total=None, sock_connect=target.upstream.timeout_s, sock_read=target.upstream.timeout_s
    )
    try:
        headers = _headers(target, traceparent)
        response = await client.post(url, json=payload, headers=headers, timeout=timeout)
    except UNREACHABLE as exc:
        raise UpstreamFailure(target, 502, f"unreachable ({type(exc).__name__})", retryable=True) from exc
    if response.status != 200:
        try:
            body_bytes = await response.read()
        finally:
            response.release()
        raise _failure(target, response.status, body_bytes)
    return Stream(outcome, response, include_usage)
