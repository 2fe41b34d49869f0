"""Gateway keys settings page (/o/<slug>/settings/gateway-keys/): admins issue and revoke the keys
services call the inference gateway with; each maps its calls to a project and a team."""

from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect
from django.views.decorators.http import require_POST

from costline.tenancy import shown_once
from costline.tenancy.actions import issue_gateway_key, revoke_gateway_key
from costline.tenancy.forms import GatewayKeyForm
from costline.tenancy.models import GatewayKey, Role
from costline.tenancy.views import active_first, person, settings_page
from costline.tenancy.web import OrgRequest, org_view

GATEWAY_KEY = "gateway_key"


@org_view(min_role=Role.ADMIN)
def gateway_keys(request: OrgRequest) -> HttpResponse:
    return _page(request, GatewayKeyForm(organization=request.organization, initial={"cache_enabled": True}))


def _page(request: OrgRequest, form: GatewayKeyForm, status: int = 200) -> HttpResponse:
    keys = GatewayKey.objects.filter(organization=request.organization).select_related(
        "project", "team", "created_by"
    )
    context = {
        "keys": keys.order_by(active_first(), "-created_at", "-id"),
        "form": form,
        "new_secret": shown_once.take(request, GATEWAY_KEY),
        "gateway_url": settings.GATEWAY_PUBLIC_URL,
    }
    response = settings_page(request, "tenancy/gateway_keys.html", context, status)
    shown_once.forget(request, response, GATEWAY_KEY)
    return response


@org_view(min_role=Role.ADMIN)
@require_POST
def gateway_key_new(request: OrgRequest) -> HttpResponse:
    form = GatewayKeyForm(request.POST, organization=request.organization)
    if not form.is_valid():
        return _page(request, form, status=400)
    issued = issue_gateway_key(
        request.organization,
        form.cleaned_data["name"],
        project=form.cleaned_data["project"],
        team=form.cleaned_data["team"],
        cache_enabled=form.cleaned_data["cache_enabled"],
        created_by=person(request),
    )
    messages.success(request, f"Created gateway key {issued.prefix}…: copy it now, it is shown only once.")
    response = redirect("settings:gateway_keys", org=request.organization.slug)
    shown_once.keep(request, response, GATEWAY_KEY, issued.plaintext)
    return response


@org_view(min_role=Role.ADMIN)
@require_POST
def gateway_key_revoke(request: OrgRequest, key_id: int) -> HttpResponse:
    key = get_object_or_404(GatewayKey, organization=request.organization, id=key_id)
    if revoke_gateway_key(request.organization, key.id):
        messages.success(
            request, f"Revoked gateway key {key.prefix}… ({key.name}); the gateway refuses it within 10 s."
        )
    else:
        messages.info(request, f"Gateway key {key.prefix}… was already revoked.")
    return redirect("settings:gateway_keys", org=request.organization.slug)
