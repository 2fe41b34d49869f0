#!/usr/bin/env python
"""Page-time benchmark: server time of the Overview and Explore pages at 10 million calls.

Reads the database that bench/rollup.py fills (`costline_bench_rollup` on DATABASE_URL's server, or
the embedded one: 10 million calls over 30 days for 20 tenants, rolled up); run that first. Adds a
viewer to the largest tenant and to a median one, then times R requests of each page through Django's
test Client, in-process: the server's whole work for a request (middleware, sign-in, the usage queries,
the Plotly figure, the template), without a network or a browser. The first requests of each page warm
connections and caches and are not counted.

    .venv/bin/python bench/rollup.py                # once: fills the database (about 10 minutes)
    .venv/bin/python bench/pages.py                 # 50 requests per page
    .venv/bin/python bench/pages.py --requests 200

Target (issue 4): Overview and Explore (grouped by model, 30 days) under 300 ms p95 at 10 million calls.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from django.test import Client

    from costline.tenancy.models import Organization

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "platform"), str(ROOT), str(ROOT / "bench")]
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "costline.settings")

# (label, path under /o/<slug>/, query string): the two pages of the target first.
PAGES = [
    ("Overview, last 30 days", "", "range=30d"),
    ("Explore, cost by model, 30 days", "explore/", "range=30d&metric=cost_usd&group_by=model&chart=area"),
    ("Overview, last 7 days", "", "range=7d"),
    ("Explore, p95 latency by feature, 7 days", "explore/", "range=7d&metric=latency_p95&group_by=feature"),
    ("Models, last 30 days", "models/", "range=30d"),
]
WARM_UP = 3
TARGET_MS = 300


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def analyze_rollups() -> None:
    """Give the planner the rollups' statistics, as autovacuum keeps them on a live database.

    bench/rollup.py analyzes before its backfill, so the rollup tables it then fills look empty to the
    planner (and the server may run without autovacuum): it expects 9 rows of a tenant's month of
    per-user rollups where there are 50,000, and sorts them on disk.
    """
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "ANALYZE usage_rollup_minute, usage_rollup_hour, usage_rollup_day, usage_userrollup_day"
        )


def tenants_by_size() -> list[tuple[Organization, int]]:
    """Every organisation with its calls of the last 30 days (from the rollups), largest first."""
    from django.utils import timezone

    from costline.tenancy.models import Organization
    from costline.usage.metrics import UsageQuery, usage

    now = timezone.now()
    sizes = []
    for org in Organization.objects.order_by("id"):
        query = UsageQuery(
            start=now - timedelta(days=31), end=now, interval="day", metrics=("requests",), points=False
        )
        sizes.append((org, int(usage(org.id, query).totals["requests"] or 0)))
    return sorted(sizes, key=lambda pair: pair[1], reverse=True)


def viewer_client(org: Organization) -> Client:
    from django.test import Client

    from costline.tenancy.models import Membership, Role, User

    user, _ = User.objects.get_or_create(email="bench-pages@costline.invalid")
    Membership.objects.get_or_create(organization=org, user=user, defaults={"role": Role.VIEWER})
    client = Client()
    client.force_login(user)
    return client


def time_page(client: Client, url: str, requests: int) -> tuple[list[float], int, int]:
    """Milliseconds of each timed request, the SQL queries of one, and the page's size in bytes."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    timings = []
    for attempt in range(requests + WARM_UP):
        began = time.perf_counter()
        response = client.get(url)
        elapsed = (time.perf_counter() - began) * 1000
        if response.status_code != 200:
            raise SystemExit(f"GET {url} answered {response.status_code}: {response.content[:500]!r}")
        if attempt >= WARM_UP:
            timings.append(elapsed)
    with CaptureQueriesContext(connection) as queries:
        response = client.get(url)
    return timings, len(queries), len(response.content)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=50, help="timed requests per page (default 50)")
    parser.add_argument("--database", default="costline_bench_rollup")
    args = parser.parse_args()

    # The web process's own start-up first (costline/wsgi.py: it freezes the start-up objects for the
    # garbage collector), then bench/rollup.py's database (found or created, migrated).
    from rollup import prepare_database

    import costline.wsgi  # noqa: F401

    prepare_database(args.database, reuse=True)
    analyze_rollups()
    ranked = tenants_by_size()
    if not ranked or ranked[0][1] == 0:
        raise SystemExit(
            f"{args.database} has no rolled-up calls: run .venv/bin/python bench/rollup.py first"
        )
    total = sum(calls for _, calls in ranked)
    tenants = [("largest", *ranked[0]), ("median", *ranked[len(ranked) // 2])]

    rows = []
    for label, org, calls in tenants:
        client = viewer_client(org)
        for page, path, query in PAGES:
            url = f"/o/{org.slug}/{path}?{query}"
            timings, queries, size = time_page(client, url, args.requests)
            p50, p95 = statistics.median(timings), statistics.quantiles(timings, n=20)[-1]
            rows.append((f"{label} tenant ({calls:,} calls)", page, queries, size, p50, p95))
            say(f"  {label} tenant, {page}: p50 {p50:.1f} ms, p95 {p95:.1f} ms ({queries} SQL queries)")

    print()
    print(
        f"Page server time: {total:,} calls in the last 30 days, {len(ranked)} tenants, "
        f"{args.requests} requests per page, in-process (Django test Client), {os.cpu_count()} CPUs"
    )
    print()
    print("| tenant | page | SQL queries (request thread) | HTML KiB | p50 ms | p95 ms |")
    print("|---|---|---|---|---|---|")
    for tenant, page, queries, size, p50, p95 in rows:
        print(f"| {tenant} | {page} | {queries} | {size / 1024:.0f} | {p50:.1f} | **{p95:.1f}** |")
    worst = max(p95 for *_, p95 in rows[:2])
    print()
    verdict = "met" if worst < TARGET_MS else "MISSED"
    print(
        f"Target: Overview and Explore under {TARGET_MS} ms p95: {verdict} "
        f"(largest tenant, worst {worst:.1f} ms)"
    )


if __name__ == "__main__":
    main()
