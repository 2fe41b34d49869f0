"""The gateway's HTTP face: the OpenAI API (`/v1/chat/completions`, `/v1/completions`,
`/v1/embeddings`, `/v1/models`), `/metrics` (Prometheus) and `/health`, as a small ASGI application.

Errors follow the OpenAI error format, so the official clients raise their usual exceptions with the
gateway's message: 401 for a missing or unknown key, 400 for a malformed body, 404 for an unknown
model, 413 for a body over `COSTLINE_GATEWAY_MAX_BODY_BYTES`, 429 for a budget's throttle or block,
502 when every upstream failed, 503 when PostgreSQL or Redis cannot be reached (with Retry-After).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Awaitable, Callable
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST

from inference.gateway.callers import CallerStore, StoreUnavailable
from inference.gateway.service import Answer, Gateway, error

log = logging.getLogger(__name__)

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

OPERATIONS = {
    "/v1/chat/completions": "chat",
    "/v1/completions": "text_completion",
    "/v1/embeddings": "embeddings",
}
REQUIRED = {"chat": "messages", "text_completion": "prompt", "embeddings": "input"}
STORE_RETRY_AFTER_S = 2


class BodyTooLarge(Exception):
    pass


class GatewayApp:
    def __init__(self, gateway: Gateway, store: CallerStore, *, max_body_bytes: int) -> None:
        self.gateway = gateway
        self.store = store
        self.max_body_bytes = max_body_bytes
        self.on_startup: list[Callable[[], Awaitable[None]]] = []
        self.on_shutdown: list[Callable[[], Awaitable[None]]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        answer = await self._route(scope, receive)
        try:
            await _send(send, answer)
        finally:
            if answer.after is not None:
                await answer.after()

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                for hook in self.on_startup:
                    await hook()
                await self.store.open()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                for hook in self.on_shutdown:
                    await hook()
                await self.store.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _route(self, scope: Scope, receive: Receive) -> Answer:
        path, method = scope["path"], scope["method"]
        if path == "/health":
            return Answer(200, {"status": "ok", "worker": os.getpid()})
        if path == "/metrics" and method == "GET":
            return Answer(200, raw=self.gateway.telemetry.metrics_text(), content_type=CONTENT_TYPE_LATEST)
        operation = OPERATIONS.get(path)
        if operation is None and path != "/v1/models":
            return error(
                404,
                f"Unknown path {path}: the gateway serves POST /v1/chat/completions, /v1/completions, "
                "/v1/embeddings and GET /v1/models.",
                "invalid_request_error",
                "unknown_url",
            )
        expected = "GET" if operation is None else "POST"
        if method != expected:
            return error(
                405, f"{path} takes {expected}, not {method}.", "invalid_request_error", allow=expected
            )
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        secret = _bearer(headers.get("authorization", ""))
        if not secret:
            return error(
                401,
                "Missing gateway key: send 'Authorization: Bearer <gateway key>' (the OpenAI clients' "
                "api_key). Admins create keys in Settings → Gateway keys.",
                "invalid_request_error",
                "invalid_api_key",
            )
        try:
            caller = await self.store.caller(secret)
        except StoreUnavailable:
            return error(
                503,
                "The gateway cannot check keys right now (PostgreSQL is unreachable); retry shortly.",
                "server_error",
                "store_unavailable",
                retry_after=str(STORE_RETRY_AFTER_S),
            )
        if caller is None:
            return error(
                401,
                f"Unknown or revoked gateway key {secret[:12]}…: use a key from Settings → Gateway keys.",
                "invalid_request_error",
                "invalid_api_key",
            )
        if operation is None:
            return self._models()
        try:
            raw = await _read_body(receive, self.max_body_bytes)
        except BodyTooLarge:
            return error(
                413,
                f"The request body is over {self.max_body_bytes} bytes (COSTLINE_GATEWAY_MAX_BODY_BYTES).",
                "invalid_request_error",
                "request_too_large",
            )
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            return error(400, f"The body is not valid JSON: {exc}.", "invalid_request_error")
        if not isinstance(body, dict):
            return error(
                400, "The body must be a JSON object, as the OpenAI API takes.", "invalid_request_error"
            )
        field = REQUIRED[operation]
        if body.get(field) in (None, "", []):
            return error(400, f"{path} needs '{field}'.", "invalid_request_error", f"missing_{field}")
        if operation == "chat" and not isinstance(body["messages"], list):
            return error(
                400, "'messages' must be a list of {role, content} objects.", "invalid_request_error"
            )
        return await self.gateway.handle(caller, operation, body, headers)

    def _models(self) -> Answer:
        routes = self.gateway.routes
        data = [
            {
                "id": alias,
                "object": "model",
                "created": 0,
                "owned_by": routes.routes[alias].targets[0].upstream.name,
            }
            for alias in routes.models()
        ]
        return Answer(200, {"object": "list", "data": data})


def _bearer(header: str) -> str:
    scheme, _, value = header.strip().partition(" ")
    return value.strip() if scheme.lower() == "bearer" else ""


async def _read_body(receive: Receive, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
        if not message.get("more_body"):
            break
    return b"".join(chunks)


async def _send(send: Send, answer: Answer) -> None:
    headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in answer.headers.items()]
    if answer.stream is not None:
        headers += [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
        await send({"type": "http.response.start", "status": answer.status, "headers": headers})
        stream = answer.stream
        try:
            async for chunk in stream:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        finally:
            await stream.aclose()  # type: ignore[attr-defined]
        await send({"type": "http.response.body", "body": b""})
        return
    body = answer.raw if answer.raw is not None else json.dumps(answer.body, separators=(",", ":")).encode()
    headers += [(b"content-type", answer.content_type.encode()), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": answer.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
