"""The budget form of the web pages: one picker per scope filter, offered from the organisation's data.

Projects and teams are the organisation's rows; models, features, services, providers, environments
and users are the values its calls of the last OFFER_DAYS days carry (from the usage query layer), plus
whatever the budget already names. The checks are costline.budgets.validation's, shared with the API.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django import forms
from django.core.exceptions import ValidationError
from django.utils import timezone

from costline.alerts.models import Channel
from costline.budgets import validation
from costline.budgets.models import DEFAULT_THRESHOLDS, Action, Budget, Period
from costline.tenancy.models import GatewayKey, Organization, Project, Team
from costline.usage.metrics import QueryError, UsageQuery, usage

OFFER_DAYS = 90
# Form field → scope key, in the order the form shows them.
PICKERS = {
    "projects": "project",
    "teams": "team",
    "models": "model",
    "features": "feature",
    "services": "service",
    "providers": "provider",
    "environments": "environment",
    "users": "user",
    "gateway_keys": "gateway_key",
}
DATA_PICKERS = ("model", "feature", "service", "provider", "environment", "user")


def offered_values(organization: Organization) -> dict[str, list[tuple[str, str]]]:
    """Choices per scope key: (value, label)."""
    offered: dict[str, list[tuple[str, str]]] = {
        "project": [
            (p.slug, f"{p.name} ({p.slug})")
            for p in Project.objects.filter(organization=organization).order_by("name", "slug")
        ],
        "team": [
            (t.slug, f"{t.name} ({t.slug})")
            for t in Team.objects.filter(organization=organization).order_by("name")
        ],
        # A gateway key is named by its display prefix, which its calls' spans carry.
        "gateway_key": [
            (k.prefix, f"{k.name} ({k.prefix}…)")
            for k in GatewayKey.objects.active().filter(organization=organization).order_by("name")
        ],
    }
    end = timezone.now()
    start = end - timedelta(days=OFFER_DAYS)
    for key in DATA_PICKERS:
        values: set[str] = set()
        try:
            result = usage(
                organization.id,
                UsageQuery(
                    start=start, end=end, interval="day", group_by=(key,), metrics=("requests",), points=False
                ),
            )
            values = {s.group[key] for s in result.series if s.group.get(key)}  # type: ignore[misc]
        except QueryError:
            values = set()
        offered[key] = [(v, v) for v in sorted(values)]
    return offered


class BudgetForm(forms.Form):
    name = forms.CharField(max_length=200, help_text="What the budget is for, e.g. “Search, production”.")
    projects = forms.MultipleChoiceField(required=False, label="Projects")
    teams = forms.MultipleChoiceField(
        required=False, label="Teams", help_text="Calls of the teams' projects."
    )
    models = forms.MultipleChoiceField(required=False, label="Models")
    features = forms.MultipleChoiceField(required=False, label="Features")
    services = forms.MultipleChoiceField(required=False, label="Services")
    providers = forms.MultipleChoiceField(required=False, label="Providers")
    environments = forms.MultipleChoiceField(required=False, label="Environments")
    users = forms.MultipleChoiceField(
        required=False, label="End users", help_text="Per-user budgets cannot also filter on anything else."
    )
    gateway_keys = forms.MultipleChoiceField(
        required=False,
        label="Gateway keys",
        help_text="Calls made through these gateway keys: enforced at the gateway, spend from its calls.",
    )
    period = forms.ChoiceField(choices=Period.choices, initial=Period.MONTHLY)
    custom_start = forms.DateTimeField(
        required=False,
        label="Custom start",
        help_text="Custom period only: when the first period starts, in the organisation's time zone.",
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}),
    )
    custom_length_days = forms.IntegerField(
        required=False, min_value=1, max_value=validation.MAX_CUSTOM_DAYS, label="Custom length (days)"
    )
    amount_usd = forms.DecimalField(
        label="Amount (USD)",
        max_digits=18,
        decimal_places=6,
        help_text="The limit for each period, in US dollars.",
    )
    thresholds = forms.CharField(
        required=False,
        initial=", ".join(str(t) for t in DEFAULT_THRESHOLDS),
        help_text="Percents of the amount that notify the channels, e.g. 50, 80, 100 (1 to 200).",
    )
    action = forms.ChoiceField(choices=Action.choices, initial=Action.NOTIFY, label="At the limit")
    throttle_rpm = forms.IntegerField(
        required=False, min_value=1, label="Throttle to (requests per minute)", help_text="Throttle only."
    )
    downgrade_model = forms.CharField(
        required=False,
        max_length=200,
        label="Downgrade to model",
        help_text="Downgrade only, e.g. gpt-4o-mini.",
    )
    channels = forms.ModelMultipleChoiceField(
        queryset=Channel.objects.none(),
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="Notified when a threshold is crossed or the forecast passes the limit.",
    )
    paused = forms.BooleanField(
        required=False, help_text="A paused budget is neither evaluated nor enforced."
    )

    def __init__(
        self, *args: Any, organization: Organization, budget: Budget | None = None, **kwargs: Any
    ) -> None:
        if budget is not None and "initial" not in kwargs:
            kwargs["initial"] = initial_of(budget)
        super().__init__(*args, **kwargs)
        self.organization = organization
        self.fields["channels"].queryset = Channel.objects.filter(organization=organization).order_by("name")  # type: ignore[attr-defined]
        offered = offered_values(organization)
        current = (budget.scope or {}) if budget is not None else {}
        for field, key in PICKERS.items():
            choices = list(offered.get(key, []))
            known = {value for value, _ in choices}
            choices += [(v, v) for v in current.get(key, []) if v not in known]
            self.fields[field].choices = choices  # type: ignore[attr-defined]

    def clean_name(self) -> str:
        name: str = self.cleaned_data["name"].strip()
        if not name:
            raise ValidationError("Give the budget a name.")
        return name

    def clean_amount_usd(self) -> Any:
        return validation.amount(self.cleaned_data["amount_usd"])

    def clean_thresholds(self) -> list[int]:
        return validation.thresholds(self.cleaned_data.get("thresholds"))

    def clean(self) -> dict[str, Any]:
        cleaned: dict[str, Any] = super().clean() or {}
        raw_scope = {key: cleaned.get(field) or [] for field, key in PICKERS.items()}
        try:
            cleaned["scope"] = validation.scope(self.organization, raw_scope)
        except ValidationError as exc:
            self.add_error(None, exc)
        if "period" in cleaned:
            try:
                cleaned.update(
                    validation.period(
                        cleaned["period"], cleaned.get("custom_start"), cleaned.get("custom_length_days")
                    )
                )
            except ValidationError as exc:
                self.add_error(None, exc)
        if "action" in cleaned:
            try:
                cleaned.update(
                    validation.action(
                        cleaned["action"], cleaned.get("throttle_rpm"), cleaned.get("downgrade_model")
                    )
                )
            except ValidationError as exc:
                self.add_error(None, exc)
        return cleaned

    def values(self) -> dict[str, Any]:
        """The validated values for costline.budgets.actions."""
        data = self.cleaned_data
        return {
            "name": data["name"],
            "scope": data["scope"],
            "period": data["period"],
            "custom_start": data["custom_start"],
            "custom_length_days": data["custom_length_days"],
            "amount_usd": data["amount_usd"],
            "thresholds": data["thresholds"],
            "action": data["action"],
            "throttle_rpm": data["throttle_rpm"],
            "downgrade_model": data["downgrade_model"],
            "paused": data["paused"],
            "channels": list(data["channels"]),
        }


def initial_of(budget: Budget) -> dict[str, Any]:
    scope = budget.scope or {}
    initial: dict[str, Any] = {field: scope.get(key, []) for field, key in PICKERS.items()}
    initial.update(
        name=budget.name,
        period=budget.period,
        custom_start=budget.custom_start,
        custom_length_days=budget.custom_length_days,
        amount_usd=budget.amount_usd,
        thresholds=", ".join(str(t) for t in budget.thresholds or []),
        action=budget.action,
        throttle_rpm=budget.throttle_rpm,
        downgrade_model=budget.downgrade_model,
        channels=list(budget.channels.all()) if budget.pk else [],
        paused=budget.paused,
    )
    return initial
