"""The exact response cache (Redis) and request coalescing (in the process).

The key is a SHA-256 over the organisation, the operation, the model the route resolved to, the input
(messages, prompt or embedding input) and every parameter that changes the answer; parameters that do
not (`stream`, `stream_options`, `user`, metadata) are left out, so a streaming request is answered from
a non-streaming one's answer and the reverse. Organisations never share an entry.

Per request, `Cache-Control: no-cache` skips the lookup (the fresh answer is still stored) and
`no-store` (or `X-Costline-Cache: off`) neither reads nor writes; a gateway key with its cache off
never does either. Only whole, successful answers are stored (finish reason stop or length, or an
embedding), for `COSTLINE_GATEWAY_CACHE_TTL_SECONDS`.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

# Parameters that do not change what the model answers; everything else is part of the key.
NEUTRAL_PARAMETERS = frozenset(
    {"model", "stream", "stream_options", "user", "metadata", "store", "service_tier", "parallel_tool_calls"}
)
KEY_PREFIX = "costline:gw:cache:"

T = TypeVar("T")


@dataclass(frozen=True)
class CachePolicy:
    read: bool
    write: bool


def policy(headers: dict[str, str], key_enabled: bool) -> CachePolicy:
    """What the request and its key allow: headers are lower-cased names."""
    if not key_enabled:
        return CachePolicy(False, False)
    control = {part.strip().lower() for part in headers.get("cache-control", "").split(",")}
    if "no-store" in control or headers.get("x-costline-cache", "").lower() in ("off", "0", "false", "no"):
        return CachePolicy(False, False)
    return CachePolicy(read="no-cache" not in control, write=True)


def cache_key(tenant_id: int, operation: str, model: str, body: dict[str, Any]) -> str:
    material = {k: v for k, v in body.items() if k not in NEUTRAL_PARAMETERS}
    text = json.dumps(
        [tenant_id, operation, model, material], sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )
    return KEY_PREFIX + hashlib.sha256(text.encode()).hexdigest()


def cacheable(operation: str, body: dict[str, Any]) -> bool:
    """Whether an answer is whole and worth reusing."""
    if operation == "embeddings":
        return bool(body.get("data"))
    choices = body.get("choices") or []
    return bool(choices) and all(c.get("finish_reason") in ("stop", "length") for c in choices)


class Coalescer:
    """Identical concurrent requests share one upstream call: the first runs it, the others await it.

    In one gateway process; each replica coalesces its own requests (the cache covers the rest).
    A failed leader's error is raised in every follower too: they asked the same thing at once.
    """

    def __init__(self) -> None:
        self._inflight: dict[str, asyncio.Future[Any]] = {}

    def leader_of(self, key: str) -> asyncio.Future[Any] | None:
        return self._inflight.get(key)

    def begin(self, key: str) -> asyncio.Future[Any] | None:
        """A streaming leader: followers wait for `end`'s whole answer. None when one already leads."""
        if key in self._inflight:
            return None
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        return future

    def end(self, key: str, future: asyncio.Future[Any], result: Any) -> None:
        """The streaming leader's whole answer (None when it did not complete: followers call again)."""
        if self._inflight.get(key) is future:
            del self._inflight[key]
        if not future.done():
            future.set_result(result)

    async def run(self, key: str, work: Callable[[], Awaitable[T]]) -> tuple[T, bool]:
        """(result, shared): shared is True when another request's call answered this one."""
        running = self._inflight.get(key)
        if running is not None:
            return await asyncio.shield(running), True
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        try:
            result = await work()
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: no "never retrieved" warning when nobody followed
            raise
        else:
            future.set_result(result)
            return result, False
        finally:
            del self._inflight[key]
