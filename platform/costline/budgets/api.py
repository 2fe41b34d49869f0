"""REST API of budgets: /api/v1/budgets (list, create) and /api/v1/budgets/<id> (read, change, delete).

The checks are the web form's (costline.budgets.validation), the writes the same actions with the same
audit entries. Money is a decimal string ("500.000000"), never a JSON number. A budget of another
organisation is a 404, like one that does not exist.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.exceptions import PermissionDenied
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from costline.alerts.models import Channel
from costline.budgets import actions, validation
from costline.budgets.models import Action, Budget, BudgetPeriodState, Period
from costline.budgets.periods import current_period
from costline.tenancy.access import organization_for
from costline.tenancy.models import ApiToken, Membership, Organization, User
from costline.usage.serializers import ErrorSerializer

AUTH_ERRORS = {
    401: OpenApiResponse(ErrorSerializer, description="No API token, or an unknown or revoked one."),
    403: OpenApiResponse(
        ErrorSerializer,
        description=(
            "Not a member of any organisation, or (for a change) a viewer who is not in every team the "
            "budget is scoped to."
        ),
    ),
}
NOT_FOUND = OpenApiResponse(ErrorSerializer, description="No budget with this id in the organisation.")
INVALID = OpenApiResponse(
    OpenApiTypes.OBJECT,
    description=(
        'A value is missing or invalid: an object of field name → messages, e.g. {"amount_usd": '
        '["The amount must be more than $0."]}; "non_field_errors" for a combination.'
    ),
)


class CurrentPeriodSerializer(serializers.Serializer[Any]):
    start = serializers.DateTimeField(help_text="Start of the current period (organisation's time zone).")
    end = serializers.DateTimeField(help_text="End of the current period (exclusive).")
    spend_usd = serializers.DecimalField(
        max_digits=24,
        decimal_places=12,
        allow_null=True,
        help_text="Spend so far; null before the first evaluation.",
    )
    forecast_usd = serializers.DecimalField(
        max_digits=24, decimal_places=12, allow_null=True, help_text="Forecast spend at the period's end."
    )
    projected_limit_at = serializers.DateTimeField(
        allow_null=True, help_text="When the forecast reaches the amount; null when it does not."
    )
    state = serializers.CharField(
        allow_null=True, help_text="ok, warn, throttle, downgrade or block; null before the first evaluation."
    )


class BudgetSerializer(serializers.Serializer[Any]):
    id = serializers.IntegerField(read_only=True)
    name = serializers.CharField(max_length=200)
    scope = serializers.DictField(
        child=serializers.ListField(child=serializers.CharField()),
        required=False,
        help_text=(
            "Filters a call must all match (values within one are alternatives): project, team, gateway_key, "
            "user, model, feature, service, provider, environment. {} is the whole organisation. E.g. "
            '{"team": ["search"], "model": ["gpt-4o"]}.'
        ),
    )
    period = serializers.ChoiceField(
        choices=Period.choices, required=False, help_text="monthly when not given."
    )
    custom_start = serializers.DateTimeField(
        required=False, allow_null=True, help_text="custom period: the first period's start (ISO 8601)."
    )
    custom_length_days = serializers.IntegerField(
        required=False,
        allow_null=True,
        help_text=f"custom period: its length, 1 to {validation.MAX_CUSTOM_DAYS} days.",
    )
    amount_usd = serializers.DecimalField(
        max_digits=18,
        decimal_places=6,
        help_text='The limit per period in USD, as a decimal string: "500.00".',
    )
    thresholds = serializers.ListField(
        child=serializers.IntegerField(),
        required=False,
        help_text="Warning thresholds in percent of the amount, 1 to 200; [50, 80, 100] when not given.",
    )
    action = serializers.ChoiceField(
        choices=Action.choices, required=False, help_text="notify when not given."
    )
    throttle_rpm = serializers.IntegerField(
        required=False, allow_null=True, help_text="throttle: the cap in requests per minute."
    )
    downgrade_model = serializers.CharField(
        required=False, allow_blank=True, help_text="downgrade: the model calls are routed to."
    )
    channels = serializers.ListField(
        child=serializers.IntegerField(),
        required=False,
        source="channel_ids",
        help_text="Ids of the organisation's notification channels.",
    )
    paused = serializers.BooleanField(
        required=False, help_text="A paused budget is neither evaluated nor enforced."
    )
    created_at = serializers.DateTimeField(read_only=True)
    updated_at = serializers.DateTimeField(read_only=True)
    current_period = CurrentPeriodSerializer(read_only=True)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        organization: Organization = self.context["organization"]
        instance: Budget | None = self.instance
        merged = actions.snapshot(instance) if instance is not None else {}
        if instance is not None:
            merged["custom_start"] = instance.custom_start
        merged.update(attrs)
        values: dict[str, Any] = {"name": merged["name"].strip()}
        if not values["name"]:
            raise serializers.ValidationError({"name": "Give the budget a name."})
        try:
            values["amount_usd"] = validation.amount(merged["amount_usd"])
        except DjangoValidationError as exc:
            raise serializers.ValidationError({"amount_usd": exc.messages}) from exc
        try:
            values["thresholds"] = validation.thresholds(merged.get("thresholds"))
        except DjangoValidationError as exc:
            raise serializers.ValidationError({"thresholds": exc.messages}) from exc
        try:
            values["scope"] = validation.scope(organization, merged.get("scope") or {})
        except DjangoValidationError as exc:
            raise serializers.ValidationError({"scope": exc.messages}) from exc
        values.update(
            validation.period(
                merged.get("period") or Period.MONTHLY,
                merged.get("custom_start"),
                merged.get("custom_length_days"),
            )
        )
        values.update(
            validation.action(
                merged.get("action") or Action.NOTIFY,
                merged.get("throttle_rpm"),
                merged.get("downgrade_model"),
            )
        )
        values["paused"] = bool(merged.get("paused", False))
        ids = merged.get("channel_ids", merged.get("channels")) or []
        channels = list(Channel.objects.filter(organization=organization, id__in=ids))
        missing = sorted(set(ids) - {c.id for c in channels})
        if missing:
            raise serializers.ValidationError(
                {"channels": f"No notification channel with the id {', '.join(map(str, missing))} here."}
            )
        values["channels"] = channels
        return values


def _annotated(budget: Budget, now: datetime) -> Budget:
    """Set what the serializer reads besides the model's fields: channel ids and the current period."""
    start, end = current_period(budget, now)
    state = BudgetPeriodState.objects.filter(budget=budget, period_start=start).first()
    budget.channel_ids = sorted(budget.channels.values_list("id", flat=True))  # type: ignore[attr-defined]
    budget.current_period = {  # type: ignore[attr-defined]
        "start": start,
        "end": end,
        "spend_usd": state.spend_usd if state else None,
        "forecast_usd": state.forecast_usd if state else None,
        "projected_limit_at": state.projected_limit_at if state else None,
        "state": state.state if state else None,
    }
    return budget


def _actor(request: Request) -> tuple[actions.Actor, Membership | None]:
    """Who acts, and their membership (None for an organisation-wide token, which acts as a member)."""
    organization = organization_for(request)
    token = request.auth if isinstance(request.auth, ApiToken) else None
    user = request.user if isinstance(request.user, User) else None
    if user is None:
        label = f"api token {token.name} ({token.prefix}…)" if token else "api"
        return actions.Actor(user=None, label=label), None
    label = user.email if token is None else f"{user.email} (api token {token.prefix}…)"
    membership = Membership.objects.filter(organization=organization, user=user).first()
    return actions.Actor(user=user, label=label), membership


def _check_may_change(membership: Membership | None, scope: dict[str, Any] | None) -> None:
    if not validation.may_change(membership, scope):
        raise PermissionDenied(
            "Changing this budget needs the member role, or membership of every team it is scoped to."
        )


def _budget(request: Request, budget_id: int) -> Budget:
    budget = (
        Budget.objects.select_related("organization")
        .filter(organization=organization_for(request), id=budget_id)
        .first()
    )
    if budget is None:
        raise Http404("No budget with this id in this organisation.")
    return budget


class BudgetList(APIView):
    @extend_schema(
        operation_id="budgets_list",
        summary="List budgets",
        tags=["budgets"],
        description="The organisation's budgets by name, with this period's spend, forecast and state.",
        responses={200: BudgetSerializer(many=True), **AUTH_ERRORS},
    )
    def get(self, request: Request) -> Response:
        now = timezone.now()
        budgets = Budget.objects.filter(organization=organization_for(request)).select_related("organization")
        rows = [_annotated(b, now) for b in budgets.order_by("name", "id")]
        return Response(BudgetSerializer(rows, many=True).data)

    @extend_schema(
        operation_id="budgets_create",
        summary="Create a budget",
        tags=["budgets"],
        description=(
            "Create a budget; the change is recorded in the budget's audit log and its enforcement state "
            "is published to Redis at once. A viewer may create budgets scoped to their own teams only."
        ),
        request=BudgetSerializer,
        responses={201: BudgetSerializer, 400: INVALID, **AUTH_ERRORS},
    )
    def post(self, request: Request) -> Response:
        organization = organization_for(request)
        actor, membership = _actor(request)
        serializer = BudgetSerializer(data=request.data, context={"organization": organization})
        serializer.is_valid(raise_exception=True)
        values = dict(serializer.validated_data)
        _check_may_change(membership, values["scope"])
        budget = actions.create_budget(organization, actor, values)
        budget = Budget.objects.select_related("organization").get(pk=budget.pk)
        return Response(BudgetSerializer(_annotated(budget, timezone.now())).data, status=201)


class BudgetDetail(APIView):
    @extend_schema(
        operation_id="budgets_retrieve",
        summary="Read a budget",
        tags=["budgets"],
        responses={200: BudgetSerializer, 404: NOT_FOUND, **AUTH_ERRORS},
    )
    def get(self, request: Request, budget_id: int) -> Response:
        return Response(BudgetSerializer(_annotated(_budget(request, budget_id), timezone.now())).data)

    @extend_schema(
        operation_id="budgets_partial_update",
        summary="Change a budget",
        tags=["budgets"],
        description=(
            "Change the fields given; the others keep their values. The result is validated as a whole "
            "(e.g. action throttle needs throttle_rpm). Recorded in the audit log with old and new values."
        ),
        request=BudgetSerializer,
        responses={200: BudgetSerializer, 400: INVALID, 404: NOT_FOUND, **AUTH_ERRORS},
    )
    def patch(self, request: Request, budget_id: int) -> Response:
        budget = _budget(request, budget_id)
        actor, membership = _actor(request)
        _check_may_change(membership, budget.scope)
        serializer = BudgetSerializer(
            budget, data=request.data, partial=True, context={"organization": budget.organization}
        )
        serializer.is_valid(raise_exception=True)
        values = dict(serializer.validated_data)
        _check_may_change(membership, values["scope"])
        budget = actions.update_budget(budget, actor, values)
        budget = Budget.objects.select_related("organization").get(pk=budget.pk)
        return Response(BudgetSerializer(_annotated(budget, timezone.now())).data)

    @extend_schema(
        operation_id="budgets_destroy",
        summary="Delete a budget",
        tags=["budgets"],
        description="Delete a budget and its enforcement state; its audit log is kept.",
        responses={204: None, 404: NOT_FOUND, **AUTH_ERRORS},
    )
    def delete(self, request: Request, budget_id: int) -> Response:
        budget = _budget(request, budget_id)
        actor, membership = _actor(request)
        _check_may_change(membership, budget.scope)
        actions.delete_budget(budget, actor)
        return Response(status=204)
