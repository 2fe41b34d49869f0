"""Settings → Notification channels (/o/<slug>/settings/channels/): where budget and alert events go.

Everyone in the organisation reads the channels and their recent deliveries; admins create, edit,
delete and test them, and see webhook URLs (a Slack incoming-webhook URL lets anyone post) and signing
secrets in full. The settings layout and conventions are the tenancy app's (see its views).
"""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.contrib import messages
from django.db.models import Count, OuterRef, Subquery
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_POST

from costline.alerts.delivery import new_signing_secret
from costline.alerts.forms import ChannelForm
from costline.alerts.models import Channel, ChannelKind, Delivery
from costline.alerts.notify import notify
from costline.tenancy.models import Organization, Role
from costline.tenancy.views import settings_page
from costline.tenancy.web import OrgRequest, org_view, role_at_least

RECENT_DELIVERIES = 50


@org_view()
def channels(request: OrgRequest) -> HttpResponse:
    latest = Delivery.objects.filter(channel=OuterRef("pk")).order_by("-created_at", "-id")
    rows = (
        Channel.objects.filter(organization=request.organization)
        .annotate(
            budget_count=Count("budgets", distinct=True),
            last_status=Subquery(latest.values("status")[:1]),
            last_at=Subquery(latest.values("created_at")[:1]),
        )
        .order_by("name", "id")
    )
    admin = role_at_least(request.membership, Role.ADMIN)
    context = {"channels": [{"channel": c, "target": _shown_target(c, admin)} for c in rows]}
    return settings_page(request, "alerts/channels.html", context)


@org_view()
def channel_detail(request: OrgRequest, channel_id: int) -> HttpResponse:
    channel = get_object_or_404(Channel, organization=request.organization, id=channel_id)
    admin = role_at_least(request.membership, Role.ADMIN)
    deliveries = channel.deliveries.order_by("-created_at", "-id")[:RECENT_DELIVERIES]
    context = {
        "channel": channel,
        "target": _shown_target(channel, admin),
        "deliveries": deliveries,
        "budgets": channel.budgets.order_by("name"),
    }
    return settings_page(request, "alerts/channel.html", context)


@org_view(min_role=Role.ADMIN)
def channel_new(request: OrgRequest) -> HttpResponse:
    return _channel_form(request, Channel(organization=request.organization, kind=ChannelKind.EMAIL))


@org_view(min_role=Role.ADMIN)
def channel_edit(request: OrgRequest, channel_id: int) -> HttpResponse:
    return _channel_form(
        request, get_object_or_404(Channel, organization=request.organization, id=channel_id)
    )


def _channel_form(request: OrgRequest, channel: Channel) -> HttpResponse:
    creating = channel.pk is None
    form = ChannelForm(request.POST or None, instance=channel)
    if request.method == "POST" and form.is_valid():
        saved = form.save()
        messages.success(request, f"{'Created' if creating else 'Saved'} the channel {saved.name}.")
        return redirect("settings:channel", org=request.organization.slug, channel_id=saved.id)
    context = {"form": form, "channel": channel, "creating": creating}
    return settings_page(request, "alerts/channel_form.html", context, status=400 if form.errors else 200)


@org_view(min_role=Role.ADMIN)
@require_POST
def channel_delete(request: OrgRequest, channel_id: int) -> HttpResponse:
    channel = get_object_or_404(Channel, organization=request.organization, id=channel_id)
    budgets = channel.budgets.count()
    channel.delete()  # its deliveries go with it; budgets lose it from their channels
    note = f" {budgets} budget(s) no longer notify it." if budgets else ""
    messages.success(request, f"Deleted the channel {channel.name}.{note}")
    return redirect("settings:channels", org=request.organization.slug)


@org_view(min_role=Role.ADMIN)
@require_POST
def channel_test(request: OrgRequest, channel_id: int) -> HttpResponse:
    channel = get_object_or_404(Channel, organization=request.organization, id=channel_id)
    if not channel.enabled:
        messages.error(request, f"{channel.name} is disabled: enable it to send it a test.")
    else:
        notify(
            request.organization.id,
            [channel.id],
            f"test:{uuid.uuid4()}",
            f"Test notification from Costline ({request.organization.name})",
            sample_event(request.organization),
        )
        messages.success(
            request, "Test message queued. Its outcome appears under Recent deliveries within seconds."
        )
    return redirect("settings:channel", org=request.organization.slug, channel_id=channel.id)


@org_view(min_role=Role.ADMIN)
@require_POST
def channel_rotate_secret(request: OrgRequest, channel_id: int) -> HttpResponse:
    channel = get_object_or_404(
        Channel, organization=request.organization, id=channel_id, kind=ChannelKind.WEBHOOK
    )
    channel.signing_secret = new_signing_secret()
    channel.save(update_fields=["signing_secret"])
    messages.success(
        request, "New signing secret: update your receiver; messages from now on are signed with it."
    )
    return redirect("settings:channel", org=request.organization.slug, channel_id=channel.id)


def sample_event(organization: Organization) -> dict[str, Any]:
    """What a budget threshold event looks like, marked as a test (money as exact decimal strings)."""
    now = timezone.now()
    return {
        "event": "budget.threshold",
        "test": True,
        "message": "This is a test: budget “Example budget” reached 80% of its limit ($80.00 of $100.00).",
        "organization": organization.slug,
        "budget": "Example budget",
        "threshold_percent": 80,
        "spend_usd": "80.00",
        "amount_usd": "100.00",
        "state": "warn",
        "occurred_at": now.isoformat(),
        "url": settings.SITE_URL + reverse("settings:channels", kwargs={"org": organization.slug}),
    }


def _shown_target(channel: Channel, admin: bool) -> str:
    """The target as a reader may see it: a URL's path can be a credential, so others see its host."""
    if admin or channel.kind == ChannelKind.EMAIL:
        return channel.target
    parts = urlsplit(channel.target)
    return f"{parts.scheme}://{parts.netloc}/…"
