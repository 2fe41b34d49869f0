"""Budgets at the gateway: reserve a call's worst-case cost before it, settle its actual cost after.

The same Lua scripts as `costline.budgets.reservations` (one round trip each), run on the gateway's
lean asyncio Redis client (`inference.gateway.resp`). The worst case is the call's input estimated
from its size (at most one token per 3 bytes of text: English runs about 4 bytes a token, code and
other scripts fewer) plus its `max_tokens` (or `COSTLINE_GATEWAY_DEFAULT_MAX_TOKENS` when the request
sets none) at the model's catalogue prices. A self-hosted model has no catalogue price: its calls
reserve nothing but are still refused by a budget in state block or throttle.
"""

from __future__ import annotations

import json
import math
from collections.abc import Awaitable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from costline.budgets import reservations
from costline.budgets.reservations import Reservation, ReservationError
from costline.usage.pricing import TokenUsage, price_call
from inference.gateway.resp import LeanRedis, Script

BYTES_PER_TOKEN_AT_LEAST = 3
TOKENS_PER_MESSAGE = 4  # role and separators of the chat template


def estimate_input_tokens(body: dict[str, Any]) -> int:
    text = 0
    messages = body.get("messages")
    count = 0
    if isinstance(messages, list):
        for message in messages:
            count += 1
            content = message.get("content") if isinstance(message, dict) else message
            text += len(content.encode()) if isinstance(content, str) else len(json.dumps(content).encode())
    for name in ("prompt", "input"):
        value = body.get(name)
        if value is not None:
            text += len(value.encode()) if isinstance(value, str) else len(json.dumps(value).encode())
    if body.get("tools") is not None:
        text += len(json.dumps(body["tools"]).encode())
    return math.ceil(text / BYTES_PER_TOKEN_AT_LEAST) + TOKENS_PER_MESSAGE * count


def max_output_tokens(body: dict[str, Any], operation: str, default: int) -> int:
    if operation == "embeddings":
        return 0
    for name in ("max_completion_tokens", "max_tokens"):
        value = body.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value * max(1, int(body.get("n") or 1))
    return default * max(1, int(body.get("n") or 1))


def cost(
    provider: str,
    model: str,
    operation: str,
    input_tokens: int | None,
    output_tokens: int | None,
    cached: int = 0,
) -> Decimal | None:
    """A call's cost at catalogue prices now; None when the catalogue has no price for it."""
    price = price_call(
        provider=provider,
        request_model=model,
        response_model=None,
        operation=operation,
        usage=TokenUsage(input_tokens, output_tokens, cache_read_tokens=cached or None),
        when=datetime.now(UTC),
        failed=False,
    )
    return price.cost_usd


class Budgets:
    def __init__(self, client: LeanRedis, *, ttl_s: int = reservations.DEFAULT_TTL_S) -> None:
        self.client = client
        self.ttl_s = ttl_s
        self._reserve = Script(reservations.RESERVE_SCRIPT)
        self._close = Script(reservations.CLOSE_SCRIPT)

    def reserve_soon(
        self, tenant_id: int, attrs: dict[str, str], estimate: Decimal
    ) -> Awaitable[Reservation]:
        """The reservation written to Redis now (as `LeanRedis.start`), its result awaited later.
        Awaiting raises redis.RedisError when Redis cannot be reached (nothing was reserved), and
        ReservationError for a request the script would refuse (nothing was written)."""
        try:
            keys, args = reservations.reserve_request(tenant_id, attrs, estimate, self.ttl_s)
        except ReservationError as exc:
            return _raising(exc)
        reply = self.client.evalsha_soon(self._reserve, keys, args)

        async def result() -> Reservation:
            return reservations.reserve_result(await reply)

        return result()

    def settle_soon(self, tenant_id: int, reservation_id: str, actual: Decimal) -> Awaitable[None]:
        """The settle written to Redis now, its result checked when the caller awaits what this returns
        (after sending its answer: whatever reads the budget once the answer arrived sees it settled).
        Errors come out of the awaiting, as `reserve_soon`'s do."""
        try:
            keys, args = reservations.close_request(tenant_id, reservation_id, actual, "settled")
        except ReservationError as exc:
            return _raising(exc)
        reply = self.client.evalsha_soon(self._close, keys, args)

        async def checked() -> None:
            reservations.close_result(reservation_id, await reply)

        return checked()


async def _raising(exc: Exception) -> Any:
    raise exc
