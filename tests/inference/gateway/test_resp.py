"""The gateway's lean Redis client against the test Redis: replies reach their own commands however many
are in flight, errors are redis-py's, and a lost or silent connection fails its commands, not later ones."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import pytest
from django.conf import settings
from redis.exceptions import ConnectionError, ResponseError, TimeoutError

from costline.redis_client import client
from inference.gateway.resp import LeanRedis, Script, pack

T = TypeVar("T")
# Busy for about 50 ms inside Redis, then answers: a command whose reply comes late.
SLOW = Script(
    "local t = redis.call('TIME') local start = t[1] * 1000000 + t[2] "
    "repeat t = redis.call('TIME') until t[1] * 1000000 + t[2] - start > 50000 return 'slow'"
)


@pytest.fixture(autouse=True)
def empty_redis() -> Iterator[None]:
    client().flushdb()
    yield
    client().flushdb()


def run(work: Callable[[LeanRedis], Awaitable[T]], url: str | None = None, **options: Any) -> T:
    async def main() -> T:
        redis = LeanRedis(url or settings.REDIS_URL, **options)
        try:
            return await work(redis)
        finally:
            await redis.aclose()

    return asyncio.run(main())


def test_commands_are_packed_as_resp_arrays_of_bulk_strings():
    assert (
        pack(("SET", "k", b"v\r\n", 7, 0.5))
        == b"*5\r\n$3\r\nSET\r\n$1\r\nk\r\n$3\r\nv\r\n\r\n$1\r\n7\r\n$3\r\n0.5\r\n"
    )
    with pytest.raises(TypeError, match="bytes, str, int or float, not NoneType"):
        pack(("GET", None))


def test_hundreds_of_concurrent_commands_each_get_their_own_reply():
    async def work(redis: LeanRedis) -> list[Any]:
        await asyncio.gather(*(redis.execute("SET", f"k{i}", f"v{i}") for i in range(300)))
        return await asyncio.gather(*(redis.execute("GET", f"k{i}") for i in range(300)))

    assert run(work) == [f"v{i}".encode() for i in range(300)]
    # The URL's database (SELECT) is the one the platform's client uses.
    assert client().get("k299") == b"v299"


def test_an_error_reply_raises_response_error_and_the_connection_goes_on():
    async def work(redis: LeanRedis) -> tuple[str, Any]:
        await redis.execute("SET", "text", "not a number")
        try:
            await redis.execute("INCR", "text")
        except ResponseError as exc:
            error = str(exc)
        return error, await redis.execute("GET", "text")

    error, value = run(work)
    assert "not an integer" in error
    assert value == b"not a number"


def test_a_script_redis_does_not_know_is_loaded_and_run():
    script = Script("return {KEYS[1], ARGV[1], 7}")

    async def work(redis: LeanRedis) -> tuple[Any, Any]:
        first = await redis.evalsha(script, ["key"], ["arg"])
        await redis.execute("SCRIPT", "FLUSH")  # as after a Redis restart
        return first, await redis.evalsha(script, ["key"], ["arg"])

    assert run(work) == ([b"key", b"arg", 7], [b"key", b"arg", 7])


def test_a_started_command_is_written_before_start_returns_and_its_reply_awaited_later():
    async def work(redis: LeanRedis) -> tuple[Any, Any, Any]:
        await redis.execute("PING")  # connected
        setting = redis.start("SET", "k", "v")
        scripted = redis.evalsha_soon(Script("return redis.call('GET', KEYS[1])"), ["k"], [])
        # The event loop has not run since: what another connection reads now, the SET had written.
        seen = client().get("k")
        return seen, await setting, await scripted

    assert run(work) == (b"v", b"OK", b"v")


def test_commands_started_together_are_written_when_the_block_ends():
    async def work(redis: LeanRedis) -> tuple[Any, ...]:
        await redis.execute("PING")  # connected
        with redis.together():
            setting = redis.start("SET", "k", "v")
            getting = redis.start("GET", "k")
            inside = client().get("k")  # held back: not written yet
        after = client().get("k")
        with redis.together():  # with nothing started, nothing is written
            pass
        return inside, after, await setting, await getting, await redis.execute("GET", "k")

    assert run(work) == (None, b"v", b"OK", b"v", b"v")


def test_a_command_started_with_no_connection_open_is_written_once_one_is():
    async def work(redis: LeanRedis) -> list[Any]:
        with redis.together():  # no connection to hold them on: each connects and is written
            replies = [redis.start("SET", "k", "v"), redis.start("GET", "k")]
        return [await reply for reply in replies]

    assert run(work) == [b"OK", b"v"]


def test_a_caller_that_gives_up_does_not_shift_the_replies_of_the_others():
    async def work(redis: LeanRedis) -> Any:
        await redis.execute("SET", "k", "v")
        slow = asyncio.ensure_future(redis.evalsha(SLOW, [], []))
        await asyncio.sleep(0.01)  # sent, not answered
        slow.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await slow
        return await redis.execute("GET", "k")

    assert run(work) == b"v"


def test_redis_unreachable_is_a_connection_error():
    with pytest.raises(ConnectionError, match=r"cannot connect to Redis at 127\.0\.0\.1:1:"):
        run(lambda redis: redis.execute("PING"), url="redis://127.0.0.1:1/0")


def test_a_silent_redis_times_out_every_command_in_flight_and_the_next_connects_again():
    async def work(redis: LeanRedis) -> tuple[list[Any], Any]:
        accepted: list[asyncio.StreamWriter] = []

        async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            accepted.append(writer)

        server = await asyncio.start_server(never_answer, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        silent = LeanRedis(f"redis://127.0.0.1:{port}/0", timeout_s=0.3)
        outcomes = await asyncio.gather(*(silent.execute("PING") for _ in range(3)), return_exceptions=True)
        server.close()
        await silent.aclose()
        # The real Redis, after its connection was killed: the next command connects again.
        await redis.execute("PING")
        own = await redis.execute("CLIENT", "ID")
        await asyncio.to_thread(client().client_kill_filter, _id=own)
        with contextlib.suppress(ConnectionError):
            await redis.execute("PING")  # may meet the dead connection before its loss is seen
        return outcomes, await redis.execute("PING")

    outcomes, after = run(work)
    assert all(isinstance(o, TimeoutError) for o in outcomes), outcomes
    assert "did not answer within 0.3 s" in str(outcomes[0])
    assert after == b"PONG"


def test_calls_waiting_for_a_connection_share_the_one_attempt_and_its_failure():
    async def work() -> tuple[list[Any], int]:
        accepted = 0

        async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal accepted
            accepted += 1

        server = await asyncio.start_server(never_answer, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        # Database 1: connecting sends SELECT, which this server never answers.
        redis = LeanRedis(f"redis://127.0.0.1:{port}/1", timeout_s=0.3)
        outcomes = await asyncio.gather(*(redis.execute("PING") for _ in range(5)), return_exceptions=True)
        server.close()
        return outcomes, accepted

    outcomes, accepted = asyncio.run(work())
    assert [type(o) for o in outcomes] == [TimeoutError] * 5
    assert accepted == 1  # the four others did not each wait 0.3 s for an attempt of their own
