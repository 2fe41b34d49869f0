"""FOCUS rows (costline.usage.focus): one per day × service × model × project, from the rollups."""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.db import connection

from costline.tenancy.models import Project
from costline.usage.focus import (
    COLUMNS,
    CUSTOM_COLUMNS,
    FOCUS_COLUMNS,
    BillingAccount,
    csv_cells,
    focus_query,
    focus_rows,
)
from costline.usage.metrics import usage
from costline.usage.models import LLMCall, PriceOverride
from costline.usage.pricing import TokenUsage, price_call
from costline.usage.reprice import load_overrides
from costline.usage.rollup import mark_dirty, process_dirty
from tests.conftest import TenantKeys
from tests.platform.usage.factories import NOON, make_call, make_calls
from tests.platform.usage.rollup_checks import random_calls

MakeTenant = Callable[..., TenantKeys]
MARCH = (datetime(2025, 3, 1, tzinfo=UTC), datetime(2025, 4, 1, tzinfo=UTC))

# FOCUS 1.2's mandatory columns (those a dataset must always carry).
MANDATORY = {
    "BilledCost",
    "BillingAccountId",
    "BillingAccountName",
    "BillingCurrency",
    "BillingPeriodEnd",
    "BillingPeriodStart",
    "ChargeCategory",
    "ChargeClass",
    "ChargeDescription",
    "ChargeFrequency",
    "ChargePeriodEnd",
    "ChargePeriodStart",
    "ContractedCost",
    "EffectiveCost",
    "InvoiceIssuerName",
    "ListCost",
    "PricingQuantity",
    "PricingUnit",
    "ProviderName",
    "PublisherName",
    "ServiceCategory",
    "ServiceName",
    "ServiceSubcategory",
}


@pytest.fixture
def tenant(db: None, make_tenant: MakeTenant) -> TenantKeys:
    return make_tenant()


def roll_up(calls: list[LLMCall]) -> None:
    with connection.cursor() as cursor:
        for tenant_id in {c.tenant_id for c in calls}:
            mark_dirty(cursor, tenant_id, [c.start_time for c in calls if c.tenant_id == tenant_id])
    process_dirty()


def export(
    tenant: TenantKeys, start: datetime, end: datetime, time_zone: str = "UTC"
) -> list[dict[str, Any]]:
    """The FOCUS rows of the tenant for [start, end), as the export view builds them."""
    org = tenant.org
    account = BillingAccount(
        id=org.slug,  # type: ignore[attr-defined]
        name=org.name,  # type: ignore[attr-defined]
        time_zone=time_zone,
        projects=dict(Project.objects.filter(organization_id=tenant.id).values_list("slug", "name")),
    )
    result = usage(tenant.id, focus_query(start, end, time_zone))
    return list(focus_rows(result, account, load_overrides(tenant.id)))


def test_columns_are_focus_names_alphabetically_then_custom_ones() -> None:
    assert list(FOCUS_COLUMNS) == sorted(FOCUS_COLUMNS)
    assert list(CUSTOM_COLUMNS) == sorted(CUSTOM_COLUMNS)
    assert all(c.startswith("x_") for c in CUSTOM_COLUMNS)
    assert not any(c.startswith("x_") for c in FOCUS_COLUMNS)
    assert COLUMNS == FOCUS_COLUMNS + CUSTOM_COLUMNS
    assert set(FOCUS_COLUMNS) >= MANDATORY


def test_one_row_per_day_service_model_and_project(tenant: TenantKeys) -> None:
    chat = Project.objects.create(organization=tenant.org, name="Chat", slug="chat")
    next_day = NOON + timedelta(days=1)
    calls = [
        *make_calls(tenant.org, [NOON, NOON + timedelta(hours=1)], service="api", project=chat),
        make_call(tenant.org, service="api"),  # no project
        make_call(tenant.org, service="worker", project=chat),
        make_call(tenant.org, service="api", project=chat, provider="anthropic", model="claude-sonnet-4-5"),
        make_call(tenant.org, service="api", project=chat, start_time=next_day),
    ]
    roll_up(calls)

    rows = export(tenant, *MARCH)

    keys = [(r["ChargePeriodStart"], r["ServiceName"], r["ResourceId"], r["SubAccountId"]) for r in rows]
    day, day2 = datetime(2025, 3, 14, tzinfo=UTC), datetime(2025, 3, 15, tzinfo=UTC)
    project = f"{tenant.org.slug}/chat"  # type: ignore[attr-defined]
    assert keys == [
        (day, "api", "claude-sonnet-4-5", project),
        (day, "api", "gpt-4o", None),
        (day, "api", "gpt-4o", project),
        (day, "worker", "gpt-4o", project),
        (day2, "api", "gpt-4o", project),
    ]
    two_calls = rows[2]
    assert two_calls["x_Requests"] == 2
    assert two_calls["BilledCost"] == Decimal("0.012")
    assert two_calls["ConsumedQuantity"] == two_calls["PricingQuantity"] == 2 * (1200 + 300)
    assert two_calls["SubAccountName"] == "Chat"
    assert two_calls["Tags"] == {
        "costline.project": "chat",
        "costline.provider": "openai",
        "costline.service": "api",
    }
    assert rows[1]["Tags"] == {"costline.provider": "openai", "costline.service": "api"}
    assert rows[1]["SubAccountName"] is None


def test_sums_over_the_rows_equal_the_query_layers_totals(tenant: TenantKeys) -> None:
    calls = random_calls(tenant.org, random.Random(5), 400, NOON - timedelta(days=2), timedelta(days=4))
    roll_up(calls)

    rows = export(tenant, *MARCH)
    totals = usage(tenant.id, focus_query(*MARCH, "UTC")).totals

    assert sum(r["BilledCost"] for r in rows) == totals["cost_usd"]
    assert sum(r["BilledCost"] for r in rows) == sum(c.cost_usd or 0 for c in calls)  # and the raw calls'
    assert sum(r["EffectiveCost"] for r in rows) == totals["cost_usd"]
    assert sum(r["ListCost"] for r in rows) == totals["cost_usd"]  # no overrides: list price billed
    assert sum(r["x_Requests"] for r in rows) == totals["requests"] == len(calls)
    assert sum(r["x_UnpricedRequests"] for r in rows) == totals["unpriced_requests"]
    assert sum(r["x_InputTokens"] for r in rows) == totals["input_tokens"]
    assert sum(r["x_OutputTokens"] for r in rows) == totals["output_tokens"]
    assert sum(r["ConsumedQuantity"] for r in rows) == totals["input_tokens"] + totals["output_tokens"]
    groups = Counter(
        (r["ChargePeriodStart"], r["ServiceName"], r["ResourceId"], r["SubAccountId"], r["ProviderName"])
        for r in rows
    )
    assert max(groups.values()) == 1


def test_days_are_the_organisations_days_written_in_utc(tenant: TenantKeys) -> None:
    # New York: 03:30 UTC on 14 March is still the 13th there (UTC-4 since 9 March, a 23-hour day).
    calls = make_calls(
        tenant.org,
        [
            datetime(2025, 3, 9, 12, tzinfo=UTC),
            datetime(2025, 3, 14, 3, 30, tzinfo=UTC),
            datetime(2025, 3, 14, 4, 30, tzinfo=UTC),
        ],
    )
    roll_up(calls)

    rows = [dict(zip(COLUMNS, csv_cells(r), strict=True)) for r in export(tenant, *MARCH, "America/New_York")]

    periods = [(r["ChargePeriodStart"], r["ChargePeriodEnd"]) for r in rows]
    assert periods == [
        ("2025-03-09T05:00:00Z", "2025-03-10T04:00:00Z"),  # the day clocks went forward
        ("2025-03-13T04:00:00Z", "2025-03-14T04:00:00Z"),
        ("2025-03-14T04:00:00Z", "2025-03-15T04:00:00Z"),
    ]
    assert {(r["BillingPeriodStart"], r["BillingPeriodEnd"]) for r in rows} == {
        ("2025-03-01T05:00:00Z", "2025-04-01T04:00:00Z")
    }


def test_money_is_written_exactly(tenant: TenantKeys) -> None:
    calls = [
        make_call(tenant.org, cost_usd=Decimal("0.000000000001")),
        make_call(tenant.org, cost_usd=Decimal("0.100000000000")),
        make_call(tenant.org, cost_usd=Decimal("0.000000000001"), service="tiny"),
    ]
    roll_up(calls)

    rows = [dict(zip(COLUMNS, csv_cells(r), strict=True)) for r in export(tenant, *MARCH)]

    assert [r["BilledCost"] for r in rows] == ["0.100000000001", "0.000000000001"]
    assert [r["ListCost"] for r in rows] == ["0.100000000001", "0.000000000001"]
    assert not any(
        "E" in r[c] for r in rows for c in ("BilledCost", "ListCost", "EffectiveCost", "ContractedCost")
    )


def test_fixed_values_names_and_nulls(tenant: TenantKeys) -> None:
    calls = [
        make_call(tenant.org, service="api"),
        make_call(
            tenant.org,
            service="api",
            provider="aws.bedrock",
            model="anthropic.claude-3-5-sonnet",
            request_model=None,
        ),
        make_call(
            tenant.org, service="", provider="vllm", model="meta-llama/Llama-3.1-8B-Instruct", cost_usd=None
        ),
    ]
    roll_up(calls)

    rows = {r["SkuId"]: dict(zip(COLUMNS, csv_cells(r), strict=True)) for r in export(tenant, *MARCH)}

    openai = rows["openai/gpt-4o"]
    assert {k: openai[k] for k in ("ProviderName", "PublisherName", "InvoiceIssuerName", "SkuPriceId")} == {
        "ProviderName": "OpenAI",
        "PublisherName": "OpenAI",
        "InvoiceIssuerName": "OpenAI",
        "SkuPriceId": "openai/gpt-4o",
    }
    assert {
        k: openai[k] for k in ("ChargeCategory", "ChargeFrequency", "ChargeClass", "BillingCurrency")
    } == {
        "ChargeCategory": "Usage",
        "ChargeFrequency": "Usage-Based",
        "ChargeClass": "",  # null: not a correction
        "BillingCurrency": "USD",
    }
    assert (openai["ServiceCategory"], openai["ServiceSubcategory"]) == (
        "AI and Machine Learning",
        "Generative AI",
    )
    assert (openai["ConsumedUnit"], openai["PricingUnit"], openai["PricingCategory"]) == (
        "Tokens",
        "Tokens",
        "Standard",
    )
    assert openai["RegionId"] == openai["AvailabilityZone"] == openai["SubAccountId"] == ""
    assert openai["BillingAccountId"] == tenant.org.slug  # type: ignore[attr-defined]
    assert json.loads(openai["Tags"]) == {"costline.provider": "openai", "costline.service": "api"}
    bedrock = rows["aws.bedrock/anthropic.claude-3-5-sonnet"]
    assert (bedrock["ProviderName"], bedrock["PublisherName"]) == ("Amazon Web Services", "Anthropic")
    self_hosted = rows["vllm/meta-llama/Llama-3.1-8B-Instruct"]
    assert (self_hosted["ProviderName"], self_hosted["PublisherName"]) == ("vLLM (self-hosted)", "Meta")
    assert self_hosted["ServiceName"] == "unknown_service"  # OpenTelemetry's name for a nameless service
    assert (self_hosted["BilledCost"], self_hosted["x_UnpricedRequests"]) == ("0.000000000000", "1")


def test_list_cost_is_the_catalogue_price_where_an_override_applied(tenant: TenantKeys) -> None:
    PriceOverride.objects.create(
        tenant=tenant.org,
        model_pattern="gpt-4o",
        effective_from=NOON + timedelta(days=1),
        discount_percent=Decimal(20),
    )
    overrides = load_overrides(tenant.id)
    calls = []
    for start in (NOON, NOON + timedelta(days=1, hours=1), NOON + timedelta(days=1, hours=2)):
        price = price_call(
            provider="openai",
            request_model="gpt-4o",
            response_model=None,
            operation="chat",
            usage=TokenUsage(1000, 100, 200, None, None),
            when=start,
            failed=False,
            overrides=overrides,
        )
        calls.append(
            make_call(
                tenant.org,
                start_time=start,
                input_tokens=1000,
                output_tokens=100,
                cache_read_tokens=200,
                cost_usd=price.cost_usd,
                price_source=price.source,
            )
        )
    roll_up(calls)

    before, after = export(tenant, *MARCH)

    # gpt-4o lists at $2.50 per million input, $1.25 cached, $10 output: 800 + 200 cached + 100 out.
    catalogue = Decimal("0.00200") + Decimal("0.00025") + Decimal("0.00100")
    assert before["BilledCost"] == before["ListCost"] == catalogue
    assert after["ListCost"] == 2 * catalogue
    assert (
        after["BilledCost"]
        == after["EffectiveCost"]
        == after["ContractedCost"]
        == 2 * catalogue * Decimal("0.8")
    )


def test_another_tenants_calls_never_appear(tenant: TenantKeys, make_tenant: MakeTenant) -> None:
    other = make_tenant()
    calls = [
        make_call(tenant.org, service="mine"),
        make_call(other.org, service="theirs", cost_usd=Decimal(5)),
    ]
    roll_up(calls)

    rows = export(tenant, *MARCH)

    assert [r["ServiceName"] for r in rows] == ["mine"]
    assert sum(r["BilledCost"] for r in rows) == Decimal("0.006")


def test_a_range_without_calls_has_no_rows(tenant: TenantKeys) -> None:
    assert export(tenant, *MARCH) == []
