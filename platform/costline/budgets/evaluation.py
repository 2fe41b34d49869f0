"""Evaluate budgets: spend, forecast and state for the current period, events and notifications, Redis.

`evaluate(budget_id)` is idempotent and safe to run concurrently with itself:

- the BudgetPeriodState of (budget, period start) is upserted (INSERT … ON CONFLICT UPDATE);
- an event is raised once per budget, period, kind and threshold: the unique constraint decides, so a
  rerun or a concurrent run inserts nothing and notifies nobody a second time (notify is idempotent
  on (channel, "budget_event:<id>") as well, and sends only once the event's transaction commits);
- Redis is rewritten from what was computed; the state change is announced once (costline.budgets.state).

State: ok; warn once a threshold below 100% is crossed; at 100% of the amount, the budget's action
(throttle, downgrade or block; notify stays warn). A new period starts from its own spend, so the
state resets at the boundary. Thresholds above 100 raise events only.
"""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from django.db import IntegrityError, transaction
from django.utils import timezone

from costline.budgets import forecast as fc
from costline.budgets import state as redis_state
from costline.budgets.models import (
    Action,
    Budget,
    BudgetEvent,
    BudgetPeriodState,
    EventKind,
    State,
)
from costline.budgets.periods import budget_zone, current_period
from costline.budgets.spend import ZERO, Spend, expanded_scope, period_spend, usage_filters
from costline.redis_client import client
from costline.usage.metrics import UsageQuery, usage

log = logging.getLogger(__name__)

HUNDRED = Decimal(100)
# Settled reservations stay in Redis until the database holds their calls: a minute is dropped once
# the spend is complete for calls ingested SETTLED_GRACE after it ended.
SETTLED_GRACE_SECONDS = 60
HISTORY_CACHE_SECONDS = 3600


def state_for(budget: Budget, spent: Decimal) -> str:
    """The enforcement state for `spent` in a period."""
    amount = budget.amount_usd
    if spent >= amount:
        return State.WARN if budget.action == Action.NOTIFY else str(budget.action)
    for threshold in budget.thresholds or []:
        if Decimal(str(threshold)) < HUNDRED and spent * HUNDRED >= amount * Decimal(str(threshold)):
            return State.WARN
    return State.OK


def crossed_thresholds(budget: Budget, spent: Decimal) -> list[int]:
    thresholds = sorted({int(t) for t in budget.thresholds or []})
    return [t for t in thresholds if spent * HUNDRED >= budget.amount_usd * t]


@dataclass
class Evaluation:
    budget_id: int
    period_start: datetime
    period_end: datetime
    spend: Decimal
    state: str
    previous_state: str  # in Redis before ('' when none)
    forecast: fc.Forecast | None
    events: list[int]  # ids of events raised by this run
    error: str = ""  # why the spend could not be evaluated (a scope the rollups cannot answer)


# --- History for the forecast --------------------------------------------------------------------


def hourly_history(budget: Budget, filters: dict[str, tuple[str, ...]], now: datetime) -> fc.pd.Series:
    """The scope's hourly spend over the four weeks before the current hour (query layer; cached in
    Redis for the hour, keyed by the filters, so an evaluation every 2 s reads it once an hour)."""
    end = now.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    start = end - fc.HISTORY
    digest = hashlib.sha256(json.dumps(filters, sort_keys=True).encode()).hexdigest()[:16]
    key = f"costline:budget:{budget.id}:history:{int(end.timestamp())}:{digest}"
    cached = client().get(key)
    if cached is not None:
        rows = json.loads(cached)
        return fc.history_series([(datetime.fromtimestamp(t, UTC), Decimal(v)) for t, v in rows])
    result = usage(
        budget.organization_id,
        UsageQuery(start=start, end=end, interval="hour", filters=filters, metrics=("cost_usd",)),
    )
    points: list[tuple[datetime, Decimal]] = []
    if result.series:
        points = [(at, Decimal(str(values.get("cost_usd") or 0))) for at, values in result.series[0].points]
    # Drop the leading hours before the scope's first spend: a new scope has no four weeks of zeros.
    while points and points[0][1] == 0:
        points.pop(0)
    client().set(
        key, json.dumps([(int(at.timestamp()), str(v)) for at, v in points]), ex=HISTORY_CACHE_SECONDS
    )
    return fc.history_series(list(points))


# --- Events --------------------------------------------------------------------------------------


def _raise_event(
    budget: Budget,
    period_start: datetime,
    kind: str,
    threshold: int,
    spent: Decimal,
    forecast: fc.Forecast | None,
    message: str,
) -> BudgetEvent | None:
    """Insert the event unless this period already has it; notify the budget's channels. None if it
    existed. The notification is queued in the event's transaction: both commit or neither."""
    try:
        with transaction.atomic():
            event = BudgetEvent.objects.create(
                organization_id=budget.organization_id,
                budget=budget,
                period_start=period_start,
                kind=kind,
                threshold=threshold,
                spend_usd=spent,
                forecast_usd=forecast.expected if forecast else None,
                projected_limit_at=forecast.projected_limit_at if forecast else None,
                message=message,
            )
            _notify(budget, event)
    except IntegrityError:
        return None
    return event


def _notify(budget: Budget, event: BudgetEvent) -> None:
    try:
        from costline.alerts.notify import notify
    except ImportError:  # the notifications module is not installed: the event stands on its own
        log.warning("budget event %s: costline.alerts.notify is missing; no notification sent", event.id)
        return
    channel_ids = list(budget.channels.values_list("id", flat=True))
    if not channel_ids:
        return
    notify(
        budget.organization_id,
        channel_ids,
        f"budget_event:{event.id}",
        event.message,
        {
            "kind": f"budget.{event.kind}",
            "budget": {"id": budget.id, "name": budget.name},
            "organization": budget.organization_id,
            "period_start": event.period_start,
            "threshold": event.threshold,
            "spend_usd": event.spend_usd,
            "amount_usd": budget.amount_usd,
            "forecast_usd": event.forecast_usd,
            "projected_limit_at": event.projected_limit_at,
            "action": budget.action,
            "message": event.message,
        },
    )


def _usd(amount: Decimal) -> str:
    return f"${amount.quantize(Decimal('0.01')):,}"


def _threshold_message(budget: Budget, threshold: int, spent: Decimal) -> str:
    text = f"Budget '{budget.name}' reached {threshold}% of {_usd(budget.amount_usd)}: {_usd(spent)} spent"
    if threshold >= 100 and budget.action != Action.NOTIFY:
        text += f"; calls are now {State(state_for(budget, spent)).label.lower()}"
    return text


def _forecast_message(budget: Budget, forecast: fc.Forecast, zone_name: str) -> str:
    assert forecast.projected_limit_at is not None
    from zoneinfo import ZoneInfo

    when = forecast.projected_limit_at.astimezone(ZoneInfo(zone_name))
    return (
        f"Budget '{budget.name}' is projected to reach its limit of {_usd(budget.amount_usd)} on "
        f"{when:%Y-%m-%d %H:%M} ({zone_name}); forecast for the period {_usd(forecast.expected)}"
    )


# A forecast event needs a day of the scope's hourly history, or a fifth of the period elapsed: the
# burn rate of a scope's first minutes says little (one $1 call at 00:05 is not $720 a month).
FORECAST_MIN_HISTORY_HOURS = 24
FORECAST_MIN_ELAPSED = 0.2


def _forecast_is_informed(prediction: fc.Forecast, start: datetime, end: datetime, now: datetime) -> bool:
    if prediction.history_hours >= FORECAST_MIN_HISTORY_HOURS:
        return True
    elapsed = now.astimezone(UTC) - start.astimezone(UTC)
    return elapsed >= (end.astimezone(UTC) - start.astimezone(UTC)) * FORECAST_MIN_ELAPSED


# --- Settled reservations ------------------------------------------------------------------------


def drop_settled(budget_id: int, spend_through: datetime) -> int:
    """Drop settled-reservation minutes the database now holds: those that ended SETTLED_GRACE before
    `spend_through` (their calls had a minute to be ingested). Returns how many were dropped."""
    return _drop_settled_before(budget_id, spend_through.timestamp() - SETTLED_GRACE_SECONDS - 60)


def _drop_settled_before(budget_id: int, cutoff: float) -> int:
    """Drop the settled minutes starting at or before `cutoff` (epoch seconds)."""
    key = redis_state.settled_key(budget_id)
    stale = []
    for field in client().hkeys(key):
        try:
            minute = int(field)
        except ValueError:
            continue
        if minute <= cutoff:
            stale.append(field)
    if stale:
        client().hdel(key, *stale)
    return len(stale)


# Settled minutes older than this are folded into one field at the period's start, so the hash of a
# budget only reservations know stays small however long its period (a month is 44,640 minutes).
FOLD_AFTER_SECONDS = 600
# KEYS[1] the settled hash. ARGV: period start, fold cutoff (epoch s), ttl s. Drops earlier periods'
# minutes, folds this period's older ones into the period start's field, keeps the hash until the
# period is over; returns this period's total (nanodollars).
_FOLD = """
local start, cutoff = tonumber(ARGV[1]), tonumber(ARGV[2])
local s = redis.call('HGETALL', KEYS[1])
local folded, total, gone = 0, 0, {}
for j = 1, #s, 2 do
  local minute, amount = tonumber(s[j]), tonumber(s[j + 1])
  if minute == nil or minute < start then
    gone[#gone + 1] = s[j]
  else
    total = total + amount
    if minute ~= start and minute < cutoff then folded = folded + amount; gone[#gone + 1] = s[j] end
  end
end
for j = 1, #gone, 500 do redis.call('HDEL', KEYS[1], unpack(gone, j, math.min(j + 499, #gone))) end
if folded > 0 then redis.call('HINCRBY', KEYS[1], ARGV[1], folded) end
if total > 0 then redis.call('EXPIRE', KEYS[1], tonumber(ARGV[3])) end
return total
"""


def settled_spend(budget_id: int, start: datetime, end: datetime, now: datetime) -> Decimal:
    """A reservation-only budget's spend this period: its settled reservations, compacted as it goes."""
    ttl = max(3600, int((end - now).total_seconds()) + 86_400)
    total = client().eval(
        _FOLD,
        1,
        redis_state.settled_key(budget_id),
        int(start.timestamp()),
        int(now.timestamp()) - FOLD_AFTER_SECONDS,
        ttl,
    )
    return redis_state.from_nanos(int(total))


# --- Evaluation ----------------------------------------------------------------------------------


def evaluate(budget_id: int, now: datetime | None = None) -> Evaluation | None:
    """Evaluate one budget for the period containing `now`. None for a deleted budget."""
    now = now or timezone.now()
    budget = Budget.objects.select_related("organization").filter(id=budget_id).first()
    if budget is None:
        redis_state.publish(budget_id)
        return None
    start, end = current_period(budget, now)
    if budget.paused:
        previous = redis_state.unpublish(budget.id, budget.organization_id)
        return Evaluation(budget.id, start, end, ZERO, State.OK, previous, None, [])
    zone = budget_zone(budget)
    prediction: fc.Forecast | None = None
    error = ""
    try:
        filters = usage_filters(budget)
    except ValueError as exc:
        # A gateway-key budget: the rollups cannot answer it; its settled reservations are its spend.
        error = str(exc)
        spend = Spend(settled_spend(budget.id, start, end, now), through=now, boundary=now)
    else:
        spend = period_spend(budget.organization_id, filters, start, end, now)
        try:
            history = hourly_history(budget, filters, now)
            prediction = fc.forecast(history, spend.amount, now, start, end, budget.amount_usd, zone)
        except Exception:  # a forecast must never stop enforcement
            log.exception("budget %s: forecast failed", budget.id)
    state = state_for(budget, spend.amount)
    BudgetPeriodState.objects.bulk_create(
        [
            BudgetPeriodState(
                budget=budget,
                period_start=start,
                period_end=end,
                spend_usd=spend.amount,
                forecast_usd=prediction.expected if prediction else None,
                forecast_low_usd=prediction.low if prediction else None,
                forecast_high_usd=prediction.high if prediction else None,
                projected_limit_at=prediction.projected_limit_at if prediction else None,
                state=state,
                spend_through=spend.through,
                updated_at=timezone.now(),
            )
        ],
        update_conflicts=True,
        unique_fields=["budget", "period_start"],
        update_fields=[
            "period_end",
            "spend_usd",
            "forecast_usd",
            "forecast_low_usd",
            "forecast_high_usd",
            "projected_limit_at",
            "state",
            "spend_through",
            "updated_at",
        ],
    )
    events: list[int] = []
    for threshold in crossed_thresholds(budget, spend.amount):
        event = _raise_event(
            budget,
            start,
            EventKind.THRESHOLD,
            threshold,
            spend.amount,
            prediction,
            _threshold_message(budget, threshold, spend.amount),
        )
        if event:
            events.append(event.id)
    if (
        prediction
        and prediction.projected_limit_at is not None
        and spend.amount < budget.amount_usd
        and _forecast_is_informed(prediction, start, end, now)
    ):
        event = _raise_event(
            budget,
            start,
            EventKind.FORECAST,
            0,
            spend.amount,
            prediction,
            _forecast_message(budget, prediction, zone.key),
        )
        if event:
            events.append(event.id)
    if error:
        # Its settled minutes are all it has: the hash holds only this period's spend, written as "spent"
        # would count it twice.
        previous = redis_state.write(budget, state, ZERO, start, end, expanded_scope(budget))
    else:
        previous = redis_state.write(budget, state, spend.amount, start, end, expanded_scope(budget))
        drop_settled(budget.id, spend.through)
    return Evaluation(budget.id, start, end, spend.amount, state, previous, prediction, events, error=error)


# --- Which budgets to evaluate -------------------------------------------------------------------

EVALUATED_KEY = "costline:budgets:evaluated"  # HASH tenant id → epoch seconds (database clock)
# Calls whose ingest transaction began before the last run but committed after it carry an earlier
# ingested_at: look back this far past the last run so that none is missed.
INGEST_MARGIN_SECONDS = 5
RECENT_CALLS = timedelta(hours=1)  # new calls are looked for among those started this recently
FULL_SWEEP_SECONDS = 60  # every budget, whatever happened, at least this often

_DUE_TENANTS_SQL = """
SELECT t.tenant_id FROM unnest(%(tenants)s::bigint[], %(since)s::double precision[]) AS t(tenant_id, since)
WHERE t.since IS NULL
   OR EXISTS (SELECT 1 FROM usage_llmcall c WHERE c.tenant_id = t.tenant_id
              AND c.start_time >= now() - %(recent)s::interval AND c.ingested_at > to_timestamp(t.since))
   OR EXISTS (SELECT 1 FROM usage_rollup_dirty d WHERE d.tenant_id = t.tenant_id
              AND d.marked_at > to_timestamp(t.since))
"""


def _db_now() -> datetime:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT now()")
        value: datetime = cursor.fetchone()[0]
    return value


def due_budgets(now: datetime | None = None) -> list[int]:
    """Ids of the budgets to evaluate now: those of tenants with new calls since their last run, those
    whose period rolled over or that changed since their last evaluation, and every budget once per
    FULL_SWEEP_SECONDS."""
    from django.db import connection

    now = now or timezone.now()
    active = list(Budget.objects.filter(paused=False).values_list("id", "organization_id", "updated_at"))
    if not active:
        return []
    redis = client()
    sweep = redis.set("costline:budgets:full-sweep", "1", nx=True, ex=FULL_SWEEP_SECONDS)
    if sweep:
        return [budget_id for budget_id, _, _ in active]
    tenants = sorted({tenant for _, tenant, _ in active})
    seen = redis.hmget(EVALUATED_KEY, [str(t) for t in tenants])
    since = [float(s) - INGEST_MARGIN_SECONDS if s is not None else None for s in seen]
    with connection.cursor() as cursor:
        recent = f"{int(RECENT_CALLS.total_seconds())} seconds"
        cursor.execute(_DUE_TENANTS_SQL, {"tenants": tenants, "since": since, "recent": recent})
        due_tenants = {int(row[0]) for row in cursor.fetchall()}
    due = {budget_id for budget_id, tenant, _ in active if tenant in due_tenants}
    # Rolled over (no state for the current period) or changed since the last evaluation.
    latest = {
        row["budget_id"]: row
        for row in BudgetPeriodState.objects.filter(budget_id__in=[b for b, _, _ in active])
        .order_by("budget_id", "-period_start")
        .distinct("budget_id")
        .values("budget_id", "period_end", "updated_at")
    }
    for budget_id, _, updated_at in active:
        row = latest.get(budget_id)
        if row is None or row["period_end"] <= now or row["updated_at"] < updated_at:
            due.add(budget_id)
    return sorted(due)


RUN_LOCK_KEY = "costline:budgets:evaluate-lock"
RUN_LOCK_SECONDS = 30  # a run killed mid-way holds it this long at most


def evaluate_due(now: datetime | None = None) -> dict[str, int]:
    """One run of the periodic job: evaluate every due budget; record each tenant's run.

    One run at a time (a Redis lock): a run that finds another still going does nothing, the next
    one picks up what is due. A budget whose evaluation fails leaves its tenant unrecorded, so it is
    due again at the next run.
    """
    token = uuid.uuid4().hex
    redis = client()
    if not redis.set(RUN_LOCK_KEY, token, nx=True, ex=RUN_LOCK_SECONDS):
        return {"due": 0, "evaluated": 0, "changed": 0, "failed": 0, "skipped": 1}
    try:
        return _evaluate_due(now)
    finally:
        redis.eval(_RELEASE, 1, RUN_LOCK_KEY, token)


_RELEASE = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"


def _evaluate_due(now: datetime | None) -> dict[str, int]:
    started = _db_now()
    ids = due_budgets(now)
    tenant_of = dict(Budget.objects.filter(id__in=ids).values_list("id", "organization_id"))
    evaluated = changed = failed = 0
    tenants: set[int] = set()
    failed_tenants: set[int] = set()
    for budget_id in ids:
        try:
            result = evaluate(budget_id, now)
        except Exception:
            failed += 1
            failed_tenants.add(tenant_of.get(budget_id, 0))
            log.exception("budget %s: evaluation failed", budget_id)
            continue
        evaluated += 1
        if result is not None:
            tenants.add(tenant_of[budget_id])
            if result.previous_state != result.state:
                changed += 1
    tenants -= failed_tenants
    if tenants:
        client().hset(EVALUATED_KEY, mapping={str(t): str(started.timestamp()) for t in tenants})
    return {"due": len(ids), "evaluated": evaluated, "changed": changed, "failed": failed, "skipped": 0}
