"""LLM call rows made straight with the ORM, for tests of what reads them."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from django.db import connection

from costline.tenancy.models import Organization
from costline.usage.models import LLMCall
from costline.usage.partitions import day_of, ensure_partitions

NOON = datetime(2025, 3, 14, 12, 0, tzinfo=UTC)


def make_call(org: Organization, **fields: Any) -> LLMCall:
    """A priced gpt-4o chat call of `org`, started at NOON unless `fields` say otherwise."""
    values = _values(**fields)
    # Raw calls live in daily partitions; a row for a day without one cannot be inserted.
    with connection.cursor() as cursor:
        ensure_partitions(cursor, {day_of(values["start_time"])})
    return LLMCall.objects.create(tenant=org, **values)


def make_calls(org: Organization, starts: list[datetime], **fields: Any) -> list[LLMCall]:
    """One call per start time, inserted at once."""
    calls = [LLMCall(tenant=org, **_values(start_time=start, **fields)) for start in starts]
    with connection.cursor() as cursor:
        ensure_partitions(cursor, {day_of(start) for start in starts})
    return LLMCall.objects.bulk_create(calls)


def _values(**fields: Any) -> dict[str, Any]:
    return {
        "trace_id": secrets.token_hex(16),
        "span_id": secrets.token_hex(8),
        "start_time": NOON,
        "service": "support-bot",
        "environment": "production",
        "provider": "openai",
        "operation": "chat",
        "model": "gpt-4o",
        "request_model": "gpt-4o",
        "response_model": "gpt-4o-2024-08-06",
        "input_tokens": 1200,
        "output_tokens": 300,
        "cost_usd": Decimal("0.006000000000"),
        "price_source": "catalogue",
        "price_version": "genai-prices 0.0.30",
        "latency_ms": 812.5,
        "status": "ok",
        "finish_reason": "stop",
        **fields,
    }
