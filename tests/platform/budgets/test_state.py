"""Budget state in Redis (contract 2): the hash, the tenant's index, PUBLISH on a change."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from costline.budgets import state
from costline.budgets.models import BudgetPeriodState
from costline.budgets.periods import current_period
from costline.redis_client import client
from costline.tenancy.models import Project, Team
from tests.platform.budgets.eval_helpers import make_budget

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("redis_db")]


@pytest.fixture
def messages() -> Iterator[Any]:
    pubsub = client().pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(state.CHANNEL)
    pubsub.get_message(timeout=1)

    def read() -> list[dict[str, Any]]:
        out = []
        while (message := pubsub.get_message(timeout=0.2)) is not None:
            out.append(json.loads(message["data"]))
        return out

    yield read
    pubsub.close()


def test_publish_writes_hash_and_index(make_tenant, messages) -> None:  # type: ignore[no-untyped-def]
    org = make_tenant().org
    search = Project.objects.create(organization=org, name="Search", slug="search")
    Team.objects.create(organization=org, name="Core", slug="core").projects.set([search])
    budget = make_budget(
        org, amount_usd=Decimal("12.5"), action="throttle", throttle_rpm=60, scope={"team": ["core"]}
    )
    state.publish(budget.id)
    fields = state.read(budget.id)
    start, end = current_period(budget, datetime.now(UTC))
    assert fields == {
        "tenant": str(org.id),
        "state": "ok",
        "action": "throttle",
        "limit": "12500000000",
        "spent": "0",
        "period_start": str(int(start.timestamp())),
        "period_end": str(int(end.timestamp())),
        "throttle_rpm": "60",
        "downgrade_model": "",
        "paused": "0",
        "updated_at": fields["updated_at"],
    }
    assert abs(int(fields["updated_at"]) - datetime.now(UTC).timestamp()) < 5
    index = client().hgetall(state.index_key(org.id))
    assert {k.decode(): json.loads(v) for k, v in index.items()} == {str(budget.id): {"project": ["search"]}}
    assert messages() == [{"budget": budget.id, "tenant": org.id, "state": "ok", "remaining_usd": "12.5"}]
    state.publish(budget.id)  # unchanged: no message
    assert messages() == []


def test_state_change_is_published_once_with_spend_in_nanodollars(make_tenant, messages) -> None:  # type: ignore[no-untyped-def]
    org = make_tenant().org
    budget = make_budget(org, amount_usd=Decimal("10"), action="block")
    now = datetime.now(UTC)
    start, end = current_period(budget, now)
    BudgetPeriodState.objects.create(
        budget=budget, period_start=start, period_end=end, spend_usd=Decimal("10.000000000001"), state="block"
    )
    state.publish(budget.id)
    assert state.read(budget.id)["spent"] == "10000000001"  # rounded up, never under
    assert state.read(budget.id)["state"] == "block"
    assert messages() == [
        {"budget": budget.id, "tenant": org.id, "state": "block", "remaining_usd": "-0.000000000001"}
    ]
    # A raised amount: publish recomputes the state from the stored spend.
    budget.amount_usd = Decimal("20")
    budget.save()
    state.publish(budget.id)
    assert state.read(budget.id)["state"] == "warn"  # 50% of 20 crossed
    assert [m["state"] for m in messages()] == ["warn"]


def test_paused_and_deleted_budgets_leave_redis(make_tenant, messages) -> None:  # type: ignore[no-untyped-def]
    org = make_tenant().org
    budget = make_budget(org, action="block")
    kept = make_budget(org, name="Kept")
    start, end = current_period(budget, datetime.now(UTC))
    BudgetPeriodState.objects.create(budget=budget, period_start=start, period_end=end, spend_usd=Decimal(11))
    state.publish(budget.id)
    state.publish(kept.id)
    messages()
    budget.paused = True
    budget.save()
    state.publish(budget.id)
    assert not client().exists(state.budget_key(budget.id))
    assert client().hkeys(state.index_key(org.id)) == [str(kept.id).encode()]
    assert messages() == [{"budget": budget.id, "tenant": org.id, "state": "ok", "remaining_usd": None}]
    budget.paused = False
    budget.save()
    state.publish(budget.id)
    assert state.read(budget.id)["state"] == "block"
    budget_id = budget.id
    budget.delete()
    state.publish(budget_id)
    assert not client().exists(state.budget_key(budget_id))
    assert client().hkeys(state.index_key(org.id)) == [str(kept.id).encode()]


def test_period_fields_follow_the_org_zone(make_tenant) -> None:  # type: ignore[no-untyped-def]
    org = make_tenant(time_zone="Asia/Kolkata").org
    budget = make_budget(org, period="daily")
    state.publish(budget.id)
    fields = state.read(budget.id)
    start = datetime.fromtimestamp(int(fields["period_start"]), UTC)
    assert (start.hour, start.minute) == (18, 30)  # Kolkata midnight
    assert int(fields["period_end"]) - int(fields["period_start"]) == int(timedelta(days=1).total_seconds())
