"""Downloads: CSV of calls and of Explore tables, FOCUS cost exports.

Every download streams: rows are written as they are read, so a month of calls never sits in memory.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from django.http import HttpResponse, HttpResponseBadRequest, StreamingHttpResponse
from django.http.response import HttpResponseBase
from django.utils import timezone

from costline.dashboards.call_pages import (
    DEFAULT_RANGE,
    MAX_CSV_RANGE,
    CallSearch,
    parse_search,
    search_calls,
)
from costline.dashboards.timerange import RangeError, TimeRange, parse_range
from costline.tenancy.models import Organization, Project
from costline.tenancy.web import OrgRequest, org_view
from costline.usage.calls import Cursor, InvalidQuery
from costline.usage.focus import COLUMNS as FOCUS_COLUMNS
from costline.usage.focus import BillingAccount, csv_cells, focus_query, focus_rows
from costline.usage.metrics import QueryError, usage
from costline.usage.reprice import load_overrides


class _Echo:
    def write(self, value: str) -> str:
        return value


def csv_response(
    filename: str, header: Sequence[str], rows: Iterable[Sequence[Any]]
) -> StreamingHttpResponse:
    """A CSV download streamed row by row (a month of calls never sits in memory)."""
    writer = csv.writer(_Echo())
    lines = (writer.writerow(row) for row in _with_header(header, rows))
    response = StreamingHttpResponse(lines, content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


def _with_header(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> Iterable[Sequence[Any]]:
    yield header
    yield from rows


def _bad_request(message: str) -> HttpResponse:
    return HttpResponseBadRequest(message, content_type="text/plain; charset=utf-8")


def _span(time_range: TimeRange) -> str:
    """The range's first and last local days, for a file name: 20250301-20250331."""
    last = time_range.end - timedelta(microseconds=1)  # the end is exclusive
    return f"{time_range.start:%Y%m%d}-{last:%Y%m%d}"


# --- Calls ------------------------------------------------------------------------------------------

# The stored fields of a call, as the CSV's columns (the project by its slug).
CALL_COLUMNS = (
    "start_time",
    "trace_id",
    "span_id",
    "parent_span_id",
    "ingested_at",
    "service",
    "environment",
    "project",
    "feature",
    "feature_source",
    "user_id",
    "session_id",
    "provider",
    "operation",
    "model",
    "request_model",
    "response_model",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
    "cost_usd",
    "cache_savings_usd",
    "emitter_cost_usd",
    "price_source",
    "price_version",
    "latency_ms",
    "ttft_ms",
    "streaming",
    "status",
    "error_type",
    "finish_reason",
    "response_id",
    "request_id",
    "emitter",
    "emitter_kind",
    "tags",
)
_CALL_FIELDS = tuple("project__slug" if c == "project" else c for c in CALL_COLUMNS)
# Rows read per query: 2,000 rows of ~40 fields is about 2 MB of Python objects; each next chunk
# continues from the last row through the (tenant_id, start_time DESC) index.
CSV_CHUNK = 2000


def call_csv_rows(organization_id: int, search: CallSearch, chunk: int = CSV_CHUNK) -> Iterator[list[str]]:
    """Every call matching `search`, newest first, read `chunk` rows at a time by keyset."""
    after: Cursor | None = None
    while True:
        rows = list(search_calls(organization_id, search, after).values_list(*_CALL_FIELDS)[:chunk])
        for row in rows:
            yield [_call_cell(value) for value in row]
        if len(rows) < chunk:
            return
        start_time, trace_id, span_id = rows[-1][:3]
        after = Cursor(start_time, trace_id, span_id)


def _call_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Decimal):
        return format(value, "f")  # exact, never 1E-12
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True)
    return str(value)


@org_view()
def calls_csv(request: OrgRequest) -> HttpResponseBase:
    org = request.organization
    try:
        time_range = parse_range(request.GET, ZoneInfo(org.time_zone), timezone.now(), default=DEFAULT_RANGE)
        search = parse_search(request.GET, time_range)
    except (RangeError, InvalidQuery) as exc:
        return _bad_request(str(exc))
    length = time_range.end - time_range.start
    if length > MAX_CSV_RANGE:
        return _bad_request(
            f"The calls CSV covers at most {MAX_CSV_RANGE.days} days of calls and this range spans "
            f"{length.days} days or more: choose a shorter range, or download the Explore table or the "
            "FOCUS export, which cover longer periods."
        )
    filename = f"calls-{org.slug}-{_span(time_range)}.csv"
    return csv_response(filename, CALL_COLUMNS, call_csv_rows(org.id, search))


# --- FOCUS ------------------------------------------------------------------------------------------

# Without a range: last month, the last closed billing period.
FOCUS_DEFAULT_RANGE = "last_month"


def billing_account(org: Organization) -> BillingAccount:
    projects = dict(Project.objects.filter(organization=org).values_list("slug", "name"))
    return BillingAccount(id=org.slug, name=org.name, time_zone=org.time_zone, projects=projects)


@org_view()
def focus_csv(request: OrgRequest) -> HttpResponseBase:
    org = request.organization
    try:
        time_range = parse_range(
            request.GET, ZoneInfo(org.time_zone), timezone.now(), default=FOCUS_DEFAULT_RANGE
        )
        result = usage(org.id, focus_query(time_range.start, time_range.end, org.time_zone))
    except (RangeError, QueryError) as exc:
        return _bad_request(str(exc))
    rows = focus_rows(result, billing_account(org), load_overrides(org.id))
    filename = f"focus-{org.slug}-{_span(time_range)}.csv"
    return csv_response(filename, FOCUS_COLUMNS, (csv_cells(row) for row in rows))
