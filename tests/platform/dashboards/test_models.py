"""The Models page: per model, usage and cost over the range beside the price it is billed at."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from costline.dashboards.templatetags.costline_format import format_count
from costline.tenancy.models import Role
from costline.usage.models import LLMCall, PriceOverride
from costline.usage.sketch import bucket_of, bucket_value
from tests.platform.dashboards.conftest import Member, roll_up
from tests.platform.dashboards.page_reading import table
from tests.platform.usage.factories import make_calls

SignIn = Callable[..., Member]
MARCH = {"from": "2026-03-01", "to": "2026-03-31"}
MONDAY = datetime(2026, 3, 2, 9, 15, tzinfo=UTC)
HEADER = [
    "Model", "Requests", "Tokens in / out", "Cost", "Cost / 1k req.", "Latency p50/p95/p99", "Errors",
    "Price used (per 1M tokens)",
]  # fmt: skip
MODEL, REQUESTS, TOKENS, COST, PER_1K, LATENCY, ERRORS, PRICE = range(8)


def calls_at(member: Member, starts: list[datetime], **fields: object) -> list[LLMCall]:
    calls = make_calls(member.org, starts, **fields)
    roll_up(calls)
    return calls


@pytest.fixture
def models(sign_in: SignIn) -> Member:
    """March: four gpt-4o calls (one failed, billed nothing), one Claude call, two self-hosted."""
    member = sign_in()
    hours = [MONDAY + timedelta(hours=h) for h in range(3)]
    calls_at(member, hours, cost_usd=Decimal("0.00625"), latency_ms=800.0)
    # A refused request: no tokens, billed nothing.
    calls_at(member, [MONDAY], cost_usd=Decimal(0), status="error", input_tokens=None, output_tokens=None)
    claude = {"provider": "anthropic", "model": "claude-sonnet-4-0", "request_model": "claude-sonnet-4"}
    calls_at(member, [MONDAY], input_tokens=2000, output_tokens=1000, cost_usd=Decimal("0.021"), **claude)
    llama = {"provider": "vllm", "model": "llama-3.1-8b", "request_model": "llama-3.1-8b"}
    calls_at(member, [MONDAY, MONDAY], cost_usd=None, latency_ms=90.0, **llama)
    return member


def rows_by_model(html: str) -> dict[str, list[str]]:
    rows = table(html, "models-table")
    assert rows[0] == HEADER
    return {row[MODEL].split()[0]: row for row in rows[1:]}


def test_it_lists_each_models_usage_cost_and_latency(models: Member) -> None:
    response = models.client.get(models.url("models/"), MARCH)

    assert response.status_code == 200
    rows = rows_by_model(response.content.decode())
    assert list(rows) == ["claude-sonnet-4-0", "gpt-4o", "llama-3.1-8b"]  # most expensive first
    gpt = rows["gpt-4o"]
    # $0.01875 over 4 calls: $4.69 per 1,000.
    assert gpt[: PER_1K + 1] == ["gpt-4o openai", "4", "3,600 / 900", "$0.0188", "$4.69"]
    # Three calls of 800 ms, the refused one 812.5 ms, as the sketches keep them.
    latency = [float(bucket_value(bucket_of(ms))) for ms in (800.0, 812.5, 812.5)]
    assert gpt[LATENCY] == " / ".join(format_count(v) for v in latency) + " ms"
    assert gpt[ERRORS] == "1 · 25%"
    claude = rows["claude-sonnet-4-0"]
    assert claude[: PER_1K + 1] == ["claude-sonnet-4-0 anthropic", "1", "2,000 / 1,000", "$0.021", "$21.00"]
    assert claude[ERRORS] == "0 · 0%"
    llama = rows["llama-3.1-8b"]
    assert llama[COST].startswith("$0.00")
    assert "2 unpriced" in llama[COST]
    assert llama[PER_1K] == "–"  # no priced call: no cost per request


def test_it_shows_the_catalogue_price_per_million_tokens(models: Member) -> None:
    rows = rows_by_model(models.client.get(models.url("models/"), MARCH).content.decode())

    assert rows["gpt-4o"][PRICE] == "$2.50 in · $10.00 out · $1.25 cached genai-prices"
    assert rows["claude-sonnet-4-0"][PRICE] == "$3.00 in · $15.00 out · $0.30 cached genai-prices"
    assert rows["llama-3.1-8b"][PRICE].startswith("not in the price catalogue Add a price override")


def test_it_shows_the_organisations_override_when_one_applies(models: Member) -> None:
    PriceOverride.objects.create(
        tenant=models.org, model_pattern="gpt-4o*", effective_from=datetime(2026, 1, 1, tzinfo=UTC),
        input_per_mtok=Decimal("2"), output_per_mtok=Decimal("8"),
    )  # fmt: skip
    PriceOverride.objects.create(
        tenant=models.org, model_pattern="llama-*", provider="vllm",
        effective_from=datetime(2026, 1, 1, tzinfo=UTC), input_per_mtok=Decimal("0.05"),
        output_per_mtok=Decimal("0.1"),
    )  # fmt: skip
    PriceOverride.objects.create(
        tenant=models.org, model_pattern="claude-*", effective_from=datetime(2026, 4, 1, tzinfo=UTC),
        discount_percent=Decimal("20"),
    )  # fmt: skip

    rows = rows_by_model(models.client.get(models.url("models/"), MARCH).content.decode())

    assert rows["gpt-4o"][PRICE].endswith("override gpt-4o*: $2.00 in · $8.00 out from 01 Jan 2026")
    assert rows["llama-3.1-8b"][PRICE].endswith(
        "override llama-* (vllm): $0.05 in · $0.10 out from 01 Jan 2026"
    )
    # April's discount does not price March's calls.
    assert rows["claude-sonnet-4-0"][PRICE] == "$3.00 in · $15.00 out · $0.30 cached genai-prices"
    april = rows_by_model(
        models.client.get(models.url("models/"), {"from": "2026-03-01", "to": "2026-04-02"}).content.decode()
    )
    assert april["claude-sonnet-4-0"][PRICE].endswith(
        "override claude-*: 20% off the catalogue from 01 Apr 2026"
    )


def test_another_organisations_override_never_shows(models: Member, sign_in: SignIn) -> None:
    stranger = sign_in()
    PriceOverride.objects.create(
        tenant=stranger.org, model_pattern="*", effective_from=datetime(2026, 1, 1, tzinfo=UTC),
        discount_percent=Decimal("50"),
    )  # fmt: skip

    rows = rows_by_model(models.client.get(models.url("models/"), MARCH).content.decode())

    assert rows["gpt-4o"][PRICE] == "$2.50 in · $10.00 out · $1.25 cached genai-prices"
    assert all("50%" not in row[PRICE] for row in rows.values())


def test_a_range_without_calls_says_so(models: Member) -> None:
    html = models.client.get(
        models.url("models/"), {"from": "2026-05-01", "to": "2026-05-02"}
    ).content.decode()

    assert table(html, "models-table")[1:] == [["No calls in this range."]]


def test_a_new_organisation_is_told_how_to_send_traces(sign_in: SignIn) -> None:
    member = sign_in(role=Role.MEMBER)

    html = member.client.get(member.url("models/")).content.decode()

    assert 'id="first-traces"' in html
    assert "OTEL_EXPORTER_OTLP_ENDPOINT=http://localhost:4318" in html


def test_it_answers_a_wrong_range_with_its_message(sign_in: SignIn) -> None:
    member = sign_in()

    response = member.client.get(member.url("models/"), {"range": "forever"})

    assert response.status_code == 400
    assert "Unknown range &#x27;forever&#x27;" in response.content.decode()


def test_it_answers_another_organisations_models_as_missing(sign_in: SignIn) -> None:
    member, stranger = sign_in(), sign_in()

    assert member.client.get(stranger.url("models/")).status_code == 404


def test_it_sends_a_signed_out_visitor_to_the_login_page(sign_in: SignIn) -> None:
    member = sign_in()
    member.client.logout()

    response = member.client.get(member.url("models/"))

    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/?next=/o/")
