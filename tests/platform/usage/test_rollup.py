"""Rollups equal what the raw calls say: exact sums, percentiles within the sketch's error.

Calls are inserted straight into the raw table (as the collector's COPY would) and their minutes
marked the way the ingest transaction marks them; `process_dirty` is the worker's own code.
"""

from __future__ import annotations

import random
import threading
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.db import connection, connections
from django.test import override_settings
from django.utils import timezone

from costline.usage import rollup, sketch
from costline.usage.models import LLMCall
from costline.usage.partitions import existing_days, partition_name
from costline.usage.rollup import CALLS, USERS, maintain, mark_dirty, process_dirty
from tests.conftest import TenantKeys
from tests.platform.usage.rollup_checks import (
    expected_sums,
    random_calls,
    snapshot,
    stored_sketches,
    stored_sums,
    truncate,
)

MakeTenant = Callable[..., TenantKeys]
LEVELS = ("minute", "hour", "day")


@pytest.fixture(autouse=True)
def nothing_marked(db: None) -> None:
    """Other tests' tenants may have left marks (committed by the collector): roll them up first, so
    that what a test counts is its own work."""
    process_dirty()


def recent_start() -> datetime:
    """Two days ago at midnight: inside minute retention, so every level is built."""
    return truncate(timezone.now() - timedelta(days=2), "day")


def mark(tenant_id: int, calls: list[LLMCall]) -> None:
    with connection.cursor() as cursor:
        mark_dirty(cursor, tenant_id, [call.start_time for call in calls])


def assert_rollups_match(tenant_id: int, levels: tuple[str, ...] = LEVELS) -> list[LLMCall]:
    calls = list(LLMCall.objects.filter(tenant_id=tenant_id))
    for family in (CALLS, USERS):
        for level in levels:
            expected = expected_sums(family, level, calls)
            stored = stored_sums(family, level, tenant_id)
            assert stored.keys() == expected.keys(), f"{family.table(level)}: buckets differ"
            for key, sums in expected.items():
                assert stored[key] == sums, f"{family.table(level)} {key}"
    return calls


@pytest.mark.django_db
def test_every_level_sums_exactly_what_the_raw_calls_hold(make_tenant: MakeTenant) -> None:
    tenant = make_tenant()
    calls = random_calls(tenant.org, random.Random(7), 3000, recent_start(), timedelta(hours=40))
    mark(tenant.id, calls)

    run = process_dirty()

    assert run.days == 2
    assert run.remaining == 0
    assert_rollups_match(tenant.id)


@pytest.mark.django_db
def test_percentiles_from_merged_sketches_are_within_one_percent_of_the_exact_ones(
    make_tenant: MakeTenant,
) -> None:
    tenant = make_tenant()
    calls = random_calls(tenant.org, random.Random(11), 4000, recent_start(), timedelta(hours=30))
    mark(tenant.id, calls)
    process_dirty()

    for level in LEVELS:
        # Merge every bucket of a model, over the whole range: what a query grouped by model does.
        by_model: dict[str, list[bytes]] = defaultdict(list)
        ttft_by_model: dict[str, list[bytes]] = defaultdict(list)
        for key, (latency, ttft) in stored_sketches(level, tenant.id).items():
            by_model[key[6]].append(latency)
            ttft_by_model[key[6]].append(ttft)
        for model, sketches in by_model.items():
            for values, merged in (
                ([c.latency_ms for c in calls if c.model == model and c.latency_ms is not None], sketches),
                (
                    [c.ttft_ms for c in calls if c.model == model and c.ttft_ms is not None],
                    ttft_by_model[model],
                ),
            ):
                blob = sketch.merge(merged)
                assert sketch.count(blob) == len(values)
                for q, estimate in zip(
                    (0.5, 0.95, 0.99), sketch.quantiles(blob, (0.5, 0.95, 0.99)), strict=True
                ):
                    exact = sketch.exact_quantile(values, q)
                    assert estimate == pytest.approx(exact, rel=0.01), (level, model, q)


@pytest.mark.django_db
def test_late_calls_update_the_buckets_they_fall_in(make_tenant: MakeTenant) -> None:
    tenant = make_tenant()
    rng = random.Random(3)
    start = recent_start()
    mark(tenant.id, random_calls(tenant.org, rng, 800, start, timedelta(hours=30)))
    process_dirty()
    before = stored_sums(CALLS, "day", tenant.id)

    # Spans that arrive hours late, into minutes, hours and days that were already rolled up.
    late = random_calls(tenant.org, rng, 200, start + timedelta(hours=1), timedelta(hours=5))
    mark(tenant.id, late)
    process_dirty()

    assert stored_sums(CALLS, "day", tenant.id) != before
    assert_rollups_match(tenant.id)


@pytest.mark.django_db
def test_deleted_calls_leave_their_buckets(make_tenant: MakeTenant) -> None:
    tenant = make_tenant()
    calls = random_calls(tenant.org, random.Random(5), 300, recent_start(), timedelta(hours=3))
    mark(tenant.id, calls)
    process_dirty()

    gone = calls[:120]  # what the ingest's reconciliation does to a duplicate: delete and mark
    LLMCall.objects.filter(tenant_id=tenant.id, span_id__in=[c.span_id for c in gone]).delete()
    mark(tenant.id, gone)
    process_dirty()

    remaining = assert_rollups_match(tenant.id)
    assert len(remaining) == 180


@pytest.mark.django_db
def test_running_again_changes_nothing(make_tenant: MakeTenant) -> None:
    tenant = make_tenant()
    calls = random_calls(tenant.org, random.Random(9), 1000, recent_start(), timedelta(hours=26))
    mark(tenant.id, calls)
    process_dirty()
    first = snapshot(tenant.id)

    assert process_dirty().days == 0  # nothing marked: nothing to do
    mark(tenant.id, calls)  # every minute marked again, as a replayed export would
    assert process_dirty().days == 2

    assert snapshot(tenant.id) == first


@pytest.mark.django_db
def test_a_run_killed_half_way_leaves_its_work_marked(
    make_tenant: MakeTenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    tenant = make_tenant()
    calls = random_calls(tenant.org, random.Random(13), 600, recent_start(), timedelta(hours=20))
    mark(tenant.id, calls)
    real = rollup._recompute_from_finer

    def dies_at_the_day_level(cursor: Any, family: Any, level: str, *args: Any) -> None:
        if level == "day":
            raise KeyboardInterrupt("worker killed")  # after the minutes and hours were rewritten
        real(cursor, family, level, *args)

    monkeypatch.setattr(rollup, "_recompute_from_finer", dies_at_the_day_level)
    with pytest.raises(KeyboardInterrupt):
        process_dirty()
    monkeypatch.setattr(rollup, "_recompute_from_finer", real)

    assert stored_sums(CALLS, "minute", tenant.id) == {}  # rolled back with the marks it had taken
    run = process_dirty()
    assert run.days == 1
    assert_rollups_match(tenant.id)


@pytest.mark.django_db(transaction=True)
def test_two_workers_at_once_compute_each_day_once_and_correctly(make_tenant: MakeTenant) -> None:
    tenant = make_tenant()
    calls = random_calls(tenant.org, random.Random(17), 4000, recent_start(), timedelta(hours=47))
    mark(tenant.id, calls)
    barrier = threading.Barrier(3)
    runs: list[rollup.RollupRun] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            barrier.wait()
            runs.append(process_dirty())
        except BaseException as exc:  # reported below
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert not errors
    assert sum(run.days for run in runs) == 2  # each (tenant, day) computed by exactly one of them
    assert_rollups_match(tenant.id)


@pytest.mark.django_db
def test_days_past_minute_retention_rebuild_hours_from_raw_rows(make_tenant: MakeTenant) -> None:
    tenant = make_tenant()
    start = truncate(timezone.now() - timedelta(days=12), "day")
    calls = random_calls(tenant.org, random.Random(19), 500, start, timedelta(hours=30))
    mark(tenant.id, calls)

    with override_settings(ROLLUP_MINUTE_RETENTION_DAYS=7):
        process_dirty()

    assert stored_sums(CALLS, "minute", tenant.id) == {}
    assert_rollups_match(tenant.id, levels=("hour", "day"))


@pytest.mark.django_db
def test_retention_drops_whole_raw_partitions_and_keeps_their_rollups(make_tenant: MakeTenant) -> None:
    tenant = make_tenant()
    today = timezone.now().astimezone(UTC).date()
    old_day = today - timedelta(days=45)
    old_start = datetime(old_day.year, old_day.month, old_day.day, tzinfo=UTC)
    old = random_calls(tenant.org, random.Random(23), 400, old_start, timedelta(hours=20))
    recent = random_calls(tenant.org, random.Random(29), 100, recent_start(), timedelta(hours=2))
    mark(tenant.id, old + recent)
    process_dirty()
    kept = {level: stored_sums(CALLS, level, tenant.id) for level in ("hour", "day")}

    with override_settings(RAW_RETENTION_DAYS=30):
        result = maintain(today)

    assert partition_name("usage_llmcall", old_day) in result.dropped
    with connection.cursor() as cursor:
        assert old_day not in existing_days(cursor, "usage_llmcall")
        assert today + timedelta(days=7) in existing_days(cursor, "usage_rollup_minute")
    assert LLMCall.objects.filter(tenant_id=tenant.id).count() == 100
    # The rollups of the dropped day stand, and a late mark for it cannot wipe them.
    mark(tenant.id, old[:5])
    assert process_dirty().discarded == 5
    for level in ("hour", "day"):
        assert stored_sums(CALLS, level, tenant.id) == kept[level]


@pytest.mark.django_db
def test_retention_trims_hour_and_day_rollups(make_tenant: MakeTenant) -> None:
    tenant = make_tenant()
    today = timezone.now().astimezone(UTC).date()
    calls = random_calls(tenant.org, random.Random(31), 50, recent_start(), timedelta(hours=2))
    mark(tenant.id, calls)
    process_dirty()

    with override_settings(ROLLUP_HOUR_RETENTION_DAYS=1, ROLLUP_DAY_RETENTION_DAYS=10):
        maintain(today)

    assert stored_sums(CALLS, "hour", tenant.id) == {}
    assert stored_sums(CALLS, "day", tenant.id) != {}


@pytest.mark.django_db
def test_the_watermark_follows_completed_runs(make_tenant: MakeTenant) -> None:
    tenant = make_tenant()
    calls = random_calls(tenant.org, random.Random(37), 20, recent_start(), timedelta(hours=1))
    before = timezone.now()
    mark(tenant.id, calls)
    process_dirty()

    assert rollup.watermark() is not None
    assert rollup.watermark() >= before


@override_settings(ROLLUP_SETTLE_SECONDS=30, ROLLUP_EAGER_MARKS=8)
def test_a_busy_minute_waits_to_settle_and_a_quiet_one_does_not(make_tenant: MakeTenant) -> None:
    busy, quiet = make_tenant(), make_tenant()
    start = recent_start()
    busy_calls = random_calls(busy.org, random.Random(11), 40, start, timedelta(minutes=1))
    quiet_calls = random_calls(quiet.org, random.Random(12), 5, start, timedelta(minutes=1))
    for call in busy_calls[:10]:  # ten exports into the same minute: busy
        mark(busy.id, [call])
    mark(busy.id, busy_calls[10:])
    mark(quiet.id, quiet_calls)

    process_dirty()  # the busy minute's oldest mark is fresh: it waits; the quiet one is done at once

    assert stored_sums(CALLS, "minute", busy.id) == {}
    assert_rollups_match(quiet.id)
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE usage_rollup_dirty SET marked_at = marked_at - interval '31 s' WHERE tenant_id = %s",
            [busy.id],
        )
    process_dirty()
    assert_rollups_match(busy.id)


def test_settle_zero_takes_every_mark_at_once(make_tenant: MakeTenant) -> None:
    tenant = make_tenant()
    start = recent_start()
    calls = random_calls(tenant.org, random.Random(13), 30, start, timedelta(minutes=1))
    for call in calls:
        mark(tenant.id, [call])

    process_dirty(settle=0)

    assert_rollups_match(tenant.id)
