"""Calls are attributed to projects and priced with the tenant's own overrides."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import httpx
import pytest

from costline.tenancy.actions import issue_ingest_key
from costline.tenancy.models import Project
from costline.usage.models import LLMCall, PriceOverride
from tests.conftest import RunningCollector, TenantKeys
from tests.otlp_builders import chat_attrs, export, span, to_json


def send(collector: RunningCollector, key: str, request: dict[str, Any]) -> None:
    response = httpx.post(
        collector.http_url + "/v1/traces",
        content=to_json(request),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {key}"},
    )
    assert response.status_code == 200, response.text


def committed(work: Any) -> Any:
    """Run ORM writes on a connection of their own, so the collector sees them at once."""

    def run() -> Any:
        from django.db import connections

        try:
            return work()
        finally:
            connections.close_all()

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(run).result()


@pytest.fixture
def tenant(make_live_tenant: Any, collector: RunningCollector) -> TenantKeys:
    keys: TenantKeys = make_live_tenant()
    collector.sink.forget_tenant_context(keys.id)  # type: ignore[attr-defined]
    return keys


def test_a_costline_project_attribute_names_the_project_and_creates_it(
    collector: RunningCollector, tenant: TenantKeys
) -> None:
    send(
        collector,
        tenant.ingest_key,
        export(span(attrs=chat_attrs()), resource={"costline.project": "billing"}),
    )

    (call,) = LLMCall.objects.filter(tenant_id=tenant.id)
    project = Project.objects.get(id=call.project_id)
    assert (project.slug, project.organization_id) == ("billing", tenant.id)


def test_an_ingest_key_bound_to_a_project_attributes_its_calls(
    collector: RunningCollector, tenant: TenantKeys
) -> None:
    project = committed(lambda: Project.objects.create(organization=tenant.org, name="Search", slug="search"))
    key = committed(lambda: issue_ingest_key(tenant.org, "search key", project=project).plaintext)  # type: ignore[arg-type]

    send(collector, key, export(span(attrs=chat_attrs())))

    assert LLMCall.objects.get(tenant_id=tenant.id).project_id == project.id


def test_a_service_pattern_maps_calls_to_a_project(collector: RunningCollector, tenant: TenantKeys) -> None:
    project = committed(
        lambda: Project.objects.create(
            organization=tenant.org, name="Agents", slug="agents", service_patterns=["agent-*"]
        )
    )
    collector.sink.forget_tenant_context(tenant.id)  # type: ignore[attr-defined]

    send(collector, tenant.ingest_key, export(span(attrs=chat_attrs()), service="agent-planner"))
    send(collector, tenant.ingest_key, export(span(attrs=chat_attrs()), service="checkout"))

    by_service = dict(LLMCall.objects.filter(tenant_id=tenant.id).values_list("service", "project_id"))
    assert by_service == {"agent-planner": project.id, "checkout": None}


def test_a_price_override_takes_precedence_over_the_catalogue(
    collector: RunningCollector, tenant: TenantKeys
) -> None:
    committed(
        lambda: PriceOverride.objects.create(
            tenant=tenant.org,
            model_pattern="gpt-4o-mini*",
            effective_from=datetime(2020, 1, 1, tzinfo=UTC),
            input_per_mtok=Decimal("0.10"),
            output_per_mtok=Decimal("0.40"),
            note="negotiated rate",
        )
    )
    collector.sink.forget_tenant_context(tenant.id)  # type: ignore[attr-defined]

    send(
        collector,
        tenant.ingest_key,
        export(span(attrs=chat_attrs(input_tokens=1_000_000, output_tokens=500_000))),
    )

    (call,) = LLMCall.objects.filter(tenant_id=tenant.id)
    assert call.cost_usd == Decimal("0.10") + Decimal("0.20")
    assert call.price_source == "override"


def test_the_emitters_own_cost_is_kept_beside_costlines(
    collector: RunningCollector, tenant: TenantKeys
) -> None:
    attrs = chat_attrs(input_tokens=1000, output_tokens=100, **{"gen_ai.usage.cost": 0.00021})

    send(collector, tenant.ingest_key, export(span(attrs=attrs), scope="openlit.instrumentation.openai"))

    (call,) = LLMCall.objects.filter(tenant_id=tenant.id)
    assert call.emitter_cost_usd == Decimal("0.00021")
    assert call.cost_usd == Decimal("0.00015") + Decimal("0.00006")
