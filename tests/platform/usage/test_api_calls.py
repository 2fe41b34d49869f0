"""GET /api/v1/calls: a tenant's LLM calls, newest first, a page at a time."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from costline.tenancy.actions import revoke_api_token
from costline.tenancy.models import ApiToken, Membership, Project, User
from costline.usage.calls import CallFilters, Cursor, calls_for
from costline.usage.models import LLMCall
from tests.conftest import TenantKeys
from tests.platform.usage.factories import NOON, make_call, make_calls

URL = "/api/v1/calls"
MakeTenant = Callable[..., TenantKeys]


@pytest.fixture
def tenant(db: None, make_tenant: MakeTenant) -> TenantKeys:
    return make_tenant("Acme")


def get(client: Client, tenant: TenantKeys, **params: Any) -> Any:
    return client.get(URL, params, headers=tenant.api_auth)


def listed(response: Any) -> list[tuple[str, str]]:
    assert response.status_code == 200, response.content
    return [(row["trace_id"], row["span_id"]) for row in response.json()["results"]]


def ids(*calls: LLMCall) -> list[tuple[str, str]]:
    return [(call.trace_id, call.span_id) for call in calls]


def newest_first(calls: list[LLMCall]) -> list[LLMCall]:
    return sorted(calls, key=lambda c: (c.start_time, c.trace_id, c.span_id), reverse=True)


def follow(client: Client, tenant: TenantKeys, **params: Any) -> tuple[list[tuple[str, str]], int]:
    """Every call the `next` links lead to from the first page, and how many pages that took."""
    response = get(client, tenant, **params)
    seen, pages = listed(response), 1
    while response.json()["next"] is not None:
        assert pages <= LLMCall.objects.count(), "the next links go round in circles"
        response = client.get(response.json()["next"], headers=tenant.api_auth)
        seen += listed(response)
        pages += 1
    return seen, pages


# --- who may list -------------------------------------------------------------------------------


def test_it_requires_an_api_token(client: Client, tenant: TenantKeys) -> None:
    make_call(tenant.org)

    response = client.get(URL)

    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="costline"'


def test_it_refuses_an_unknown_token(client: Client, tenant: TenantKeys) -> None:
    response = client.get(URL, headers={"Authorization": "Bearer clat_not-a-token-anyone-was-given"})

    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="costline"'
    assert "Unknown or revoked API token" in response.json()["detail"]


def test_it_refuses_a_revoked_token(client: Client, tenant: TenantKeys) -> None:
    make_call(tenant.org)
    token = ApiToken.objects.get(organization=tenant.org)
    assert get(client, tenant).status_code == 200

    revoke_api_token(tenant.org, token.id)
    response = get(client, tenant)

    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="costline"'


def test_it_refuses_an_ingest_key_in_place_of_an_api_token(client: Client, tenant: TenantKeys) -> None:
    response = client.get(URL, headers=tenant.auth)

    assert response.status_code == 401


def test_it_lists_the_calls_of_a_signed_in_members_organisation(
    client: Client, tenant: TenantKeys, make_tenant: MakeTenant
) -> None:
    other = make_tenant("Globex")
    user = User.objects.create_user("ana@acme.example", "correct horse battery staple")
    Membership.objects.create(organization=tenant.org, user=user)
    ours, theirs = make_call(tenant.org), make_call(other.org)
    client.force_login(user)

    response = client.get(URL)

    assert listed(response) == ids(ours)
    assert ids(theirs)[0] not in listed(response)


def test_it_forbids_a_signed_in_user_who_belongs_to_no_organisation(
    client: Client, tenant: TenantKeys
) -> None:
    make_call(tenant.org)
    client.force_login(User.objects.create_user("drifter@example.com", "correct horse battery staple"))

    response = client.get(URL)

    assert response.status_code == 403
    assert "not a member of any organisation" in response.json()["detail"]


def test_it_never_shows_another_tenants_calls(
    client: Client, tenant: TenantKeys, make_tenant: MakeTenant
) -> None:
    other = make_tenant("Globex")
    make_calls(tenant.org, [NOON, NOON + timedelta(minutes=1)])
    theirs = make_call(other.org, start_time=NOON - timedelta(minutes=1))

    assert listed(get(client, other)) == ids(theirs)


def test_it_hides_another_tenants_trace_even_when_asked_for_its_id(
    client: Client, tenant: TenantKeys, make_tenant: MakeTenant
) -> None:
    other = make_tenant("Globex")
    ours = make_call(tenant.org)

    response = get(client, other, trace_id=ours.trace_id)

    assert listed(response) == []
    assert response.json()["next"] is None


# --- what a call looks like -----------------------------------------------------------------------


def test_it_shows_every_field_of_a_call(client: Client, tenant: TenantKeys) -> None:
    project = Project.objects.create(organization=tenant.org, name="Support", slug="support")
    make_call(
        tenant.org,
        trace_id="4bf92f3577b34da6a3ce929d0e0e4736",
        span_id="00f067aa0ba902b7",
        parent_span_id="53995c3f42cd8ad8",
        start_time=NOON + timedelta(microseconds=250),
        service="support-bot",
        environment="production",
        project=project,
        feature="POST /chat",
        provider="openai",
        operation="chat",
        model="gpt-4o",
        request_model="gpt-4o",
        response_model="gpt-4o-2024-08-06",
        input_tokens=1200,
        output_tokens=300,
        cache_read_tokens=1024,
        cache_write_tokens=0,
        reasoning_tokens=None,
        cost_usd=Decimal("0.0068757"),
        emitter_cost_usd=Decimal("0.0069"),
        price_source="catalogue",
        price_version="genai-prices 0.0.30",
        latency_ms=812.5,
        ttft_ms=143.25,
        streaming=True,
        status="ok",
        error_type=None,
        finish_reason="stop",
        user_id="user-42",
        session_id="session-7",
        tags={"team": "support", "tier": "gold"},
    )

    (row,) = get(client, tenant).json()["results"]

    assert row == {
        "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
        "span_id": "00f067aa0ba902b7",
        "parent_span_id": "53995c3f42cd8ad8",
        "timestamp": "2025-03-14T12:00:00.000250Z",
        "service": "support-bot",
        "environment": "production",
        "project": "support",
        "feature": "POST /chat",
        "provider": "openai",
        "operation": "chat",
        "model": "gpt-4o",
        "request_model": "gpt-4o",
        "response_model": "gpt-4o-2024-08-06",
        "input_tokens": 1200,
        "output_tokens": 300,
        "cache_read_tokens": 1024,
        "cache_write_tokens": 0,
        "reasoning_tokens": None,
        "cost_usd": "0.006875700000",
        "emitter_cost_usd": "0.006900000000",
        "priced": True,
        "price_source": "catalogue",
        "price_version": "genai-prices 0.0.30",
        "latency_ms": 812.5,
        "ttft_ms": 143.25,
        "streaming": True,
        "status": "ok",
        "error_type": None,
        "finish_reason": "stop",
        "user_id": "user-42",
        "session_id": "session-7",
        "tags": {"team": "support", "tier": "gold"},
    }


def test_it_shows_cost_as_an_exact_decimal_string(client: Client, tenant: TenantKeys) -> None:
    # 20 significant digits: a float would round this to 12345678.123456789.
    make_call(tenant.org, cost_usd=Decimal("12345678.123456789012"))

    (row,) = get(client, tenant).json()["results"]

    assert row["cost_usd"] == "12345678.123456789012"


def test_it_shows_an_unpriced_call_with_a_null_cost(client: Client, tenant: TenantKeys) -> None:
    make_call(tenant.org, model="acme-secret-model-9", cost_usd=None, price_source=None, price_version=None)

    (row,) = get(client, tenant).json()["results"]

    assert (row["cost_usd"], row["priced"], row["price_source"]) == (None, False, None)


def test_it_shows_a_call_without_a_project_with_a_null_project(client: Client, tenant: TenantKeys) -> None:
    make_call(tenant.org, project=None)

    (row,) = get(client, tenant).json()["results"]

    assert row["project"] is None


# --- order and pages ------------------------------------------------------------------------------


def test_it_lists_the_newest_calls_first(client: Client, tenant: TenantKeys) -> None:
    older = make_call(tenant.org, start_time=NOON - timedelta(days=2))
    newest = make_call(tenant.org, start_time=NOON + timedelta(seconds=1))
    middle = make_call(tenant.org, start_time=NOON)

    assert listed(get(client, tenant)) == ids(newest, middle, older)


def test_it_pages_through_calls_that_started_at_the_same_instant_without_skipping_or_repeating(
    client: Client, tenant: TenantKeys
) -> None:
    same_trace = "f" * 32
    calls = [
        *make_calls(tenant.org, [NOON] * 5),
        *(make_call(tenant.org, trace_id=same_trace, span_id=f"{n:016x}") for n in range(3)),
        *make_calls(tenant.org, [NOON - timedelta(microseconds=1)] * 2),
        make_call(tenant.org, start_time=NOON + timedelta(days=1)),
    ]

    seen, pages = follow(client, tenant, limit=2)

    assert seen == ids(*newest_first(calls))
    assert pages == 6


def test_it_has_no_next_page_after_the_page_that_holds_the_last_call(
    client: Client, tenant: TenantKeys
) -> None:
    make_calls(tenant.org, [NOON, NOON + timedelta(seconds=1)])

    response = get(client, tenant, limit=2)

    assert len(listed(response)) == 2
    assert response.json()["next"] is None


def test_it_keeps_the_filters_and_the_limit_in_the_next_link(client: Client, tenant: TenantKeys) -> None:
    billing = make_calls(tenant.org, [NOON + timedelta(seconds=n) for n in range(3)], service="billing")
    make_calls(tenant.org, [NOON + timedelta(seconds=n) for n in range(3)], service="search")

    first = get(client, tenant, service="billing", limit=2)
    next_url = first.json()["next"]
    second = client.get(next_url, headers=tenant.api_auth)

    assert next_url.startswith("http://testserver/api/v1/calls?")
    assert "service=billing" in next_url
    assert "limit=2" in next_url
    assert listed(first) + listed(second) == ids(*newest_first(billing))
    assert second.json()["next"] is None


def test_it_returns_100_calls_a_page_unless_asked_for_up_to_1000(client: Client, tenant: TenantKeys) -> None:
    make_calls(tenant.org, [NOON - timedelta(seconds=n) for n in range(101)])

    default = get(client, tenant)
    largest = get(client, tenant, limit=1000)

    assert len(listed(default)) == 100
    assert default.json()["next"] is not None
    assert len(listed(largest)) == 101
    assert largest.json()["next"] is None


def test_it_refuses_a_tampered_cursor(client: Client, tenant: TenantKeys) -> None:
    calls = make_calls(tenant.org, [NOON - timedelta(seconds=n) for n in range(5)])
    next_url = get(client, tenant, limit=1).json()["next"]
    (cursor,) = parse_qs(urlsplit(next_url).query)["cursor"]
    # Point the cursor at the oldest call (skipping three) while keeping the original signature.
    oldest = calls[-1]
    payload = json.dumps([oldest.start_time.isoformat(), oldest.trace_id, oldest.span_id]).encode()
    forged = base64.urlsafe_b64encode(payload).decode().rstrip("=") + cursor[cursor.index(":") :]

    response = client.get(URL, {"cursor": forged}, headers=tenant.api_auth)

    assert response.status_code == 400
    assert response.json()["detail"].startswith("invalid cursor")


# --- filters ----------------------------------------------------------------------------------


def test_it_lists_calls_from_the_start_of_a_range_up_to_but_excluding_its_end(
    client: Client, tenant: TenantKeys
) -> None:
    hour = timedelta(hours=1)
    tick = timedelta(microseconds=1)
    _before, first, last, _after = make_calls(
        tenant.org, [NOON - tick, NOON, NOON + hour - tick, NOON + hour]
    )

    response = get(client, tenant, **{"from": "2025-03-14T12:00:00Z", "to": "2025-03-14T13:00:00Z"})

    assert listed(response) == ids(last, first)


def test_it_reads_a_time_without_an_offset_as_utc(client: Client, tenant: TenantKeys) -> None:
    _before, at_noon = make_calls(tenant.org, [NOON - timedelta(seconds=1), NOON])

    response = get(client, tenant, **{"from": "2025-03-14T12:00:00"})

    assert listed(response) == ids(at_noon)


def test_it_honours_a_time_zone_offset(client: Client, tenant: TenantKeys) -> None:
    _before, at_noon = make_calls(tenant.org, [NOON - timedelta(seconds=1), NOON])

    encoded = get(client, tenant, **{"from": "2025-03-14T14:00:00+02:00"})
    # Typed unencoded into a URL, the "+" of the offset arrives as a space.
    unencoded = client.get(f"{URL}?from=2025-03-14T14:00:00+02:00", headers=tenant.api_auth)

    assert listed(encoded) == ids(at_noon)
    assert listed(unencoded) == ids(at_noon)


@pytest.mark.parametrize(
    ("param", "value", "matching"),
    [
        ("service", "billing", {"service": "billing"}),
        ("provider", "anthropic", {"provider": "anthropic"}),
        ("model", "claude-sonnet-4", {"model": "claude-sonnet-4"}),
        ("model", "gpt-4o-mini", {"request_model": "gpt-4o-mini"}),
        ("model", "gpt-4o-mini-2024-07-18", {"response_model": "gpt-4o-mini-2024-07-18"}),
        ("user", "user-42", {"user_id": "user-42"}),
        ("session", "session-7", {"session_id": "session-7"}),
        ("feature", "POST /summarize", {"feature": "POST /summarize"}),
        ("trace_id", "0af7651916cd43dd8448eb211c80319c", {"trace_id": "0af7651916cd43dd8448eb211c80319c"}),
        ("trace_id", "0AF7651916CD43DD8448EB211C80319C", {"trace_id": "0af7651916cd43dd8448eb211c80319c"}),
    ],
)
def test_it_filters_calls(
    client: Client, tenant: TenantKeys, param: str, value: str, matching: dict[str, str]
) -> None:
    wanted = make_call(tenant.org, **matching)
    make_call(tenant.org, user_id="user-1", session_id="session-1", feature="POST /chat")

    assert listed(get(client, tenant, **{param: value})) == ids(wanted)


def test_it_combines_filters(client: Client, tenant: TenantKeys) -> None:
    wanted = make_call(tenant.org, service="billing", provider="anthropic", model="claude-sonnet-4")
    make_call(tenant.org, service="billing", provider="openai")
    make_call(tenant.org, service="search", provider="anthropic", model="claude-sonnet-4")

    response = get(client, tenant, service="billing", provider="anthropic")

    assert listed(response) == ids(wanted)


# --- what the caller must fix ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"limit": "0"}, "limit must be an integer from 1 to 1000, got '0'."),
        ({"limit": "1001"}, "limit must be an integer from 1 to 1000, got '1001'."),
        ({"limit": "ten"}, "limit must be an integer from 1 to 1000, got 'ten'."),
        ({"limit": "-5"}, "limit must be an integer from 1 to 1000, got '-5'."),
        ({"from": "yesterday"}, "from must be an ISO 8601 date-time such as 2025-01-31T14:00:00Z"),
        ({"to": "2025-13-01"}, "to must be an ISO 8601 date-time such as 2025-01-31T14:00:00Z"),
        (
            {"from": "2025-03-14T13:00:00Z", "to": "2025-03-14T12:00:00Z"},
            "from must be earlier than to (from is inclusive, to is exclusive).",
        ),
        ({"trace_id": "abc"}, "trace_id must be 32 hexadecimal digits, got 'abc'."),
        ({"cursor": "not-a-cursor"}, "invalid cursor"),
        ({"service": ["billing", "search"]}, "Give service once, got 2 values."),
        (
            {"page": "2", "sort": "cost"},
            "Unknown query parameter(s): page, sort. Allowed: from, to, service, provider, model, user, "
            "session, feature, trace_id, limit, cursor.",
        ),
    ],
)
def test_it_says_what_is_wrong_with_a_parameter(
    client: Client, tenant: TenantKeys, query: dict[str, Any], message: str
) -> None:
    response = get(client, tenant, **query)

    assert response.status_code == 400
    assert response.json()["detail"].startswith(message)


# --- cost of a page ---------------------------------------------------------------------------


def test_it_lists_a_page_in_as_many_queries_for_many_projects_as_for_one(
    client: Client, tenant: TenantKeys
) -> None:
    def queries_to_list() -> int:
        with CaptureQueriesContext(connection) as queries:
            listed(get(client, tenant))
        return len(queries)

    first = Project.objects.create(organization=tenant.org, name="P0", slug="p0")
    make_call(tenant.org, project=first)
    get(client, tenant)  # the token's first use records it; later requests only read
    one = queries_to_list()
    for n in range(1, 20):
        project = Project.objects.create(organization=tenant.org, name=f"P{n}", slug=f"p{n}")
        make_call(tenant.org, project=project, start_time=NOON - timedelta(seconds=n))

    twenty = queries_to_list()

    assert twenty == one


def test_it_reads_a_page_through_the_tenant_and_time_index(tenant: TenantKeys) -> None:
    make_calls(tenant.org, [NOON - timedelta(seconds=n) for n in range(10)])
    after = Cursor(NOON, "f" * 32, "f" * 16)
    # A handful of rows would be read by a sequential scan; forbidding it asks whether any index can
    # give the rows in this order. Only (tenant_id, start_time DESC) can, if the query is shaped for it.
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute("SET LOCAL enable_bitmapscan = off")
        cursor.execute("SET LOCAL enable_sort = off")
        plan = calls_for(tenant.org.id, CallFilters(model="gpt-4o"), after)[:100].explain()

    assert "tenant_id_start_time_idx" in plan
