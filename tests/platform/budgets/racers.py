"""Work for spawned processes that race reservations (imports Django only after setting it up)."""

from __future__ import annotations

import multiprocessing
import time
from decimal import Decimal
from typing import Any


def _setup() -> None:
    import django

    django.setup()


def reserve_many(tenant_id: int, ttl_s: int, estimates: list[str], barrier: Any, out: Any) -> None:
    _setup()
    from costline.budgets.reservations import reserve

    barrier.wait()
    results, first = [], time.time()
    for estimate in estimates:
        reservation = reserve(tenant_id, {"project": "search"}, Decimal(estimate), ttl_s=ttl_s)
        results.append((estimate, reservation.id if reservation.admitted else None))
    out.put({"rows": results, "first": first, "last": time.time()})


def settle_many(tenant_id: int, settles: list[tuple[str, str]], barrier: Any, out: Any) -> None:
    _setup()
    from costline.budgets.reservations import settle

    barrier.wait()
    for reservation_id, actual in settles:
        settle(tenant_id, reservation_id, Decimal(actual))
    out.put(len(settles))


def race(target: Any, shares: list[Any], *args: Any) -> list[Any]:
    """Run target(*args, share, barrier, queue) in one spawned process per share; their results."""
    context = multiprocessing.get_context("spawn")
    barrier, out = context.Barrier(len(shares)), context.Queue()
    processes = [context.Process(target=target, args=(*args, share, barrier, out)) for share in shares]
    for process in processes:
        process.start()
    results = []
    for _ in processes:
        results.append(out.get(timeout=120))
    for process in processes:
        process.join(timeout=10)
        assert process.exitcode == 0
    return results
