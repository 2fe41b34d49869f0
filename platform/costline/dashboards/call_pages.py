"""Calls: the LLM call explorer and a call's detail.

Listing individual calls is the one place the pages read raw rows: a page of 50 newest-first calls
through the (tenant_id, start_time DESC) index, keyset-paginated by `costline.usage.calls` (an "Older"
link carries the signed cursor of the page's last call), never a COUNT or an OFFSET. Filter choices
(services, providers, models, projects, features seen in the range) come from the rollups.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from django.db.models import Min, QuerySet
from django.http import Http404, HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone

from costline.dashboards.timerange import PRESETS, RangeError, TimeRange, parse_range, preset_range
from costline.tenancy.models import Project
from costline.tenancy.web import OrgRequest, org_view
from costline.usage.breakdown import CostBreakdown, explain_cost, price_changed_reason
from costline.usage.calls import CallFilters, Cursor, InvalidQuery, calls_for, decode_cursor, encode_cursor
from costline.usage.metrics import QueryError, UsageQuery, usage
from costline.usage.models import LLMCall, RepriceRequest, TraceRoot
from costline.usage.reprice import load_overrides

PAGE_SIZE = 50
# The calls CSV reads raw rows: a month of them is what a person downloads and opens; longer
# periods are what the Explore table and the FOCUS export (both from the rollups) are for.
MAX_CSV_RANGE = timedelta(days=31)
TRACE_LIMIT = 500  # calls of one trace shown on a call's page (an agent loop can make thousands)
DEFAULT_RANGE = "24h"
# Filters, in the order the form shows them: URL parameter → label.
FILTERS: dict[str, str] = {
    "service": "Service",
    "provider": "Provider",
    "model": "Model",
    "project": "Project",
    "feature": "Feature",
    "status": "Status",
    "user": "User",
    "session": "Session",
    "trace_id": "Trace id",
    "min_cost": "Min cost ($)",
}
# Filters offered as a list of the values seen in the range (from the rollups); the others are typed.
CHOICE_DIMENSIONS = ("service", "provider", "model", "project", "feature")
STATUSES = ("ok", "error")
_TRACE_ID = re.compile(r"[0-9a-f]{32}")


# --- What the URL asks for ----------------------------------------------------------------------------


@dataclass(frozen=True)
class CallSearch:
    """The calls a page or a CSV lists: the range, and the filters of FILTERS that are set."""

    range: TimeRange
    values: dict[str, str] = field(default_factory=dict)  # parameter → value, only those set

    @property
    def filters(self) -> CallFilters:
        v = self.values
        return CallFilters(
            start=self.range.start,
            end=self.range.end,
            service=v.get("service"),
            provider=v.get("provider"),
            model=v.get("model"),
            user_id=v.get("user"),
            session_id=v.get("session"),
            feature=v.get("feature"),
            trace_id=v.get("trace_id"),
        )

    @property
    def min_cost(self) -> Decimal | None:
        return Decimal(self.values["min_cost"]) if "min_cost" in self.values else None

    def params(self) -> list[tuple[str, str]]:
        """The filters as URL parameters (without the range), in FILTERS order."""
        return [(name, self.values[name]) for name in FILTERS if name in self.values]

    def query_string(self, **extra: str) -> str:
        return urlencode([*self.range.params.items(), *self.params(), *extra.items()])


def parse_search(params: Mapping[str, str], time_range: TimeRange) -> CallSearch:
    """The filters in the URL; an empty field (a form left blank) is no filter. Raises InvalidQuery."""
    values = {name: params.get(name, "").strip() for name in FILTERS}
    values = {name: value for name, value in values.items() if value}
    if "status" in values and values["status"] not in STATUSES:
        raise InvalidQuery(f"status must be ok or error, got {values['status']!r}.")
    if "trace_id" in values:
        # Stored lowercase; tools often show trace ids in capitals.
        values["trace_id"] = values["trace_id"].lower()
        if not _TRACE_ID.fullmatch(values["trace_id"]):
            raise InvalidQuery(f"The trace id must be 32 hexadecimal digits, got {params['trace_id']!r}.")
    if "min_cost" in values:
        try:
            minimum = Decimal(values["min_cost"].lstrip("$"))
        except InvalidOperation:
            minimum = Decimal(-1)
        if not minimum.is_finite() or minimum < 0:
            raise InvalidQuery(
                f"The minimum cost must be an amount in dollars such as 0.01, got {values['min_cost']!r}."
            )
        values["min_cost"] = format(minimum, "f")
    return CallSearch(time_range, values)


def search_calls(organization_id: int, search: CallSearch, after: Cursor | None = None) -> QuerySet[LLMCall]:
    """The organisation's calls matching `search`, newest first, from just after `after`."""
    calls = calls_for(organization_id, search.filters, after)
    if "project" in search.values:
        project = Project.objects.filter(
            organization_id=organization_id, slug=search.values["project"]
        ).first()
        if project is None:
            return calls.none()
        calls = calls.filter(project_id=project.id)
    if "status" in search.values:
        calls = calls.filter(status=search.values["status"])
    if search.min_cost is not None:
        calls = calls.filter(cost_usd__gte=search.min_cost)
    return calls


@dataclass(frozen=True)
class CallPage:
    calls: list[LLMCall]
    next_cursor: str | None  # None on the last page


def call_page(
    organization_id: int, search: CallSearch, after: Cursor | None, limit: int = PAGE_SIZE
) -> CallPage:
    # One row more than the page tells whether an older page follows, without a COUNT.
    rows = list(search_calls(organization_id, search, after)[: limit + 1])
    if len(rows) <= limit:
        return CallPage(rows, None)
    return CallPage(rows[:limit], encode_cursor(rows[limit - 1]))


def filter_choices(organization_id: int, time_range: TimeRange) -> dict[str, list[str]]:
    """Per dimension of CHOICE_DIMENSIONS, the values the range's calls have, from the rollups."""
    choices: dict[str, list[str]] = {}
    for dimension in CHOICE_DIMENSIONS:
        query = UsageQuery(
            start=time_range.start,
            end=time_range.end,
            interval="day",
            group_by=(dimension,),
            metrics=("requests",),
            time_zone=time_range.zone.key,
        )
        try:
            result = usage(organization_id, query)
        except QueryError:
            choices[dimension] = []
            continue
        choices[dimension] = sorted(
            value for s in result.series if (value := s.group.get(dimension)) is not None
        )
    return choices


# --- Pages --------------------------------------------------------------------------------------------


@org_view()
def call_list(request: OrgRequest) -> HttpResponse:
    org = request.organization
    zone = ZoneInfo(org.time_zone)
    now = timezone.now()
    try:
        time_range = parse_range(request.GET, zone, now, default=DEFAULT_RANGE)
    except RangeError as exc:
        return _list_error(request, preset_range(DEFAULT_RANGE, zone, now), str(exc))
    try:
        search = parse_search(request.GET, time_range)
        cursor = request.GET.get("cursor", "")
        after = decode_cursor(cursor) if cursor else None
    except InvalidQuery as exc:
        return _list_error(request, time_range, str(exc))

    page = call_page(org.id, search, after)
    base = reverse("dashboards:calls", kwargs={"org": org.slug})
    choices = filter_choices(org.id, time_range)
    context = {
        **_list_context(request, search, choices),
        "rows": [_row(org.slug, call, zone) for call in page.calls],
        "paged": after is not None,
        "newest_url": f"{base}?{search.query_string()}",
        "older_url": f"{base}?{search.query_string(cursor=page.next_cursor)}" if page.next_cursor else None,
    }
    return render(request, "dashboards/calls.html", context)


def _list_error(request: OrgRequest, time_range: TimeRange, message: str) -> HttpResponse:
    search = CallSearch(time_range, {})
    context = {**_list_context(request, search, {}), "rows": [], "error": message}
    return render(request, "dashboards/calls.html", context, status=400)


def _list_context(request: OrgRequest, search: CallSearch, choices: dict[str, list[str]]) -> dict[str, Any]:
    slug = request.organization.slug
    base = reverse("dashboards:calls", kwargs={"org": slug})
    csv_url = reverse("dashboards:calls_csv", kwargs={"org": slug})
    return {
        "title": "Calls",
        "range": search.range,
        "presets": PRESETS,
        "keep": search.params(),
        "range_params": list(search.range.params.items()),
        "fields": _filter_fields(search, choices),
        "active": [(FILTERS[name], value) for name, value in search.params()],
        "clear_url": f"{base}?{urlencode(search.range.params)}",
        "csv_url": f"{csv_url}?{search.query_string()}",
        "csv_too_long": search.range.end - search.range.start > MAX_CSV_RANGE,
        "csv_max_days": MAX_CSV_RANGE.days,
        "zone": search.range.zone.key,
    }


def _filter_fields(search: CallSearch, choices: dict[str, list[str]]) -> list[dict[str, Any]]:
    fields = []
    for name, label in FILTERS.items():
        value = search.values.get(name, "")
        options: list[str] | None = None
        if name == "status":
            options = list(STATUSES)
        elif name in CHOICE_DIMENSIONS:
            options = choices.get(name, [])
            if value and value not in options:
                options = [value, *options]  # keep what the URL asks for, even when the range has none
        fields.append({"name": name, "label": label, "value": value, "options": options})
    return fields


@dataclass(frozen=True)
class CallRow:
    call: LLMCall
    url: str
    time: str  # in the organisation's zone


def _row(slug: str, call: LLMCall, zone: ZoneInfo) -> CallRow:
    return CallRow(call, call_url(slug, call), _local(call.start_time, zone))


def call_url(slug: str, call: LLMCall) -> str:
    return reverse(
        "dashboards:call", kwargs={"org": slug, "trace_id": call.trace_id, "span_id": call.span_id}
    )


def _local(moment: datetime | None, zone: ZoneInfo) -> str:
    if moment is None:
        return "–"
    local = moment.astimezone(zone)
    return f"{local:%Y-%m-%d %H:%M:%S}.{local.microsecond // 1000:03d}"


@org_view()
def call_detail(request: OrgRequest, trace_id: str, span_id: str) -> HttpResponse:
    org = request.organization
    zone = ZoneInfo(org.time_zone)
    # (tenant, trace id, span id) names one call: reconciling keeps a single row per span.
    call = (
        LLMCall.objects.filter(tenant_id=org.id, trace_id=trace_id, span_id=span_id)
        .select_related("project")
        .first()
    )
    if call is None:
        raise Http404("No such call in this organisation.")
    trace = list(
        LLMCall.objects.filter(tenant_id=org.id, trace_id=trace_id)
        .select_related("project")
        .order_by("start_time", "span_id")[: TRACE_LIMIT + 1]
    )
    root = TraceRoot.objects.filter(tenant_id=org.id, trace_id=trace_id).order_by("start_time").first()
    breakdown = explain_cost(call, load_overrides(org.id))
    context = {
        "title": f"{call.model} call",
        "call": call,
        "groups": call_fields(call, zone),
        "breakdown": _breakdown_context(org.id, call, breakdown),
        "trace": [
            {
                "call": c,
                "url": call_url(org.slug, c),
                "time": _local(c.start_time, zone),
                "current": c.span_id == call.span_id,
            }
            for c in trace[:TRACE_LIMIT]
        ],
        "trace_truncated": len(trace) > TRACE_LIMIT,
        "trace_limit": TRACE_LIMIT,
        "root": root,
        "root_time": _local(root.start_time, zone) if root else None,
        "calls_url": reverse("dashboards:calls", kwargs={"org": org.slug}),
        "trace_url": _trace_list_url(org.slug, call, zone),
        "zone": zone.key,
    }
    return render(request, "dashboards/call.html", context)


def _trace_list_url(slug: str, call: LLMCall, zone: ZoneInfo) -> str:
    """The Calls page filtered to this call's trace, over the days around it."""
    day = call.start_time.astimezone(zone).date()
    params = {"from": (day - timedelta(days=1)).isoformat(), "to": (day + timedelta(days=1)).isoformat()}
    return (
        reverse("dashboards:calls", kwargs={"org": slug})
        + "?"
        + urlencode({**params, "trace_id": call.trace_id})
    )


# --- A call's fields, grouped ------------------------------------------------------------------------


@dataclass(frozen=True)
class Field:
    name: str  # the LLMCall field
    label: str
    value: str
    block: bool = False  # shown preformatted (JSON)


def call_fields(call: LLMCall, zone: ZoneInfo) -> list[tuple[str, list[Field]]]:
    """Every stored field of the call, as text, in the groups the page shows."""

    def text(value: Any) -> str:
        if value is None or value == "":
            return "–"
        if isinstance(value, bool):
            return "yes" if value else "no"
        if isinstance(value, int):
            return f"{value:,}"
        return str(value)

    def moment(value: datetime) -> str:
        return f"{_local(value, zone)} {zone.key} ({value.astimezone(ZoneInfo('UTC')):%Y-%m-%dT%H:%M:%S.%fZ})"

    def usd(value: Decimal | None) -> str:
        return "–" if value is None else exact_usd(value)

    def ms(value: float | None) -> str:
        return "–" if value is None else f"{value:,.1f} ms"

    project = f"{call.project.name} ({call.project.slug})" if call.project else None
    return [
        (
            "Identity",
            [
                Field("trace_id", "Trace id", call.trace_id),
                Field("span_id", "Span id", call.span_id),
                Field("parent_span_id", "Parent span id", text(call.parent_span_id)),
                Field("start_time", "Started", moment(call.start_time)),
                Field("ingested_at", "Stored", moment(call.ingested_at) if call.ingested_at else "–"),
            ],
        ),
        (
            "Attribution",
            [
                Field("service", "Service", text(call.service)),
                Field("environment", "Environment", text(call.environment)),
                Field("project", "Project", text(project)),
                Field("feature", "Feature", text(call.feature)),
                Field(
                    "feature_source",
                    "Feature taken from",
                    call.get_feature_source_display() if call.feature_source else "–",
                ),
                Field("user_id", "User", text(call.user_id)),
                Field("session_id", "Session", text(call.session_id)),
                Field(
                    "tags",
                    "Tags",
                    json.dumps(call.tags, indent=2, sort_keys=True) if call.tags else "–",
                    block=bool(call.tags),
                ),
            ],
        ),
        (
            "Model",
            [
                Field("provider", "Provider", text(call.provider)),
                Field("operation", "Operation", text(call.operation)),
                Field("model", "Model", text(call.model)),
                Field("request_model", "Requested model", text(call.request_model)),
                Field("response_model", "Answering model", text(call.response_model)),
            ],
        ),
        (
            "Tokens",
            [
                Field("input_tokens", "Input (all, cache included)", text(call.input_tokens)),
                Field("cache_read_tokens", "Cache read", text(call.cache_read_tokens)),
                Field("cache_write_tokens", "Cache write", text(call.cache_write_tokens)),
                Field("output_tokens", "Output (all, reasoning included)", text(call.output_tokens)),
                Field("reasoning_tokens", "Reasoning", text(call.reasoning_tokens)),
            ],
        ),
        (
            "Money",
            [
                Field("cost_usd", "Cost", usd(call.cost_usd) if call.priced else "unpriced"),
                Field("cache_savings_usd", "Saved by prompt caching", usd(call.cache_savings_usd)),
                Field("prefill_cost_usd", "Of which prefill (self-hosted)", usd(call.prefill_cost_usd)),
                Field("emitter_cost_usd", "Cost the emitter reported", usd(call.emitter_cost_usd)),
                Field("price_source", "Price source", text(call.price_source)),
                Field("price_version", "Price version", text(call.price_version)),
            ],
        ),
        (
            "Timing",
            [
                Field("latency_ms", "Latency", ms(call.latency_ms)),
                Field("ttft_ms", "Time to first token", ms(call.ttft_ms)),
                Field("streaming", "Streaming", text(call.streaming)),
            ],
        ),
        (
            "Status",
            [
                Field("status", "Status", call.get_status_display()),
                Field("error_type", "Error type", text(call.error_type)),
                Field("finish_reason", "Finish reason", text(call.finish_reason)),
            ],
        ),
        (
            "Prompt evidence (for the advisor: hashes, never the text)",
            [
                Field("prompt_hash", "Prompt hash", _hex64(call.prompt_hash)),
                Field("prefix_hash", "Prefix hash (tools and system prompt)", _hex64(call.prefix_hash)),
                Field("prompt_tokens", "Prompt tokens", text(call.prompt_tokens)),
                Field("prefix_tokens", "Prefix tokens", text(call.prefix_tokens)),
                Field("prompt_simhash", "SimHash (near-duplicates)", _hex64(call.prompt_simhash)),
            ],
        ),
        (
            "Emitter",
            [
                Field("emitter", "Instrumentation scope", text(call.emitter)),
                Field("emitter_kind", "Conventions", text(call.emitter_kind)),
                Field("response_id", "Response id", text(call.response_id)),
                Field("request_id", "Request id", text(call.request_id)),
            ],
        ),
    ]


def exact_usd(value: Decimal) -> str:
    """Every stored digit that matters: $0.00575, $1.25, $0.000000000001 (no rounding)."""
    text = format(value.normalize(), "f")
    whole, _, decimals = text.partition(".")
    sign = "-" if whole.startswith("-") else ""
    return f"{sign}${whole.lstrip('-')}.{decimals.ljust(2, '0')}"


def _hex64(value: int | None) -> str:
    """A stored signed 64-bit hash as the 16 hex digits it is (the sign is only PostgreSQL's bigint)."""
    return "–" if value is None else f"{value & (2**64 - 1):016x}"


def _breakdown_context(organization_id: int, call: LLMCall, breakdown: CostBreakdown) -> dict[str, Any]:
    pending: datetime | None = None
    changed = breakdown.total is not None and not breakdown.matches_stored
    if changed or (breakdown.total is None and call.cost_usd is not None):
        pending = RepriceRequest.objects.filter(
            tenant_id=organization_id, since__lte=call.start_time
        ).aggregate(since=Min("since"))["since"]
    override = breakdown.override
    return {
        "data": breakdown,
        "lines": [
            {
                "kind": line.kind,
                "label": line.label,
                "quantity": f"{line.quantity:,}",
                "unit_price": exact_usd(line.unit_price),
                "per": "request" if line.per_request else "1M tokens",
                "by_token": line.priced_by_token,
                "cost": exact_usd(line.cost),
            }
            for line in breakdown.lines
        ],
        "total": exact_usd(breakdown.lines_total) if breakdown.total is not None else None,
        "stored": exact_usd(call.cost_usd) if call.cost_usd is not None else None,
        "recomputed": exact_usd(breakdown.total) if breakdown.total is not None else None,
        "changed": changed or (breakdown.total is None and call.cost_usd is not None),
        "changed_reason": price_changed_reason(pending),
        "emitter": exact_usd(call.emitter_cost_usd) if call.emitter_cost_usd is not None else None,
        "emitter_difference": (
            exact_usd(call.emitter_cost_usd - call.cost_usd)
            if call.emitter_cost_usd is not None and call.cost_usd is not None
            else None
        ),
        "override": override,
        "override_discount": (
            format(override.discount_percent.normalize(), "f")
            if override and override.discount_percent is not None
            else None
        ),
        "reasoning": (
            f"{breakdown.reasoning_tokens:,}"
            if breakdown.reasoning_tokens
            and not any(line.kind == "output_reasoning_tokens" for line in breakdown.lines)
            else None
        ),
    }
