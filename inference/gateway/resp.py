"""A lean asyncio Redis client for the gateway's per-call commands: the budget scripts and the cache.

    redis = LeanRedis(settings.REDIS_URL)
    reply = await redis.execute("GET", key)
    reply = await redis.evalsha(script, keys, args)   # SCRIPT LOAD once, on NOSCRIPT
    with redis.together():                            # written at the block's end, in one write
        lookup = redis.start("GET", key)              # written now (or with the block), awaited later
        reserving = redis.evalsha_soon(script, keys, args)
    reply = await reserving

Every call through the gateway runs two or three Redis commands (reserve, cache lookup, settle).
redis-py's asyncio client spent about 200 µs of CPU on each (its pool, retry wrapper and stream reader)
where the round trip itself costs about 60; on one core that was a fifth of the gateway's time per
call. This client writes every command to one connection and reads the replies in order as they come
(hiredis parses them), so concurrent calls share the connection and its reads. It is only for short
commands: a large reply would hold up the ones behind it, so the semantic cache's scans stay on
redis-py.

Errors are redis-py's exception classes, so callers handle both clients alike: ConnectionError when
Redis cannot be reached or the connection drops (the commands in flight fail, the next one connects
again), TimeoutError when a reply takes longer than `timeout_s` (the connection is dropped: a Redis
that answers nothing in that long is not working), ResponseError for an error reply.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import ssl
import time
from collections.abc import Awaitable
from typing import Any

import hiredis
from redis.asyncio.connection import SSLConnection, UnixDomainSocketConnection, parse_url
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError


class Script:
    """A Lua script run by its SHA1 (EVALSHA), loaded on first use."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()


def pack(args: tuple[Any, ...]) -> bytes:
    """One command in RESP: an array of bulk strings."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        if isinstance(arg, bytes):
            value = arg
        elif isinstance(arg, str):
            value = arg.encode()
        elif isinstance(arg, int) and not isinstance(arg, bool):
            value = b"%d" % arg
        elif isinstance(arg, float):
            value = repr(arg).encode()
        else:
            raise TypeError(f"a Redis argument must be bytes, str, int or float, not {type(arg).__name__}")
        parts.append(b"$%d\r\n%s\r\n" % (len(value), value))
    return b"".join(parts)


class _Connection(asyncio.Protocol):
    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self.reader = hiredis.Reader(replyError=ResponseError)
        self.waiting: collections.deque[tuple[asyncio.Future[Any], float]] = collections.deque()
        self.transport: asyncio.Transport | None = None
        self.closed: Exception | None = None
        self.held: list[bytes] | None = None  # commands held back to be written together (`together`)
        self._timer: asyncio.TimerHandle | None = None
        self._loop = asyncio.get_running_loop()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def send(self, command: bytes) -> asyncio.Future[Any]:
        if self.closed is not None or self.transport is None:
            raise RedisConnectionError(f"the Redis connection is closed: {self.closed}")
        future: asyncio.Future[Any] = self._loop.create_future()
        self.waiting.append((future, time.monotonic()))
        if self.held is not None:
            self.held.append(command)
        else:
            self.transport.write(command)
        if self._timer is None:
            self._timer = self._loop.call_later(self.timeout_s, self._check_overdue)
        return future

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        while self.waiting:
            try:
                reply = self.reader.gets()
            except hiredis.ProtocolError as exc:
                self._fail(RedisConnectionError(f"Redis answered something that is not RESP: {exc}"))
                return
            if reply is False:
                return
            future, _ = self.waiting.popleft()
            if future.done():
                continue  # its caller gave up (cancelled); the reply is still this command's
            if isinstance(reply, ResponseError):
                future.set_exception(reply)
            else:
                future.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(
            self.closed or RedisConnectionError(f"the Redis connection was lost: {exc or 'closed by Redis'}")
        )

    def _check_overdue(self) -> None:
        self._timer = None
        if not self.waiting:
            return
        oldest = self.waiting[0][1]
        late = time.monotonic() - oldest
        if late >= self.timeout_s:
            self._fail(RedisTimeoutError(f"Redis did not answer within {self.timeout_s:g} s"))
            return
        self._timer = self._loop.call_later(self.timeout_s - late, self._check_overdue)

    def _fail(self, error: Exception) -> None:
        if self.closed is None:
            self.closed = error
        if self.transport is not None:
            self.transport.abort()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self.waiting:
            future, _ = self.waiting.popleft()
            if not future.done():
                future.set_exception(type(error)(*error.args))  # one each: a raise writes its traceback

    def close(self) -> None:
        self._fail(RedisConnectionError("the Redis client was closed"))


class _Together:
    def __init__(self, connection: _Connection | None) -> None:
        usable = connection is not None and connection.closed is None and connection.held is None
        self.connection = connection if usable else None  # none open: started commands each connect

    def __enter__(self) -> None:
        if self.connection is not None:
            self.connection.held = []

    def __exit__(self, *exc: object) -> None:
        connection = self.connection
        if connection is None or connection.held is None:
            return
        held, connection.held = connection.held, None
        if held and connection.closed is None and connection.transport is not None:
            connection.transport.write(b"".join(held))


class LeanRedis:
    def __init__(self, url: str, *, timeout_s: float = 2.0, connect_timeout_s: float = 2.0) -> None:
        options = parse_url(url)
        self.timeout_s, self.connect_timeout_s = timeout_s, connect_timeout_s
        connection_class = options.get("connection_class")
        self._path: str | None = (
            options.get("path") if connection_class is UnixDomainSocketConnection else None
        )
        self._host, self._port = options.get("host", "localhost"), int(options.get("port", 6379))
        self._tls = connection_class is SSLConnection
        self._setup: list[tuple[Any, ...]] = []
        if options.get("password"):
            auth = ("AUTH", options["username"], options["password"]) if options.get("username") else None
            self._setup.append(auth or ("AUTH", options["password"]))
        if int(options.get("db") or 0):
            self._setup.append(("SELECT", int(options["db"])))
        self._connection: _Connection | None = None
        self._connecting: asyncio.Lock | None = None
        # When the last attempt to connect failed, and how.
        self._failed: tuple[float, Exception] | None = None

    async def execute(self, *args: Any) -> Any:
        connection = self._connection
        if connection is None or connection.closed is not None:
            connection = await self._connect()
        return await connection.send(pack(args))

    def start(self, *args: Any) -> Awaitable[Any]:
        """The command written now, its reply awaited later: the caller does other work (or sends its
        answer) in the round trip, and must await what this returns. With no connection open, the
        command is written once one is."""
        connection = self._connection
        if connection is None or connection.closed is not None:
            return asyncio.ensure_future(self.execute(*args))
        return connection.send(pack(args))

    def together(self) -> _Together:
        """A block whose started commands (`start`, `evalsha_soon`) are written at its end in one write:
        one system call, and one packet that Redis answers in one. Nothing in the block may await a
        reply: it has not been sent yet."""
        return _Together(self._connection)

    def evalsha_soon(self, script: Script, keys: list[Any], args: list[Any]) -> Awaitable[Any]:
        """EVALSHA written now (as `start`); awaiting the result loads the script on NOSCRIPT and runs
        it once more."""
        first = self.start("EVALSHA", script.sha, len(keys), *keys, *args)

        async def reply() -> Any:
            try:
                return await first
            except ResponseError as exc:
                if not str(exc).startswith("NOSCRIPT"):
                    raise
            await self.execute("SCRIPT", "LOAD", script.source)  # Redis restarted, or was flushed
            return await self.execute("EVALSHA", script.sha, len(keys), *keys, *args)

        return reply()

    async def evalsha(self, script: Script, keys: list[Any], args: list[Any]) -> Any:
        return await self.evalsha_soon(script, keys, args)

    async def aclose(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    async def _connect(self) -> _Connection:
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        asked = time.monotonic()
        async with self._connecting:  # calls that find no connection wait for one attempt, together
            if self._connection is not None and self._connection.closed is None:
                return self._connection
            if self._failed is not None and self._failed[0] >= asked:
                error = self._failed[1]  # the attempt this call waited for failed: so does this call
                raise type(error)(*error.args)
            try:
                connection = await self._open()
            except (RedisConnectionError, RedisTimeoutError) as exc:
                self._failed = (time.monotonic(), exc)
                raise
            self._connection = connection
            return connection

    async def _open(self) -> _Connection:
        loop = asyncio.get_running_loop()
        where = self._path or f"{self._host}:{self._port}"
        try:
            if self._path:
                opening = loop.create_unix_connection(lambda: _Connection(self.timeout_s), self._path)
            else:
                opening = loop.create_connection(
                    lambda: _Connection(self.timeout_s),
                    self._host,
                    self._port,
                    ssl=ssl.create_default_context() if self._tls else None,
                )
            _, connection = await asyncio.wait_for(opening, self.connect_timeout_s)
        except TimeoutError as exc:
            raise RedisTimeoutError(
                f"cannot connect to Redis at {where} within {self.connect_timeout_s:g} s"
            ) from exc
        except OSError as exc:
            raise RedisConnectionError(f"cannot connect to Redis at {where}: {exc}") from exc
        for command in self._setup:
            try:
                await connection.send(pack(command))
            except ResponseError:
                connection.close()
                raise
        return connection
