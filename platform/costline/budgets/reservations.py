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

Which budgets cover a call is decided here, in Python, from the tenant's index
(`costline:budgets:{tenant}`: budget id → scope with teams expanded): a scope matches when, for every
filter, the call's attribute is one of its values ("" stands for a call without one). Then ONE Lua
script, atomically for all of them: drops expired reservations; refuses if any block-action budget
would pass its limit (spent + settled + reserved + estimate > limit) or is in state block, or any
budget in state throttle has admitted `throttle_rpm` requests this minute; otherwise records the
reservation against every covering budget and returns the downgrade model of a budget in state
downgrade, if any. All or nothing: a refusal changes nothing. So under any concurrency the spend of
a block budget never exceeds its limit by more than what admitted calls cost beyond their estimates.

Sums run in Lua numbers (doubles): exact for budgets up to $9,007,199 (2^53 nanodollars).
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from costline.budgets.state import budget_key, from_nanos, index_key, settled_key, to_nanos
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


def _keys(budget_id: int) -> list[str]:
    base = budget_key(budget_id)
    return [
        base,
        f"{base}:reserved",
        f"{base}:expiry",
        settled_key(budget_id),
        f"{base}:rpm",
        f"{base}:reserved_sum",
    ]


# KEYS[1] the reservation's marker, then 6 per budget (hash, reserved, expiry, settled, rpm, sum).
# ARGV: reservation id, estimate, ttl ms, tenant, marker ttl ms, key ttl ms (the longest a reservation
# lives). Time is Redis's, one clock for all.
_RESERVE = """
local t = redis.call('TIME')
local now_s = tonumber(t[1])
local now_ms = now_s * 1000 + math.floor(tonumber(t[2]) / 1000)
local minute = now_s - now_s % 60
local rid, est, ttl_ms, tenant = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
local n = (#KEYS - 1) / 6
local refusal, downgrade = '', ''
local live, out = {}, {}
for i = 0, n - 1 do
  local b = 2 + i * 6
  local h = redis.call('HMGET', KEYS[b], 'tenant', 'state', 'action', 'limit', 'spent',
                       'period_start', 'period_end', 'throttle_rpm', 'downgrade_model')
  if h[1] == tenant then
    local expired = redis.call('ZRANGEBYSCORE', KEYS[b + 2], '-inf', now_ms, 'LIMIT', 0, 5000)
    for j = 1, #expired, 500 do
      local chunk = {unpack(expired, j, math.min(j + 499, #expired))}
      local freed = 0
      for _, v in ipairs(redis.call('HMGET', KEYS[b + 1], unpack(chunk))) do
        if v then freed = freed + tonumber(v) end
      end
      redis.call('HDEL', KEYS[b + 1], unpack(chunk))
      redis.call('ZREM', KEYS[b + 2], unpack(chunk))
      redis.call('DECRBY', KEYS[b + 5], freed)
    end
    local state, action = h[2] or 'ok', h[3] or 'notify'
    local limit, spent = tonumber(h[4]) or 0, tonumber(h[5]) or 0
    local pstart, pend = tonumber(h[6]) or 0, tonumber(h[7]) or 0
    if pend > 0 and now_s >= pend then
      -- The period is over and the evaluation has not rolled it over yet: a new period starts clean.
      spent, state, pstart = 0, 'ok', pend
    end
    local used = spent
    if redis.call('HLEN', KEYS[b + 1]) == 0 then
      redis.call('DEL', KEYS[b + 5])  -- no open reservation: the running total restarts from 0
    else
      used = used + math.max(0, tonumber(redis.call('GET', KEYS[b + 5]) or '0'))
    end
    local s = redis.call('HGETALL', KEYS[b + 3])
    for j = 1, #s, 2 do
      if tonumber(s[j]) >= pstart then used = used + tonumber(s[j + 1]) end
    end
    local verdict = 'ok'
    if action == 'block' then
      if state == 'block' or used + est > limit then verdict = 'block'; refusal = 'block' end
    elseif action == 'throttle' and state == 'throttle' then
      local c = redis.call('HMGET', KEYS[b + 4], 'minute', 'count')
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
    live[#live + 1] = {b, state, action}
    out[#out + 1] = {i, state, verdict, limit - used}
  end
end
if refusal ~= '' then
  return {0, refusal, (refusal == 'throttle') and (60 - now_s % 60) or 0, '', out}
end
if #live > 0 then
  for _, l in ipairs(live) do
    local b = l[1]
    redis.call('HSET', KEYS[b + 1], rid, ARGV[2])
    redis.call('ZADD', KEYS[b + 2], now_ms + ttl_ms, rid)
    redis.call('INCRBY', KEYS[b + 5], ARGV[2])
    -- Keys of a deleted budget vanish on their own once its last reservation could have expired.
    redis.call('PEXPIRE', KEYS[b + 1], ARGV[6])
    redis.call('PEXPIRE', KEYS[b + 2], ARGV[6])
    redis.call('PEXPIRE', KEYS[b + 5], ARGV[6])
    if l[2] == 'throttle' and l[3] == 'throttle' then
      local c = redis.call('HMGET', KEYS[b + 4], 'minute', 'count')
      if tonumber(c[1]) == minute then
        redis.call('HINCRBY', KEYS[b + 4], 'count', 1)
      else
        redis.call('HSET', KEYS[b + 4], 'minute', minute, 'count', 1)
      end
      redis.call('EXPIRE', KEYS[b + 4], 120)
    end
  end
  for _, o in ipairs(out) do o[4] = o[4] - est end
  redis.call('SET', KEYS[1], tenant .. '|open', 'PX', tonumber(ARGV[5]))
end
return {1, (downgrade ~= '') and 'downgrade' or 'ok', 0, downgrade, out}
"""

# KEYS[1] the reservation's marker, then 5 per budget (hash, reserved, expiry, settled, sum).
# ARGV: reservation id, actual (nanodollars; settle only), tenant, 'settled' or 'released'.
_CLOSE = """
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
for b = 2, #KEYS, 5 do
  local held = redis.call('HGET', KEYS[b + 1], ARGV[1])
  if held then
    redis.call('HDEL', KEYS[b + 1], ARGV[1])
    redis.call('ZREM', KEYS[b + 2], ARGV[1])
    redis.call('DECRBY', KEYS[b + 4], held)
  end
  if redis.call('HLEN', KEYS[b + 1]) == 0 then redis.call('DEL', KEYS[b + 4]) end
  -- The budget ids come from the reservation id, which the marker (checked above) vouches for.
  if ARGV[4] == 'settled' and actual > 0 then
    redis.call('HINCRBY', KEYS[b + 3], minute, actual)
    -- Settled minutes are needed only until the evaluation has the calls from the database (seconds).
    redis.call('EXPIRE', KEYS[b + 3], 3600)
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
        pair = (conn.register_script(_RESERVE), conn.register_script(_CLOSE))
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


def covering_budgets(tenant_id: int, attrs: dict[str, str]) -> list[int]:
    """Ids of the tenant's published budgets whose scope covers a call with these attributes."""
    index = client().hgetall(index_key(tenant_id))
    covering = []
    for raw_id, raw_scope in index.items():
        scope = json.loads(raw_scope)
        if all(str(attrs.get(key) or "") in values for key, values in scope.items()):
            covering.append(int(raw_id))
    return sorted(covering)


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
    amount = _money(estimate, "estimate_usd")
    if isinstance(ttl_s, bool) or not isinstance(ttl_s, int) or not 1 <= ttl_s <= MAX_TTL_S:
        raise ReservationError(
            f"ttl_seconds must be a whole number of seconds from 1 to {MAX_TTL_S}; got {ttl_s!r}"
        )
    call = _attrs(attrs)
    budget_ids = covering_budgets(tenant_id, call)
    if not budget_ids:
        return Reservation(None, True, "ok", "", None, ())
    rid = f"{uuid.uuid4().hex}-{'.'.join(map(str, budget_ids))}"
    keys = [reservation_key(rid)]
    for budget_id in budget_ids:
        keys += _keys(budget_id)
    admitted, decision, retry, downgrade, rows = _script(0)(
        keys=keys,
        args=[
            rid,
            to_nanos(amount, ceiling=True),
            ttl_s * 1000,
            tenant_id,
            (ttl_s + SETTLE_GRACE_S) * 1000,
            (MAX_TTL_S + 60) * 1000,
        ],
    )
    checks = tuple(
        BudgetCheck(
            id=budget_ids[int(index)],
            state=state.decode(),
            verdict=verdict.decode(),
            remaining_usd=from_nanos(int(remaining)),
        )
        for index, state, verdict, remaining in rows
    )
    if not checks:  # every covering budget vanished between the index read and the script
        return Reservation(None, True, "ok", "", None, ())
    return Reservation(
        id=rid if admitted else None,
        admitted=bool(admitted),
        decision=decision.decode(),
        downgrade_model=downgrade.decode(),
        retry_after_s=int(retry) if retry else None,
        budgets=checks,
    )


def _close(tenant_id: int, reservation_id: str, actual: Decimal, status: str) -> None:
    if not isinstance(reservation_id, str) or not _ID.match(reservation_id):
        raise UnknownReservation(f"reservation_id {reservation_id!r} is not one that reserve returned")
    ids = reservation_id.split("-", 1)[1]
    keys = [reservation_key(reservation_id)]
    for budget_id in (int(i) for i in ids.split(".") if i):
        hash_, reserved, expiry, settled, _, total = _keys(budget_id)
        keys += [hash_, reserved, expiry, settled, total]
    outcome = _script(1)(keys=keys, args=[reservation_id, to_nanos(actual, ceiling=True), tenant_id, status])
    outcome = outcome.decode() if isinstance(outcome, bytes) else str(outcome)
    if outcome == "unknown":
        raise UnknownReservation(
            f"no open reservation {reservation_id} in this organisation: never made, closed more than a "
            f"minute ago, or expired more than {SETTLE_GRACE_S} seconds ago (its call is then counted from "
            "the database)"
        )
    if outcome != "ok":
        raise ReservationClosed(f"reservation {reservation_id} was already {outcome}; nothing changed")


def settle(tenant_id: int, reservation_id: str, actual: Decimal | str) -> None:
    """Replace a reservation by the call's actual cost, counted until the database has the call.

    Works after the reservation expired too (within SETTLE_GRACE_S): the call happened, so it counts.
    Raises UnknownReservation, ReservationClosed (settled or released before), redis.RedisError.
    """
    _close(tenant_id, reservation_id, _money(actual, "actual_usd"), "settled")


def release(tenant_id: int, reservation_id: str) -> None:
    """Give a reservation back: the call was not made (or failed without cost)."""
    _close(tenant_id, reservation_id, Decimal(0), "released")
