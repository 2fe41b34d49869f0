"""Settings → Deployments (/o/<slug>/settings/deployments/): self-hosted model servers and their price
per hour, with what the last 30 days cost, busy (charged to calls) and idle (costline.usage.selfhosted)."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

from django.contrib import messages
from django.db.models import Sum
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect
from django.utils import timezone
from django.views.decorators.http import require_POST

from costline.tenancy.models import Role
from costline.tenancy.views import settings_page
from costline.tenancy.web import OrgRequest, org_view
from costline.usage.forms import DeploymentForm
from costline.usage.models import Deployment, DeploymentMinute

SUMMARY_DAYS = 30


@org_view()
def deployments(request: OrgRequest) -> HttpResponse:
    since = timezone.now() - timedelta(days=SUMMARY_DAYS)
    totals: dict[int, dict[str, Any]] = {
        row["deployment_id"]: dict(row)
        for row in DeploymentMinute.objects.filter(tenant=request.organization, minute__gte=since)
        .values("deployment_id")
        .annotate(
            busy=Sum("busy_usd"),
            prefill=Sum("prefill_usd"),
            idle=Sum("idle_usd"),
            seconds=Sum("busy_seconds"),
        )
    }
    rows = []
    for d in Deployment.objects.filter(tenant=request.organization).order_by("name"):
        t = totals.get(d.id, {})
        busy, idle = t.get("busy") or Decimal(0), t.get("idle") or Decimal(0)
        prefill = t.get("prefill") or Decimal(0)
        priced = busy + idle
        rows.append(
            {
                "deployment": d,
                "busy": busy.quantize(Decimal("0.01")),
                "prefill": prefill.quantize(Decimal("0.01")),
                "decode": (busy - prefill).quantize(Decimal("0.01")),
                "idle": idle.quantize(Decimal("0.01")),
                "utilisation": f"{busy / priced:.0%}" if priced else "–",
                "hourly": format(d.hourly_usd.normalize(), "f"),
            }
        )
    return settings_page(request, "usage/deployments.html", {"rows": rows, "days": SUMMARY_DAYS})


@org_view(min_role=Role.ADMIN)
def deployment_new(request: OrgRequest) -> HttpResponse:
    return _form(request, Deployment(tenant=request.organization))


@org_view(min_role=Role.ADMIN)
def deployment_edit(request: OrgRequest, deployment_id: int) -> HttpResponse:
    return _form(request, get_object_or_404(Deployment, tenant=request.organization, id=deployment_id))


def _form(request: OrgRequest, deployment: Deployment) -> HttpResponse:
    creating = deployment.pk is None
    form = DeploymentForm(request.POST or None, instance=deployment)
    if request.method == "POST" and form.is_valid():
        saved = form.save()
        messages.success(
            request,
            f"Saved deployment {saved.name}: its calls are priced from ${saved.hourly_usd.normalize()} an "
            "hour within two minutes of each call.",
        )
        return redirect("settings:deployments", org=request.organization.slug)
    context = {"form": form, "deployment": deployment, "creating": creating}
    return settings_page(request, "usage/deployment_form.html", context, status=400 if form.errors else 200)


@org_view(min_role=Role.ADMIN)
@require_POST
def deployment_delete(request: OrgRequest, deployment_id: int) -> HttpResponse:
    deployment = get_object_or_404(Deployment, tenant=request.organization, id=deployment_id)
    deployment.delete()
    messages.success(request, f"Deleted deployment {deployment.name}; calls priced so far keep their costs.")
    return redirect("settings:deployments", org=request.organization.slug)
