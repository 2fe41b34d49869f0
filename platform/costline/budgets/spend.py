"""A budget's scope as filters, and its spend in a period: rollups, then the newest raw calls.

Spend is exact (Decimal, 12 places as stored). The rollups hold every call ingested before their
watermark W; calls are split by start time at B, W's minute (never before the period's start):

- [period start, B): the rollups, through the usage query layer (the coarsest buckets that tile it);
- [B, period end): raw calls, whenever ingested. B trails the present by the rollups' lag (10-60 s),
  so this is a small range of the newest rows.

The two ranges are disjoint by start time, so no call counts twice. A late call (started before B,
ingested after W) is counted once the rollups take it in; `spend_through` says so: every call ingested
before it is in the spend.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.db.models import Q, Sum

from costline.budgets.models import SCOPE_KEYS
from costline.usage.metrics import NONE_VALUE, UsageQuery, usage
from costline.usage.models import LLMCall
from costline.usage.rollup import watermark

if TYPE_CHECKING:
    from costline.budgets.models import Budget

ZERO = Decimal(0)
# Scope keys the rollups cannot answer: enforced at the gateway by reservations alone.
RESERVATION_ONLY_KEYS = ("gateway_key",)


def _values(key: str, raw: Any) -> list[str]:
    if raw is None:
        return []
    items = raw if isinstance(raw, list | tuple) else [raw]
    out = []
    for item in items:
        if not isinstance(item, str | int) or isinstance(item, bool):
            raise ValueError(f"scope {key}: values are strings, got {item!r}")
        out.append(str(item))
    return out


def expanded_scope(budget: Budget) -> dict[str, list[str]]:
    """The scope with teams replaced by their projects' slugs: {} is the whole organisation.

    A team is named by its slug (or its id). With both `team` and `project`, a call must be in both:
    the projects are the intersection. An unknown team contributes no project (matches nothing). Keys
    with an empty list are ignored. Raises ValueError for an unknown key.
    """
    from costline.tenancy.models import Team

    scope = budget.scope or {}
    if not isinstance(scope, dict):
        raise ValueError('scope must be an object of filters, e.g. {"project": ["search"]}')
    out: dict[str, list[str]] = {}
    for key, raw in scope.items():
        if key not in SCOPE_KEYS:
            raise ValueError(f"scope: unknown filter {key!r}; use any of {', '.join(SCOPE_KEYS)}")
        values = _values(key, raw)
        if values and key != "team":
            out[key] = sorted(set(values))
    teams = _values("team", scope.get("team"))
    if teams:
        slugs = [t for t in teams if not t.isdigit()]
        ids = [int(t) for t in teams if t.isdigit()]
        team_projects = set(
            Team.objects.filter(organization_id=budget.organization_id)
            .filter(Q(slug__in=slugs) | Q(id__in=ids))
            .values_list("projects__slug", flat=True)
        )
        team_projects.discard(None)  # a team without projects
        if "project" in out:
            team_projects &= set(out["project"])
        out["project"] = sorted(team_projects)
    return out


def usage_filters(budget: Budget) -> dict[str, tuple[str, ...]]:
    """The budget's scope as usage query-layer filters (teams expanded to their projects' slugs).

    Raises ValueError, saying why, for a scope the rollups cannot answer: a gateway key (enforced by
    reservations only), or an end user together with another filter (per-user usage is kept apart).
    """
    scope = expanded_scope(budget)
    for key in RESERVATION_ONLY_KEYS:
        if key in scope:
            raise ValueError(
                f"scope {key}: spend per {key.replace('_', ' ')} is not kept in the usage rollups; such a "
                "budget is enforced at the gateway by reservations, not evaluated from stored usage"
            )
    if "user" in scope and len(scope) > 1:
        others = ", ".join(sorted(k for k in scope if k != "user"))
        raise ValueError(
            f"scope user: per-user usage is kept apart from the other dimensions; a budget on end users "
            f"cannot also filter on {others}"
        )
    return {key: tuple(values) for key, values in scope.items()}


# --- Spend ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Spend:
    amount: Decimal
    through: datetime  # every call ingested before this instant is in `amount`
    boundary: datetime  # rollups before this start time, raw calls from it


def _floor(moment: datetime, unit: str) -> datetime:
    moment = moment.astimezone(UTC)
    if unit == "minute":
        return moment.replace(second=0, microsecond=0)
    return moment.replace(minute=0, second=0, microsecond=0)


def _ceil_hour(moment: datetime) -> datetime:
    floor = _floor(moment, "hour")
    return floor if floor == moment else floor + timedelta(hours=1)


def _rollup_cost(
    tenant_id: int, filters: dict[str, tuple[str, ...]], start: datetime, end: datetime, interval: str
) -> Decimal:
    if start >= end:
        return ZERO
    result = usage(
        tenant_id,
        UsageQuery(
            start=start, end=end, interval=interval, filters=filters, metrics=("cost_usd",), points=False
        ),
    )
    value = result.totals.get("cost_usd")
    return value if isinstance(value, Decimal) else Decimal(str(value or 0))


RAW_FIELD = {
    "project": "project_id",
    "service": "service",
    "environment": "environment",
    "feature": "feature",
    "provider": "provider",
    "model": "model",
    "user": "user_id",
    "operation": "operation",
    "status": "status",
}


def raw_filter(tenant_id: int, filters: dict[str, tuple[str, ...]]) -> Q:
    """The filters over raw calls, matching the rollups' semantics ("" = no value)."""
    from costline.tenancy.models import Project

    q = Q(tenant_id=tenant_id)
    for name, values in filters.items():
        field = RAW_FIELD[name]
        wanted = [v for v in values if v != NONE_VALUE]
        if name == "project":
            ids = list(
                Project.objects.filter(organization_id=tenant_id, slug__in=wanted).values_list(
                    "id", flat=True
                )
            )
            cond = Q(project_id__in=ids)
            if NONE_VALUE in values:
                cond |= Q(project_id__isnull=True)
        else:
            cond = Q(**{f"{field}__in": wanted})
            if NONE_VALUE in values:
                cond |= Q(**{f"{field}__isnull": True}) | Q(**{field: ""})
        q &= cond
    return q


def raw_cost(tenant_id: int, filters: dict[str, tuple[str, ...]], start: datetime, end: datetime) -> Decimal:
    if start >= end:
        return ZERO
    total = (
        LLMCall.objects.filter(raw_filter(tenant_id, filters), start_time__gte=start, start_time__lt=end)
        .aggregate(total=Sum("cost_usd"))
        .get("total")
    )
    return total if total is not None else ZERO


def rollup_cost(
    tenant_id: int, filters: dict[str, tuple[str, ...]], start: datetime, end: datetime
) -> Decimal:
    """Cost of calls started in [start, end) from the rollups: minutes at the ragged ends, hours between.

    A ragged head older than the minute rollups' retention (a half-hour zone's period start, or a
    custom start at an odd minute) is read from raw calls: the rollups no longer hold it exactly.
    """
    if start >= end:
        return ZERO
    head_end = min(_ceil_hour(start), end)
    tail_start = max(_floor(end, "hour"), head_end)
    oldest_minute = (
        datetime.now(UTC) - timedelta(days=settings.ROLLUP_MINUTE_RETENTION_DAYS) + timedelta(hours=1)
    )
    total = ZERO
    if start < head_end:
        if start < oldest_minute:
            total += raw_cost(tenant_id, filters, start, head_end)
        else:
            total += _rollup_cost(tenant_id, filters, start, head_end, "minute")
    total += _rollup_cost(tenant_id, filters, head_end, tail_start, "hour")
    total += _rollup_cost(tenant_id, filters, tail_start, end, "minute")
    return total


def period_spend(
    tenant_id: int, filters: dict[str, tuple[str, ...]], start: datetime, end: datetime, now: datetime
) -> Spend:
    """Spend of calls started in [start, end), complete for calls ingested before `Spend.through`."""
    mark = watermark()  # read before the rollups: they hold at least what it promises
    boundary = start if mark is None else min(max(_floor(mark, "minute"), start), end)
    amount = rollup_cost(tenant_id, filters, start, boundary) + raw_cost(tenant_id, filters, boundary, end)
    # Everything read raw is complete up to now; the rollups' part up to their watermark.
    through = now if (mark is None or boundary == start) else min(mark, now)
    return Spend(amount=amount, through=through, boundary=boundary)
