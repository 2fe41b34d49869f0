"""The collector marks what it stores for the rollups; a real worker and beat roll it up in time."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from django.db import connection
from django.test import Client

from costline.usage.models import LLMCall
from costline.usage.rollup import CALLS, process_dirty
from tests.celery_processes import worker_and_beat
from tests.conftest import RunningCollector, TenantKeys
from tests.otlp_builders import chat_attrs, export, span, to_protobuf
from tests.platform.usage.rollup_checks import expected_sums, stored_sums

PROTOBUF = {"Content-Type": "application/x-protobuf"}
MINUTE_NS = 60_000_000_000


@pytest.fixture
def tenant(make_live_tenant: Any) -> TenantKeys:
    return make_live_tenant()  # type: ignore[no-any-return]


def send(collector: RunningCollector, tenant: TenantKeys, body: bytes) -> None:
    response = httpx.post(
        collector.http_url + "/v1/traces", content=body, headers={**PROTOBUF, **tenant.auth}, timeout=30
    )
    assert response.status_code == 200, response.text


def marked_minutes(tenant: TenantKeys) -> set[Any]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT DISTINCT minute FROM usage_rollup_dirty WHERE tenant_id = %s", [tenant.id])
        return {row[0] for row in cursor.fetchall()}


def test_stored_calls_are_marked_and_a_retried_export_counts_once(
    collector: RunningCollector, tenant: TenantKeys
) -> None:
    now = time.time_ns()
    base = now - now % MINUTE_NS - 10 * MINUTE_NS
    spans = [
        span(start_ns=base + i * 20_000_000_000, attrs=chat_attrs(input_tokens=100 * (i + 1)))
        for i in range(6)
    ]
    body = to_protobuf(export(*spans))
    send(collector, tenant, body)

    assert len(marked_minutes(tenant)) == 2  # six calls, 20 s apart: two minutes
    process_dirty()
    assert marked_minutes(tenant) == set()
    calls = list(LLMCall.objects.filter(tenant_id=tenant.id))
    assert stored_sums(CALLS, "minute", tenant.id) == expected_sums(CALLS, "minute", calls)
    before = stored_sums(CALLS, "day", tenant.id)

    send(collector, tenant, body)  # the exporter retries: nothing new is stored, nothing counted twice
    process_dirty()
    assert stored_sums(CALLS, "day", tenant.id) == before
    assert sum(row[0] for row in before.values()) == 6


# --- A real worker and beat ------------------------------------------------------------------------


@pytest.mark.slow
def test_a_call_shows_in_the_usage_api_within_a_minute(
    collector: RunningCollector, tenant: TenantKeys, client: Client, tmp_path: Path
) -> None:
    with worker_and_beat(tmp_path, queues="rollups", concurrency=2) as log:
        time.sleep(2)  # let beat send its first tick
        sent = time.monotonic()
        send(
            collector,
            tenant,
            to_protobuf(
                export(*[span(attrs=chat_attrs(input_tokens=1000, output_tokens=10)) for _ in range(3)])
            ),
        )
        requests = 0
        while time.monotonic() - sent < 60:
            body = client.get(
                "/api/v1/usage", {"metrics": "requests,input_tokens,cost_usd"}, headers=tenant.api_auth
            ).json()
            requests = body["totals"]["requests"]
            if requests == 3:
                break
            time.sleep(0.5)
        waited = time.monotonic() - sent
        assert requests == 3, log.read_text(errors="replace")[-3000:]
    assert waited < 60
    assert body["totals"]["input_tokens"] == 3000
    stored = sum(c.cost_usd for c in LLMCall.objects.filter(tenant_id=tenant.id))
    assert body["totals"]["cost_usd"] == f"{stored:f}"
    assert "costline.usage.rollup_tick" in log.read_text()
