"""The OTLP/HTTP receiver: a small ASGI application served by uvicorn on port 4318.

Answers follow the OTLP specification: the response uses the request's content type; every 4xx/5xx
carries a `google.rpc.Status` whose message says what was wrong and what to do; 429 and 503 carry
`Retry-After`; 200 carries `partial_success` when some spans were rejected.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Awaitable, Callable
from typing import Any

from collector.otlp import JSON, PROTOBUF, MalformedExport, decode, export_response, status_body
from collector.pipeline import Overloaded, Pipeline, Unauthenticated, cpu_bound
from collector.sink import SinkUnavailable

logger = logging.getLogger(__name__)

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

TRACE_PATHS = frozenset({"/v1/traces", "/api/public/otel/v1/traces"})
# SDKs pointed at OTEL_EXPORTER_OTLP_ENDPOINT also export metrics and logs. Costline reads traces only;
# answering 404 would make every SDK log an error forever, so these are accepted and noted.
IGNORED_SIGNAL_PATHS = frozenset(
    {"/v1/metrics", "/v1/logs", "/api/public/otel/v1/metrics", "/api/public/otel/v1/logs"}
)

# gRPC status codes used in google.rpc.Status bodies.
INVALID_ARGUMENT = 3
RESOURCE_EXHAUSTED = 8
UNAUTHENTICATED = 16
UNAVAILABLE = 14
INTERNAL = 13
NOT_FOUND = 5


class BodyTooLarge(Exception):
    pass


class HttpError(Exception):
    def __init__(
        self, status: int, grpc_code: int, message: str, headers: list[tuple[bytes, bytes]] | None = None
    ):
        super().__init__(message)
        self.status = status
        self.grpc_code = grpc_code
        self.message = message
        self.headers = headers or []


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return value.decode("latin-1")
    return None


def media_type(content_type: str | None) -> str | None:
    if not content_type:
        return None
    base = content_type.split(";", 1)[0].strip().lower()
    if base in (PROTOBUF, "application/protobuf"):
        return PROTOBUF
    if base == JSON:
        return JSON
    return None


def gunzip_limited(data: bytes, limit: int) -> bytes:
    """Decompress gzip, refusing to produce more than `limit` bytes (a gzip bomb stops here)."""
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        out = inflater.decompress(data, limit + 1)
    except zlib.error as exc:
        raise HttpError(
            400, INVALID_ARGUMENT, f"the gzip body is corrupt ({exc}); check Content-Encoding"
        ) from None
    if len(out) > limit or inflater.unconsumed_tail:
        raise BodyTooLarge()
    if not inflater.eof:
        raise HttpError(400, INVALID_ARGUMENT, "the gzip body is truncated; check Content-Encoding: gzip")
    return out


class OtlpHttpApp:
    def __init__(self, pipeline: Pipeline, *, max_body_bytes: int, retry_after_seconds: int) -> None:
        self.pipeline = pipeline
        self.max_body_bytes = max_body_bytes
        self.retry_after = str(retry_after_seconds).encode()
        self.on_startup: list[Callable[[], Awaitable[None]]] = []
        self.on_shutdown: list[Callable[[], Awaitable[None]]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        path = scope["path"].rstrip("/") or "/"
        if path in ("/health", "/healthz"):
            await self._respond(send, 200, b'{"status":"ok"}', JSON)
            return
        if path not in TRACE_PATHS and path not in IGNORED_SIGNAL_PATHS:
            await self._error(
                send,
                JSON,
                HttpError(404, NOT_FOUND, f"no OTLP endpoint at {path}; traces go to POST /v1/traces"),
            )
            return
        if scope["method"] != "POST":
            await self._error(send, JSON, HttpError(405, INVALID_ARGUMENT, "OTLP exports are sent with POST"))
            return
        content_type = media_type(_header(scope, b"content-type"))
        answer_type = content_type or JSON
        try:
            if content_type is None:
                raise HttpError(
                    415,
                    INVALID_ARGUMENT,
                    f"unsupported Content-Type {_header(scope, b'content-type')!r}: "
                    "send application/x-protobuf or application/json",
                )
            tenant = await self.pipeline.authenticate(_header(scope, b"authorization"))
            async with self.pipeline.admitted():
                body = await self._read_body(scope, receive)
                if path in IGNORED_SIGNAL_PATHS:
                    await self._respond(send, 200, b"{}" if content_type == JSON else b"", content_type)
                    return
                try:
                    decoded = await cpu_bound(decode, body, content_type)
                except MalformedExport as exc:
                    raise HttpError(400, INVALID_ARGUMENT, str(exc)) from None
                outcome = await self.pipeline.export(tenant, decoded)
            await self._respond(
                send,
                200,
                export_response(content_type, outcome.rejected_spans, outcome.message),
                content_type,
            )
        except HttpError as exc:
            await self._error(send, answer_type, exc)
        except BodyTooLarge:
            await self._error(
                send,
                answer_type,
                HttpError(
                    413,
                    RESOURCE_EXHAUSTED,
                    f"the export is larger than {self.max_body_bytes} bytes (after decompression); "
                    "send smaller batches (OTEL_BSP_MAX_EXPORT_BATCH_SIZE)",
                ),
            )
        except Unauthenticated as exc:
            await self._error(
                send,
                answer_type,
                HttpError(401, UNAUTHENTICATED, str(exc), [(b"www-authenticate", b"Bearer")]),
            )
        except Overloaded as exc:
            await self._error(
                send, answer_type, HttpError(429, UNAVAILABLE, str(exc), [(b"retry-after", self.retry_after)])
            )
        except SinkUnavailable as exc:
            logger.warning("export refused, store unavailable: %s", exc)
            await self._error(
                send,
                answer_type,
                HttpError(
                    503,
                    UNAVAILABLE,
                    "storage is temporarily unavailable; nothing from this export was stored, retry it",
                    [(b"retry-after", self.retry_after)],
                ),
            )
        except Exception:
            logger.exception("export failed")
            await self._error(
                send,
                answer_type,
                HttpError(
                    500, INTERNAL, "the collector failed to process this export; see the collector log"
                ),
            )

    async def _read_body(self, scope: Scope, receive: Receive) -> bytes:
        declared = _header(scope, b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            raise BodyTooLarge()
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise HttpError(400, INVALID_ARGUMENT, "the client disconnected before the body was complete")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                raise BodyTooLarge()
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        encoding = (_header(scope, b"content-encoding") or "identity").strip().lower()
        if encoding == "gzip":
            return gunzip_limited(body, self.max_body_bytes)
        if encoding not in ("identity", ""):
            raise HttpError(
                415, INVALID_ARGUMENT, f"unsupported Content-Encoding {encoding!r}: send gzip or no encoding"
            )
        return body

    async def _respond(
        self,
        send: Send,
        status: int,
        body: bytes,
        content_type: str,
        extra: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        headers = [(b"content-type", content_type.encode()), (b"content-length", str(len(body)).encode())]
        headers.extend(extra or [])
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _error(self, send: Send, content_type: str, error: HttpError) -> None:
        await self._respond(
            send,
            error.status,
            status_body(content_type, error.grpc_code, error.message),
            content_type,
            error.headers,
        )

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    for hook in self.on_startup:
                        await hook()
                except Exception as exc:
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                for hook in self.on_shutdown:
                    await hook()
                await send({"type": "lifespan.shutdown.complete"})
                return
