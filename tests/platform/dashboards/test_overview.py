"""The Overview page: this month's spend, the range's key figures, spend by model, top spenders."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import plotly.graph_objects as go
import pytest
from django.utils import timezone

from costline.dashboards.overview import month_spend
from costline.dashboards.spans import page_span
from costline.dashboards.templatetags.costline_format import format_ms
from costline.dashboards.timerange import parse_range
from costline.tenancy.models import Project, Role
from costline.usage.metrics import usage
from costline.usage.models import LLMCall
from costline.usage.sketch import bucket_of, bucket_value
from tests.platform.dashboards.conftest import Member, roll_up
from tests.platform.dashboards.page_reading import figure, table, tile
from tests.platform.usage.factories import make_calls

SignIn = Callable[..., Member]


def calls_at(member: Member, starts: list[datetime], **fields: object) -> list[LLMCall]:
    calls = make_calls(member.org, starts, **fields)
    roll_up(calls)
    return calls


@pytest.fixture
def three_days_ago() -> datetime:
    """A time well inside the default range (30 days) and the 7-day one, away from any bucket edge."""
    return (timezone.now() - timedelta(days=3)).replace(minute=20, second=0, microsecond=0)


@pytest.fixture
def traffic(sign_in: SignIn, three_days_ago: datetime) -> Member:
    """Seven calls three days ago: four gpt-4o for chat, two Claude for search (one failed, one
    streamed and cached), one of a self-hosted model without a price."""
    member = sign_in()
    project = Project.objects.create(organization=member.org, name="Web", slug="web")
    at = [three_days_ago + timedelta(minutes=i) for i in range(3)]
    calls_at(member, at, feature="chat", project=project, user_id="alice", cost_usd=Decimal("0.006"))
    claude = {"provider": "anthropic", "model": "claude-sonnet-4", "request_model": "claude-sonnet-4"}
    calls_at(member, at[:1], feature="search", user_id="bob", cost_usd=Decimal("0.02"), **claude)
    calls_at(
        member,
        at[1:2],
        feature="search",
        user_id="bob",
        cost_usd=Decimal("0.02"),
        status="error",
        ttft_ms=150.0,
        streaming=True,
        cache_read_tokens=600,
        cache_savings_usd=Decimal("0.0015"),
        **claude,
    )
    calls_at(
        member, at[2:], provider="vllm", model="my-llama", request_model="my-llama", cost_usd=None,
        price_source=None, latency_ms=95.0,
    )  # fmt: skip
    calls_at(member, at[:1], feature="chat", project=project, user_id="alice", cost_usd=Decimal("0.006"))
    return member


def test_it_sends_a_signed_out_visitor_to_the_login_page(sign_in: SignIn) -> None:
    member = sign_in()
    member.client.logout()

    response = member.client.get(member.url())

    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/?next=/o/")


def test_it_answers_another_organisations_overview_as_missing(sign_in: SignIn) -> None:
    member, stranger = sign_in(), sign_in()

    assert member.client.get(stranger.url()).status_code == 404
    assert member.client.get("/o/no-such-org/").status_code == 404
    assert stranger.client.get(stranger.url()).status_code == 200


def test_it_explains_how_to_send_the_first_traces_to_a_new_organisation(
    sign_in: SignIn, settings: object
) -> None:
    settings.COLLECTOR_PUBLIC_URL = "https://collect.example.com"  # type: ignore[attr-defined]
    member = sign_in(role=Role.ADMIN)

    html = member.client.get(member.url()).content.decode()

    assert 'id="first-traces"' in html
    assert "OTEL_EXPORTER_OTLP_ENDPOINT=https://collect.example.com" in html
    assert 'OTEL_EXPORTER_OTLP_HEADERS="Authorization=Bearer%20&lt;ingest key&gt;"' in html
    assert f'href="/o/{member.org.slug}/settings/ingest-keys/"' in html
    assert 'id="spend-chart"' not in html
    assert "plotly.min.js" not in html


def test_it_shows_the_ranges_key_figures_summed_from_the_calls(traffic: Member) -> None:
    response = traffic.client.get(traffic.url())
    html = response.content.decode()

    assert response.status_code == 200
    assert tile(html, "requests")["value"] == "7"
    assert tile(html, "range_spend")["value"] == "$0.064"  # 4 × $0.006 + 2 × $0.02
    assert tile(html, "tokens")["value"] == "8,400"  # 7 × 1,200 input
    assert "2,100 output" in tile(html, "tokens")["note"]
    assert tile(html, "error_rate")["value"] == "14.3%"
    assert tile(html, "unpriced")["value"] == "1"
    assert "price override" in tile(html, "unpriced")["note"]
    assert f'<a href="/o/{traffic.org.slug}/settings/price-overrides/">' in html
    assert tile(html, "cache")["value"] == "14.3%"
    assert tile(html, "cache_savings")["value"] == "$0.0015"
    page = response.context["page"]
    # Percentiles come from the rollups' sketches: within 1 % of the calls' own values.
    assert page.totals["ttft_p50"] == pytest.approx(150, rel=0.01)  # the one streamed call
    assert page.totals["latency_p95"] == pytest.approx(812.5, rel=0.01)
    assert page.totals["latency_p99"] == pytest.approx(812.5, rel=0.01)
    assert tile(html, "ttft")["value"] == format_ms(page.totals["ttft_p50"])
    assert tile(html, "latency")["value"] == format_ms(page.totals["latency_p95"])
    assert page.totals["requests"] == 7
    assert page.totals["cost_usd"] == Decimal("0.064")
    assert page.totals["input_tokens"] == 8400
    assert page.totals["output_tokens"] == 2100


def test_it_draws_spend_over_time_stacked_by_model(traffic: Member, three_days_ago: datetime) -> None:
    html = traffic.client.get(traffic.url()).content.decode()

    chart = figure(html, "spend-chart")
    go.Figure(chart)  # a figure plotly knows every property of
    traces = {trace["name"]: trace for trace in chart["data"]}
    assert list(traces) == ["claude-sonnet-4", "gpt-4o", "my-llama"]  # largest spend first
    assert chart["layout"]["barmode"] == "stack"
    assert chart["layout"]["yaxis"]["tickprefix"] == "$"
    assert all(trace["type"] == "bar" for trace in chart["data"])
    assert sum(y or 0 for y in traces["gpt-4o"]["y"]) == pytest.approx(0.024)
    assert sum(y or 0 for y in traces["claude-sonnet-4"]["y"]) == pytest.approx(0.04)
    # Day buckets (30 days), at the organisation's midnights; the calls' day carries the spend.
    day = three_days_ago.date().isoformat()
    gpt = dict(zip(traces["gpt-4o"]["x"], traces["gpt-4o"]["customdata"], strict=True))
    assert gpt[f"{day}T00:00:00"] == "$0.024"
    # Plotly's JavaScript comes from the app, once.
    assert html.count("plotly/plotly.min.js") == 1
    assert "cdn" not in html.lower()


def test_it_ranks_projects_features_models_and_users_by_cost(traffic: Member) -> None:
    html = traffic.client.get(traffic.url()).content.decode()

    assert table(html, "top-features") == [
        ["Feature", "Cost", "Share", "Requests"],
        ["search", "$0.04", "62.5%", "2"],
        ["chat", "$0.024", "37.5%", "4"],
        ["(no feature)", "$0.00", "0%", "1"],
    ]
    assert table(html, "top-projects")[1:] == [
        ["(no project)", "$0.04", "62.5%", "3"],
        ["web", "$0.024", "37.5%", "4"],
    ]
    assert table(html, "top-models")[1:] == [
        ["claude-sonnet-4", "$0.04", "62.5%", "2"],
        ["gpt-4o", "$0.024", "37.5%", "4"],
        ["my-llama", "$0.00", "0%", "1"],
    ]
    assert table(html, "top-users")[1:] == [
        ["bob", "$0.04", "62.5%", "2"],
        ["alice", "$0.024", "37.5%", "4"],
        ["(no user)", "$0.00", "0%", "1"],
    ]


def test_it_links_the_focus_export_with_the_chosen_range(traffic: Member) -> None:
    html = traffic.client.get(traffic.url(), {"range": "7d"}).content.decode()

    assert f'id="focus-export" class="button" href="/o/{traffic.org.slug}/exports/focus.csv?range=7d"' in html


def test_each_preset_and_custom_range_counts_only_its_calls(sign_in: SignIn) -> None:
    member = sign_in()
    now = timezone.now()
    ages = [timedelta(hours=2), timedelta(days=3), timedelta(days=20), timedelta(days=40)]
    calls_at(member, [now - age for age in ages])

    def requests(**params: str) -> str:
        return tile(member.client.get(member.url(), params).content.decode(), "requests")["value"]

    assert requests(range="24h") == "1"
    assert requests(range="7d") == "2"
    assert requests(range="30d") == "3"
    assert requests() == "3"  # 30 days unless told
    forty_days_ago = (now - timedelta(days=40)).date()
    assert requests(**{"from": f"{forty_days_ago}", "to": f"{forty_days_ago}"}) == "1"
    this_month = sum(1 for age in ages if now - age >= now.replace(day=1, hour=0, minute=0, second=0))
    assert requests(range="this_month") == str(this_month)


def test_it_answers_a_wrong_range_with_its_message(sign_in: SignIn) -> None:
    member = sign_in()

    response = member.client.get(member.url(), {"from": "2025-03-10", "to": "2025-03-01"})

    assert response.status_code == 400
    assert "The range ends before it starts" in response.content.decode()
    assert member.client.get(member.url(), {"range": "fortnight"}).status_code == 400


def test_an_organisation_in_paris_sees_days_from_its_own_midnight(sign_in: SignIn) -> None:
    member = sign_in(time_zone="Europe/Paris")
    # 23:30 UTC on the 9th is 00:30 on the 10th in Paris (UTC+1 in March).
    calls_at(member, [datetime(2026, 3, 9, 23, 30, tzinfo=UTC)], cost_usd=Decimal("1.5"))
    calls_at(member, [datetime(2026, 3, 9, 22, 30, tzinfo=UTC)], cost_usd=Decimal("0.25"))

    one_day = member.client.get(member.url(), {"from": "2026-03-10", "to": "2026-03-10"}).content.decode()
    three_weeks = member.client.get(member.url(), {"from": "2026-03-01", "to": "2026-03-21"}).content.decode()

    assert tile(one_day, "range_spend")["value"] == "$1.50"
    assert tile(three_weeks, "range_spend")["value"] == "$1.75"
    chart = figure(three_weeks, "spend-chart")
    assert chart["layout"]["xaxis"]["title"]["text"] == "Day (Europe/Paris)"
    days = dict(zip(chart["data"][0]["x"], chart["data"][0]["y"], strict=True))
    assert len(days) == 21
    assert days["2026-03-10T00:00:00"] == 1.5
    assert days["2026-03-09T00:00:00"] == 0.25


def test_this_months_spend_is_compared_with_last_month_at_the_same_point(sign_in: SignIn) -> None:
    member = sign_in()
    spend = {
        datetime(2026, 2, 2, 9, 0): "0.010",
        datetime(2026, 2, 10, 11, 30): "0.020",  # before the 10th 12:00: in the comparison
        datetime(2026, 2, 10, 12, 30): "0.040",  # after it: last month's total only
        datetime(2026, 2, 20, 9, 0): "0.080",
        datetime(2026, 3, 2, 9, 0): "1.000",
        datetime(2026, 3, 10, 11, 0): "0.500",
    }
    for moment, cost in spend.items():
        calls_at(member, [moment.replace(tzinfo=UTC)], cost_usd=Decimal(cost))

    month = month_spend(member.org.id, ZoneInfo("UTC"), datetime(2026, 3, 10, 12, 0, tzinfo=UTC))

    assert month.month_start == datetime(2026, 3, 1, tzinfo=ZoneInfo("UTC"))
    assert month.so_far == Decimal("1.5")
    assert month.last_month_same_point == Decimal("0.03")
    assert month.last_month_total == Decimal("0.15")
    assert month.change == pytest.approx(49.0)


def test_months_follow_the_organisations_time_zone(sign_in: SignIn) -> None:
    member = sign_in(time_zone="Europe/Paris")
    # 28 Feb 23:30 UTC is already 1 March in Paris.
    calls_at(member, [datetime(2026, 2, 28, 23, 30, tzinfo=UTC)], cost_usd=Decimal("2"))
    calls_at(member, [datetime(2026, 2, 28, 22, 30, tzinfo=UTC)], cost_usd=Decimal("3"))

    month = month_spend(member.org.id, ZoneInfo("Europe/Paris"), datetime(2026, 3, 5, 12, 0, tzinfo=UTC))

    assert month.so_far == Decimal("2")
    assert month.last_month_total == Decimal("3")
    assert month.last_month_same_point == Decimal(0)
    assert month.change is None


def test_a_shorter_last_month_is_compared_whole(sign_in: SignIn) -> None:
    member = sign_in()
    calls_at(member, [datetime(2026, 2, 27, 12, 0, tzinfo=UTC)], cost_usd=Decimal("4"))

    # 30 days and 12 hours into March: further than February goes.
    month = month_spend(member.org.id, ZoneInfo("UTC"), datetime(2026, 3, 31, 12, 0, tzinfo=UTC))

    assert month.last_month_same_point == Decimal("4") == month.last_month_total


def test_the_spend_tile_shows_this_month_so_far(traffic: Member) -> None:
    now = timezone.now()
    calls_at(traffic, [now - timedelta(minutes=5)], cost_usd=Decimal("12.345"))

    html = traffic.client.get(traffic.url(), {"range": "24h"}).content.decode()

    expected = month_spend(traffic.org.id, ZoneInfo("UTC"), now)
    assert expected.so_far >= Decimal("12.345")
    assert tile(html, "spend")["value"] == f"${expected.so_far.quantize(Decimal('0.01')):,}"


@pytest.mark.parametrize(("preset", "buckets"), [("30d", 31), ("7d", 7 * 24 + 1)])
def test_tables_read_totals_only_and_agree_with_the_points(
    traffic: Member, preset: str, buckets: int
) -> None:
    """The page's tables ask the query layer for totals only (the span read at once, from day, hour
    and minute rollups as they tile it): the same sums and percentiles as the span's points."""
    now = timezone.now()
    span = page_span(parse_range({"range": preset}, ZoneInfo("UTC"), now), now)
    metrics = ("cost_usd", "requests", "latency_p95")

    by_points = usage(traffic.org.id, span.query(metrics, ("feature",), points=True))
    totals_only = usage(traffic.org.id, span.query(metrics, ("feature",)))

    assert len(by_points.series[0].points) == buckets
    assert [len(s.points) for s in totals_only.series] == [1, 1, 1]
    assert {s.group["feature"]: s.totals for s in totals_only.series} == {
        s.group["feature"]: s.totals for s in by_points.series
    }
    assert (totals_only.start, totals_only.end) == (by_points.start, by_points.end)


@pytest.mark.django_db(transaction=True)
def test_reads_on_helper_threads_give_the_same_page(sign_in: SignIn, three_days_ago: datetime) -> None:
    """Outside a transaction (a real request) the slowest reads run on helper threads, on their own
    connections: committed calls, the same figures."""
    member = sign_in()
    calls_at(member, [three_days_ago] * 3, user_id="alice", cost_usd=Decimal("0.5"))
    calls_at(member, [three_days_ago], user_id="bob", cost_usd=Decimal("2"), latency_ms=2000.0)

    html = member.client.get(member.url()).content.decode()

    assert tile(html, "requests")["value"] == "4"
    assert tile(html, "range_spend")["value"] == "$3.50"
    assert tile(html, "latency")["value"] == format_ms(float(bucket_value(bucket_of(2000.0))))
    assert table(html, "top-users")[1:] == [["bob", "$2.00", "57.1%", "1"], ["alice", "$1.50", "42.9%", "3"]]
