"""Overview, Explore and Models pages: parse the URL, call the page's logic, render.

The logic lives in overview.py, explore.py and model_table.py (plain functions over the usage query
layer); figures.py draws the charts. A range or query the page cannot answer is shown with its message
and status 400.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from django.conf import settings
from django.contrib.auth.views import redirect_to_login
from django.http import HttpRequest, HttpResponse, HttpResponseBase
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone

from costline.dashboards import explore as explore_logic
from costline.dashboards.exports import csv_response
from costline.dashboards.figures import CHART_TYPES, embed, spend_by_model, usage_chart
from costline.dashboards.labels import DIMENSION_LABELS, METRIC_LABELS, group_label, metric_label
from costline.dashboards.model_table import model_rows
from costline.dashboards.overview import build_overview, has_ever_sent
from costline.dashboards.spans import page_span
from costline.dashboards.timerange import PRESETS, RangeError, TimeRange, parse_range, preset_range
from costline.tenancy.models import Project
from costline.tenancy.web import OrgRequest, current_membership, org_view
from costline.usage.metrics import DIMENSIONS, METRICS, QueryError
from costline.usage.models import Status


def home(request: HttpRequest) -> HttpResponse:
    """`/`: the current organisation's overview; sign-in first; a page to explain when there is none."""
    if not request.user.is_authenticated:
        return redirect_to_login("/")
    membership = current_membership(request)
    if membership is None:
        return render(request, "dashboards/no_organisation.html", status=200)
    return redirect("dashboards:overview", org=membership.organization.slug)


def _range_or_default(request: OrgRequest, default: str) -> tuple[TimeRange, str | None]:
    """The URL's range, or (when it is wrong) the default one and the message saying why."""
    zone = ZoneInfo(request.organization.time_zone)
    now = timezone.now()
    try:
        return parse_range(request.GET, zone, now, default=default), None
    except RangeError as exc:
        return preset_range(default, zone, now), str(exc)


def _page_context(request: OrgRequest, time_range: TimeRange, title: str) -> dict[str, Any]:
    slug = request.organization.slug
    return {
        "title": title,
        "range": time_range,
        "presets": PRESETS,
        "range_query": urlencode(time_range.params),
        "focus_url": reverse("dashboards:focus_csv", kwargs={"org": slug}),
        "collector_url": settings.COLLECTOR_PUBLIC_URL,
        "ingest_keys_url": reverse("settings:ingest_keys", kwargs={"org": slug}),
        "price_overrides_url": reverse("settings:price_overrides", kwargs={"org": slug}),
    }


@org_view()
def overview(request: OrgRequest) -> HttpResponse:
    time_range, error = _range_or_default(request, "30d")
    context = _page_context(request, time_range, "Overview")
    if error is not None:
        return render(request, "dashboards/overview.html", {**context, "error": error}, status=400)
    try:
        page = build_overview(request.organization, time_range, timezone.now())
    except QueryError as exc:
        return render(request, "dashboards/overview.html", {**context, "error": str(exc)}, status=400)
    context["page"] = page
    if page.has_calls:
        figure = spend_by_model(page.spend, time_range.zone)
        context["spend_chart"] = embed(figure, "spend-chart", "Spend over time by model")
    return render(request, "dashboards/overview.html", context)


@org_view()
def explore(request: OrgRequest) -> HttpResponseBase:
    time_range, error = _range_or_default(request, "7d")
    state = explore_logic.ExploreState()
    if error is None:
        try:
            state = explore_logic.parse_state(dict(request.GET.lists()))
            page = explore_logic.run_explore(request.organization.id, state, time_range, timezone.now())
        except QueryError as exc:
            error = str(exc)
    wants_csv = request.GET.get("format") == "csv"
    if error is not None:
        if wants_csv:
            return HttpResponse(error, status=400, content_type="text/plain; charset=utf-8")
        context = {
            **_page_context(request, time_range, "Explore"),
            **_explore_form(request, state, time_range),
        }
        return render(request, "dashboards/explore.html", {**context, "error": error}, status=400)
    if wants_csv:
        header, rows = explore_logic.csv_table(page)
        start = page.span.start.astimezone(time_range.zone)
        end = page.span.end.astimezone(time_range.zone)
        filename = f"costline-{request.organization.slug}-{state.metric}-{start:%Y%m%d}-{end:%Y%m%d}.csv"
        return csv_response(filename, header, rows)

    context = {**_page_context(request, time_range, "Explore"), **_explore_form(request, state, time_range)}
    columns = state.columns
    context.update(
        page=page,
        chart=embed(
            usage_chart(page.result, state.metric, state.chart, time_range.zone),
            "explore-chart",
            f"{METRIC_LABELS[state.metric]} over time",
        ),
        table_columns=[(name, metric_label(name), _sort_url(state, time_range, name)) for name in columns],
        table_groups=[
            (name, DIMENSION_LABELS[name], _sort_url(state, time_range, name)) for name in state.group_by
        ],
        table_rows=[
            {
                "label": group_label(series.group),
                "group": [series.group[name] for name in state.group_by],
                "cells": [(name, series.totals.get(name)) for name in columns],
            }
            for series in page.rows
        ],
        totals=[(name, page.result.totals.get(name)) for name in columns],
        chart_title=metric_label(state.metric),
        column_count=max(len(state.group_by), 1) + len(columns),
        has_calls=bool(page.result.totals.get("requests"))
        or has_ever_sent(request.organization, timezone.now()),
        csv_url="?" + urlencode([*state.params(), *time_range.params.items(), ("format", "csv")]),
        suggestions=_suggestions(request, page),
    )
    return render(request, "dashboards/explore.html", context)


def _explore_form(
    request: OrgRequest, state: explore_logic.ExploreState, time_range: TimeRange
) -> dict[str, Any]:
    return {
        "state": state,
        "keep": state.params(),
        "range_fields": list(time_range.params.items()),
        "metric_choices": [(name, metric_label(name)) for name in METRICS],
        "dimension_choices": list(DIMENSION_LABELS.items()),
        "filter_fields": [
            (name, DIMENSION_LABELS[name], state.filter_text(name)) for name in DIMENSIONS if name != "status"
        ],
        "status_choices": list(Status.values),
        "status_filter": state.filters.get("status", ()),
        "chart_choices": list(CHART_TYPES.items()),
        "interval_choices": [("auto", "Auto"), ("minute", "Minute"), ("hour", "Hour"), ("day", "Day")],
    }


def _sort_url(state: explore_logic.ExploreState, time_range: TimeRange, column: str) -> str:
    """The table header's link: sort by `column`, largest first; again to flip the order."""
    order = "asc" if state.sort_key == column and state.order == "desc" else "desc"
    params = [*state.params(sorting=False), ("sort", column), ("order", order), *time_range.params.items()]
    return "?" + urlencode(params)


def _suggestions(request: OrgRequest, page: explore_logic.Explore) -> dict[str, list[str]]:
    """Values to offer in each filter's list: project slugs, and the groups the answer shows."""
    values: dict[str, set[str]] = {name: set() for name in DIMENSIONS}
    values["project"].update(
        Project.objects.filter(organization=request.organization).values_list("slug", flat=True)
    )
    for series in page.result.series:
        for name, value in series.group.items():
            if value is not None:
                values[name].add(value)
    return {name: sorted(found) for name, found in values.items() if found}


@org_view()
def models_page(request: OrgRequest) -> HttpResponse:
    time_range, error = _range_or_default(request, "30d")
    context = _page_context(request, time_range, "Models")
    if error is None:
        now = timezone.now()
        try:
            span = page_span(time_range, now)
            rows = model_rows(request.organization.id, span, now)
            context.update(
                span=span, rows=rows, has_calls=bool(rows) or has_ever_sent(request.organization, now)
            )
        except QueryError as exc:
            error = str(exc)
    if error is not None:
        return render(request, "dashboards/models.html", {**context, "error": error}, status=400)
    return render(request, "dashboards/models.html", context)
