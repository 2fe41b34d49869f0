"""Listing one tenant's LLM calls, newest first: the parameters, the cursor and the query.

Pages are keyset-paginated over (start_time, trace_id, span_id) descending. Each page continues from
the last row of the previous one through the (tenant_id, start_time DESC) index, so page 1,000 costs
what page 1 costs, where an OFFSET would read and discard every earlier row. Within a tenant those
three columns are the primary key, so the order is total: calls that started in the same microsecond
are neither skipped nor repeated across pages.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from django.core import signing
from django.db.models import Q, QuerySet

from costline.usage.models import LLMCall

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000

PARAMETERS = (
    "from",
    "to",
    "service",
    "provider",
    "model",
    "user",
    "session",
    "feature",
    "trace_id",
    "limit",
    "cursor",
)

_CURSOR_SALT = "costline.usage.calls.cursor"
_INVALID_CURSOR = "invalid cursor: pass the cursor of a previous page's `next` link unchanged."
_TRACE_ID = re.compile(r"[0-9a-f]{32}")
# An unencoded "+" in a query string arrives as a space, so `from=…T10:00:00+02:00` typed into curl
# reads "…T10:00:00 02:00"; put the sign back rather than refuse what the caller plainly meant.
_OFFSET_SIGN_AS_SPACE = re.compile(r"(T[0-9:.,]+) ([0-9]{2}(?::?[0-9]{2})?)$")


class InvalidQuery(ValueError):
    """A query parameter the caller must fix; the message says which and how."""


@dataclass(frozen=True)
class CallFilters:
    start: datetime | None = None  # inclusive
    end: datetime | None = None  # exclusive
    service: str | None = None
    provider: str | None = None
    model: str | None = None  # the model, the requested model or the model that answered
    user_id: str | None = None
    session_id: str | None = None
    feature: str | None = None
    trace_id: str | None = None


@dataclass(frozen=True)
class Cursor:
    """The sort key of the last call of a page; the next page starts just after it."""

    start_time: datetime
    trace_id: str
    span_id: str


@dataclass(frozen=True)
class CallQuery:
    filters: CallFilters = field(default_factory=CallFilters)
    after: Cursor | None = None
    limit: int = DEFAULT_LIMIT


@dataclass(frozen=True)
class Page:
    calls: list[LLMCall]
    next_cursor: str | None  # None on the last page


def parse_query(params: Mapping[str, Sequence[str]]) -> CallQuery:
    """Read the query string of GET /api/v1/calls (each name with its list of values)."""
    unknown = sorted(set(params) - set(PARAMETERS))
    if unknown:
        raise InvalidQuery(
            f"Unknown query parameter(s): {', '.join(unknown)}. Allowed: {', '.join(PARAMETERS)}."
        )
    values: dict[str, str] = {}
    for name, given in params.items():
        if len(given) != 1:
            raise InvalidQuery(f"Give {name} once, got {len(given)} values.")
        values[name] = given[0]

    filters = CallFilters(
        start=_parse_time("from", values["from"]) if "from" in values else None,
        end=_parse_time("to", values["to"]) if "to" in values else None,
        service=values.get("service"),
        provider=values.get("provider"),
        model=values.get("model"),
        user_id=values.get("user"),
        session_id=values.get("session"),
        feature=values.get("feature"),
        trace_id=_parse_trace_id(values["trace_id"]) if "trace_id" in values else None,
    )
    if filters.start is not None and filters.end is not None and filters.start >= filters.end:
        raise InvalidQuery("from must be earlier than to (from is inclusive, to is exclusive).")
    return CallQuery(
        filters=filters,
        after=decode_cursor(values["cursor"]) if "cursor" in values else None,
        limit=_parse_limit(values["limit"]) if "limit" in values else DEFAULT_LIMIT,
    )


def _parse_time(name: str, raw: str) -> datetime:
    try:
        moment = datetime.fromisoformat(_OFFSET_SIGN_AS_SPACE.sub(r"\1+\2", raw))
    except ValueError:
        raise InvalidQuery(
            f"{name} must be an ISO 8601 date-time such as 2025-01-31T14:00:00Z or "
            f"2025-01-31T16:00:00+02:00 (without an offset it is read as UTC), got {raw!r}."
        ) from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _parse_trace_id(raw: str) -> str:
    # Trace ids are stored as lowercase hex; some tools display them in capitals.
    trace_id = raw.lower()
    if not _TRACE_ID.fullmatch(trace_id):
        raise InvalidQuery(f"trace_id must be 32 hexadecimal digits, got {raw!r}.")
    return trace_id


def _parse_limit(raw: str) -> int:
    limit = int(raw) if raw.isascii() and raw.isdigit() else 0
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidQuery(f"limit must be an integer from 1 to {MAX_LIMIT}, got {raw!r}.")
    return limit


def encode_cursor(call: LLMCall) -> str:
    # Signed, so a cursor that was altered is refused instead of silently paging from elsewhere.
    return signing.Signer(salt=_CURSOR_SALT).sign_object(
        [call.start_time.astimezone(UTC).isoformat(), call.trace_id, call.span_id]
    )


def decode_cursor(token: str) -> Cursor:
    try:
        start, trace_id, span_id = signing.Signer(salt=_CURSOR_SALT).unsign_object(token)
        cursor = Cursor(datetime.fromisoformat(start), str(trace_id), str(span_id))
    except (signing.BadSignature, ValueError, TypeError):
        raise InvalidQuery(_INVALID_CURSOR) from None
    if cursor.start_time.tzinfo is None:
        raise InvalidQuery(_INVALID_CURSOR)
    return cursor


def calls_for(organization_id: int, filters: CallFilters, after: Cursor | None = None) -> QuerySet[LLMCall]:
    """The tenant's calls matching `filters`, newest first, from just after `after`."""
    calls = LLMCall.objects.filter(tenant_id=organization_id)
    if filters.start is not None:
        calls = calls.filter(start_time__gte=filters.start)
    if filters.end is not None:
        calls = calls.filter(start_time__lt=filters.end)
    exact = {
        "service": filters.service,
        "provider": filters.provider,
        "user_id": filters.user_id,
        "session_id": filters.session_id,
        "feature": filters.feature,
        "trace_id": filters.trace_id,
    }
    calls = calls.filter(**{column: value for column, value in exact.items() if value is not None})
    if filters.model is not None:
        calls = calls.filter(
            Q(model=filters.model) | Q(request_model=filters.model) | Q(response_model=filters.model)
        )
    if after is not None:
        # The plain bound on start_time is what the index scan (and partition pruning) can use; the
        # disjunction that breaks ties is then checked only on the rows of that one instant.
        calls = calls.filter(start_time__lte=after.start_time).filter(
            Q(start_time__lt=after.start_time)
            | Q(start_time=after.start_time, trace_id__lt=after.trace_id)
            | Q(start_time=after.start_time, trace_id=after.trace_id, span_id__lt=after.span_id)
        )
    # One LEFT JOIN brings each call's project (for its slug) with the page, never a query per row.
    return calls.select_related("project").order_by("-start_time", "-trace_id", "-span_id")


def list_calls(organization_id: int, query: CallQuery) -> Page:
    """One page of the tenant's calls and the cursor of the next page, if there is one."""
    # One row more than the page tells whether another page follows, without a COUNT.
    rows = list(calls_for(organization_id, query.filters, query.after)[: query.limit + 1])
    if len(rows) <= query.limit:
        return Page(calls=rows, next_cursor=None)
    page = rows[: query.limit]
    return Page(calls=page, next_cursor=encode_cursor(page[-1]))
