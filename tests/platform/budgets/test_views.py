"""Budget pages: the list with spend and state, the budget page with its burn-down chart, the forms, roles."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import plotly.graph_objects as go
import pytest
from django.utils import timezone

from costline.alerts.models import Channel
from costline.budgets import actions
from costline.budgets.models import AuditAction, Budget, BudgetAuditEntry, BudgetEvent, BudgetPeriodState
from costline.budgets.periods import current_period
from costline.tenancy.models import Project, Role, Team
from tests.platform.budgets.conftest import Member
from tests.platform.dashboards.conftest import roll_up
from tests.platform.usage.factories import make_calls

SignIn = Callable[..., Member]

FORM = {
    "name": "Search monthly",
    "period": "monthly",
    "amount_usd": "500",
    "thresholds": "50, 80, 100",
    "action": "notify",
}


def make_budget(member: Member, **fields: Any) -> Budget:
    values: dict[str, Any] = {
        "name": "Search",
        "amount_usd": Decimal("100"),
        "thresholds": [50, 80, 100],
        **fields,
    }
    return actions.create_budget(member.org, actions.Actor(member.user, member.user.email), values)


def evaluated(
    budget: Budget, spend: str, forecast: str | None = None, state: str = "ok"
) -> BudgetPeriodState:
    start, end = current_period(budget, timezone.now())
    return BudgetPeriodState.objects.create(
        budget=budget,
        period_start=start,
        period_end=end,
        spend_usd=Decimal(spend),
        forecast_usd=Decimal(forecast) if forecast else None,
        forecast_low_usd=Decimal(forecast) * Decimal("0.9") if forecast else None,
        forecast_high_usd=Decimal(forecast) * Decimal("1.1") if forecast else None,
        state=state,
    )


def figure_of(html: str) -> dict[str, Any]:
    match = re.search(r'<script id="burn-down-figure" type="application/json">(.*?)</script>', html, re.S)
    assert match, "no burn-down figure on the page"
    return json.loads(match.group(1))  # type: ignore[no-any-return]


# --- list --------------------------------------------------------------------------------------------


def test_it_lists_budgets_with_spend_percent_forecast_and_state(sign_in: SignIn) -> None:
    viewer = sign_in(Role.VIEWER)
    evaluated(make_budget(viewer, name="Search"), "42.5", forecast="130", state="warn")
    make_budget(viewer, name="Ads")

    response = viewer.client.get(viewer.url("budgets/"))

    assert response.status_code == 200
    html = response.content.decode()
    search = re.search(r'<tr data-budget="\d+">\s*<td><a [^>]*>Search</a>.*?</tr>', html, re.S)
    assert search
    row = search.group(0)
    assert "$42.50" in row
    assert "$100.00" in row
    assert "42.5%" in row
    assert "$130.00" in row
    assert 'data-state="warn"' in row
    ads = re.search(r"<a [^>]*>Ads</a>.*?</tr>", html, re.S)
    assert ads
    assert "not evaluated yet" in ads.group(0)
    assert 'id="new-budget"' not in html  # a viewer in no team creates nothing


def test_the_nav_links_to_budgets(sign_in: SignIn) -> None:
    member = sign_in(Role.MEMBER)

    html = member.client.get(member.url()).content.decode()

    assert f'href="/o/{member.org.slug}/budgets/"' in html


# --- create and edit -----------------------------------------------------------------------------------


def test_a_member_creates_a_budget_with_the_form(sign_in: SignIn) -> None:
    member = sign_in(Role.MEMBER)
    Project.objects.create(organization=member.org, name="Search", slug="search")
    channel = Channel.objects.create(organization=member.org, name="Ops", kind="email", target="o@x.example")

    response = member.client.post(
        member.url("budgets/new/"),
        {**FORM, "projects": ["search"], "thresholds": "100, 75", "channels": [channel.id]},
    )

    budget = Budget.objects.get(organization=member.org)
    assert response.status_code == 302
    assert response["Location"] == member.url(f"budgets/{budget.id}/")
    assert (budget.scope, budget.amount_usd, budget.thresholds) == (
        {"project": ["search"]},
        Decimal(500),
        [75, 100],
    )
    assert list(budget.channels.all()) == [channel]
    entry = BudgetAuditEntry.objects.get(budget=budget)
    assert (entry.action, entry.actor_label) == (AuditAction.CREATED, member.user.email)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"amount_usd": "0"}, "The amount must be more than $0."),
        ({"thresholds": "50, 300"}, "Threshold 300% is out of range"),
        ({"action": "throttle"}, "Throttle needs a cap in requests per minute"),
        ({"action": "downgrade"}, "Downgrade needs the cheaper model"),
        ({"period": "custom"}, "A custom period needs the start of its first period."),
        ({"name": "  "}, "This field is required."),
    ],
)
def test_the_form_says_what_is_wrong(sign_in: SignIn, changes: dict[str, str], message: str) -> None:
    member = sign_in(Role.MEMBER)

    response = member.client.post(member.url("budgets/new/"), {**FORM, **changes})

    assert response.status_code == 400
    assert message in response.content.decode().replace("&#x27;", "'")
    assert not Budget.objects.filter(organization=member.org).exists()


def test_the_form_refuses_a_user_budget_with_other_filters(sign_in: SignIn) -> None:
    member = sign_in(Role.MEMBER)
    calls = make_calls(member.org, [timezone.now() - timedelta(hours=2)], user_id="u-1")
    roll_up(calls)

    response = member.client.post(
        member.url("budgets/new/"), {**FORM, "users": ["u-1"], "models": ["gpt-4o"]}
    )

    assert response.status_code == 400
    assert "cannot also filter on model" in response.content.decode()


def test_the_form_offers_the_organisations_values(sign_in: SignIn) -> None:
    member = sign_in(Role.MEMBER)
    roll_up(
        make_calls(member.org, [timezone.now() - timedelta(hours=2)], model="claude-sonnet-4", feature="chat")
    )
    Team.objects.create(organization=member.org, name="Growth", slug="growth")

    html = member.client.get(member.url("budgets/new/")).content.decode()

    assert '<option value="claude-sonnet-4"' in html
    assert '<option value="chat"' in html
    assert '<option value="growth"' in html


def test_an_edit_shows_old_and_new_values_in_the_audit_log(sign_in: SignIn) -> None:
    member = sign_in(Role.MEMBER)
    budget = make_budget(member, name="Search")

    response = member.client.post(
        member.url(f"budgets/{budget.id}/edit/"), {**FORM, "name": "Search", "amount_usd": "750"}
    )
    assert response.status_code == 302

    html = member.client.get(member.url(f"budgets/{budget.id}/")).content.decode()
    change = re.search(r'<li data-field="amount_usd">.*?</li>', html, re.S)
    assert change
    assert "100.000000" in change.group(0)
    assert "750.000000" in change.group(0)
    budget.refresh_from_db()
    assert budget.amount_usd == Decimal(750)


def test_pause_resume_and_delete(sign_in: SignIn) -> None:
    member = sign_in(Role.MEMBER)
    budget = make_budget(member)

    assert member.client.post(member.url(f"budgets/{budget.id}/pause/")).status_code == 302
    budget.refresh_from_db()
    assert budget.paused
    assert 'data-state="paused"' in member.client.get(member.url("budgets/")).content.decode()
    assert member.client.post(member.url(f"budgets/{budget.id}/resume/")).status_code == 302
    budget.refresh_from_db()
    assert not budget.paused
    assert member.client.post(member.url(f"budgets/{budget.id}/delete/")).status_code == 302

    assert not Budget.objects.filter(id=budget.id).exists()
    actions_logged = BudgetAuditEntry.objects.filter(organization=member.org).order_by("id")
    assert [e.action for e in actions_logged] == ["created", "paused", "resumed", "deleted"]
    assert "Deleted" in member.client.get(member.url("budgets/")).content.decode()


# --- roles and isolation -------------------------------------------------------------------------------


def test_a_viewer_reads_but_changes_nothing(sign_in: SignIn) -> None:
    member = sign_in(Role.MEMBER)
    viewer = sign_in(Role.VIEWER, org=member.org)
    budget = make_budget(member)

    assert viewer.client.get(viewer.url(f"budgets/{budget.id}/")).status_code == 200
    assert viewer.client.get(viewer.url("budgets/new/")).status_code == 403
    assert viewer.client.post(viewer.url("budgets/new/"), FORM).status_code == 403
    assert viewer.client.post(viewer.url(f"budgets/{budget.id}/edit/"), FORM).status_code == 403
    assert viewer.client.post(viewer.url(f"budgets/{budget.id}/pause/")).status_code == 403
    assert viewer.client.post(viewer.url(f"budgets/{budget.id}/delete/")).status_code == 403
    assert Budget.objects.filter(id=budget.id, paused=False).exists()


def test_a_viewer_in_a_team_manages_the_teams_budgets(sign_in: SignIn) -> None:
    viewer = sign_in(Role.VIEWER)
    team = Team.objects.create(organization=viewer.org, name="Search", slug="search")
    team.members.add(viewer.user)
    Team.objects.create(organization=viewer.org, name="Ads", slug="ads")

    created = viewer.client.post(viewer.url("budgets/new/"), {**FORM, "teams": ["search"]})
    refused = viewer.client.post(viewer.url("budgets/new/"), {**FORM, "name": "Ads", "teams": ["ads"]})

    assert created.status_code == 302
    assert refused.status_code == 403
    budget = Budget.objects.get(organization=viewer.org)
    assert budget.scope == {"team": ["search"]}
    assert viewer.client.post(viewer.url(f"budgets/{budget.id}/pause/")).status_code == 302


def test_another_organisations_budget_is_not_found(sign_in: SignIn) -> None:
    owner = sign_in(Role.OWNER)
    stranger = sign_in(Role.OWNER)
    budget = make_budget(owner)

    for path in ("", "edit/"):
        assert stranger.client.get(stranger.url(f"budgets/{budget.id}/{path}")).status_code == 404
    for path in ("pause/", "resume/", "delete/"):
        assert stranger.client.post(stranger.url(f"budgets/{budget.id}/{path}")).status_code == 404
    assert Budget.objects.filter(id=budget.id, paused=False).exists()


# --- the budget page -----------------------------------------------------------------------------------


def test_the_budget_page_draws_cumulative_spend_forecast_limit_and_thresholds(sign_in: SignIn) -> None:
    member = sign_in(Role.VIEWER)
    # A custom period that began two days ago at midnight UTC: two whole days of calls so far.
    start = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=2)
    budget = make_budget(
        member, amount_usd=Decimal("0.05"), period="custom", custom_start=start, custom_length_days=10
    )
    calls = make_calls(member.org, [start + timedelta(hours=1), start + timedelta(hours=2)])  # $0.006 each
    calls += make_calls(member.org, [start + timedelta(days=1, hours=3)], cost_usd=Decimal("0.010"))
    roll_up(calls)
    evaluated(budget, "0.022", forecast="0.08", state="warn")
    BudgetEvent.objects.create(
        organization=member.org,
        budget=budget,
        period_start=start,
        kind="threshold",
        threshold=50,
        spend_usd=Decimal("0.022"),
        message="Search reached 50% of $0.05.",
    )

    response = member.client.get(member.url(f"budgets/{budget.id}/"))

    assert response.status_code == 200
    html = response.content.decode()
    figure = figure_of(html)
    go.Figure(figure)  # plotly rejects any property it does not know
    actual, *_ = figure["data"]
    assert actual["y"][:3] == [0.0, 0.012, 0.022]
    assert actual["x"][1].startswith(start.date().isoformat())
    names = [trace["name"] for trace in figure["data"]]
    assert "Forecast ($0.08)" in names
    assert "Forecast range" in names
    assert "Limit ($0.05)" in names
    assert "50% ($0.025)" in names
    assert "80% ($0.04)" in names
    assert "Search reached 50% of $0.05." in html
    assert "$0.022" in html  # spend tile
    assert "plotly/plotly.min.js" in html


def test_the_budget_page_of_a_gateway_key_budget_says_why_it_has_no_history(sign_in: SignIn) -> None:
    member = sign_in(Role.MEMBER)
    budget = make_budget(member, scope={"gateway_key": ["clgw_abc"]})

    response = member.client.get(member.url(f"budgets/{budget.id}/"))

    assert response.status_code == 200
    assert "not kept in the usage rollups" in response.content.decode()
