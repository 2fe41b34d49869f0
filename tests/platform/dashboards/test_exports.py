"""Downloads: the calls CSV (/o/<slug>/calls/export.csv), the FOCUS export (/o/<slug>/exports/focus.csv)."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from costline.dashboards.call_pages import parse_search
from costline.dashboards.exports import CALL_COLUMNS, call_csv_rows, csv_response
from costline.dashboards.timerange import parse_range
from costline.tenancy.models import Project
from costline.usage.focus import COLUMNS as FOCUS_COLUMNS
from costline.usage.focus import focus_query
from costline.usage.metrics import usage
from tests.platform.dashboards.conftest import Member, roll_up
from tests.platform.usage.factories import NOON, make_call, make_calls

SignIn = Callable[..., Member]
THAT_DAY = {"from": "2025-03-14", "to": "2025-03-14"}


def member_zone(member: Member) -> ZoneInfo:
    return ZoneInfo(member.org.time_zone)


def download(member: Member, path: str, **params: Any) -> tuple[Any, list[dict[str, str]]]:
    """The response and, when it is a CSV, its rows as dicts (header → cell)."""
    response = member.client.get(member.url(path), params)
    if response.status_code != 200:
        return response, []
    assert response.streaming, "exports stream"
    text = b"".join(response.streaming_content).decode()
    return response, list(csv.DictReader(io.StringIO(text)))


def header_of(member: Member, path: str, **params: Any) -> list[str]:
    response = member.client.get(member.url(path), params)
    return next(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))


# --- Calls CSV --------------------------------------------------------------------------------------


def test_csv_response_streams_a_header_and_rows() -> None:
    response = csv_response("t.csv", ["a", "b"], iter([[1, "x,y"], [2, None]]))

    assert response["Content-Disposition"] == 'attachment; filename="t.csv"'
    assert b"".join(response.streaming_content).decode() == 'a,b\r\n1,"x,y"\r\n2,\r\n'


def test_the_calls_csv_holds_every_call_of_the_range_across_chunks(sign_in: SignIn) -> None:
    member = sign_in()
    calls = make_calls(member.org, [NOON + timedelta(milliseconds=37 * i) for i in range(2500)])
    make_call(member.org, start_time=NOON + timedelta(days=2))  # outside the range

    response, rows = download(member, "calls/export.csv", **THAT_DAY)

    assert response.status_code == 200
    assert (
        response["Content-Disposition"]
        == f'attachment; filename="calls-{member.org.slug}-20250314-20250314.csv"'
    )
    assert len(rows) == 2500
    newest_first = sorted(calls, key=lambda c: (c.start_time, c.trace_id, c.span_id), reverse=True)
    assert [(r["trace_id"], r["span_id"]) for r in rows] == [(c.trace_id, c.span_id) for c in newest_first]


def test_it_reads_the_calls_a_chunk_at_a_time(sign_in: SignIn) -> None:
    member = sign_in()
    # Ties on the start time at the chunk boundaries: the keyset must neither skip nor repeat.
    calls = make_calls(member.org, [NOON + timedelta(seconds=i // 3) for i in range(1000)])
    search = parse_search({}, parse_range(THAT_DAY, member_zone(member), NOON))

    with CaptureQueriesContext(connection) as queries:
        rows = list(call_csv_rows(member.org.id, search, chunk=300))

    assert sorted((r[1], r[2]) for r in rows) == sorted((c.trace_id, c.span_id) for c in calls)
    assert len({(r[1], r[2]) for r in rows}) == 1000
    reads = [q for q in queries.captured_queries if "usage_llmcall" in q["sql"]]
    assert len(reads) == 4  # 300 + 300 + 300 + 100, each a LIMIT 300 from the last row on
    assert all("LIMIT 300" in q["sql"] for q in reads)


def test_the_calls_csv_has_the_stored_fields_exactly(sign_in: SignIn) -> None:
    member = sign_in(time_zone="Asia/Tokyo")
    project = Project.objects.create(organization=member.org, name="Chat", slug="chat")
    call = make_call(
        member.org,
        start_time=NOON + timedelta(microseconds=123456),
        project=project,
        cost_usd=Decimal("0.000000000001"),
        emitter_cost_usd=None,
        tags={"team": "care", "tier": 2},
        streaming=False,
        ttft_ms=95.25,
        user_id="user-42",
    )

    _, rows = download(member, "calls/export.csv", **{"from": "2025-03-14", "to": "2025-03-15"})

    assert header_of(member, "calls/export.csv", **THAT_DAY) == list(CALL_COLUMNS)
    (row,) = rows
    assert row["start_time"] == "2025-03-14T12:00:00.123456Z"  # UTC, whatever the organisation's zone
    assert row["ingested_at"].endswith("Z")
    assert row["trace_id"] == call.trace_id
    assert row["project"] == "chat"
    assert row["cost_usd"] == "0.000000000001"  # never 1E-12
    assert row["emitter_cost_usd"] == ""
    assert row["input_tokens"] == "1200"
    assert row["cache_read_tokens"] == ""  # unknown stays unknown, not 0
    assert row["latency_ms"] == "812.5"
    assert row["ttft_ms"] == "95.25"
    assert row["streaming"] == "false"
    assert row["tags"] == '{"team": "care", "tier": 2}'
    assert row["user_id"] == "user-42"


def test_the_calls_csv_applies_the_pages_filters(sign_in: SignIn) -> None:
    member = sign_in()
    wanted = make_call(member.org, service="chat", status="error")
    make_call(member.org, service="chat", status="ok")
    make_call(member.org, service="search", status="error")

    _, rows = download(member, "calls/export.csv", **THAT_DAY, service="chat", status="error")

    assert [r["span_id"] for r in rows] == [wanted.span_id]


def test_the_calls_csv_refuses_more_than_31_days(sign_in: SignIn) -> None:
    member = sign_in()

    response, _ = download(member, "calls/export.csv", **{"from": "2025-01-01", "to": "2025-02-15"})

    assert response.status_code == 400
    assert "at most 31 days" in response.content.decode()
    assert (
        download(member, "calls/export.csv", **{"from": "2025-01-01", "to": "2025-01-31"})[0].status_code
        == 200
    )


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("calls/export.csv", {"range": "forever"}),
        ("calls/export.csv", {"from": "2025-03-14"}),
        ("calls/export.csv", {"trace_id": "not-hex"}),
        ("calls/export.csv", {"status": "maybe"}),
        ("exports/focus.csv", {"range": "forever"}),
        ("exports/focus.csv", {"from": "2025-03-14"}),
    ],
)
def test_a_bad_parameter_is_a_400_that_says_what_to_fix(
    sign_in: SignIn, path: str, params: dict[str, str]
) -> None:
    member = sign_in()

    response = member.client.get(member.url(path), params)

    assert response.status_code == 400
    assert response["Content-Type"].startswith("text/plain")
    assert any(word in response.content.decode() for word in ("range", "from", "trace id", "status"))


def test_the_calls_csv_holds_only_the_organisations_calls(sign_in: SignIn) -> None:
    member, other = sign_in(), sign_in()
    mine = make_call(member.org)
    make_call(other.org)

    _, rows = download(member, "calls/export.csv", **THAT_DAY)

    assert [r["span_id"] for r in rows] == [mine.span_id]


def test_another_organisations_exports_are_404(sign_in: SignIn) -> None:
    member, other = sign_in(), sign_in()
    make_call(other.org)

    assert member.client.get(other.url("calls/export.csv"), THAT_DAY).status_code == 404
    assert member.client.get(other.url("exports/focus.csv"), THAT_DAY).status_code == 404


def test_signed_out_visitors_get_no_export(client: Any, sign_in: SignIn) -> None:
    member = sign_in()

    assert client.get(member.url("calls/export.csv")).status_code == 302
    assert client.get(member.url("exports/focus.csv")).status_code == 302


# --- FOCUS ------------------------------------------------------------------------------------------


def test_the_focus_export_is_a_focus_csv_of_the_range(sign_in: SignIn) -> None:
    member = sign_in(time_zone="Europe/Paris")
    calls = [
        make_call(member.org, service="api"),
        make_call(member.org, service="api", start_time=NOON + timedelta(hours=1)),
        make_call(member.org, service="worker", cost_usd=Decimal("0.000000000001")),
        make_call(member.org, service="api", start_time=NOON + timedelta(days=20)),  # after the range
    ]
    roll_up(calls)

    response, rows = download(member, "exports/focus.csv", **THAT_DAY)

    assert (
        response["Content-Disposition"]
        == f'attachment; filename="focus-{member.org.slug}-20250314-20250314.csv"'
    )
    assert header_of(member, "exports/focus.csv", **THAT_DAY) == list(FOCUS_COLUMNS)
    assert [(r["ServiceName"], r["BilledCost"], r["x_Requests"]) for r in rows] == [
        ("api", "0.012000000000", "2"),
        ("worker", "0.000000000001", "1"),
    ]
    # 14 March in Paris (UTC+1) is 23:00 UTC on the 13th to 23:00 UTC on the 14th.
    assert {(r["ChargePeriodStart"], r["ChargePeriodEnd"]) for r in rows} == {
        ("2025-03-13T23:00:00Z", "2025-03-14T23:00:00Z")
    }
    day = parse_range(THAT_DAY, member_zone(member), NOON)
    total = usage(member.org.id, focus_query(day.start, day.end, "Europe/Paris")).totals["cost_usd"]
    assert sum(Decimal(r["BilledCost"]) for r in rows) == total


def test_the_focus_export_has_only_the_organisations_costs(sign_in: SignIn) -> None:
    member, other = sign_in(), sign_in()
    roll_up([make_call(member.org, service="mine"), make_call(other.org, service="theirs")])

    _, rows = download(member, "exports/focus.csv", **THAT_DAY)

    assert [r["ServiceName"] for r in rows] == ["mine"]
    assert {r["BillingAccountId"] for r in rows} == {member.org.slug}


def test_the_focus_export_defaults_to_last_month(sign_in: SignIn) -> None:
    member = sign_in()
    this_month = timezone.now().replace(day=1, hour=12, minute=0, second=0, microsecond=0)
    last_month = this_month - timedelta(days=3)
    roll_up([make_call(member.org, start_time=last_month), make_call(member.org, start_time=this_month)])

    response, rows = download(member, "exports/focus.csv")

    assert response.status_code == 200
    first_day = last_month.replace(day=1)
    assert (
        f"-{first_day:%Y%m%d}-{this_month - timedelta(days=1):%Y%m%d}.csv" in response["Content-Disposition"]
    )
    assert [r["ChargePeriodStart"][:10] for r in rows] == [f"{last_month:%Y-%m-%d}"]
