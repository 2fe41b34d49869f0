"""REST API of the usage app: the tenant's raw LLM calls."""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework.exceptions import ParseError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from costline.tenancy.access import organization_for
from costline.usage.calls import DEFAULT_LIMIT, MAX_LIMIT, InvalidQuery, list_calls, parse_query
from costline.usage.serializers import CallPageSerializer, CallSerializer

_TIME_FORMAT = "ISO 8601, e.g. 2025-01-31T14:00:00Z; without an offset the time is read as UTC."

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
            400: OpenApiResponse(description="A query parameter is unknown or malformed."),
            401: OpenApiResponse(description="No API token, or an unknown or revoked one."),
            403: OpenApiResponse(description="The signed-in user belongs to no organisation."),
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
