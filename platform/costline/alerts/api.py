"""REST API of alerts: /api/v1/alerts (rules: list, create, read, change, delete) and /api/v1/incidents
(list, filter by status, read, acknowledge, resolve).

Money is a decimal string ("25.000000"). A rule or incident of another organisation is a 404, like one
that does not exist. Changes need the member role (an organisation-wide API token acts as a member).
"""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from django.http import Http404
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from costline.alerts.models import (
    RULE_METRICS,
    AlertIncident,
    AlertRule,
    Channel,
    Comparison,
    IncidentStatus,
    RuleKind,
    Sensitivity,
)
from costline.tenancy.access import check_member, organization_for
from costline.tenancy.models import Organization
from costline.usage.serializers import ErrorSerializer, choice_param

NOT_FOUND = OpenApiResponse(ErrorSerializer, description="No such rule or incident in the organisation.")
INVALID = OpenApiResponse(
    OpenApiTypes.OBJECT,
    description='A value is missing or invalid: field name → messages, e.g. {"metric": ["…"]}.',
)
FORBIDDEN = OpenApiResponse(ErrorSerializer, description="A viewer may read alerts, not change them.")


class AlertRuleSerializer(serializers.Serializer[Any]):
    id = serializers.IntegerField(read_only=True)
    name = serializers.CharField(max_length=200)
    kind = serializers.ChoiceField(choices=RuleKind.choices, required=False, help_text="anomaly by default.")
    metric = serializers.ChoiceField(
        choices=[(m, m) for m in RULE_METRICS], required=False, help_text="cost_usd by default."
    )
    project = serializers.CharField(required=False, allow_blank=True, help_text="A project slug; '' = all.")
    model = serializers.CharField(required=False, allow_blank=True, help_text="A model; '' = all.")
    sensitivity = serializers.ChoiceField(choices=Sensitivity.choices, required=False)
    comparison = serializers.ChoiceField(choices=Comparison.choices, required=False)
    threshold_value = serializers.DecimalField(
        max_digits=18,
        decimal_places=6,
        required=False,
        allow_null=True,
        help_text="threshold rules: the value.",
    )
    window_hours = serializers.IntegerField(min_value=1, max_value=24 * 7, required=False)
    min_impact_usd = serializers.DecimalField(
        max_digits=18, decimal_places=6, min_value=0, required=False, help_text="Page from this impact."
    )
    quiet_minutes = serializers.IntegerField(min_value=0, max_value=7 * 24 * 60, required=False)
    channels = serializers.ListField(
        child=serializers.IntegerField(), required=False, source="channel_ids", help_text="Channel ids."
    )
    enabled = serializers.BooleanField(required=False)
    created_at = serializers.DateTimeField(read_only=True)
    updated_at = serializers.DateTimeField(read_only=True)

    def validate_name(self, value: str) -> str:
        if not value.strip():
            raise serializers.ValidationError("Give the rule a name.")
        return value.strip()

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        organization: Organization = self.context["organization"]
        instance: AlertRule | None = self.instance
        kind = attrs.get("kind", instance.kind if instance else RuleKind.ANOMALY)
        value = attrs.get("threshold_value", instance.threshold_value if instance else None)
        if kind == RuleKind.THRESHOLD and value is None:
            raise serializers.ValidationError({"threshold_value": "A threshold rule needs a value."})
        if "channel_ids" in attrs:
            ids = attrs.pop("channel_ids")
            channels = list(Channel.objects.filter(organization=organization, id__in=ids))
            missing = sorted(set(ids) - {c.id for c in channels})
            if missing:
                raise serializers.ValidationError(
                    {"channels": f"No notification channel with the id {', '.join(map(str, missing))} here."}
                )
            attrs["channels"] = channels
        return attrs


class IncidentSerializer(serializers.Serializer[Any]):
    id = serializers.IntegerField(read_only=True)
    rule = serializers.IntegerField(source="rule_id", read_only=True)
    rule_name = serializers.CharField(source="rule.name", read_only=True)
    metric = serializers.CharField(source="rule.metric", read_only=True)
    status = serializers.CharField(read_only=True)
    severity = serializers.CharField(read_only=True)
    direction = serializers.IntegerField(read_only=True, help_text="+1 above the band, -1 below.")
    started_at = serializers.DateTimeField(read_only=True)
    last_anomalous_at = serializers.DateTimeField(read_only=True)
    resolved_at = serializers.DateTimeField(read_only=True, allow_null=True)
    resolved_reason = serializers.CharField(
        read_only=True, help_text="Why the detection job closed it unrecovered; '' otherwise."
    )
    acknowledged_at = serializers.DateTimeField(read_only=True, allow_null=True)
    impact_usd = serializers.DecimalField(max_digits=18, decimal_places=6, read_only=True)
    observed = serializers.FloatField(read_only=True, allow_null=True)
    expected = serializers.FloatField(read_only=True, allow_null=True)
    cause = serializers.JSONField(read_only=True, help_text="Top contributors to the extra spend.")
    notified_at = serializers.DateTimeField(read_only=True, allow_null=True)


def _rule_out(rule: AlertRule) -> dict[str, Any]:
    rule.channel_ids = sorted(rule.channels.values_list("id", flat=True))  # type: ignore[attr-defined]
    return dict(AlertRuleSerializer(rule).data)


def check_may_change(request: Request, organization: Organization) -> None:
    check_member(request, organization, "Changing alerts")


def _rule(request: Request, rule_id: int) -> AlertRule:
    rule = AlertRule.objects.filter(organization=organization_for(request), id=rule_id).first()
    if rule is None:
        raise Http404("No alert rule with this id in this organisation.")
    return rule


def save_rule(rule: AlertRule, values: dict[str, Any]) -> AlertRule:
    channels = values.pop("channels", None)
    for name, value in values.items():
        setattr(rule, name, value)
    rule.save()
    if channels is not None:
        rule.channels.set(channels)
    return rule


class AlertRuleList(APIView):
    @extend_schema(
        operation_id="alerts_list",
        summary="List alert rules",
        tags=["alerts"],
        responses={200: AlertRuleSerializer(many=True)},
    )
    def get(self, request: Request) -> Response:
        rules = AlertRule.objects.filter(organization=organization_for(request)).order_by("name", "id")
        return Response([_rule_out(r) for r in rules])

    @extend_schema(
        operation_id="alerts_create",
        summary="Create an alert rule",
        tags=["alerts"],
        request=AlertRuleSerializer,
        responses={201: AlertRuleSerializer, 400: INVALID, 403: FORBIDDEN},
    )
    def post(self, request: Request) -> Response:
        organization = organization_for(request)
        check_may_change(request, organization)
        serializer = AlertRuleSerializer(data=request.data, context={"organization": organization})
        serializer.is_valid(raise_exception=True)
        rule = save_rule(AlertRule(organization=organization), dict(serializer.validated_data))
        return Response(_rule_out(rule), status=201)


class AlertRuleDetail(APIView):
    @extend_schema(
        operation_id="alerts_retrieve",
        summary="Read an alert rule",
        tags=["alerts"],
        responses={200: AlertRuleSerializer, 404: NOT_FOUND},
    )
    def get(self, request: Request, rule_id: int) -> Response:
        return Response(_rule_out(_rule(request, rule_id)))

    @extend_schema(
        operation_id="alerts_partial_update",
        summary="Change an alert rule",
        tags=["alerts"],
        request=AlertRuleSerializer,
        responses={200: AlertRuleSerializer, 400: INVALID, 403: FORBIDDEN, 404: NOT_FOUND},
    )
    def patch(self, request: Request, rule_id: int) -> Response:
        rule = _rule(request, rule_id)
        check_may_change(request, rule.organization)
        serializer = AlertRuleSerializer(
            rule, data=request.data, partial=True, context={"organization": rule.organization}
        )
        serializer.is_valid(raise_exception=True)
        return Response(_rule_out(save_rule(rule, dict(serializer.validated_data))))

    @extend_schema(
        operation_id="alerts_destroy",
        summary="Delete an alert rule and its incidents",
        tags=["alerts"],
        responses={204: None, 403: FORBIDDEN, 404: NOT_FOUND},
    )
    def delete(self, request: Request, rule_id: int) -> Response:
        rule = _rule(request, rule_id)
        check_may_change(request, rule.organization)
        rule.delete()
        return Response(status=204)


def incidents_of(organization: Organization) -> QuerySet[AlertIncident]:
    return AlertIncident.objects.filter(tenant=organization).select_related("rule")


def _incident(request: Request, incident_id: int) -> AlertIncident:
    incident = incidents_of(organization_for(request)).filter(id=incident_id).first()
    if incident is None:
        raise Http404("No incident with this id in this organisation.")
    return incident


def acknowledge(incident: AlertIncident) -> AlertIncident:
    """Open → acknowledged (someone is on it); a resolved incident stays resolved."""
    if incident.status == IncidentStatus.OPEN:
        incident.status = IncidentStatus.ACKNOWLEDGED
        incident.acknowledged_at = timezone.now()
        incident.save(update_fields=["status", "acknowledged_at", "updated_at"])
    return incident


def resolve(incident: AlertIncident) -> AlertIncident:
    """Resolved by a person: the detection job keeps it resolved (costline.alerts.monitoring)."""
    if incident.status != IncidentStatus.RESOLVED:
        incident.status = IncidentStatus.RESOLVED
        incident.resolved_at = incident.resolved_at or timezone.now()
        incident.save(update_fields=["status", "resolved_at", "updated_at"])
    return incident


class IncidentList(APIView):
    @extend_schema(
        operation_id="incidents_list",
        summary="List incidents",
        tags=["alerts"],
        parameters=[OpenApiParameter("status", str, enum=list(IncidentStatus.values))],
        responses={200: IncidentSerializer(many=True), 400: INVALID},
    )
    def get(self, request: Request) -> Response:
        rows = incidents_of(organization_for(request)).order_by("-started_at", "-id")
        status = choice_param(request, "status", IncidentStatus.values)
        if status:
            rows = rows.filter(status=status)
        return Response(IncidentSerializer(rows[:500], many=True).data)


class IncidentDetail(APIView):
    @extend_schema(
        operation_id="incidents_retrieve",
        summary="Read an incident",
        tags=["alerts"],
        responses={200: IncidentSerializer, 404: NOT_FOUND},
    )
    def get(self, request: Request, incident_id: int) -> Response:
        return Response(IncidentSerializer(_incident(request, incident_id)).data)


class IncidentAcknowledge(APIView):
    @extend_schema(
        operation_id="incidents_acknowledge",
        summary="Acknowledge an incident",
        tags=["alerts"],
        request=None,
        responses={200: IncidentSerializer, 403: FORBIDDEN, 404: NOT_FOUND},
    )
    def post(self, request: Request, incident_id: int) -> Response:
        incident = _incident(request, incident_id)
        check_may_change(request, incident.tenant)
        return Response(IncidentSerializer(acknowledge(incident)).data)


class IncidentResolve(APIView):
    @extend_schema(
        operation_id="incidents_resolve",
        summary="Resolve an incident",
        tags=["alerts"],
        request=None,
        responses={200: IncidentSerializer, 403: FORBIDDEN, 404: NOT_FOUND},
    )
    def post(self, request: Request, incident_id: int) -> Response:
        incident = _incident(request, incident_id)
        check_may_change(request, incident.tenant)
        return Response(IncidentSerializer(resolve(incident)).data)
