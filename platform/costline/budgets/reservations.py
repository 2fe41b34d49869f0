"""Atomic reservations against every budget that covers a call, enforced in Redis before the call.

Before a call a caller reserves its worst-case cost (`reserve`); after it, it settles the actual cost
(`settle`) or gives the reservation back (`release`). Reservations expire after their ttl if never
settled, and free their amount. Money is integer nanodollars (1e-9 USD), as in `costline.budgets.state`.

Keys, per budget (besides the budget's hash of `costline.budgets.state`):

- `costline:budget:{id}:reserved` HASH reservation id → nanodollars reserved;
- `costline:budget:{id}:expiry` ZSET reservation id → expiry (epoch ms);
- `costline:budget:{id}:settled` HASH minute (epoch seconds of its start) → nanodollars settled in that
  minute and not yet seen in the database (the evaluation drops minutes it has counted);
- `costline:budget:{id}:reserved_sum` STRING: the sum of `reserved`, kept by the scripts so a check is
  O(1) however many reservations are open (deleted when `reserved` empties, so it cannot drift);
- `costline:budget:{id}:rpm` HASH minute, count: requests admitted this minute while throttled;
- `costline:reservation:{reservation id}` STRING "{tenant}|open", "|settled" or "|released": who owns
  a reservation and whether it is closed, so a repeated settle never counts twice (kept ttl + 10
  minutes while open, one minute once closed: about 100 bytes each).

Which budgets cover a call is decided inside the reserve script, from the tenant's index
(`costline:budgets:{tenant}`: budget id → scope with teams expanded, JSON): a scope matches when, for
every filter, the call's attribute is one of its values ("" stands for a call without one). In the same
script, atomically for all of them: drops expired reservations; refuses if any block-action budget
would pass its limit (spent + settled + reserved + estimate > limit) or is in state block, or any
budget in state throttle has admitted `throttle_rpm` requests this minute; otherwise records the
reservation against every covering budget and returns the downgrade model of a budget in state
downgrade, if any. All or nothing: a refusal changes nothing, and a budget published or removed
concurrently is either wholly seen or not at all. So under any concurrency the spend of a block budget
never exceeds its limit by more than what admitted calls cost beyond their estimates.

One round trip per reserve and per settle: the scripts derive each budget's keys from its id (the
reservation id names the budgets it holds) rather than receiving them in KEYS. That needs one Redis
server, as Costline deploys it; Redis Cluster would need every key of a tenant in one hash slot.

Sums run in Lua numbers (doubles): exact for budgets up to $9,007,199 (2^53 nanodollars).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from costline.budgets.state import from_nanos, index_key, to_nanos
from costline.redis_client import client

DEFAULT_TTL_S = 60
MAX_TTL_S = 3600
# How long after its expiry a reservation can still be settled (its actual cost still counts until the
# database has the call: ingestion takes seconds, so ten minutes is generous).
SETTLE_GRACE_S = 600
ATTRIBUTES = ("project", "service", "environment", "feature", "user", "provider", "model", "gateway_key")
_ID = re.compile(r"^[0-9a-f]{32}-(?:\d+(?:\.\d+)*)?$")


class ReservationError(ValueError):
    """A request that cannot be done as asked; the message says why."""


class UnknownReservation(ReservationError):
    """No such reservation for this tenant (never made, another tenant's, or long expired)."""


class ReservationClosed(ReservationError):
    """The reservation was already settled or released."""


@dataclass(frozen=True)
class BudgetCheck:
    """One covering budget as the reservation found it."""

    id: int
    state: str  # the enforcement state published by the evaluation (ok|warn|throttle|downgrade|block)
    verdict: str  # what this budget said of this call: ok, block, throttle or downgrade
    remaining_usd: Decimal  # limit - (spent + settled + reserved), this reservation included if admitted


@dataclass(frozen=True)
class Reservation:
    id: str | None  # None when refused, or when no budget covers the call (nothing to settle)
    admitted: bool
    decision: str  # admitted: "ok" or "downgrade"; refused: "block" or "throttle"
    downgrade_model: str  # the model to use instead ("" when none)
    retry_after_s: int | None  # throttled: seconds to the next minute; None otherwise
    budgets: tuple[BudgetCheck, ...]


def reservation_key(reservation_id: str) -> str:
    return f"costline:reservation:{reservation_id}"


# KEYS[1] the tenant's index. ARGV: tenant, reservation id's random part, estimate (nanodollars), ttl
# ms, marker ttl ms, key ttl ms (the longest a reservation lives), then the call's attributes as name,
# value pairs. Time is Redis's, one clock for all. Returns admitted (0/1), decision, retry-after s,
# downgrade model, {budget id, state, verdict, remaining} per covering budget, the reservation id ('' when
# nothing was reserved).
RESERVE_SCRIPT = """
local t = redis.call('TIME')
local now_s = tonumber(t[1])
local now_ms = now_s * 1000 + math.floor(tonumber(t[2]) / 1000)
local minute = now_s - now_s % 60
local tenant, est, ttl_ms = ARGV[1], tonumber(ARGV[3]), tonumber(ARGV[4])
local attrs = {}
for i = 7, #ARGV, 2 do attrs[ARGV[i]] = ARGV[i + 1] end
local index = redis.call('HGETALL', KEYS[1])
local ids = {}
for j = 1, #index, 2 do
  local covers = true
  for name, values in pairs(cjson.decode(index[j + 1])) do
    local value, found = attrs[name] or '', false
    for _, allowed in ipairs(values) do
      if allowed == value then found = true; break end
    end
    if not found then covers = false; break end
  end
  if covers then ids[#ids + 1] = tonumber(index[j]) end
end
table.sort(ids)
local refusal, downgrade = '', ''
local live, out = {}, {}
for _, id in ipairs(ids) do
  local base = 'costline:budget:' .. id
  local reserved, expiry, settled = base .. ':reserved', base .. ':expiry', base .. ':settled'
  local rpm, total = base .. ':rpm', base .. ':reserved_sum'
  local h = redis.call('HMGET', base, 'tenant', 'state', 'action', 'limit', 'spent',
                       'period_start', 'period_end', 'throttle_rpm', 'downgrade_model')
  if h[1] == tenant then
    local expired = redis.call('ZRANGEBYSCORE', expiry, '-inf', now_ms, 'LIMIT', 0, 5000)
    for j = 1, #expired, 500 do
      local chunk = {unpack(expired, j, math.min(j + 499, #expired))}
      local freed = 0
      for _, v in ipairs(redis.call('HMGET', reserved, unpack(chunk))) do
        if v then freed = freed + tonumber(v) end
      end
      redis.call('HDEL', reserved, unpack(chunk))
      redis.call('ZREM', expiry, unpack(chunk))
      redis.call('DECRBY', total, freed)
    end
    local state, action = h[2] or 'ok', h[3] or 'notify'
    local limit, spent = tonumber(h[4]) or 0, tonumber(h[5]) or 0
    local pstart, pend = tonumber(h[6]) or 0, tonumber(h[7]) or 0
    if pend > 0 and now_s >= pend then
      -- The period is over and the evaluation has not rolled it over yet: a new period starts clean.
      spent, state, pstart = 0, 'ok', pend
    end
    local used = spent
    if redis.call('HLEN', reserved) == 0 then
      redis.call('DEL', total)  -- no open reservation: the running total restarts from 0
    else
      used = used + math.max(0, tonumber(redis.call('GET', total) or '0'))
    end
    local s = redis.call('HGETALL', settled)
    for j = 1, #s, 2 do
      if tonumber(s[j]) >= pstart then used = used + tonumber(s[j + 1]) end
    end
    local verdict = 'ok'
    if action == 'block' then
      if state == 'block' or used + est > limit then verdict = 'block'; refusal = 'block' end
    elseif action == 'throttle' and state == 'throttle' then
      local c = redis.call('HMGET', rpm, 'minute', 'count')
      local count = 0
      if tonumber(c[1]) == minute then count = tonumber(c[2]) or 0 end
      if count >= (tonumber(h[8]) or 0) then
        verdict = 'throttle'
        if refusal == '' then refusal = 'throttle' end
      end
    elseif action == 'downgrade' and state == 'downgrade' and (h[9] or '') ~= '' then
      verdict = 'downgrade'
      if downgrade == '' then downgrade = h[9] end
    end
    live[#live + 1] = {id, reserved, expiry, total, rpm, state == 'throttle' and action == 'throttle'}
    out[#out + 1] = {id, state, verdict, limit - used}
  end
end
if refusal ~= '' then
  return {0, refusal, (refusal == 'throttle') and (60 - now_s % 60) or 0, '', out, ''}
end
if #live == 0 then return {1, 'ok', 0, '', out, ''} end
local held = {}
for _, l in ipairs(live) do held[#held + 1] = l[1] end
local rid = ARGV[2] .. '-' .. table.concat(held, '.')
for _, l in ipairs(live) do
  redis.call('HSET', l[2], rid, ARGV[3])
  redis.call('ZADD', l[3], now_ms + ttl_ms, rid)
  redis.call('INCRBY', l[4], ARGV[3])
  -- Keys of a deleted budget vanish on their own once its last reservation could have expired.
  redis.call('PEXPIRE', l[2], ARGV[6])
  redis.call('PEXPIRE', l[3], ARGV[6])
  redis.call('PEXPIRE', l[4], ARGV[6])
  if l[6] then
    local c = redis.call('HMGET', l[5], 'minute', 'count')
    if tonumber(c[1]) == minute then
      redis.call('HINCRBY', l[5], 'count', 1)
    else
      redis.call('HSET', l[5], 'minute', minute, 'count', 1)
    end
    redis.call('EXPIRE', l[5], 120)
  end
end
for _, o in ipairs(out) do o[4] = o[4] - est end
redis.call('SET', 'costline:reservation:' .. rid, tenant .. '|open', 'PX', tonumber(ARGV[5]))
return {1, (downgrade ~= '') and 'downgrade' or 'ok', 0, downgrade, out, rid}
"""

# KEYS[1] the reservation's marker. ARGV: reservation id, actual (nanodollars; settle only), tenant,
# 'settled' or 'released'. The budgets are those the reservation id names.
CLOSE_SCRIPT = """
local m = redis.call('GET', KEYS[1])
local tenant = ARGV[3]
if not m then return 'unknown' end
local owner, status = string.match(m, '^([^|]*)|(.*)$')
if owner ~= tenant then return 'unknown' end
if status ~= 'open' then return status end
local t = redis.call('TIME')
local now_s = tonumber(t[1])
local minute = now_s - now_s % 60
local actual = tonumber(ARGV[2])
-- The budget ids come from the reservation id, which the marker (checked above) vouches for.
for id in string.gmatch(string.match(ARGV[1], '-(.*)$'), '%d+') do
  local base = 'costline:budget:' .. id
  local reserved, total = base .. ':reserved', base .. ':reserved_sum'
  local held = redis.call('HGET', reserved, ARGV[1])
  if held then
    redis.call('HDEL', reserved, ARGV[1])
    redis.call('ZREM', base .. ':expiry', ARGV[1])
    redis.call('DECRBY', total, held)
  end
  if redis.call('HLEN', reserved) == 0 then redis.call('DEL', total) end
  if ARGV[4] == 'settled' and actual > 0 then
    redis.call('HINCRBY', base .. ':settled', minute, actual)
    -- Settled minutes are needed only until the evaluation has the calls from the database (seconds).
    redis.call('EXPIRE', base .. ':settled', 3600)
  end
end
-- A closed marker only has to recognise a retried settle: a minute, so closed ones cost little memory.
redis.call('SET', KEYS[1], tenant .. '|' .. ARGV[4], 'EX', 60)
return 'ok'
"""

_scripts: dict[int, tuple[Any, Any]] = {}


def _script(which: int) -> Any:
    conn = client()
    pair = _scripts.get(id(conn))
    if pair is None:
        _scripts.clear()
        pair = (conn.register_script(RESERVE_SCRIPT), conn.register_script(CLOSE_SCRIPT))
        _scripts[id(conn)] = pair
    return pair[which]


def _money(value: Decimal | str | int, name: str) -> Decimal:
    try:
        amount = value if isinstance(value, Decimal) else Decimal(str(value))
    except (InvalidOperation, ValueError) as exc:
        raise ReservationError(f'{name} must be a decimal amount in USD, e.g. "0.02"; got {value!r}') from exc
    if not amount.is_finite() or amount < 0:
        raise ReservationError(f"{name} must be a finite amount of at least 0 USD; got {value!r}")
    if amount > Decimal("1000000"):
        raise ReservationError(f"{name} must be at most 1000000 USD for one call; got {value!r}")
    return amount


def _attrs(attrs: dict[str, Any]) -> dict[str, str]:
    unknown = sorted(set(attrs) - set(ATTRIBUTES))
    if unknown:
        raise ReservationError(
            f"call: unknown attribute {', '.join(map(repr, unknown))}; use any of {', '.join(ATTRIBUTES)}"
        )
    out = {}
    for key, value in attrs.items():
        if value is not None and not isinstance(value, str):
            raise ReservationError(f"call.{key} must be a string; got {value!r}")
        out[key] = value or ""
    return out


def reserve(
    tenant_id: int, attrs: dict[str, Any], estimate: Decimal | str, ttl_s: int = DEFAULT_TTL_S
) -> Reservation:
    """Reserve a call's worst-case cost against every budget covering it, or refuse it: all or nothing.

    attrs: the call's project (slug), service, environment, feature, user, provider, model and
    gateway_key (any may be left out). Raises ReservationError for bad input, redis.RedisError when
    Redis cannot be reached (nothing was reserved: the caller may retry).
    """
    keys, args = reserve_request(tenant_id, attrs, estimate, ttl_s)
    return reserve_result(_script(0)(keys=keys, args=args))


def reserve_request(
    tenant_id: int, attrs: dict[str, Any], estimate: Decimal | str, ttl_s: int = DEFAULT_TTL_S
) -> tuple[list[str], list[Any]]:
    """KEYS and ARGV of the reserve script (RESERVE_SCRIPT), for callers with their own Redis client
    (the gateway's asyncio one); `reserve_result` reads its answer. Raises ReservationError."""
    amount = _money(estimate, "estimate_usd")
    if isinstance(ttl_s, bool) or not isinstance(ttl_s, int) or not 1 <= ttl_s <= MAX_TTL_S:
        raise ReservationError(
            f"ttl_seconds must be a whole number of seconds from 1 to {MAX_TTL_S}; got {ttl_s!r}"
        )
    flat: list[str] = []
    for name, value in _attrs(attrs).items():
        flat += [name, value]
    return [index_key(tenant_id)], [
        tenant_id,
        os.urandom(16).hex(),
        to_nanos(amount, ceiling=True),
        ttl_s * 1000,
        (ttl_s + SETTLE_GRACE_S) * 1000,
        (MAX_TTL_S + 60) * 1000,
        *flat,
    ]


def reserve_result(raw: Any) -> Reservation:
    admitted, decision, retry, downgrade, rows, rid = raw
    checks = tuple(
        BudgetCheck(
            id=int(budget_id),
            state=state.decode(),
            verdict=verdict.decode(),
            remaining_usd=from_nanos(int(remaining)),
        )
        for budget_id, state, verdict, remaining in rows
    )
    if not checks:
        return Reservation(None, True, "ok", "", None, ())
    return Reservation(
        id=rid.decode() if admitted else None,
        admitted=bool(admitted),
        decision=decision.decode(),
        downgrade_model=downgrade.decode(),
        retry_after_s=int(retry) if retry else None,
        budgets=checks,
    )


def close_request(
    tenant_id: int, reservation_id: str, actual: Decimal | str, status: str
) -> tuple[list[str], list[Any]]:
    """KEYS and ARGV of the close script (CLOSE_SCRIPT); status is "settled" or "released"."""
    if not isinstance(reservation_id, str) or not _ID.match(reservation_id):
        raise UnknownReservation(f"reservation_id {reservation_id!r} is not one that reserve returned")
    amount = _money(actual, "actual_usd")
    return [reservation_key(reservation_id)], [
        reservation_id,
        to_nanos(amount, ceiling=True),
        tenant_id,
        status,
    ]


def close_result(reservation_id: str, raw: Any) -> None:
    """Raise what the close script's answer means (UnknownReservation, ReservationClosed), if anything."""
    outcome = raw.decode() if isinstance(raw, bytes) else str(raw)
    if outcome == "unknown":
        raise UnknownReservation(
            f"no open reservation {reservation_id} in this organisation: never made, closed more than a "
            f"minute ago, or expired more than {SETTLE_GRACE_S} seconds ago (its call is then counted from "
            "the database)"
        )
    if outcome != "ok":
        raise ReservationClosed(f"reservation {reservation_id} was already {outcome}; nothing changed")


def _close(tenant_id: int, reservation_id: str, actual: Decimal | str, status: str) -> None:
    keys, args = close_request(tenant_id, reservation_id, actual, status)
    close_result(reservation_id, _script(1)(keys=keys, args=args))


def settle(tenant_id: int, reservation_id: str, actual: Decimal | str) -> None:
    """Replace a reservation by the call's actual cost, counted until the database has the call.

    Works after the reservation expired too (within SETTLE_GRACE_S): the call happened, so it counts.
    Raises UnknownReservation, ReservationClosed (settled or released before), redis.RedisError.
    """
    _close(tenant_id, reservation_id, actual, "settled")


def release(tenant_id: int, reservation_id: str) -> None:
    """Give a reservation back: the call was not made (or failed without cost)."""
    _close(tenant_id, reservation_id, Decimal(0), "released")
