"""Advisor pages: recommendations by saving, one with its evidence and replay chart, and a what-if form.

Every member reads; members and above dismiss and apply. Writes are POSTs, redirected afterwards.
"""

from __future__ import annotations

from datetime import timedelta

from django.contrib import messages
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import require_POST

from costline.advisor import actions
from costline.advisor.figures import replay_figure
from costline.advisor.findings import ModelSwap, Policy
from costline.advisor.models import Recommendation, Status
from costline.advisor.policies import PolicyError, policy_from_json
from costline.tenancy.models import Role
from costline.tenancy.web import OrgRequest, org_view, role_at_least


@org_view()
def recommendation_list(request: OrgRequest) -> HttpResponse:
    rows = Recommendation.objects.filter(tenant=request.organization).order_by("-monthly_saving_usd", "id")
    status = request.GET.get("status", Status.OPEN)
    if status in Status.values:
        rows = rows.filter(status=status)
    return render(request, "advisor/list.html", {"rows": rows, "status": status, "statuses": Status.choices})


@org_view()
def recommendation_detail(request: OrgRequest, recommendation_id: int) -> HttpResponse:
    from costline.advisor.replay import whatif

    row = get_object_or_404(Recommendation, tenant=request.organization, id=recommendation_id)
    now = timezone.now()
    figure = note = None
    try:
        policy = policy_from_json(row.policy)
        result = whatif(request.organization.id, now - timedelta(days=row.window_days), now, policy)
        figure = replay_figure(result)
    except ValueError as exc:  # a stored policy the engine no longer accepts (e.g. a price removed)
        note = f"The policy cannot be replayed now: {exc}"
    context = {
        "row": row,
        "figure": figure,
        "chart_note": note,
        "may_change": role_at_least(request.membership, Role.MEMBER),
    }
    return render(request, "advisor/detail.html", context)


@org_view(min_role=Role.MEMBER)
@require_POST
def recommendation_dismiss(request: OrgRequest, recommendation_id: int) -> HttpResponse:
    row = get_object_or_404(Recommendation, tenant=request.organization, id=recommendation_id)
    try:
        actions.dismiss(row, request.POST.get("reason", ""))
        messages.success(request, f"Dismissed: {row.title}.")
    except actions.LifecycleError as exc:
        messages.error(request, str(exc))
    return redirect("advisor:detail", org=request.organization.slug, recommendation_id=row.id)


@org_view(min_role=Role.MEMBER)
@require_POST
def recommendation_apply(request: OrgRequest, recommendation_id: int) -> HttpResponse:
    row = get_object_or_404(Recommendation, tenant=request.organization, id=recommendation_id)
    actions.apply(row)
    messages.success(request, f"Marked applied: {row.title}. The realised saving is measured daily.")
    return redirect("advisor:detail", org=request.organization.slug, recommendation_id=row.id)


def _form_policy(data: dict[str, str]) -> Policy:
    """The what-if form's fields as a policy (PolicyError names the bad field)."""
    raw: dict[str, object] = {}
    if data.get("response_cache_window_s"):
        try:
            raw["response_cache_window_s"] = int(data["response_cache_window_s"])
        except ValueError as exc:
            raise PolicyError("response_cache_window_s", "must be a whole number of seconds") from exc
    if data.get("semantic_cache_threshold"):
        try:
            raw["semantic_cache_threshold"] = float(data["semantic_cache_threshold"])
        except ValueError as exc:
            raise PolicyError("semantic_cache_threshold", "must be a number between 0 and 1") from exc
    raw["prefix_cache"] = bool(data.get("prefix_cache"))
    raw["batch_non_interactive"] = bool(data.get("batch_non_interactive"))
    if data.get("from_model") or data.get("to_model"):
        raw["swaps"] = [
            {
                "from_model": data.get("from_model", ""),
                "to_model": data.get("to_model", ""),
                "feature": data.get("swap_feature") or None,
            }
        ]
    if data.get("cap_feature") or data.get("cap_tokens"):
        try:
            raw["max_output_tokens"] = {data.get("cap_feature", ""): int(data.get("cap_tokens", ""))}
        except ValueError as exc:
            raise PolicyError("cap_tokens", "must be a whole number of tokens") from exc
    policy = policy_from_json(raw)
    assert all(isinstance(s, ModelSwap) for s in policy.swaps)
    return policy


@org_view()
def whatif_form(request: OrgRequest) -> HttpResponse:
    from costline.advisor.replay import whatif

    context: dict[str, object] = {"data": request.GET}
    status = 200
    if request.GET.get("run"):
        try:
            days = int(request.GET.get("days") or 30)
            if not 1 <= days <= 92:
                raise PolicyError("days", "must be 1 to 92")
            policy = _form_policy(request.GET.dict())
            now = timezone.now()
            result = whatif(request.organization.id, now - timedelta(days=days), now, policy)
            context.update(result=result, figure=replay_figure(result))
        except PolicyError as exc:
            context["error"] = str(exc)
            status = 400
        except ValueError as exc:
            context["error"] = str(exc)
            status = 400
    return render(request, "advisor/whatif.html", context, status=status)
