"""POST /api/v1/budgets/check: reserve a call's cost against the budgets covering it, then settle it.

For services that do not call through the gateway. A refusal is an answer, not an error: 200 with
`admitted: false` and the decision (block, or throttle with a Retry-After header), so a client has
one success path and keeps 429 for the API's own limits. Redis unreachable: 503 with Retry-After.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import redis
from drf_spectacular.utils import OpenApiExample, OpenApiResponse, PolymorphicProxySerializer, extend_schema
from rest_framework import serializers
from rest_framework.exceptions import ParseError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from costline.budgets import reservations
from costline.budgets.models import Budget
from costline.tenancy.access import organization_for
from costline.usage.serializers import ErrorSerializer

REDIS_RETRY_AFTER_S = 1
_FIELDS = {
    "reserve": ({"action", "estimate_usd"}, {"call", "ttl_seconds"}),
    "settle": ({"action", "reservation_id", "actual_usd"}, set()),
    "release": ({"action", "reservation_id"}, set()),
}


class CheckRequestSerializer(serializers.Serializer[Any]):
    action = serializers.ChoiceField(
        choices=tuple(_FIELDS),
        help_text=(
            "`reserve` before the call, then `settle` with its actual cost, or `release` if it was not made."
        ),
    )
    estimate_usd = serializers.DecimalField(
        max_digits=20,
        decimal_places=12,
        coerce_to_string=True,
        required=False,
        help_text="reserve: the call's worst-case cost in USD, a decimal string (0 to 1000000).",
    )
    call = serializers.DictField(
        child=serializers.CharField(allow_blank=True),
        required=False,
        help_text=(
            "reserve: the call's attributes, any of "
            f"{', '.join(reservations.ATTRIBUTES)} (project is the project's slug). A budget covers the "
            "call when every filter of its scope includes the call's value; a filter on an attribute "
            "left out matches only calls without one."
        ),
    )
    ttl_seconds = serializers.IntegerField(
        required=False,
        min_value=1,
        max_value=reservations.MAX_TTL_S,
        help_text=(
            "reserve: seconds until an unsettled reservation expires; "
            f"{reservations.DEFAULT_TTL_S} when not given."
        ),
    )
    reservation_id = serializers.CharField(
        required=False, help_text="settle, release: the `reservation_id` that reserve returned."
    )
    actual_usd = serializers.DecimalField(
        max_digits=20,
        decimal_places=12,
        coerce_to_string=True,
        required=False,
        help_text="settle: what the call actually cost in USD, a decimal string.",
    )


class CheckedBudgetSerializer(serializers.Serializer[Any]):
    id = serializers.IntegerField()
    name = serializers.CharField()
    state = serializers.ChoiceField(
        choices=("ok", "warn", "throttle", "downgrade", "block"),
        help_text="The budget's enforcement state, as the evaluation last published it.",
    )
    verdict = serializers.ChoiceField(
        choices=("ok", "block", "throttle", "downgrade"), help_text="What this budget said of this call."
    )
    remaining_usd = serializers.CharField(
        help_text="The amount less spend, settled calls and open reservations (this one included when "
        "admitted), a decimal string; negative when over."
    )


class ReserveResultSerializer(serializers.Serializer[Any]):
    action = serializers.CharField(help_text="`reserve`.")
    admitted = serializers.BooleanField(help_text="Whether the call may go ahead.")
    decision = serializers.CharField(
        help_text="One of ok, downgrade, block, throttle. "
        "Admitted: `ok`, or `downgrade` (use `downgrade_model`). Refused: `block` (a budget "
        "would pass its limit) or `throttle` (a throttled budget's requests per minute are used up).",
    )
    reason = serializers.CharField(allow_null=True, help_text="Why the call was refused; null when admitted.")
    reservation_id = serializers.CharField(
        allow_null=True,
        help_text="Settle or release it after the call; null when refused or when no budget covers the call.",
    )
    downgrade_model = serializers.CharField(allow_null=True, help_text="The model to call instead, or null.")
    retry_after_seconds = serializers.IntegerField(
        allow_null=True, help_text="Throttled: seconds until the next minute (also the Retry-After header)."
    )
    budgets = CheckedBudgetSerializer(many=True, help_text="Every budget covering the call.")


class CloseResultSerializer(serializers.Serializer[Any]):
    action = serializers.CharField(help_text="`settle` or `release`.")
    reservation_id = serializers.CharField()
    status = serializers.ChoiceField(choices=("settled", "released"))


def _parse(data: Any) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise ParseError(
            'The body must be a JSON object, e.g. {"action": "reserve", "estimate_usd": "0.02"}.'
        )
    action = data.get("action")
    if action not in _FIELDS:
        raise ParseError(f"action must be one of reserve, settle, release; got {action!r}.")
    required, optional = _FIELDS[action]
    missing = sorted(required - set(data))
    if missing:
        raise ParseError(f"{action} needs {', '.join(missing)}.")
    unknown = sorted(set(data) - required - optional)
    if unknown:
        raise ParseError(
            f"{action} takes no {', '.join(unknown)}; it takes {', '.join(sorted(required | optional))}."
        )
    for money in ("estimate_usd", "actual_usd"):
        value = data.get(money)
        if money in data and (isinstance(value, bool) or not isinstance(value, str | int)):
            raise ParseError(f'{money} must be a decimal string, e.g. "0.02" (a float would not be exact).')
    if "reservation_id" in data and not isinstance(data["reservation_id"], str):
        raise ParseError("reservation_id must be the string that reserve returned.")
    if "call" in data and not isinstance(data["call"], dict):
        raise ParseError('call must be an object of the call\'s attributes, e.g. {"project": "search"}.')
    return data


def _unavailable() -> Response:
    return Response(
        {"detail": "Budget enforcement is unavailable (Redis cannot be reached); retry shortly."},
        status=503,
        headers={"Retry-After": str(REDIS_RETRY_AFTER_S)},
    )


def _usd(amount: Decimal) -> str:
    """A plain decimal string without trailing zeros: "0.6", "12", "-0.000000001"."""
    text = format(amount.normalize(), "f")
    return "0" if text in ("-0", "0") else text


def _reason(result: reservations.Reservation, names: dict[int, str]) -> str | None:
    if result.admitted:
        return None
    refusing = [names.get(b.id, str(b.id)) for b in result.budgets if b.verdict == result.decision]
    if result.decision == "throttle":
        return (
            f"Throttled by budget {', '.join(refusing)}: its requests per minute are used up; "
            f"retry after {result.retry_after_s} s."
        )
    return (
        f"Blocked by budget {', '.join(refusing)}: this call's estimate would pass its limit for the period."
    )


def _reserve_json(result: reservations.Reservation, names: dict[int, str]) -> dict[str, Any]:
    return {
        "action": "reserve",
        "admitted": result.admitted,
        "decision": result.decision,
        "reason": _reason(result, names),
        "reservation_id": result.id,
        "downgrade_model": result.downgrade_model or None,
        "retry_after_seconds": result.retry_after_s,
        "budgets": [
            {
                "id": b.id,
                "name": names.get(b.id, ""),
                "state": b.state,
                "verdict": b.verdict,
                "remaining_usd": _usd(b.remaining_usd),
            }
            for b in result.budgets
        ],
    }


class BudgetCheckView(APIView):
    @extend_schema(
        operation_id="budgets_check",
        summary="Reserve, settle or release a call's cost",
        tags=["budgets"],
        description=(
            "Before an LLM call, `reserve` its worst-case cost against every budget that covers it: "
            "atomically across all of them, the call is admitted only if no block budget would pass its "
            "limit (spend + settled calls + open reservations + this estimate) and no throttled budget "
            "has used up its requests for the minute; a budget in state downgrade admits it and names a "
            "cheaper model. A refusal is answered 200 with `admitted: false` and the reason (a throttle "
            "also sets Retry-After). After the call, `settle` the reservation with the actual cost, or "
            "`release` it if no call was made; an unsettled reservation expires after `ttl_seconds`. "
            "Money is a decimal string in USD."
        ),
        request=CheckRequestSerializer,
        examples=[
            OpenApiExample(
                "reserve",
                request_only=True,
                value={
                    "action": "reserve",
                    "estimate_usd": "0.02",
                    "call": {"project": "search", "model": "gpt-4o", "environment": "prod"},
                    "ttl_seconds": 60,
                },
            ),
            OpenApiExample(
                "settle",
                request_only=True,
                value={"action": "settle", "reservation_id": "<from reserve>", "actual_usd": "0.0131"},
            ),
            OpenApiExample(
                "release", request_only=True, value={"action": "release", "reservation_id": "<from reserve>"}
            ),
        ],
        responses={
            200: PolymorphicProxySerializer(
                component_name="BudgetCheckResult",
                serializers={
                    "reserve": ReserveResultSerializer,
                    "settle": CloseResultSerializer,
                    "release": CloseResultSerializer,
                },
                resource_type_field_name="action",
            ),
            400: OpenApiResponse(
                ErrorSerializer, description="The body is malformed; `detail` says what to fix."
            ),
            401: OpenApiResponse(ErrorSerializer, description="No API token, or an unknown or revoked one."),
            403: OpenApiResponse(
                ErrorSerializer, description="The signed-in user belongs to no organisation."
            ),
            404: OpenApiResponse(
                ErrorSerializer,
                description="settle, release: no such reservation in this organisation "
                "(or it expired long ago).",
            ),
            409: OpenApiResponse(
                ErrorSerializer, description="settle, release: the reservation is already closed."
            ),
            503: OpenApiResponse(
                ErrorSerializer,
                description="Redis cannot be reached; nothing changed. Retry after Retry-After seconds.",
            ),
        },
    )
    def post(self, request: Request) -> Response:
        organization = organization_for(request)
        data = _parse(request.data)
        try:
            if data["action"] == "reserve":
                result = reservations.reserve(
                    organization.id,
                    data.get("call") or {},
                    data["estimate_usd"],
                    ttl_s=data.get("ttl_seconds", reservations.DEFAULT_TTL_S),
                )
                names = dict(
                    Budget.objects.filter(
                        organization=organization, id__in=[b.id for b in result.budgets]
                    ).values_list("id", "name")
                )
                headers = {"Retry-After": str(result.retry_after_s)} if result.retry_after_s else None
                return Response(_reserve_json(result, names), headers=headers)
            if data["action"] == "settle":
                reservations.settle(organization.id, data["reservation_id"], data["actual_usd"])
                status = "settled"
            else:
                reservations.release(organization.id, data["reservation_id"])
                status = "released"
        except reservations.UnknownReservation as exc:
            return Response({"detail": str(exc)}, status=404)
        except reservations.ReservationClosed as exc:
            return Response({"detail": str(exc)}, status=409)
        except reservations.ReservationError as exc:
            raise ParseError(str(exc)) from exc
        except redis.RedisError:
            return _unavailable()
        return Response(
            {"action": data["action"], "reservation_id": data["reservation_id"], "status": status}
        )
