"""The gateway's lean HTTP/1.1 client against a small raw HTTP server whose answers each test scripts:
kept-alive connections are reused, and every way an answer can go wrong fails that call alone."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Awaitable, Callable
from typing import TypeVar

import pytest

from inference.gateway.http1 import PlainHTTP, ProtocolError

T = TypeVar("T")
OK = b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{"ok":true}'


class Server:
    """Reads each request whole; `answer(n)` gives the bytes for the n-th request (None: no answer and
    close the connection); `connections` counts those accepted, `requests` keeps each body."""

    def __init__(self, answer: Callable[[int], bytes | None]) -> None:
        self.answer = answer
        self.connections = 0
        self.requests: list[bytes] = []
        self.heads: list[bytes] = []

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/v1/chat/completions"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                self.heads.append(head)
                self.requests.append(await reader.readexactly(length))
                reply = self.answer(len(self.requests))
                if reply is None:
                    break
                writer.write(reply)
                await writer.drain()
        writer.close()


def run(work: Callable[[], Awaitable[T]]) -> T:
    return asyncio.run(work())


def test_calls_reuse_one_kept_alive_connection_and_send_the_request_whole():
    server = Server(lambda n: OK)

    async def work() -> list[tuple[int, bytes]]:
        url, client = await server.start(), PlainHTTP()
        answers = [await client.post(url, b'{"n":%d}' % i, {"traceparent": "00-ab-01"}, 5) for i in range(3)]
        client.close()
        return answers

    assert run(work) == [(200, b'{"ok":true}')] * 3
    assert server.connections == 1
    assert server.requests == [b'{"n":0}', b'{"n":1}', b'{"n":2}']
    head = server.heads[0].decode()
    assert head.startswith("POST /v1/chat/completions HTTP/1.1\r\n")
    for line in ("Host: 127.0.0.1:", "traceparent: 00-ab-01", "Content-Length: 7"):
        assert line in head


def test_a_chunked_answer_is_read_whole():
    chunked = (
        b"HTTP/1.1 429 Too Many Requests\r\nTransfer-Encoding: chunked\r\n\r\n"
        b'4\r\n{"a"\r\n4\r\n:12}\r\n0\r\n\r\n'
    )
    server = Server(lambda n: chunked)

    async def work() -> tuple[int, bytes]:
        return await PlainHTTP().post(await server.start(), b"{}", {}, 5)

    assert run(work) == (429, b'{"a":12}')


def test_a_kept_connection_the_server_closed_is_replaced_and_the_request_sent_once_more():
    # The server answers the first request and then closes the connection (an idle timeout, say).
    server = Server(lambda n: OK if n != 2 else None)

    async def work() -> list[tuple[int, bytes]]:
        url, client = await server.start(), PlainHTTP()
        first = await client.post(url, b"1", {}, 5)
        await asyncio.sleep(0.05)
        return [first, await client.post(url, b"2", {}, 5)]

    assert run(work) == [(200, b'{"ok":true}')] * 2
    assert server.requests == [b"1", b"2", b"2"]  # the second was read once, then sent anew
    assert server.connections == 2


def test_an_answer_that_says_connection_close_is_not_reused():
    closing = OK.replace(b"Content-Length", b"Connection: close\r\nContent-Length")
    server = Server(lambda n: closing)

    async def work() -> None:
        url, client = await server.start(), PlainHTTP()
        for body in (b"1", b"2"):
            assert await client.post(url, body, {}, 5) == (200, b'{"ok":true}')

    run(work)
    assert server.connections == 2


def test_a_late_answer_times_out_and_its_connection_is_never_given_another_call():
    connections = 0

    async def work() -> tuple[int, bytes]:
        never = asyncio.Event()

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal connections
            connections += 1
            await reader.readuntil(b"\r\n\r\n")
            if connections == 1:
                await never.wait()  # the first connection's answer never comes
            writer.write(OK)
            await writer.drain()

        listening = await asyncio.start_server(serve, "127.0.0.1", 0)
        url = f"http://127.0.0.1:{listening.sockets[0].getsockname()[1]}/v1/embeddings"
        client = PlainHTTP()
        with pytest.raises(TimeoutError):
            await client.post(url, b"", {}, 0.2)
        answer = await client.post(url, b"", {}, 5)
        never.set()
        return answer

    assert run(work) == (200, b'{"ok":true}')
    assert connections == 2


def test_an_answer_that_is_not_http_is_a_protocol_error():
    server = Server(lambda n: b"SSH-2.0-OpenSSH_9.2\r\n\r\n")

    async def work() -> None:
        await PlainHTTP().post(await server.start(), b"{}", {}, 5)

    with pytest.raises(ProtocolError, match=r"not HTTP/1\.1"):
        run(work)


def test_an_upstream_that_cannot_be_reached_is_refused_and_https_is_not_for_this_client():
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]

    async def refused() -> None:
        await PlainHTTP().post(f"http://127.0.0.1:{port}/v1/models", b"", {}, 5)

    async def https() -> None:
        await PlainHTTP().post("https://api.openai.com/v1/chat/completions", b"", {}, 5)

    with pytest.raises(ConnectionRefusedError):
        run(refused)
    with pytest.raises(ValueError, match="http:// URLs only"):
        run(https)
