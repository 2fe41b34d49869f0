"""A lean HTTP/1.1 client for the gateway's non-streaming calls to plain-HTTP upstreams.

    client = PlainHTTP()
    status, body = await client.post("http://127.0.0.1:8200/v1/chat/completions", payload, headers, 60)

The bundled vLLM tier and other upstreams on the local network are reached over plain HTTP, where the
gateway's own cost per call is what a caller notices. aiohttp spent about 330 µs of CPU on one such
call on the development machine; writing the request in one piece and parsing the answer with
httptools (the C parser uvicorn uses) on a kept-alive connection takes about 120. HTTPS upstreams and
streams stay on aiohttp (`inference.gateway.upstream`).

Connections are kept per host and port, at most `per_host` at once (a call waits for one), and reused
while the server keeps them alive. A kept connection the server closed while idle fails on its next
request before any answer; that request is sent once more on a new connection, as browsers and
aiohttp do. Failures: OSError (cannot connect, connection lost), TimeoutError (no whole answer within
the call's timeout: the connection is dropped) and `ProtocolError` (an answer that is not HTTP). An
answer must say where it ends (Content-Length or chunked, as the HTTP/1.1 servers of JSON APIs do):
one that ends only when the server closes the connection counts as a lost connection.
"""

from __future__ import annotations

import asyncio
import collections
from dataclasses import dataclass
from urllib.parse import urlsplit

import httptools


class ProtocolError(Exception):
    """The server answered something that is not an HTTP/1.1 response."""


class _Lost(Exception):
    """The connection closed before any byte of the answer (a kept connection the server had closed)."""


class _Connection(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.answer: asyncio.Future[tuple[int, bytes]] | None = None
        self.body: list[bytes] = []
        self.received = False  # a byte of the current answer came
        self.closed = False
        self.keep_alive = True

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def request(self, data: bytes) -> asyncio.Future[tuple[int, bytes]]:
        assert self.transport is not None
        self.answer = asyncio.get_running_loop().create_future()
        self.body, self.received = [], False
        self.transport.write(data)
        return self.answer

    def data_received(self, data: bytes) -> None:
        self.received = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(ProtocolError(f"the upstream's answer is not HTTP/1.1: {exc}"))

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        self.keep_alive = self.parser.should_keep_alive()
        answer, self.answer = self.answer, None
        if answer is not None and not answer.done():
            answer.set_result((self.parser.get_status_code(), b"".join(self.body)))
        self.body = []
        if not self.keep_alive:
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.answer is not None and not self.answer.done():
            if not self.received:
                self.answer.set_exception(_Lost())
            else:
                self.answer.set_exception(ConnectionResetError(f"the upstream closed the connection: {exc}"))

    def _fail(self, error: Exception) -> None:
        if self.answer is not None and not self.answer.done():
            self.answer.set_exception(error)
        self.close()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()


@dataclass
class _Host:
    idle: collections.deque[_Connection]
    slots: asyncio.Semaphore


class PlainHTTP:
    def __init__(self, *, per_host: int = 200, user_agent: str = "costline-gateway") -> None:
        self.per_host = per_host
        self.user_agent = user_agent
        self._hosts: dict[tuple[str, int], _Host] = {}

    async def post(
        self, url: str, body: bytes, headers: dict[str, str], timeout_s: float
    ) -> tuple[int, bytes]:
        """POST `body` (JSON) to an http:// URL; the answer's status and whole body."""
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"PlainHTTP posts to http:// URLs only, not {url!r}")
        port = parts.port or 80
        target = parts.path or "/"
        if parts.query:
            target += "?" + parts.query
        lines = [
            f"POST {target} HTTP/1.1",
            f"Host: {parts.netloc}",
            f"User-Agent: {self.user_agent}",
            "Content-Type: application/json",
            f"Content-Length: {len(body)}",
        ]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
        host = self._hosts.get((parts.hostname, port))
        if host is None:
            host = self._hosts[(parts.hostname, port)] = _Host(
                collections.deque(), asyncio.Semaphore(self.per_host)
            )
        async with asyncio.timeout(timeout_s), host.slots:
            connection = None
            try:
                while host.idle:
                    kept = host.idle.pop()
                    if not kept.closed:
                        connection = kept
                        break
                if connection is not None:
                    try:
                        answer = await connection.request(request)
                    except _Lost:
                        connection = None  # closed by the server while it was idle: once more, anew
                    else:
                        self._keep(host, connection)
                        return answer
                connection = await self._open(parts.hostname, port)
                try:
                    answer = await connection.request(request)
                except _Lost:
                    raise ConnectionResetError(
                        "the upstream closed the connection without answering"
                    ) from None
                self._keep(host, connection)
                return answer
            except BaseException:
                if connection is not None:
                    connection.close()  # its answer is unread or cut: never reuse it
                raise

    def _keep(self, host: _Host, connection: _Connection) -> None:
        if connection.keep_alive and not connection.closed:
            host.idle.append(connection)

    async def _open(self, hostname: str, port: int) -> _Connection:
        loop = asyncio.get_running_loop()
        _, connection = await loop.create_connection(_Connection, hostname, port)
        return connection

    def close(self) -> None:
        for host in self._hosts.values():
            while host.idle:
                host.idle.pop().close()
