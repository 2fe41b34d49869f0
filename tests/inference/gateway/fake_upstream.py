"""A local stand-in for the paid providers the gateway calls (OpenAI's and Anthropic's APIs), which
cannot be reached from here. It answers as they do (shapes, usage, streaming events) and records every
request, so tests can see what reached the upstream and how often.

Behaviour per model name, so one server serves every test at once:
- `...-fail`: answers 500; `...-429`: answers 429; `...-bad`: answers 400 with an OpenAI error;
- `...-short`: finish reason `length`; `...-slow` (or a last message starting "slow"): waits 0.3 s;
- anything else: "echo: <last user message>", finish reason `stop`.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import uvicorn

PROMPT_TOKENS = 11
COMPLETION_TOKENS = 7


@dataclass
class Recorded:
    requests: list[dict[str, Any]] = field(default_factory=list)

    def count(self, model: str | None = None) -> int:
        return sum(1 for r in self.requests if model is None or r["body"].get("model") == model)


def _text(body: dict[str, Any]) -> str:
    messages = body.get("messages") or []
    last = messages[-1]["content"] if messages else body.get("prompt", "")
    return f"echo: {last}"


class FakeProvider:
    def __init__(self) -> None:
        self.recorded = Recorded()
        self.inflight = 0
        self.max_inflight = 0  # the most requests answered at once since a test reset it

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        raw = b""
        while True:
            message = await receive()
            raw += message.get("body", b"")
            if not message.get("more_body"):
                break
        body = json.loads(raw or b"{}")
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        self.recorded.requests.append({"path": scope["path"], "body": body, "headers": headers})
        model = str(body.get("model", ""))
        self.inflight += 1
        self.max_inflight = max(self.max_inflight, self.inflight)
        try:
            return await self._answer(scope, send, body, model)
        finally:
            self.inflight -= 1

    async def _answer(self, scope: dict[str, Any], send: Any, body: dict[str, Any], model: str) -> None:
        if model.endswith("-slow") or _text(body).startswith("echo: slow"):
            await asyncio.sleep(0.3)
        if model.endswith("-fail"):
            return await _json(send, 500, {"error": {"message": "upstream exploded", "type": "server_error"}})
        if model.endswith("-429"):
            return await _json(send, 429, {"error": {"message": "rate limited", "type": "requests"}})
        if model.endswith("-bad"):
            return await _json(
                send, 400, {"error": {"message": "bad parameter x", "type": "invalid_request_error"}}
            )
        finish = "length" if model.endswith("-short") else "stop"
        if scope["path"] == "/v1/messages":
            return await self._anthropic(send, body, finish)
        if scope["path"] == "/v1/embeddings":
            inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
            data = [
                {"object": "embedding", "index": i, "embedding": [0.1, 0.2, 0.3]} for i in range(len(inputs))
            ]
            usage = {"prompt_tokens": PROMPT_TOKENS, "total_tokens": PROMPT_TOKENS}
            return await _json(send, 200, {"object": "list", "data": data, "model": model, "usage": usage})
        chat = scope["path"] == "/v1/chat/completions"
        text = _text(body)
        usage = {
            "prompt_tokens": PROMPT_TOKENS,
            "completion_tokens": COMPLETION_TOKENS,
            "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS,
        }
        rid = f"chatcmpl-fake{self.recorded.count()}"
        if body.get("stream"):
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-type", b"text/event-stream")],
                }
            )
            obj = "chat.completion.chunk" if chat else "text_completion"
            for i, piece in enumerate([text[: len(text) // 2], text[len(text) // 2 :]]):
                choice: dict[str, Any] = (
                    {
                        "index": 0,
                        "delta": {"content": piece} | ({"role": "assistant"} if i == 0 else {}),
                        "finish_reason": None,
                    }
                    if chat
                    else {"index": 0, "text": piece, "finish_reason": None}
                )
                await _event(send, {"id": rid, "object": obj, "model": model, "choices": [choice]})
            last: dict[str, Any] = (
                {"index": 0, "delta": {}, "finish_reason": finish}
                if chat
                else {"index": 0, "text": "", "finish_reason": finish}
            )
            await _event(send, {"id": rid, "object": obj, "model": model, "choices": [last]})
            if (body.get("stream_options") or {}).get("include_usage"):
                await _event(send, {"id": rid, "object": obj, "model": model, "choices": [], "usage": usage})
            await send({"type": "http.response.body", "body": b"data: [DONE]\n\n", "more_body": True})
            await send({"type": "http.response.body", "body": b""})
            return None
        choice = (
            {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}
            if chat
            else {"index": 0, "text": text, "finish_reason": finish}
        )
        answer = {
            "id": rid,
            "object": "chat.completion" if chat else "text_completion",
            "created": 1,
            "model": model,
            "choices": [choice],
            "usage": usage,
        }
        return await _json(send, 200, answer)

    async def _anthropic(self, send: Any, body: dict[str, Any], finish: str) -> None:
        text = _text(body)
        stop = "max_tokens" if finish == "length" else "end_turn"
        usage = {"input_tokens": 9, "cache_read_input_tokens": 2, "output_tokens": COMPLETION_TOKENS}
        if not body.get("stream"):
            return await _json(
                send,
                200,
                {
                    "id": "msg_fake",
                    "type": "message",
                    "role": "assistant",
                    "model": body["model"],
                    "content": [{"type": "text", "text": text}],
                    "stop_reason": stop,
                    "usage": usage,
                },
            )
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/event-stream")],
            }
        )
        start = {
            "type": "message_start",
            "message": {
                "id": "msg_fake",
                "model": body["model"],
                "usage": {"input_tokens": 9, "cache_read_input_tokens": 2, "output_tokens": 1},
            },
        }
        for event in (
            start,
            {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
            {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}},
            {"type": "content_block_stop", "index": 0},
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop},
                "usage": {"output_tokens": COMPLETION_TOKENS},
            },
            {"type": "message_stop"},
        ):
            line = f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode()
            await send({"type": "http.response.body", "body": line, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
        return None


async def _json(send: Any, status: int, body: dict[str, Any]) -> None:
    raw = json.dumps(body).encode()
    await send(
        {"type": "http.response.start", "status": status, "headers": [(b"content-type", b"application/json")]}
    )
    await send({"type": "http.response.body", "body": raw})


async def _event(send: Any, event: dict[str, Any]) -> None:
    await send(
        {"type": "http.response.body", "body": f"data: {json.dumps(event)}\n\n".encode(), "more_body": True}
    )


@contextmanager
def serving_asgi(app: Any, sock: Any) -> Iterator[None]:
    """Serve an ASGI app on a bound socket in a thread of its own until the block ends."""
    server = uvicorn.Server(uvicorn.Config(app, lifespan="on", log_level="warning", access_log=False))
    thread = threading.Thread(target=lambda: asyncio.run(server.serve(sockets=[sock])), daemon=True)
    thread.start()
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("the server did not start")
        threading.Event().wait(0.01)
    try:
        yield
    finally:
        server.should_exit = True
        thread.join(timeout=30)
