"""Alert pages, under /o/<slug>/alerts/: incidents (open and past) with the rules, and one incident
with its chart and causes, and a rule's form. Every member reads; members and above acknowledge and
resolve incidents and create and edit rules (POSTs, redirected afterwards with a message). The form
validates with the API's own serializer, so a rule is checked one way whichever door it comes through.
"""

from __future__ import annotations

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import require_POST

from costline.alerts.api import AlertRuleSerializer, acknowledge, incidents_of, resolve, save_rule
from costline.alerts.figures import incident_figure
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
from costline.tenancy.models import Role
from costline.tenancy.web import OrgRequest, org_view, role_at_least


@org_view()
def alert_list(request: OrgRequest) -> HttpResponse:
    incidents = incidents_of(request.organization).order_by("-started_at", "-id")
    context = {
        "open": list(incidents.exclude(status=IncidentStatus.RESOLVED)),
        "past": list(incidents.filter(status=IncidentStatus.RESOLVED)[:50]),
        "rules": AlertRule.objects.filter(organization=request.organization).order_by("name", "id"),
        "zone": request.organization.zone,
    }
    with timezone.override(request.organization.zone):
        return render(request, "alerts/list.html", context)


@org_view()
def incident_detail(request: OrgRequest, incident_id: int) -> HttpResponse:
    incident = get_object_or_404(incidents_of(request.organization), id=incident_id)
    zone = request.organization.zone
    context = {
        "incident": incident,
        "figure": incident_figure(incident, timezone.now(), zone),
        "channels": incident.rule.channels.order_by("name"),
        "may_change": role_at_least(request.membership, Role.MEMBER),
        "zone": zone,
    }
    with timezone.override(zone):
        return render(request, "alerts/incident.html", context)


def _change(request: OrgRequest, incident_id: int) -> AlertIncident:
    if not role_at_least(request.membership, Role.MEMBER):
        raise PermissionDenied("Acknowledging or resolving an incident needs the member role.")
    return get_object_or_404(incidents_of(request.organization), id=incident_id)


@org_view()
@require_POST
def incident_acknowledge(request: OrgRequest, incident_id: int) -> HttpResponse:
    acknowledge(_change(request, incident_id))
    messages.success(request, "Incident acknowledged.")
    return redirect("alerts_pages:incident", org=request.organization.slug, incident_id=incident_id)


@org_view()
@require_POST
def incident_resolve(request: OrgRequest, incident_id: int) -> HttpResponse:
    resolve(_change(request, incident_id))
    messages.success(request, "Incident resolved.")
    return redirect("alerts_pages:incident", org=request.organization.slug, incident_id=incident_id)


@org_view()
def rule_new(request: OrgRequest) -> HttpResponse:
    return _rule_form(request, None)


@org_view()
def rule_edit(request: OrgRequest, rule_id: int) -> HttpResponse:
    return _rule_form(request, get_object_or_404(AlertRule, organization=request.organization, id=rule_id))


def _rule_form(request: OrgRequest, rule: AlertRule | None) -> HttpResponse:
    may_change = role_at_least(request.membership, Role.MEMBER)
    errors: dict[str, list[str]] = {}
    values: dict[str, object] = {}
    if request.method == "POST":
        if not may_change:
            raise PermissionDenied("Creating or editing an alert rule needs the member role.")
        values = {k: request.POST.get(k, "") for k in request.POST if k != "csrfmiddlewaretoken"}
        # An empty threshold is no value (DRF reads "" as null for nullable fields of a form).
        serializer = AlertRuleSerializer(
            rule, data=request.POST, context={"organization": request.organization}
        )
        if serializer.is_valid():
            validated = dict(serializer.validated_data)
            validated.setdefault("channels", [])  # no box ticked: no channel (a form sends nothing then)
            saved = save_rule(rule or AlertRule(organization=request.organization), validated)
            messages.success(request, f"Rule “{saved.name}” saved.")
            return redirect("alerts_pages:list", org=request.organization.slug)
        errors = {k: [str(m) for m in v] for k, v in serializer.errors.items()}
    elif rule is not None:
        values = {f: getattr(rule, f) for f in ("name", "kind", "metric", "project", "model", "sensitivity")}
        values |= {
            "comparison": rule.comparison,
            "threshold_value": "" if rule.threshold_value is None else rule.threshold_value.normalize(),
            "window_hours": rule.window_hours,
            "min_impact_usd": rule.min_impact_usd.normalize(),
            "quiet_minutes": rule.quiet_minutes,
            "enabled": rule.enabled,
        }
    chosen = (
        {int(c) for c in request.POST.getlist("channels") if c.isdigit()}
        if request.method == "POST"
        else set(rule.channels.values_list("id", flat=True))
        if rule is not None
        else set()
    )
    context = {
        "rule": rule,
        "values": values,
        "errors": errors,
        "may_change": may_change,
        "kinds": RuleKind.choices,
        "metrics": RULE_METRICS,
        "sensitivities": Sensitivity.choices,
        "comparisons": Comparison.choices,
        "channels": Channel.objects.filter(organization=request.organization).order_by("name"),
        "chosen": chosen,
    }
    return render(request, "alerts/rule_form.html", context, status=400 if errors else 200)
