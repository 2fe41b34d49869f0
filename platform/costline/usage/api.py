"""REST API of the usage app: the tenant's raw LLM calls and its usage metrics."""

from __future__ import annotations

from datetime import timedelta

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework.exceptions import ParseError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from costline.tenancy.access import organization_for
from costline.usage.calls import DEFAULT_LIMIT, MAX_LIMIT, InvalidQuery, list_calls, parse_query
from costline.usage.metrics import (
    AUTO_HOUR_UP_TO,
    AUTO_MINUTE_UP_TO,
    DEFAULT_METRICS,
    DIMENSIONS,
    METRICS,
    QueryError,
    usage,
)
from costline.usage.serializers import (
    CallPageSerializer,
    CallSerializer,
    ErrorSerializer,
    UsageSerializer,
    usage_json,
)
from costline.usage.usage_params import INTERVAL_CHOICES, MAX_GROUP_BY, MAX_RANGE, parse_usage_query

_TIME_FORMAT = "ISO 8601, e.g. 2025-01-31T14:00:00Z; without an offset the time is read as UTC."

AUTH_ERRORS = {
    401: OpenApiResponse(ErrorSerializer, description="No API token, or an unknown or revoked one."),
    403: OpenApiResponse(ErrorSerializer, description="The signed-in user belongs to no organisation."),
}

CALL_LIST_PARAMETERS = [
    OpenApiParameter("from", OpenApiTypes.DATETIME, description=f"Calls started at or after. {_TIME_FORMAT}"),
    OpenApiParameter("to", OpenApiTypes.DATETIME, description=f"Calls started before. {_TIME_FORMAT}"),
    OpenApiParameter("service", str, description="The emitting service (`service.name`)."),
    OpenApiParameter("provider", str, description="The provider, e.g. openai, anthropic."),
    OpenApiParameter(
        "model", str, description="Matches the model, the requested model or the model that answered."
    ),
    OpenApiParameter("user", str, description="The end user id the call was made for."),
    OpenApiParameter("session", str, description="The session id."),
    OpenApiParameter("feature", str, description="The feature (route or root span) the call served."),
    OpenApiParameter("trace_id", str, description="32 hexadecimal digits."),
    OpenApiParameter(
        "limit", int, description=f"Calls per page, 1 to {MAX_LIMIT}; {DEFAULT_LIMIT} when not given."
    ),
    OpenApiParameter("cursor", str, description="Opaque; take it from the previous page's `next` link."),
]


class CallList(APIView):
    @extend_schema(
        operation_id="calls_list",
        summary="List LLM calls",
        tags=["calls"],
        description=(
            "The organisation's LLM calls, newest first, one page at a time. Follow `next` until it is "
            "null; an unknown or malformed parameter is answered with 400 and what to fix."
        ),
        parameters=CALL_LIST_PARAMETERS,
        responses={
            200: CallPageSerializer,
            400: OpenApiResponse(ErrorSerializer, description="A query parameter is unknown or malformed."),
            **AUTH_ERRORS,
        },
    )
    def get(self, request: Request) -> Response:
        organization = organization_for(request)
        try:
            query = parse_query(dict(request.query_params.lists()))
        except InvalidQuery as exc:
            raise ParseError(str(exc)) from exc
        page = list_calls(organization.id, query)
        next_url = None
        if page.next_cursor is not None:
            params = request.query_params.copy()
            params["cursor"] = page.next_cursor
            next_url = request.build_absolute_uri(f"{request.path}?{params.urlencode()}")
        return Response({"results": CallSerializer(page.calls, many=True).data, "next": next_url})


_FILTER_DESCRIPTIONS = {
    "project": "Only calls of these projects (their slugs).",
    "service": "Only calls from these services (`service.name`).",
    "environment": "Only calls from these deployment environments.",
    "feature": "Only calls that served these features (route or root span).",
    "provider": "Only calls to these providers, e.g. openai, anthropic.",
    "model": "Only calls to these models.",
    "operation": "Only calls of these operations, e.g. chat, embeddings.",
    "status": "Only calls with this status: ok or error.",
    "user": "Only calls made for these end users (user ids).",
}
_DIMENSION_LIST = ", ".join(DIMENSIONS)

USAGE_PARAMETERS = [
    OpenApiParameter(
        "from",
        OpenApiTypes.DATETIME,
        description=f"Start of the range (inclusive); 24 hours before `to` when not given. {_TIME_FORMAT}",
    ),
    OpenApiParameter(
        "to",
        OpenApiTypes.DATETIME,
        description=(
            f"End of the range (exclusive); now when not given. At most {MAX_RANGE.days} days after "
            f"`from`. {_TIME_FORMAT}"
        ),
    ),
    OpenApiParameter(
        "interval",
        str,
        enum=INTERVAL_CHOICES,
        default="auto",
        description=(
            "The bucket size of the points. `auto` picks the finest that keeps a series short: minutes "
            f"for ranges up to {AUTO_MINUTE_UP_TO / timedelta(hours=1):g} hours, hours up to "
            f"{AUTO_HOUR_UP_TO.days} days, days beyond."
        ),
    ),
    OpenApiParameter(
        "group_by",
        str,
        many=True,
        enum=DIMENSIONS,
        description=(
            f"Up to {MAX_GROUP_BY} dimensions, each once, to split the calls into one series per "
            "combination of values; repeated (`group_by=model&group_by=feature`) or comma separated "
            "(`group_by=model,feature`). Not given: one series for every call."
        ),
    ),
    OpenApiParameter(
        "metrics",
        str,
        many=True,
        enum=tuple(METRICS),
        description=(
            "The metrics to answer, repeated or comma separated; "
            f"`{','.join(DEFAULT_METRICS)}` when not given. Money is an exact decimal string in USD, "
            "counts are integers, ratios and milliseconds are numbers (null where undefined)."
        ),
    ),
    OpenApiParameter(
        "tz",
        str,
        default="UTC",
        description=(
            "The IANA time zone the day buckets follow (midnight to midnight there), e.g. Europe/Paris."
        ),
    ),
    *(
        OpenApiParameter(
            dimension,
            str,
            many=True,
            description=(
                f"{_FILTER_DESCRIPTIONS[dimension]} Repeated or comma separated; an empty value "
                f"(`{dimension}=`) selects calls without one."
            ),
        )
        for dimension in DIMENSIONS
    ),
]


class UsageView(APIView):
    @extend_schema(
        operation_id="usage_retrieve",
        summary="Usage metrics",
        tags=["usage"],
        description=(
            "Requests, tokens, cost, error and cache rates and latency percentiles over a time range, "
            "one point per interval bucket, optionally grouped by up to "
            f"{MAX_GROUP_BY} of: {_DIMENSION_LIST}, and filtered on any of them. Answered from the "
            "rollups, which follow ingestion closely; `complete_through` says up to when they are "
            "complete. Only the metrics asked for appear in `totals` and in each point."
        ),
        parameters=USAGE_PARAMETERS,
        responses={
            200: OpenApiResponse(UsageSerializer, description="One series per group, oldest point first."),
            400: OpenApiResponse(
                ErrorSerializer,
                description="A parameter is unknown or malformed, or the query cannot be answered as "
                "asked; `detail` says what to change.",
            ),
            **AUTH_ERRORS,
        },
    )
    def get(self, request: Request) -> Response:
        organization = organization_for(request)
        try:
            query = parse_usage_query(dict(request.query_params.lists()))
            result = usage(organization.id, query)
        except (InvalidQuery, QueryError) as exc:
            raise ParseError(str(exc)) from exc
        return Response(usage_json(result, query.time_zone))
