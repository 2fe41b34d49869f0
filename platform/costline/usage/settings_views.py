"""Settings → Price overrides (/o/<slug>/settings/price-overrides/): a tenant's own model prices.

Saving or deleting an override queues re-pricing of the calls it affects (costline.usage.reprice's
signals); the pages say so. The settings layout and conventions are the tenancy app's (see its views).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from django.contrib import messages
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect
from django.utils import timezone
from django.utils.dateformat import format as format_date
from django.views.decorators.http import require_POST

from costline.tenancy.models import Role
from costline.tenancy.views import settings_page
from costline.tenancy.web import OrgRequest, org_view
from costline.usage.forms import PriceOverrideForm
from costline.usage.models import PriceOverride


@org_view()
def price_overrides(request: OrgRequest) -> HttpResponse:
    rows = [
        {
            "override": o,
            "prices": [
                _plain(p)
                for p in (o.input_per_mtok, o.output_per_mtok, o.cache_read_per_mtok, o.cache_write_per_mtok)
            ],
            "discount": _plain(o.discount_percent),
        }
        for o in PriceOverride.objects.filter(tenant=request.organization).order_by(
            "model_pattern", "-effective_from"
        )
    ]
    return settings_page(request, "usage/price_overrides.html", {"overrides": rows})


def _plain(amount: Decimal | None) -> str | None:
    """2.500000000000 → '2.5', 100.000 → '100': exact, without the stored scale's zeros."""
    return None if amount is None else format(amount.normalize(), "f")


@org_view(min_role=Role.ADMIN)
def price_override_new(request: OrgRequest) -> HttpResponse:
    zone = ZoneInfo(request.organization.time_zone)
    today = timezone.now().astimezone(zone).replace(hour=0, minute=0, second=0, microsecond=0)
    return _price_override_form(request, PriceOverride(tenant=request.organization, effective_from=today))


@org_view(min_role=Role.ADMIN)
def price_override_edit(request: OrgRequest, override_id: int) -> HttpResponse:
    override = get_object_or_404(PriceOverride, tenant=request.organization, id=override_id)
    return _price_override_form(request, override)


def _price_override_form(request: OrgRequest, override: PriceOverride) -> HttpResponse:
    creating = override.pk is None
    previous_from = override.effective_from
    zone = ZoneInfo(request.organization.time_zone)
    with timezone.override(zone):  # the effective date is typed in the organisation's zone
        form = PriceOverrideForm(request.POST or None, instance=override)
        form.fields["effective_from"].help_text = f"In {zone.key}; calls from then on use this price."
        valid = request.method == "POST" and form.is_valid()
    if valid:
        saved = form.save()  # the usage app's signal queues re-pricing of the calls it affects
        since = saved.effective_from if creating else min(saved.effective_from, previous_from)
        messages.success(
            request,
            f"Saved the price override for {saved.model_pattern}. "
            f"Costs since {_date(since, zone)} are being re-priced.",
        )
        return redirect("settings:price_overrides", org=request.organization.slug)
    context = {"form": form, "override": override, "creating": creating}
    return settings_page(
        request, "usage/price_override_form.html", context, status=400 if form.errors else 200
    )


@org_view(min_role=Role.ADMIN)
@require_POST
def price_override_delete(request: OrgRequest, override_id: int) -> HttpResponse:
    override = get_object_or_404(PriceOverride, tenant=request.organization, id=override_id)
    override.delete()  # the signal queues re-pricing from its effective date
    messages.success(
        request,
        f"Deleted the price override for {override.model_pattern}. Costs since "
        f"{_date(override.effective_from, ZoneInfo(request.organization.time_zone))} are being re-priced.",
    )
    return redirect("settings:price_overrides", org=request.organization.slug)


def _date(moment: Any, zone: ZoneInfo) -> str:
    local = moment.astimezone(zone)
    return format_date(local, "j M Y" if local.hour == local.minute == 0 else "j M Y H:i")
