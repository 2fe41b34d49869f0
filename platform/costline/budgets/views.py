"""Budget pages, under /o/<slug>/budgets/: the list, one budget (burn-down chart, events, audit log), and
the forms to create, edit, pause, resume and delete.

Every member reads. Members and above change any budget; a viewer changes the budgets scoped to teams
they belong to (costline.budgets.validation.may_change). Writes are POSTs, redirected afterwards
(POST-redirect-GET) with a message; each calls one function of costline.budgets.actions.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, cast

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import require_POST

from costline.budgets import actions, validation
from costline.budgets.figures import burn_down, burn_down_figure
from costline.budgets.forms import BudgetForm
from costline.budgets.models import Budget, BudgetAuditEntry, BudgetPeriodState
from costline.budgets.periods import current_period
from costline.tenancy.models import Role, Team, User
from costline.tenancy.web import OrgRequest, org_view, role_at_least


@dataclass
class BudgetRow:
    budget: Budget
    start: datetime
    end: datetime
    state: BudgetPeriodState | None

    @property
    def spend(self) -> Decimal | None:
        return self.state.spend_usd if self.state else None

    @property
    def forecast(self) -> Decimal | None:
        return self.state.forecast_usd if self.state else None

    @property
    def forecast_low(self) -> Decimal | None:
        return self.state.forecast_low_usd if self.state else None

    @property
    def forecast_high(self) -> Decimal | None:
        return self.state.forecast_high_usd if self.state else None

    @property
    def projected_limit_at(self) -> datetime | None:
        return self.state.projected_limit_at if self.state else None

    @property
    def percent(self) -> Decimal | None:
        """Spend as a fraction of the amount (the `percent` filter shows 0.42 as 42%)."""
        if self.state is None or not self.budget.amount_usd:
            return None
        return self.state.spend_usd / self.budget.amount_usd


def _page(request: OrgRequest, template: str, context: dict[str, Any], status: int = 200) -> HttpResponse:
    with timezone.override(request.organization.zone):
        return render(request, template, {"zone": request.organization.zone, **context}, status=status)


def _actor(request: OrgRequest) -> actions.Actor:
    user = cast(User, request.user)
    return actions.Actor(user=user, label=user.email)


def _rows(budgets: list[Budget], now: datetime) -> list[BudgetRow]:
    periods = {b.id: current_period(b, now) for b in budgets}
    states = {
        (s.budget_id, s.period_start): s
        for s in BudgetPeriodState.objects.filter(
            budget__in=budgets, period_start__in={start for start, _ in periods.values()}
        )
    }
    return [BudgetRow(b, *periods[b.id], states.get((b.id, periods[b.id][0]))) for b in budgets]


def _may_create(request: OrgRequest) -> bool:
    if role_at_least(request.membership, Role.MEMBER):
        return True
    return Team.objects.filter(organization=request.organization, members=request.membership.user_id).exists()


def _check_may_change(request: OrgRequest, scope: dict[str, Any] | None) -> None:
    if not validation.may_change(request.membership, scope):
        raise PermissionDenied(
            "Changing this budget needs the member role, or membership of every team it is scoped to. "
            "Ask an admin to add you to the team or change your role."
        )


@org_view()
def budget_list(request: OrgRequest) -> HttpResponse:
    budgets = list(
        Budget.objects.filter(organization=request.organization)
        .select_related("organization")
        .order_by("name", "id")
    )
    rows = _rows(budgets, timezone.now())
    recent = BudgetAuditEntry.objects.filter(organization=request.organization).order_by("-at", "-id")[:20]
    context = {"rows": rows, "may_create": _may_create(request), "recent": recent}
    return _page(request, "budgets/list.html", context)


@org_view()
def budget_detail(request: OrgRequest, budget_id: int) -> HttpResponse:
    budget = get_object_or_404(
        Budget.objects.select_related("organization"), organization=request.organization, id=budget_id
    )
    now = timezone.now()
    row = _rows([budget], now)[0]
    figure = burn_down_figure(chart := burn_down(budget, row.start, row.end, now, row.state))
    context = {
        "budget": budget,
        "row": row,
        "figure": figure,
        "chart_note": chart.note,
        "events": budget.events.order_by("-created_at", "-id")[:50],
        "audit": [
            (entry, actions.diff(entry.old, entry.new))
            for entry in BudgetAuditEntry.objects.filter(organization=request.organization, budget=budget)
            .select_related("actor")
            .order_by("-at", "-id")[:50]
        ],
        "channels": budget.channels.order_by("name"),
        "may_change": validation.may_change(request.membership, budget.scope),
    }
    return _page(request, "budgets/detail.html", context)


@org_view()
def budget_new(request: OrgRequest) -> HttpResponse:
    if not _may_create(request):
        _check_may_change(request, {})
    return _budget_form(request, None)


@org_view()
def budget_edit(request: OrgRequest, budget_id: int) -> HttpResponse:
    budget = get_object_or_404(Budget, organization=request.organization, id=budget_id)
    _check_may_change(request, budget.scope)
    return _budget_form(request, budget)


def _budget_form(request: OrgRequest, budget: Budget | None) -> HttpResponse:
    with timezone.override(
        request.organization.zone
    ):  # a custom start is typed in the organisation's time zone
        form = BudgetForm(request.POST or None, organization=request.organization, budget=budget)
        valid = request.method == "POST" and form.is_valid()
    if valid:
        values = form.values()
        _check_may_change(request, values["scope"])
        if budget is None:
            budget = actions.create_budget(request.organization, _actor(request), values)
            messages.success(request, f"Created budget {budget.name}.")
        else:
            budget = actions.update_budget(budget, _actor(request), values)
            messages.success(request, f"Saved budget {budget.name}.")
        return redirect("budgets:detail", org=request.organization.slug, budget_id=budget.id)
    context = {"form": form, "budget": budget, "creating": budget is None}
    return _page(request, "budgets/form.html", context, status=400 if form.errors else 200)


def _change(request: OrgRequest, budget_id: int) -> Budget:
    budget = get_object_or_404(Budget, organization=request.organization, id=budget_id)
    _check_may_change(request, budget.scope)
    return budget


@org_view()
@require_POST
def budget_pause(request: OrgRequest, budget_id: int) -> HttpResponse:
    budget = actions.set_paused(_change(request, budget_id), _actor(request), True)
    messages.success(
        request, f"Paused budget {budget.name}: it is neither evaluated nor enforced until resumed."
    )
    return redirect("budgets:detail", org=request.organization.slug, budget_id=budget.id)


@org_view()
@require_POST
def budget_resume(request: OrgRequest, budget_id: int) -> HttpResponse:
    budget = actions.set_paused(_change(request, budget_id), _actor(request), False)
    messages.success(request, f"Resumed budget {budget.name}.")
    return redirect("budgets:detail", org=request.organization.slug, budget_id=budget.id)


@org_view()
@require_POST
def budget_delete(request: OrgRequest, budget_id: int) -> HttpResponse:
    budget = _change(request, budget_id)
    name = budget.name
    actions.delete_budget(budget, _actor(request))
    messages.success(request, f"Deleted budget {name}. Its audit log is kept.")
    return redirect("budgets:list", org=request.organization.slug)
