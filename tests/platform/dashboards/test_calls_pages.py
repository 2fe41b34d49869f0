"""The Calls pages: /o/<slug>/calls/ (the call explorer) and /o/<slug>/calls/<trace>/<span>/ (a call)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from django.utils import timezone

from costline.tenancy.models import Project, Role
from costline.usage.models import LLMCall, PriceOverride, TraceRoot
from costline.usage.pricing import TokenUsage, price_call
from costline.usage.reprice import load_overrides
from tests.platform.dashboards.conftest import Member, roll_up
from tests.platform.dashboards.html_tables import table_rows, text_of
from tests.platform.usage.factories import NOON, make_call, make_calls

SignIn = Callable[..., Member]
THAT_DAY = {"from": "2025-03-14", "to": "2025-03-14"}  # NOON's day, where the factories put calls


def listed(member: Member, **params: Any) -> list[tuple[str, str]]:
    """(trace id, span id) of each row of the Calls page, top to bottom."""
    response = member.client.get(member.url("calls/"), {**THAT_DAY, **params})
    assert response.status_code == 200, response.content
    return [
        (r.attrs["data-trace-id"], r.attrs["data-span-id"]) for r in table_rows(response.text, "calls-table")
    ]


def ids(*calls: LLMCall) -> list[tuple[str, str]]:
    return [(c.trace_id, c.span_id) for c in calls]


def priced_call(org: Any, overrides: list[Any] | None = None, **fields: Any) -> LLMCall:
    """A call stored as the collector stores it: priced by pricing.py with the tenant's overrides."""
    call = LLMCall(tenant=org, **{"start_time": NOON, **fields})
    price = price_call(
        provider=fields.get("provider", "openai"),
        request_model=fields.get("request_model", "gpt-4o"),
        response_model=fields.get("response_model", "gpt-4o-2024-08-06"),
        operation=fields.get("operation", "chat"),
        usage=TokenUsage(
            fields.get("input_tokens", 1200),
            fields.get("output_tokens", 300),
            fields.get("cache_read_tokens"),
            fields.get("cache_write_tokens"),
            fields.get("reasoning_tokens"),
        ),
        when=call.start_time,
        failed=fields.get("status") == "error",
        overrides=overrides or [],
    )
    return make_call(
        org,
        **{
            "model": price.model,
            "cost_usd": price.cost_usd,
            "cache_savings_usd": price.cache_savings_usd,
            "price_source": price.source,
            "price_version": price.version,
            **fields,
        },
    )


def breakdown_costs(html: str) -> dict[str, Decimal]:
    """Token kind → cost, as the page's #cost-breakdown shows them."""
    rows = table_rows(html, "cost-breakdown")
    return {
        r.attrs["data-kind"]: Decimal(r.cells[3].replace("$", "")) for r in rows if "data-kind" in r.attrs
    }


def breakdown_total(html: str) -> Decimal:
    """The total under #cost-breakdown."""
    marker = 'data-total="'
    start = html.index(marker) + len(marker)
    return Decimal(html[start : html.index('"', start)].lstrip("$"))


# --- The list ---------------------------------------------------------------------------------------


def test_it_lists_the_last_24_hours_newest_first_by_default(sign_in: SignIn) -> None:
    member = sign_in()
    now = timezone.now()
    old, middle, new = make_calls(
        member.org, [now - timedelta(hours=20), now - timedelta(hours=2), now - timedelta(minutes=5)]
    )
    make_call(member.org, start_time=now - timedelta(hours=30))  # before the last 24 hours

    response = member.client.get(member.url("calls/"))

    assert response.status_code == 200
    rows = table_rows(response.text, "calls-table")
    assert [(r.attrs["data-trace-id"], r.attrs["data-span-id"]) for r in rows] == ids(new, middle, old)
    assert 'aria-pressed="true"' in response.text.split('value="24h"')[1][:40]


def test_each_row_shows_the_call_and_links_to_its_page(sign_in: SignIn) -> None:
    member = sign_in(time_zone="Europe/Paris")
    call = make_call(
        member.org,
        service="support-bot",
        feature="POST /chat",
        input_tokens=1200,
        output_tokens=300,
        cost_usd=Decimal("0.006000000000"),
        latency_ms=812.5,
        ttft_ms=95.25,
        user_id="user-42",
        status="error",
        error_type="RateLimitError",
    )

    response = member.client.get(member.url("calls/"), THAT_DAY)

    (row,) = table_rows(response.text, "calls-table")
    # 12:00 UTC is 13:00 in Paris (CET) on 14 March.
    assert row.cells == [
        "2025-03-14 13:00:00.000",
        "support-bot",
        "POST /chat",
        "gpt-4o",
        "1,200",
        "300",
        "$0.006",
        "812 ms",
        "95.2 ms",
        "Error RateLimitError",
        "user-42",
    ]
    assert row.links[0] == f"/o/{member.org.slug}/calls/{call.trace_id}/{call.span_id}/"


def test_an_unpriced_call_says_so_instead_of_showing_zero(sign_in: SignIn) -> None:
    member = sign_in()
    make_call(member.org, cost_usd=None, price_source=None, price_version=None, model="my-finetune")

    (row,) = table_rows(member.client.get(member.url("calls/"), THAT_DAY).text, "calls-table")

    assert row.cells[6] == "unpriced"


FILTER_CASES = [
    ("service", "billing-api", {"service": "billing-api"}),
    ("provider", "anthropic", {"provider": "anthropic", "model": "claude-sonnet-4-5"}),
    (
        "model",
        "gpt-4o-mini",
        {"model": "gpt-4o-mini", "request_model": "gpt-4o-mini", "response_model": None},
    ),
    ("feature", "POST /summarise", {"feature": "POST /summarise"}),
    ("user", "user-7", {"user_id": "user-7"}),
    ("session", "session-1", {"session_id": "session-1"}),
    ("status", "error", {"status": "error", "error_type": "APIConnectionError"}),
    ("trace_id", "AB" * 16, {"trace_id": "ab" * 16}),  # ids are matched whatever their case
    ("min_cost", "0.5", {"cost_usd": Decimal("0.750000000000")}),
]


@pytest.mark.parametrize(("param", "value", "fields"), FILTER_CASES, ids=[c[0] for c in FILTER_CASES])
def test_each_filter_narrows_the_list(
    sign_in: SignIn, param: str, value: str, fields: dict[str, Any]
) -> None:
    member = sign_in()
    make_call(member.org, start_time=NOON + timedelta(minutes=1))  # the factory's usual call
    wanted = make_call(member.org, **fields)

    assert listed(member, **{param: value}) == ids(wanted)


def test_it_filters_by_project_slug(sign_in: SignIn) -> None:
    member = sign_in()
    chat = Project.objects.create(organization=member.org, name="Chat", slug="chat")
    make_call(member.org)
    wanted = make_call(member.org, project=chat)

    assert listed(member, project="chat") == ids(wanted)
    assert listed(member, project="no-such-project") == []


def test_filters_combine_and_blank_fields_are_ignored(sign_in: SignIn) -> None:
    member = sign_in()
    wanted = make_call(member.org, service="a", status="error")
    make_call(member.org, service="a", status="ok")
    make_call(member.org, service="b", status="error")

    # A submitted form sends every field, the unused ones empty.
    assert listed(member, service="a", status="error", model="", user="", min_cost="") == ids(wanted)


def test_older_links_walk_every_call_once_and_keep_the_filters(sign_in: SignIn) -> None:
    member = sign_in()
    # Same instant for pairs of calls: the order must still be total across page boundaries.
    starts = [NOON + timedelta(seconds=i // 2) for i in range(120)]
    calls = make_calls(member.org, starts, service="chat")
    make_calls(member.org, starts[:10], service="other")

    url = member.url("calls/") + "?from=2025-03-14&to=2025-03-14&service=chat"
    seen: list[tuple[str, str]] = []
    pages = 0
    while url:
        response = member.client.get(url)
        assert response.status_code == 200
        seen += [
            (r.attrs["data-trace-id"], r.attrs["data-span-id"])
            for r in table_rows(response.text, "calls-table")
        ]
        pages += 1
        older = response.text.split('id="calls-older" rel="next" href="')
        url = older[1].split('"')[0].replace("&amp;", "&") if len(older) > 1 else ""
        if url:
            assert parse_qs(urlsplit(url).query)["service"] == ["chat"]

    assert pages == 3  # 50 + 50 + 20
    expected = sorted(calls, key=lambda c: (c.start_time, c.trace_id, c.span_id), reverse=True)
    assert seen == ids(*expected)


def test_an_empty_result_names_the_active_filters_and_how_to_clear_them(sign_in: SignIn) -> None:
    member = sign_in()
    make_call(member.org, service="chat")

    response = member.client.get(member.url("calls/"), {**THAT_DAY, "service": "billing", "status": "error"})

    assert response.status_code == 200
    assert 'id="calls-table"' not in response.text
    empty = text_of(response.text, "id", "calls-empty")
    assert empty is not None
    assert "No calls match these filters" in empty
    assert "Service = billing" in empty
    assert "Status = error" in empty
    assert "Clear the filters" in empty
    assert f'href="/o/{member.org.slug}/calls/?from=2025-03-14&amp;to=2025-03-14"' in response.text


def test_an_empty_range_points_to_ingest_keys(sign_in: SignIn) -> None:
    member = sign_in()

    response = member.client.get(member.url("calls/"), THAT_DAY)

    empty = text_of(response.text, "id", "calls-empty") or ""
    assert "No calls in this range" in empty
    assert f'href="/o/{member.org.slug}/settings/ingest-keys/"' in response.text


def test_the_csv_link_keeps_the_range_and_filters(sign_in: SignIn) -> None:
    member = sign_in()
    make_call(member.org)

    response = member.client.get(member.url("calls/"), {**THAT_DAY, "service": "support-bot"})

    href = response.text.split('id="calls-csv" class="button" href="')[1].split('"')[0].replace("&amp;", "&")
    assert urlsplit(href).path == member.url("calls/export.csv")
    assert parse_qs(urlsplit(href).query) == {
        "from": ["2025-03-14"],
        "to": ["2025-03-14"],
        "service": ["support-bot"],
    }


def test_filter_choices_are_the_values_seen_in_the_range(sign_in: SignIn) -> None:
    member = sign_in()
    calls = [make_call(member.org, service="chat"), make_call(member.org, service="search")]
    roll_up(calls)

    response = member.client.get(member.url("calls/"), THAT_DAY)

    service_select = response.text.split('<select name="service">')[1].split("</select>")[0]
    assert '<option value="chat"' in service_select
    assert '<option value="search"' in service_select


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"trace_id": "xyz"}, "32 hexadecimal digits"),
        ({"status": "maybe"}, "status must be ok or error"),
        ({"min_cost": "a lot"}, "amount in dollars"),
        ({"cursor": "tampered"}, "invalid cursor"),
        ({"range": "forever"}, "Unknown range"),
    ],
)
def test_a_bad_parameter_is_answered_400_with_what_to_fix(
    sign_in: SignIn, params: dict[str, str], message: str
) -> None:
    member = sign_in()

    response = member.client.get(member.url("calls/"), params)

    assert response.status_code == 400
    assert message in response.text


def test_it_lists_only_the_organisations_own_calls(sign_in: SignIn) -> None:
    member, other = sign_in(), sign_in()
    mine = make_call(member.org)
    make_call(other.org)

    assert listed(member) == ids(mine)


def test_another_organisations_slug_is_404(sign_in: SignIn) -> None:
    member, other = sign_in(), sign_in()
    call = make_call(other.org)

    assert member.client.get(other.url("calls/")).status_code == 404
    assert member.client.get(other.url(f"calls/{call.trace_id}/{call.span_id}/")).status_code == 404
    assert member.client.get("/o/no-such-org/calls/").status_code == 404


def test_signed_out_visitors_are_sent_to_sign_in(client: Any, sign_in: SignIn) -> None:
    member = sign_in()

    response = client.get(member.url("calls/"))

    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")


# --- A call -----------------------------------------------------------------------------------------


def test_a_call_shows_every_stored_field(sign_in: SignIn) -> None:
    member = sign_in(time_zone="America/New_York")
    project = Project.objects.create(organization=member.org, name="Support", slug="support")
    call = make_call(
        member.org,
        parent_span_id="00f067aa0ba902b7",
        service="support-bot",
        environment="production",
        project=project,
        feature="POST /chat",
        feature_source="root",
        user_id="user-42",
        session_id="session-9",
        tags={"team": "care"},
        provider="openai",
        operation="chat",
        request_model="gpt-4o",
        response_model="gpt-4o-2024-08-06",
        model="gpt-4o",
        input_tokens=1200,
        output_tokens=300,
        cache_read_tokens=200,
        cache_write_tokens=0,
        reasoning_tokens=12,
        cost_usd=Decimal("0.005750000000"),
        cache_savings_usd=Decimal("0.000250000000"),
        emitter_cost_usd=Decimal("0.006000000000"),
        price_source="genai-prices",
        price_version="genai-prices 0.2.3",
        latency_ms=812.5,
        ttft_ms=95.0,
        streaming=True,
        status="ok",
        finish_reason="stop",
        response_id="chatcmpl-123",
        request_id="req-456",
        emitter="opentelemetry.instrumentation.openai_v2",
        emitter_kind="otel",
    )

    response = member.client.get(member.url(f"calls/{call.trace_id}/{call.span_id}/"))

    assert response.status_code == 200
    html = response.text
    assert 'id="call-detail"' in html

    def shown(name: str) -> str:
        value = text_of(html, "data-field", name)
        assert value is not None, f"the page does not show {name}"
        return value

    # Every concrete field of the model is on the page (the tenant is the page's organisation).
    for model_field in LLMCall._meta.concrete_fields:
        if model_field.name not in ("tenant", "pk"):
            shown(model_field.name)
    assert shown("trace_id") == call.trace_id
    assert shown("start_time") == "2025-03-14 08:00:00.000 America/New_York (2025-03-14T12:00:00.000000Z)"
    assert shown("project") == "Support (support)"
    assert shown("feature") == "POST /chat"
    assert shown("feature_source") == "root span of the trace"
    assert shown("tags") == '{ "team": "care" }'
    assert shown("cost_usd") == "$0.00575"
    assert shown("emitter_cost_usd") == "$0.006"
    assert shown("latency_ms") == "812.5 ms"
    assert shown("streaming") == "yes"
    assert shown("emitter") == "opentelemetry.instrumentation.openai_v2"
    assert shown("request_id") == "req-456"


def test_the_trace_lists_every_call_of_the_trace_with_its_root(sign_in: SignIn) -> None:
    member = sign_in()
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    first, this, last = make_calls(
        member.org, [NOON, NOON + timedelta(seconds=2), NOON + timedelta(seconds=5)], trace_id=trace_id
    )
    make_call(member.org)  # another trace
    other = sign_in()
    make_call(other.org, trace_id=trace_id)  # the same trace id in another organisation
    TraceRoot.objects.create(
        tenant=member.org,
        trace_id=trace_id,
        start_time=NOON - timedelta(seconds=1),
        feature="POST /agent",
        user_id="user-1",
        session_id="session-1",
    )

    response = member.client.get(member.url(f"calls/{trace_id}/{this.span_id}/"))

    rows = table_rows(response.text, "trace-calls")
    assert [r.attrs["data-span-id"] for r in rows] == [first.span_id, this.span_id, last.span_id]
    assert [r.attrs.get("aria-current") for r in rows] == [None, "true", None]
    assert rows[0].links[0] == member.url(f"calls/{trace_id}/{first.span_id}/")
    assert rows[1].links == []  # this call: no link to itself
    root = text_of(response.text, "class", "fields trace-root") or ""
    assert "POST /agent" in root
    assert "user-1" in root
    assert "session-1" in root


def test_another_organisations_call_and_unknown_ids_are_404(sign_in: SignIn) -> None:
    member, other = sign_in(), sign_in()
    theirs = make_call(other.org)
    mine = make_call(member.org)

    assert member.client.get(member.url(f"calls/{theirs.trace_id}/{theirs.span_id}/")).status_code == 404
    assert member.client.get(member.url(f"calls/{mine.trace_id}/{'0' * 16}/")).status_code == 404
    assert member.client.get(member.url(f"calls/{'0' * 32}/{mine.span_id}/")).status_code == 404
    assert member.client.get(member.url(f"calls/{mine.trace_id}/{mine.span_id}/")).status_code == 200


# --- A call's cost breakdown --------------------------------------------------------------------------


def test_the_breakdown_of_a_catalogue_priced_call_sums_exactly_to_its_cost(sign_in: SignIn) -> None:
    member = sign_in()
    call = priced_call(
        member.org, input_tokens=1200, output_tokens=300, cache_read_tokens=200, reasoning_tokens=40
    )

    response = member.client.get(member.url(f"calls/{call.trace_id}/{call.span_id}/"))

    costs = breakdown_costs(response.text)
    # gpt-4o: $2.50 per million input, $1.25 cache read, $10 output.
    assert costs == {
        "input_tokens": Decimal("0.002500000000"),
        "cache_read_tokens": Decimal("0.000250000000"),
        "output_tokens": Decimal("0.003000000000"),
    }
    assert sum(costs.values()) == call.cost_usd == breakdown_total(response.text)
    rows = {
        r.attrs["data-kind"]: r.cells
        for r in table_rows(response.text, "cost-breakdown")
        if "data-kind" in r.attrs
    }
    assert rows["input_tokens"][1:3] == ["1,000", "$2.50 / 1M tokens"]
    assert "includes 40 reasoning tokens" in rows["output_tokens"][0]
    assert "public price catalogue (genai-prices)" in response.text
    assert 'id="price-changed"' not in response.text


def test_the_breakdown_of_an_override_priced_call_names_the_override(sign_in: SignIn) -> None:
    member = sign_in()
    PriceOverride.objects.create(
        tenant=member.org,
        model_pattern="gpt-4o*",
        effective_from=NOON - timedelta(days=30),
        input_per_mtok=Decimal("1.1"),
        output_per_mtok=Decimal("3.3"),
    )
    call = priced_call(
        member.org, load_overrides(member.org.id), input_tokens=1234, output_tokens=567, cache_read_tokens=34
    )

    response = member.client.get(member.url(f"calls/{call.trace_id}/{call.span_id}/"))

    costs = breakdown_costs(response.text)
    assert call.price_source == "override"
    assert sum(costs.values()) == call.cost_usd
    # Cache reads without an override price of their own fall back to the catalogue's ($1.25).
    assert costs["cache_read_tokens"] == Decimal("34") * Decimal("1.25") / 1_000_000
    assert "your price override" in response.text
    assert "gpt-4o*" in response.text
    assert f'href="/o/{member.org.slug}/settings/price-overrides/"' in response.text


def test_a_cost_priced_before_a_price_change_shows_both_and_why(sign_in: SignIn) -> None:
    member = sign_in()
    call = priced_call(member.org)  # catalogue price
    # Saving an override asks for re-pricing; until the worker runs, the stored cost is the old one.
    PriceOverride.objects.create(
        tenant=member.org,
        model_pattern="gpt-4o",
        effective_from=NOON - timedelta(days=1),
        discount_percent=Decimal(50),
    )

    response = member.client.get(member.url(f"calls/{call.trace_id}/{call.span_id}/"))

    changed = text_of(response.text, "id", "price-changed") or ""
    assert "Stored cost $0.006; today's prices give $0.003." in changed
    assert "waiting to be applied" in changed
    assert breakdown_total(response.text) == call.cost_usd / 2
    assert "50% off the catalogue price" in response.text


def test_a_gateway_cache_hit_shows_what_it_saved_and_a_zero_total(sign_in: SignIn) -> None:
    member = sign_in()
    full = priced_call(member.org, input_tokens=1000, output_tokens=100)  # $0.0025 + $0.001
    hit = make_call(
        member.org,
        model=full.model,
        cost_usd=Decimal(0),
        cache_savings_usd=full.cost_usd,
        price_source="gateway_cache",
        price_version=full.price_version,
        input_tokens=1000,
        output_tokens=100,
    )

    response = member.client.get(member.url(f"calls/{hit.trace_id}/{hit.span_id}/"))

    costs = breakdown_costs(response.text)
    assert costs["input_tokens"] + costs["output_tokens"] == full.cost_usd
    assert costs["gateway_cache"] == -full.cost_usd
    assert breakdown_total(response.text) == 0
    assert 'id="price-changed"' not in response.text
    assert "the gateway answered from its cache" in response.text


def test_a_self_hosted_call_shows_its_share_of_the_deployment(sign_in: SignIn) -> None:
    member = sign_in()
    call = make_call(
        member.org,
        provider="vllm",
        model="smollm2-135m-instruct",
        request_model="smollm2-135m-instruct",
        response_model="smollm2-135m-instruct",
        cost_usd=Decimal("0.000012345678"),
        prefill_cost_usd=Decimal("0.000002345678"),
        price_source="self_hosted",
        price_version="deployment:1:0.08/h",
    )

    response = member.client.get(member.url(f"calls/{call.trace_id}/{call.span_id}/"))

    assert breakdown_costs(response.text) == {
        "prefill_time": Decimal("0.000002345678"),
        "decode_time": Decimal("0.00001"),
    }
    assert breakdown_total(response.text) == call.cost_usd
    assert 'id="price-changed"' not in response.text
    assert 'id="unpriced-reason"' not in response.text
    assert f'href="/o/{member.org.slug}/settings/deployments/"' in response.text


def test_an_unpriced_call_explains_why_and_links_to_price_overrides(sign_in: SignIn) -> None:
    member = sign_in()
    call = make_call(
        member.org,
        provider="vllm",
        model="meta-llama/Llama-3.1-8B-Instruct",
        request_model="meta-llama/Llama-3.1-8B-Instruct",
        response_model=None,
        cost_usd=None,
        price_source=None,
        price_version=None,
    )

    response = member.client.get(member.url(f"calls/{call.trace_id}/{call.span_id}/"))

    reason = text_of(response.text, "id", "unpriced-reason") or ""
    assert "This call is unpriced" in reason
    assert "self-hosted models, which have no list price" in reason
    assert f'href="/o/{member.org.slug}/settings/price-overrides/"' in response.text
    assert table_rows(response.text, "cost-breakdown")[0].cells == ["Unpriced: no cost to break down."]


def test_the_emitters_own_cost_claim_is_shown_beside(sign_in: SignIn) -> None:
    member = sign_in()
    call = priced_call(member.org, emitter_cost_usd=Decimal("0.007"))

    response = member.client.get(member.url(f"calls/{call.trace_id}/{call.span_id}/"))

    assert "Cost the emitter reported" in response.text
    assert "$0.007" in response.text
    assert "(emitter minus Costline: $0.001)" in response.text


def test_viewers_may_read_calls(sign_in: SignIn) -> None:
    member = sign_in(role=Role.VIEWER)
    call = make_call(member.org)

    assert member.client.get(member.url("calls/"), THAT_DAY).status_code == 200
    assert member.client.get(member.url(f"calls/{call.trace_id}/{call.span_id}/")).status_code == 200


def test_custom_dates_are_days_in_the_organisations_zone(sign_in: SignIn) -> None:
    member = sign_in(time_zone="Asia/Tokyo")
    make_call(member.org, start_time=datetime(2025, 3, 14, 20, 0, tzinfo=UTC))  # 15 March 05:00 in Tokyo

    assert listed(member, **{"from": "2025-03-15", "to": "2025-03-15"}) != []
    assert listed(member, **{"from": "2025-03-14", "to": "2025-03-14"}) == []
