"""Reservations racing from several processes against one $1.00 block budget, on the real Redis.

Each process (spawned: a fresh interpreter, its own Redis connection) waits at a barrier, then fires
its share of the 200 reservations as fast as it can, so they interleave in Redis.
"""

from __future__ import annotations

import random
import time
from decimal import Decimal

import pytest

from costline.budgets.reservations import reserve
from costline.redis_client import client
from tests.platform.budgets.racers import race, reserve_many, settle_many
from tests.platform.budgets.reservation_fixtures import publish_budget

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("redis_db"), pytest.mark.slow]
PROCESSES = 4
CALLS = 200
LIMIT = Decimal("1.00")
MAX_ESTIMATE = Decimal("0.05")
TTL_S = 4


def _estimates(seed: int) -> list[str]:
    rng = random.Random(seed)
    # Nanodollar-precise random sizes from $0.000000001 to $0.05: they never add up to round numbers.
    return [str(Decimal(rng.randint(1, int(MAX_ESTIMATE * 10**9))) / 10**9) for _ in range(CALLS)]


def _total(hash_key: str) -> Decimal:
    return sum((Decimal(int(v)) for v in client().hvals(hash_key)), Decimal(0)) / 10**9


def test_concurrent_reservations_never_pass_the_limit_and_settle_releases_the_difference(make_tenant):
    org = make_tenant().org
    budget = publish_budget(org, str(LIMIT), scope={"project": ["search"]})
    estimates = _estimates(seed=5)
    assert sum(map(Decimal, estimates)) > 4 * LIMIT  # far more asked than the budget holds

    shares = [estimates[i::PROCESSES] for i in range(PROCESSES)]
    results = [row for done in race(reserve_many, shares, org.id, 60) for row in done["rows"]]

    admitted = [(Decimal(estimate), rid) for estimate, rid in results if rid is not None]
    admitted_total = sum((estimate for estimate, _ in admitted), Decimal(0))
    assert len(results) == CALLS
    assert admitted_total <= LIMIT
    assert admitted_total > LIMIT - MAX_ESTIMATE  # and the budget was really filled, not refused early
    assert _total(f"costline:budget:{budget.id}:reserved") == admitted_total
    assert Decimal(int(client().get(f"costline:budget:{budget.id}:reserved_sum"))) / 10**9 == admitted_total

    # Settle every admitted call at a third of its estimate (rounded up to the nanodollar), concurrently.
    actuals = [
        (rid, str((estimate / 3).quantize(Decimal("1e-9"), rounding="ROUND_CEILING")))
        for estimate, rid in admitted
    ]
    race(settle_many, [actuals[i::PROCESSES] for i in range(PROCESSES)], org.id)

    settled_total = sum((Decimal(actual) for _, actual in actuals), Decimal(0))
    assert client().hlen(f"costline:budget:{budget.id}:reserved") == 0
    assert client().get(f"costline:budget:{budget.id}:reserved_sum") is None
    assert _total(f"costline:budget:{budget.id}:settled") == settled_total
    room = LIMIT - settled_total
    assert not reserve(org.id, {"project": "search"}, room + Decimal("1e-9")).admitted
    assert reserve(org.id, {"project": "search"}, room).admitted


def test_expired_reservations_free_their_amount(make_tenant):
    org = make_tenant().org
    publish_budget(org, str(LIMIT), scope={"project": ["search"]})
    estimates = _estimates(seed=7)

    shares = [estimates[i::PROCESSES] for i in range(PROCESSES)]
    done = race(reserve_many, shares, org.id, TTL_S)
    results = [row for share in done for row in share["rows"]]
    assert sum(Decimal(e) for e, rid in results if rid is not None) <= LIMIT
    if time.time() < min(share["first"] for share in done) + TTL_S - 0.5:  # none can have expired yet
        assert not reserve(org.id, {"project": "search"}, LIMIT).admitted

    time.sleep(
        max(0.0, max(share["last"] for share in done) + TTL_S + 0.05 - time.time())
    )  # nothing settles them

    assert reserve(org.id, {"project": "search"}, LIMIT).admitted
