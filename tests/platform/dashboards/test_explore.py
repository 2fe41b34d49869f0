"""Explore: any metric, grouped, filtered, over any range and interval; chart, table and CSV; the URL
holds the whole state."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from urllib.parse import parse_qsl, urlsplit

import plotly.graph_objects as go
import pytest
from django.utils import timezone

from costline.dashboards.explore import ExploreState, parse_state
from costline.dashboards.templatetags.costline_format import format_ms
from costline.tenancy.models import Project
from costline.usage.metrics import NONE_VALUE
from costline.usage.models import LLMCall
from costline.usage.sketch import bucket_of, bucket_value
from tests.platform.dashboards.conftest import Member, roll_up
from tests.platform.dashboards.page_reading import figure, table
from tests.platform.usage.factories import make_calls

SignIn = Callable[..., Member]
# A fixed week in the past, read as custom dates: the answers do not depend on when the test runs.
WEEK = {"from": "2026-03-02", "to": "2026-03-08"}
MONDAY = datetime(2026, 3, 2, 9, 15, tzinfo=UTC)


def calls_at(member: Member, starts: list[datetime], **fields: object) -> list[LLMCall]:
    calls = make_calls(member.org, starts, **fields)
    roll_up(calls)
    return calls


@pytest.fixture
def week(sign_in: SignIn) -> Member:
    """A week of calls: gpt-4o for checkout (Monday, Wednesday), gpt-4o-mini for search (Tuesday),
    and Claude without a feature (Wednesday, one failed)."""
    member = sign_in()
    shop = Project.objects.create(organization=member.org, name="Shop", slug="shop")
    calls_at(member, [MONDAY, MONDAY + timedelta(days=2)], feature="checkout", project=shop,
             cost_usd=Decimal("0.010000000001"))  # fmt: skip
    calls_at(member, [MONDAY + timedelta(days=1)] * 3, model="gpt-4o-mini", feature="search",
             cost_usd=Decimal("0.0002"), latency_ms=300.0)  # fmt: skip
    claude = {"provider": "anthropic", "model": "claude-sonnet-4", "request_model": "claude-sonnet-4"}
    calls_at(member, [MONDAY + timedelta(days=2)], cost_usd=Decimal("0.5"), **claude)
    calls_at(member, [MONDAY + timedelta(days=2, hours=1)], cost_usd=Decimal(0), status="error", **claude)
    return member


def get(member: Member, **params: object) -> tuple[int, str]:
    response = member.client.get(member.url("explore/"), params)
    return response.status_code, response.content.decode()


def test_it_groups_cost_by_model_unless_told_otherwise(week: Member) -> None:
    status, html = get(week, **WEEK)

    assert status == 200
    assert table(html, "explore-table") == [
        ["Model", "Cost ($)", "Requests (calls)"],
        ["claude-sonnet-4", "$0.50", "2"],
        ["gpt-4o", "$0.02", "2"],
        ["gpt-4o-mini", "$0.0006", "3"],
        ["All groups", "$0.521", "7"],  # $0.520600000002: three significant digits under $1
    ]
    chart = figure(html, "explore-chart")
    go.Figure(chart)  # a figure plotly knows every property of
    assert [trace["name"] for trace in chart["data"]] == ["claude-sonnet-4", "gpt-4o", "gpt-4o-mini"]
    assert chart["layout"]["yaxis"]["tickprefix"] == "$"
    assert chart["layout"]["xaxis"]["title"]["text"] == "Hour (UTC)"  # a week: hour buckets
    assert html.count("plotly/plotly.min.js") == 1


def test_it_charts_any_metric_with_its_unit(week: Member) -> None:
    status, html = get(week, metric="latency_p95", group_by="feature", chart="bar", interval="day", **WEEK)

    assert status == 200
    chart = figure(html, "explore-chart")
    assert chart["layout"]["yaxis"]["ticksuffix"] == " ms"
    assert chart["layout"]["yaxis"]["title"]["text"] == "Latency p95 (ms)"
    assert chart["layout"]["barmode"] == "group"  # percentiles side by side, never stacked
    search = next(trace for trace in chart["data"] if trace["name"] == "search")
    assert search["x"][1] == "2026-03-03T00:00:00"
    assert search["y"][1] == pytest.approx(300, rel=0.01)
    assert search["customdata"][0] == "–"  # no calls on Monday: no latency, not 0 ms
    rows = table(html, "explore-table")
    assert rows[0] == ["Feature", "Latency p95 (ms)", "Requests (calls)", "Cost ($)"]
    assert [row[0] for row in rows[1:-1]] == ["checkout", "(none)", "search"]  # largest p95 first
    assert rows[2][2:] == ["2", "$0.50"]
    assert rows[2][1] == format_ms(float(bucket_value(bucket_of(812.5))))  # as the sketch keeps it


def test_sums_stack_in_area_and_bar_charts(week: Member) -> None:
    _, area = get(week, metric="requests", chart="area", interval="day", **WEEK)
    _, bar = get(week, metric="requests", chart="bar", interval="day", **WEEK)

    assert {trace.get("stackgroup") for trace in figure(area, "explore-chart")["data"]} == {"one"}
    assert figure(bar, "explore-chart")["layout"]["barmode"] == "stack"
    gpt = next(t for t in figure(bar, "explore-chart")["data"] if t["name"] == "gpt-4o")
    assert gpt["y"] == [1, 0, 1, 0, 0, 0, 0]


def test_filters_narrow_the_calls(week: Member) -> None:
    _, by_model = get(week, group_by="feature", model="gpt-4o, gpt-4o-mini", **WEEK)
    _, without_feature = get(week, group_by="model", feature="(none)", **WEEK)
    _, failed = get(week, group_by="model", status="error", metric="requests", **WEEK)
    _, shop = get(week, group_by="", project="shop", metric="requests", **WEEK)

    assert [row[0] for row in table(by_model, "explore-table")[1:-1]] == ["checkout", "search"]
    assert table(without_feature, "explore-table")[1:] == [["claude-sonnet-4", "$0.50", "2"]]
    assert table(failed, "explore-table")[1:] == [["claude-sonnet-4", "1", "$0.00"]]
    assert table(shop, "explore-table")[1:] == [["All calls", "2", "$0.02"]]


def test_the_url_holds_the_whole_state(week: Member) -> None:
    params = {
        "metric": "error_rate",
        "group_by": ["provider", "model"],
        "interval": "day",
        "chart": "area",
        "feature": "checkout,(none)",
        "status": "error",
        "sort": "requests",
        "order": "asc",
        **WEEK,
    }
    status, html = get(week, **params)

    assert status == 200
    assert '<option value="error_rate" selected>Error rate (%)</option>' in html
    assert '<option value="provider" selected>Provider</option>' in html
    assert '<option value="model" selected>Model</option>' in html
    assert '<option value="area" selected>Stacked area</option>' in html
    assert '<option value="day" selected>Day</option>' in html
    assert 'name="feature" value="checkout, (none)"' in html
    assert '<option value="error" selected>error</option>' in html
    assert 'type="hidden" name="from" value="2026-03-02"' in html
    state = parse_state({k: v if isinstance(v, list) else [v] for k, v in params.items()})
    assert state == ExploreState(
        "error_rate", ("provider", "model"), {"feature": ("checkout", NONE_VALUE), "status": ("error",)},
        "day", "area", "requests", "asc",
    )  # fmt: skip
    # The state written back into a URL reads as the same state: links and CSV keep the view.
    again = parse_state(_lists(state.params()))
    assert again == state
    csv_link = html.split('id="explore-csv" class="button" href="')[1].split('"')[0].replace("&amp;", "&")
    csv_params = _lists(parse_qsl(urlsplit(csv_link).query, keep_blank_values=True))
    assert parse_state(csv_params) == state
    assert csv_params["format"] == ["csv"]
    assert csv_params["from"] == ["2026-03-02"]


def _lists(pairs: list[tuple[str, str]]) -> dict[str, list[str]]:
    lists: dict[str, list[str]] = {}
    for name, value in pairs:
        lists.setdefault(name, []).append(value)
    return lists


def test_no_group_selected_means_one_series_for_everything(week: Member) -> None:
    _, html = get(week, group_by="", metric="requests", **WEEK)

    assert table(html, "explore-table")[1:] == [["All calls", "7", "$0.521"]]
    assert [trace["name"] for trace in figure(html, "explore-chart")["data"]] == ["All calls"]


def test_the_table_sorts_by_any_column(week: Member) -> None:
    _, by_requests = get(week, sort="requests", order="asc", **WEEK)
    _, by_name = get(week, sort="model", order="desc", **WEEK)

    # 2, 2, 3 requests: ties keep the query's order (most expensive first).
    assert [row[0] for row in table(by_requests, "explore-table")[1:-1]] == [
        "claude-sonnet-4",
        "gpt-4o",
        "gpt-4o-mini",
    ]
    assert [row[0] for row in table(by_name, "explore-table")[1:-1]] == [
        "gpt-4o-mini",
        "gpt-4o",
        "claude-sonnet-4",
    ]


def test_the_csv_has_a_row_per_group_and_bucket_with_exact_money(week: Member) -> None:
    response = week.client.get(week.url("explore/"), {"interval": "day", "format": "csv", **WEEK})

    assert response.status_code == 200
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert f"costline-{week.org.slug}-cost_usd-20260302-20260309.csv" in response["Content-Disposition"]
    rows = list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert rows[0] == ["model", "bucket_start", "cost_usd"]
    assert len(rows) == 1 + 3 * 7
    gpt = [row for row in rows if row[0] == "gpt-4o"]
    assert gpt[0] == ["gpt-4o", "2026-03-02T00:00:00+00:00", "0.010000000001"]
    assert gpt[2] == ["gpt-4o", "2026-03-04T00:00:00+00:00", "0.010000000001"]
    assert gpt[1][2] == "0"  # a day without calls


def test_the_csv_follows_the_organisations_time_zone(sign_in: SignIn) -> None:
    member = sign_in(time_zone="Europe/Paris")
    calls_at(member, [datetime(2026, 3, 9, 23, 30, tzinfo=UTC)], cost_usd=Decimal("1.5"))

    response = member.client.get(
        member.url("explore/"),
        {"group_by": "", "interval": "day", "format": "csv", "from": "2026-03-09", "to": "2026-03-10"},
    )

    rows = list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert rows == [
        ["bucket_start", "cost_usd"],
        ["2026-03-09T00:00:00+01:00", "0"],
        ["2026-03-10T00:00:00+01:00", "1.500000000000"],
    ]


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"metric": "dollars"}, "metric: unknown metric &#x27;dollars&#x27;"),
        ({"group_by": "colour"}, "group_by: unknown dimension &#x27;colour&#x27;"),
        ({"group_by": ["model", "feature", "service", "project"]}, "at most 3 dimensions"),
        ({"group_by": ["user", "model"]}, "group or filter by user alone"),
        ({"group_by": "user", "metric": "latency_p95"}, "latency percentiles are not kept per user"),
        ({"interval": "minute", "range": "30d"}, "minute buckets are kept 7 days"),
        ({"interval": "week"}, "interval: unknown interval &#x27;week&#x27;"),
        ({"chart": "pie"}, "chart: unknown chart type &#x27;pie&#x27;"),
        ({"status": "failed"}, "status: unknown status &#x27;failed&#x27;"),
        ({"sort": "colour"}, "sort: cannot sort by &#x27;colour&#x27;"),
        ({"from": "2026-03-01"}, "A custom range needs both from and to"),
        ({"from": "yesterday", "to": "2026-03-01"}, "is not a date"),
    ],
)
def test_it_answers_a_query_it_cannot_run_with_400_and_what_to_change(
    sign_in: SignIn, params: dict[str, object], message: str
) -> None:
    member = sign_in()

    status, html = get(member, **params)

    assert status == 400
    assert message in html
    assert 'id="explore-form"' in html  # the form stays, to fix the query


def test_a_csv_it_cannot_answer_is_a_400_with_the_message(sign_in: SignIn) -> None:
    member = sign_in()

    response = member.client.get(member.url("explore/"), {"metric": "dollars", "format": "csv"})

    assert response.status_code == 400
    assert response["Content-Type"].startswith("text/plain")
    assert "metric: unknown metric 'dollars'" in response.content.decode()


def test_it_answers_another_organisations_explore_as_missing(sign_in: SignIn) -> None:
    member, stranger = sign_in(), sign_in()

    assert member.client.get(stranger.url("explore/")).status_code == 404
    assert member.client.get(stranger.url("explore/"), {"format": "csv"}).status_code == 404


def test_it_sends_a_signed_out_visitor_to_the_login_page(sign_in: SignIn) -> None:
    member = sign_in()
    member.client.logout()

    response = member.client.get(member.url("explore/"), {"metric": "requests"})

    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/?next=/o/")


def test_a_long_range_reads_per_day_and_a_short_one_per_minute(sign_in: SignIn) -> None:
    member = sign_in()
    now = timezone.now()
    calls_at(member, [now - timedelta(minutes=30)])

    _, recent = get(member, **{"from": (now - timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M"),
                              "to": now.strftime("%Y-%m-%dT%H:%M")})  # fmt: skip
    _, month = get(member, range="30d")

    assert figure(recent, "explore-chart")["layout"]["xaxis"]["title"]["text"] == "Minute (UTC)"
    assert figure(month, "explore-chart")["layout"]["xaxis"]["title"]["text"] == "Day (UTC)"


def test_it_offers_filter_values_seen_in_the_answer(week: Member) -> None:
    _, html = get(week, **WEEK)

    assert '<datalist id="values-model"><option value="claude-sonnet-4"><option value="gpt-4o">' in html
    assert '<datalist id="values-project"><option value="shop"></datalist>' in html


def test_a_new_organisation_is_told_how_to_send_traces(sign_in: SignIn) -> None:
    member = sign_in()

    status, html = get(member)

    assert status == 200
    assert 'id="first-traces"' in html
    assert "OTEL_EXPORTER_OTLP_ENDPOINT=http://localhost:4318" in html
    assert table(html, "explore-table")[1:] == [["No calls match in this range."]]
