"""REST API of the advisor: /api/v1/recommendations (list, read, dismiss, apply) and /api/v1/whatif.

A recommendation of another organisation is a 404, like one that does not exist. Every member reads;
dismissing and applying need the member role (an organisation-wide API token acts as a member).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.http import Http404
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from costline.advisor import actions
from costline.advisor.findings import Kind
from costline.advisor.models import Recommendation, Status
from costline.advisor.policies import PolicyError, policy_from_json
from costline.advisor.serializers import RecommendationSerializer, replay_json
from costline.tenancy.access import check_member, organization_for
from costline.usage.serializers import ErrorSerializer, choice_param

MAX_WHATIF_DAYS = 92
FORBIDDEN = OpenApiResponse(
    ErrorSerializer, description="A viewer may read recommendations, not dismiss or apply them."
)
NOT_FOUND = OpenApiResponse(ErrorSerializer, description="No such recommendation in the organisation.")


def _recommendation(request: Request, recommendation_id: int) -> Recommendation:
    row = Recommendation.objects.filter(tenant=organization_for(request), id=recommendation_id).first()
    if row is None:
        raise Http404("No recommendation with this id in this organisation.")
    return row


def _changeable(request: Request, recommendation_id: int) -> Recommendation:
    """The recommendation, for a caller who may dismiss or apply it (another organisation's is a 404)."""
    row = _recommendation(request, recommendation_id)
    check_member(request, row.tenant, "Dismissing or applying a recommendation")
    return row


class RecommendationList(APIView):
    @extend_schema(
        operation_id="recommendations_list",
        summary="List recommendations",
        tags=["advisor"],
        description="The organisation's recommendations, largest estimated monthly saving first.",
        parameters=[
            OpenApiParameter("status", OpenApiTypes.STR, enum=[s.value for s in Status]),
            OpenApiParameter("kind", OpenApiTypes.STR, enum=[k.value for k in Kind]),
        ],
        responses={200: RecommendationSerializer(many=True)},
    )
    def get(self, request: Request) -> Response:
        rows = Recommendation.objects.filter(tenant=organization_for(request))
        status = choice_param(request, "status", Status.values)
        if status:
            rows = rows.filter(status=status)
        kind = choice_param(request, "kind", (k.value for k in Kind))
        if kind:
            rows = rows.filter(kind=kind)
        ordered = rows.order_by("-monthly_saving_usd", "id")
        return Response(RecommendationSerializer(ordered, many=True).data)


class RecommendationDetail(APIView):
    @extend_schema(
        operation_id="recommendations_retrieve",
        summary="Read a recommendation",
        tags=["advisor"],
        responses={200: RecommendationSerializer},
    )
    def get(self, request: Request, recommendation_id: int) -> Response:
        return Response(RecommendationSerializer(_recommendation(request, recommendation_id)).data)


class RecommendationDismiss(APIView):
    @extend_schema(
        operation_id="recommendations_dismiss",
        summary="Dismiss a recommendation",
        tags=["advisor"],
        request={"application/json": {"type": "object", "properties": {"reason": {"type": "string"}}}},
        responses={200: RecommendationSerializer, 403: FORBIDDEN, 404: NOT_FOUND},
    )
    def post(self, request: Request, recommendation_id: int) -> Response:
        row = _changeable(request, recommendation_id)
        reason = request.data.get("reason") if isinstance(request.data, dict) else None
        if not isinstance(reason, str):
            raise ValidationError({"reason": "Say why you dismiss it: a non-empty string."})
        try:
            actions.dismiss(row, reason)
        except actions.LifecycleError as exc:
            raise ValidationError({"reason" if "reason" in str(exc) else "status": str(exc)}) from exc
        return Response(RecommendationSerializer(row).data)


class RecommendationApply(APIView):
    @extend_schema(
        operation_id="recommendations_apply",
        summary="Mark a recommendation applied",
        tags=["advisor"],
        description="The realised saving is then measured daily from the rollups.",
        request=None,
        responses={200: RecommendationSerializer, 403: FORBIDDEN, 404: NOT_FOUND},
    )
    def post(self, request: Request, recommendation_id: int) -> Response:
        row = actions.apply(_changeable(request, recommendation_id))
        return Response(RecommendationSerializer(row).data)


def parse_window(raw: dict[str, Any], now: datetime) -> tuple[datetime, datetime]:
    """`days` (1 to MAX_WHATIF_DAYS, before now) or `start` and `end` (ISO 8601)."""
    if raw.get("start") or raw.get("end"):
        bounds = []
        for name in ("start", "end"):
            value = raw.get(name)
            moment = parse_datetime(value) if isinstance(value, str) else None
            if moment is None or moment.tzinfo is None:
                raise ValidationError({name: "An ISO 8601 time with a zone, e.g. 2026-11-01T00:00:00Z."})
            bounds.append(moment)
        start, end = bounds
        if end <= start:
            raise ValidationError({"end": "The end must be after the start."})
        if end - start > timedelta(days=MAX_WHATIF_DAYS):
            raise ValidationError({"end": f"A window is at most {MAX_WHATIF_DAYS} days."})
        return start, end
    days = raw.get("days", 30)
    if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= MAX_WHATIF_DAYS:
        raise ValidationError({"days": f"A whole number of days, 1 to {MAX_WHATIF_DAYS}."})
    return now - timedelta(days=days), now


class WhatIf(APIView):
    @extend_schema(
        operation_id="whatif",
        summary="Replay real traffic under a policy",
        tags=["advisor"],
        description=(
            'Re-cost the organisation\'s calls of a window under a policy: {"policy": {...}, "days": 30} '
            'or with "start" and "end". Answers the baseline and replayed cost, per day and per model.'
        ),
        request=OpenApiTypes.OBJECT,
        responses={200: OpenApiTypes.OBJECT},
    )
    def post(self, request: Request) -> Response:
        from costline.advisor.replay import whatif

        raw = request.data if isinstance(request.data, dict) else {}
        start, end = parse_window(raw, timezone.now())
        try:
            policy = policy_from_json(raw.get("policy", {}))
        except PolicyError as exc:
            raise ValidationError({f"policy.{exc.field}": exc.message}) from exc
        try:
            result = whatif(organization_for(request).id, start, end, policy)
        except ValueError as exc:
            raise ValidationError({"policy": str(exc)}) from exc
        return Response(replay_json(result))
