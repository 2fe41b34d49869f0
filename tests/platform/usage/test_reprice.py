"""A price override added, changed or removed re-prices the stored calls and rebuilds their rollups."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import connection
from django.utils import timezone

from costline.usage.models import LLMCall, PriceOverride, RepriceRequest, WorkerState
from costline.usage.pricing import CATALOGUE_VERSION, TokenUsage, price_call
from costline.usage.reprice import CATALOGUE_KEY, check_catalogue, process_reprice_requests
from costline.usage.rollup import CALLS, mark_dirty, process_dirty
from tests.conftest import TenantKeys
from tests.platform.usage.factories import make_calls
from tests.platform.usage.rollup_checks import stored_sums, truncate

MakeTenant = Callable[..., TenantKeys]


def catalogue_cost(call: LLMCall) -> Decimal:
    price = price_call(
        provider=call.provider,
        request_model=call.request_model,
        response_model=call.response_model,
        operation=call.operation,
        usage=TokenUsage(call.input_tokens, call.output_tokens),
        when=call.start_time,
        failed=False,
    )
    assert price.cost_usd is not None
    return price.cost_usd


def rollup_cost(tenant: TenantKeys) -> Decimal:
    return sum((sums[8] for sums in stored_sums(CALLS, "day", tenant.id).values()), Decimal(0))


@pytest.fixture
def tenant(db: None, make_tenant: MakeTenant) -> TenantKeys:
    return make_tenant()


@pytest.fixture
def calls(tenant: TenantKeys) -> list[LLMCall]:
    """Ten gpt-4o calls yesterday, priced from the catalogue and rolled up."""
    start = truncate(timezone.now() - timedelta(days=1), "day") + timedelta(hours=9)
    made = make_calls(
        tenant.org,
        [start + timedelta(minutes=7 * i) for i in range(10)],
        input_tokens=10_000,
        output_tokens=1000,
    )
    for call in made:
        call.cost_usd = catalogue_cost(call)
        call.save(update_fields=["cost_usd"])
    with connection.cursor() as cursor:
        mark_dirty(cursor, tenant.id, [c.start_time for c in made])
    process_dirty()
    return made


def reprice_now() -> None:
    process_reprice_requests(settle_seconds=0)
    process_dirty()


def test_an_override_reprices_calls_from_its_start_and_rebuilds_rollups(
    tenant: TenantKeys, calls: list[LLMCall]
) -> None:
    listed = sum(catalogue_cost(c) for c in calls)
    assert rollup_cost(tenant) == listed

    PriceOverride.objects.create(
        tenant=tenant.org,
        model_pattern="gpt-4o*",
        effective_from=calls[5].start_time,
        discount_percent=Decimal(20),
    )
    assert RepriceRequest.objects.filter(tenant=tenant.org).count() == 1
    reprice_now()

    stored = {c.span_id: c for c in LLMCall.objects.filter(tenant_id=tenant.id)}
    for i, call in enumerate(calls):
        expected = catalogue_cost(call) * (Decimal("0.8") if i >= 5 else 1)
        assert stored[call.span_id].cost_usd == expected
        assert stored[call.span_id].price_source == ("override" if i >= 5 else "catalogue")
    assert rollup_cost(tenant) == sum(c.cost_usd for c in stored.values())
    assert rollup_cost(tenant) < listed
    assert not RepriceRequest.objects.filter(tenant=tenant.org).exists()


def test_changing_and_removing_an_override_reprices_again(tenant: TenantKeys, calls: list[LLMCall]) -> None:
    listed = rollup_cost(tenant)
    override = PriceOverride.objects.create(
        tenant=tenant.org,
        model_pattern="gpt-4o",
        effective_from=calls[8].start_time,
        input_per_mtok=Decimal(1),
        output_per_mtok=Decimal(2),
    )
    reprice_now()
    # Moved earlier: the calls between the old and the new start are re-priced too.
    override.effective_from = calls[0].start_time
    override.save()
    reprice_now()
    assert rollup_cost(tenant) == Decimal(10) * (Decimal("0.01") + Decimal("0.002"))

    override.delete()
    reprice_now()
    assert rollup_cost(tenant) == listed


def test_repricing_again_changes_nothing(tenant: TenantKeys, calls: list[LLMCall]) -> None:
    PriceOverride.objects.create(
        tenant=tenant.org, model_pattern="*", effective_from=calls[0].start_time, discount_percent=Decimal(50)
    )
    reprice_now()
    RepriceRequest.objects.create(tenant=tenant.org, since=calls[0].start_time, reason="again")
    run = process_reprice_requests(settle_seconds=0)
    assert run.calls_seen == 10
    assert run.calls_changed == 0


def test_requests_wait_until_collectors_have_the_new_prices(tenant: TenantKeys, calls: list[LLMCall]) -> None:
    PriceOverride.objects.create(
        tenant=tenant.org, model_pattern="*", effective_from=calls[0].start_time, discount_percent=Decimal(50)
    )
    before = rollup_cost(tenant)
    process_reprice_requests()  # the request is younger than the settle time: it waits
    process_dirty()
    assert RepriceRequest.objects.filter(tenant=tenant.org).exists()
    assert rollup_cost(tenant) == before


def test_a_new_price_catalogue_reprices_every_tenant(tenant: TenantKeys) -> None:
    WorkerState.objects.filter(key=CATALOGUE_KEY).delete()
    assert check_catalogue() is False  # the first look only records the version
    assert check_catalogue() is False
    WorkerState.objects.filter(key=CATALOGUE_KEY).update(value="genai-prices 0.0.1")
    assert check_catalogue() is True
    request = RepriceRequest.objects.get(tenant=tenant.org)
    assert CATALOGUE_VERSION in request.reason
    assert WorkerState.objects.get(key=CATALOGUE_KEY).value == CATALOGUE_VERSION
