"""The checks every budget passes, whichever way it arrives (web form or REST API), and who may change it.

Each check raises django.core.exceptions.ValidationError with a message that says what to fix; the
web form shows it beside its field and the API answers it with 400 (DRF turns Django's ValidationError
into its own). Money stays Decimal.
"""

from __future__ import annotations

import re
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from django.core.exceptions import ValidationError

from costline.budgets.models import DEFAULT_THRESHOLDS, SCOPE_KEYS, Action, Budget, Period
from costline.budgets.spend import RESERVATION_ONLY_KEYS, usage_filters
from costline.tenancy.models import GatewayKey, Membership, Organization, Project, Role, Team
from costline.tenancy.web import role_at_least

MIN_THRESHOLD, MAX_THRESHOLD = 1, 200
MAX_THRESHOLDS = 10
MAX_CUSTOM_DAYS = 366
MAX_SCOPE_VALUES = 100
# amount_usd is DECIMAL(18, 6): at most 12 digits before the point.
MAX_AMOUNT = Decimal("999999999999.999999")


def thresholds(value: str | list[Any] | None) -> list[int]:
    """Warning thresholds as sorted distinct whole percents of the amount; empty → 50, 80, 100."""
    if value is None or (isinstance(value, str) and not value.strip()) or value == []:
        return list(DEFAULT_THRESHOLDS)
    items = re.split(r"[,\s]+", value.strip()) if isinstance(value, str) else list(value)
    found: set[int] = set()
    for item in items:
        text = str(item).strip().rstrip("%")
        if isinstance(item, bool) or not re.fullmatch(r"\d+", text):
            raise ValidationError(
                f"{str(item)!r} is not a threshold: give whole percents of the amount separated by "
                f"commas, e.g. 50, 80, 100."
            )
        percent = int(text)
        if not MIN_THRESHOLD <= percent <= MAX_THRESHOLD:
            raise ValidationError(
                f"Threshold {percent}% is out of range: each is {MIN_THRESHOLD} to {MAX_THRESHOLD} percent."
            )
        found.add(percent)
    if len(found) > MAX_THRESHOLDS:
        raise ValidationError(f"At most {MAX_THRESHOLDS} thresholds.")
    return sorted(found)


def amount(value: Any) -> Decimal:
    try:
        number = value if isinstance(value, Decimal) else Decimal(str(value).strip())
    except (InvalidOperation, ValueError) as exc:
        raise ValidationError(f"{value!r} is not an amount: give US dollars, e.g. 500 or 1250.50.") from exc
    if not number.is_finite() or number <= 0:
        raise ValidationError("The amount must be more than $0.")
    if number > MAX_AMOUNT or number != number.quantize(Decimal("0.000001")):
        raise ValidationError("The amount can have at most 12 digits before the point and 6 after.")
    return number


def scope(organization: Organization, raw: Any) -> dict[str, list[str]]:
    """The scope normalised (known keys, sorted distinct string values, empty filters dropped).

    Projects and teams must exist (by slug); the combination must be one the rollups can answer
    (costline.budgets.spend.usage_filters), except a gateway key, which reservations enforce.
    """
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ValidationError(
            'The scope is an object of filters, e.g. {"project": ["search"]}; {} is everything.'
        )
    out: dict[str, list[str]] = {}
    for key, values in raw.items():
        if key not in SCOPE_KEYS:
            raise ValidationError(f"Unknown scope filter {key!r}: use any of {', '.join(SCOPE_KEYS)}.")
        items = values if isinstance(values, list | tuple) else [values]
        cleaned: set[str] = set()
        for item in items:
            if not isinstance(item, str) or not item.strip():
                raise ValidationError(f"Scope {key}: each value is a non-empty string, not {item!r}.")
            cleaned.add(item.strip())
        if len(cleaned) > MAX_SCOPE_VALUES:
            raise ValidationError(f"Scope {key}: at most {MAX_SCOPE_VALUES} values.")
        if cleaned:
            out[key] = sorted(cleaned)
    for key, model in (("project", Project), ("team", Team)):
        if key in out:
            known = set(
                model.objects.filter(organization=organization, slug__in=out[key]).values_list(
                    "slug", flat=True
                )
            )
            missing = [v for v in out[key] if v not in known]
            if missing:
                raise ValidationError(
                    f"Scope {key}: no {key} with the slug {', '.join(missing)} in this organisation "
                    f"(see Settings → {key.capitalize()}s)."
                )
    if "gateway_key" in out:
        known = set(
            GatewayKey.objects.filter(organization=organization, prefix__in=out["gateway_key"]).values_list(
                "prefix", flat=True
            )
        )
        missing = [v for v in out["gateway_key"] if v not in known]
        if missing:
            raise ValidationError(
                f"Scope gateway_key: no gateway key with the prefix {', '.join(missing)} in this "
                "organisation (see Settings → Gateway keys: a key is named by its prefix, e.g. clgk_AbC1234)."
            )
    answerable = {k: v for k, v in out.items() if k not in RESERVATION_ONLY_KEYS}
    try:
        usage_filters(Budget(organization=organization, scope=answerable))
    except ValueError as exc:
        raise ValidationError(f"This scope cannot be measured: {exc}.") from exc
    return out


def period(value: str, custom_start: datetime | None, custom_length_days: int | None) -> dict[str, Any]:
    """The period's fields; a custom period needs its start and a length of 1 to 366 days."""
    if value not in Period.values:
        raise ValidationError({"period": f"Unknown period {value!r}: use {', '.join(Period.values)}."})
    if value != Period.CUSTOM:
        return {"period": value, "custom_start": None, "custom_length_days": None}
    errors = {}
    if custom_start is None:
        errors["custom_start"] = "A custom period needs the start of its first period."
    if not custom_length_days or not 1 <= custom_length_days <= MAX_CUSTOM_DAYS:
        errors["custom_length_days"] = f"A custom period needs a length of 1 to {MAX_CUSTOM_DAYS} days."
    if errors:
        raise ValidationError(errors)
    return {"period": value, "custom_start": custom_start, "custom_length_days": custom_length_days}


def action(value: str, throttle_rpm: int | None, downgrade_model: str | None) -> dict[str, Any]:
    """The action's fields: throttle needs requests per minute, downgrade the model to route to."""
    if value not in Action.values:
        raise ValidationError({"action": f"Unknown action {value!r}: use {', '.join(Action.values)}."})
    model = (downgrade_model or "").strip()
    if value == Action.THROTTLE and not throttle_rpm:
        raise ValidationError({"throttle_rpm": "Throttle needs a cap in requests per minute (at least 1)."})
    if value == Action.DOWNGRADE and not model:
        raise ValidationError(
            {"downgrade_model": "Downgrade needs the cheaper model to route calls to, e.g. gpt-4o-mini."}
        )
    return {
        "action": value,
        "throttle_rpm": throttle_rpm if value == Action.THROTTLE else None,
        "downgrade_model": model if value == Action.DOWNGRADE else "",
    }


def may_change(membership: Membership | None, budget_scope: dict[str, Any] | None) -> bool:
    """Members and above change any budget; a viewer changes budgets scoped to teams they belong to.

    `membership` None is an organisation-wide API token, which acts as a member.
    """
    if membership is None or role_at_least(membership, Role.MEMBER):
        return True
    teams = (budget_scope or {}).get("team") or []
    if not teams:
        return False
    mine = set(
        Team.objects.filter(
            organization_id=membership.organization_id, slug__in=teams, members=membership.user_id
        ).values_list("slug", flat=True)
    )
    return all(team in mine for team in teams)
