"""Budget actions: every change writes one audit entry (who, when, old and new values) and republishes."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
from django.core.exceptions import ValidationError

from costline.alerts.models import Channel
from costline.budgets import actions, state, validation
from costline.budgets.models import AuditAction, Budget, BudgetAuditEntry
from costline.tenancy.actions import create_organization
from costline.tenancy.models import Membership, Organization, Project, Role, Team, User

pytestmark = pytest.mark.django_db


@pytest.fixture
def org() -> Organization:
    return create_organization("Acme")


@pytest.fixture
def actor(org: Organization) -> actions.Actor:
    user = User.objects.create_user("ana@acme.example", "pw")
    Membership.objects.create(organization=org, user=user, role=Role.MEMBER)
    return actions.Actor(user=user, label=user.email)


def values(**overrides: Any) -> dict[str, Any]:
    return {
        "name": "Search",
        "scope": {},
        "period": "monthly",
        "custom_start": None,
        "custom_length_days": None,
        "amount_usd": Decimal("500"),
        "thresholds": [50, 80, 100],
        "action": "notify",
        "throttle_rpm": None,
        "downgrade_model": "",
        "paused": False,
        "channels": [],
        **overrides,
    }


def test_it_records_who_created_a_budget_and_its_values(org: Organization, actor: actions.Actor) -> None:
    budget = actions.create_budget(org, actor, values(amount_usd=Decimal("500.25")))

    entry = BudgetAuditEntry.objects.get(budget=budget)
    assert (entry.action, entry.actor_label, entry.actor) == (
        AuditAction.CREATED,
        "ana@acme.example",
        actor.user,
    )
    assert entry.old is None
    assert entry.new["amount_usd"] == "500.250000"
    assert entry.new["thresholds"] == [50, 80, 100]


def test_it_records_old_and_new_values_of_an_update(org: Organization, actor: actions.Actor) -> None:
    channel = Channel.objects.create(organization=org, name="On call", kind="email", target="a@acme.example")
    budget = actions.create_budget(org, actor, values())

    actions.update_budget(budget, actor, {"amount_usd": Decimal("750"), "channels": [channel]})

    entry = BudgetAuditEntry.objects.filter(budget=budget).latest("id")
    assert entry.action == AuditAction.UPDATED
    assert actions.diff(entry.old, entry.new) == [
        ("amount_usd", "500.000000", "750.000000"),
        ("channels", [], [channel.id]),
    ]


def test_it_writes_no_entry_when_nothing_changed(org: Organization, actor: actions.Actor) -> None:
    budget = actions.create_budget(org, actor, values())

    actions.update_budget(budget, actor, {"name": "Search"})

    assert BudgetAuditEntry.objects.filter(budget=budget).count() == 1


def test_it_records_pause_and_resume(org: Organization, actor: actions.Actor) -> None:
    budget = actions.create_budget(org, actor, values())

    actions.set_paused(budget, actor, True)
    actions.set_paused(budget, actor, False)

    assert list(
        BudgetAuditEntry.objects.filter(budget=budget).order_by("id").values_list("action", flat=True)
    ) == [
        "created",
        "paused",
        "resumed",
    ]


def test_it_keeps_the_audit_log_of_a_deleted_budget(org: Organization, actor: actions.Actor) -> None:
    budget = actions.create_budget(org, actor, values(name="Gone"))

    actions.delete_budget(budget, actor)

    assert not Budget.objects.filter(organization=org).exists()
    entry = BudgetAuditEntry.objects.filter(organization=org).latest("id")
    assert (entry.action, entry.budget_name, entry.new) == (AuditAction.DELETED, "Gone", None)
    assert entry.old["name"] == "Gone"


def test_it_publishes_the_budget_to_redis_after_each_change(
    org: Organization,
    actor: actions.Actor,
    redis_db: None,
    django_capture_on_commit_callbacks: Callable[..., Any],
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        budget = actions.create_budget(org, actor, values(action="throttle", throttle_rpm=60))
    assert state.read(budget.id)["throttle_rpm"] == "60"
    assert state.read(budget.id)["limit"] == str(500 * 10**9)

    with django_capture_on_commit_callbacks(execute=True):
        actions.update_budget(budget, actor, {"amount_usd": Decimal("1.5")})
    assert state.read(budget.id)["limit"] == str(1_500_000_000)

    with django_capture_on_commit_callbacks(execute=True):
        actions.set_paused(budget, actor, True)
    assert state.read(budget.id) == {}

    with django_capture_on_commit_callbacks(execute=True):
        actions.set_paused(budget, actor, False)
    budget_id = budget.id
    with django_capture_on_commit_callbacks(execute=True):
        actions.delete_budget(budget, actor)
    assert state.read(budget_id) == {}


# --- the checks shared by the form and the API -----------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [("", [50, 80, 100]), ("100, 50,80", [50, 80, 100]), ("75%", [75]), ("200 1", [1, 200]), ("90,90", [90])],
)
def test_it_reads_thresholds(text: str, expected: list[int]) -> None:
    assert validation.thresholds(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [("0", "1 to 200"), ("201", "1 to 200"), ("fifty", "not a threshold"), ("12.5", "not a threshold")],
)
def test_it_refuses_bad_thresholds(text: str, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        validation.thresholds(text)


@pytest.mark.parametrize("amount", ["0", "-5", "abc", "1.0000001", "NaN"])
def test_it_refuses_bad_amounts(amount: str) -> None:
    with pytest.raises(ValidationError):
        validation.amount(amount)


def test_it_refuses_unknown_projects_teams_and_keys(org: Organization) -> None:
    with pytest.raises(ValidationError, match="no project with the slug nope"):
        validation.scope(org, {"project": ["nope"]})
    with pytest.raises(ValidationError, match="no team with the slug nope"):
        validation.scope(org, {"team": ["nope"]})
    with pytest.raises(ValidationError, match="Unknown scope filter 'region'"):
        validation.scope(org, {"region": ["eu"]})


def test_it_refuses_a_scope_the_rollups_cannot_answer(org: Organization) -> None:
    with pytest.raises(ValidationError, match="cannot also filter on model"):
        validation.scope(org, {"user": ["u1"], "model": ["gpt-4o"]})


def test_it_accepts_a_gateway_key_scope_enforced_by_reservations(org: Organization) -> None:
    from costline.tenancy.actions import issue_gateway_key

    prefix = issue_gateway_key(org, "bot").prefix
    assert validation.scope(org, {"gateway_key": [prefix]}) == {"gateway_key": [prefix]}
    with pytest.raises(ValidationError, match="no gateway key with the prefix clgk_nope"):
        validation.scope(org, {"gateway_key": ["clgk_nope"]})


def test_it_normalises_a_scope(org: Organization) -> None:
    Project.objects.create(organization=org, name="Search", slug="search")

    assert validation.scope(org, {"project": ["search", "search"], "model": ["b", "a"], "feature": []}) == {
        "project": ["search"],
        "model": ["a", "b"],
    }


def test_a_viewer_may_change_only_budgets_of_their_teams(org: Organization) -> None:
    viewer = User.objects.create_user("vic@acme.example", "pw")
    membership = Membership.objects.create(organization=org, user=viewer, role=Role.VIEWER)
    Team.objects.create(organization=org, name="Search", slug="search").members.add(viewer)
    Team.objects.create(organization=org, name="Ads", slug="ads")

    assert validation.may_change(membership, {"team": ["search"]})
    assert not validation.may_change(membership, {"team": ["search", "ads"]})
    assert not validation.may_change(membership, {"project": ["search"]})
    assert not validation.may_change(membership, {})
