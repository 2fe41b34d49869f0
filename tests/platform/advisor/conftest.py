"""Calls written straight to the database, shaped so that each lever's saving is known."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.db import connection

from costline.tenancy.actions import create_organization
from costline.tenancy.models import Organization
from costline.usage.models import LLMCall
from costline.usage.partitions import day_of, ensure_partitions

# After 2026-10-14, when genai-prices lists the batch prices.
NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
# gpt-4o: $2.50 per million input tokens, $10 per million output: 3,000 in and 100 out cost $0.0085.
COST = Decimal("0.0085")


@pytest.fixture
def org(db: None) -> Organization:
    return create_organization("Acme")


@pytest.fixture
def other_org(db: None) -> Organization:
    return create_organization("Globex")


def call_values(i: int, **fields: Any) -> dict[str, Any]:
    return {
        "trace_id": secrets.token_hex(16),
        "span_id": secrets.token_hex(8),
        "start_time": NOW - timedelta(days=2) + timedelta(seconds=60 * i),
        "provider": "openai",
        "operation": "chat",
        "model": "gpt-4o",
        "request_model": "gpt-4o",
        "feature": "write-report",
        "user_id": "u-1",
        "streaming": True,
        "input_tokens": 3000,
        "output_tokens": 100,
        "cost_usd": COST,
        "status": "ok",
        "finish_reason": "stop",
        "prompt_hash": None,
        **fields,
    }


@pytest.fixture
def write_calls() -> Callable[..., list[LLMCall]]:
    """`write_calls(org, [fields, ...])`: one call per dict, the i-th a minute after the (i-1)-th."""

    def write(org: Organization, rows: list[dict[str, Any]]) -> list[LLMCall]:
        calls = [LLMCall(tenant=org, **call_values(i, **row)) for i, row in enumerate(rows)]
        with connection.cursor() as cursor:
            ensure_partitions(cursor, {day_of(c.start_time) for c in calls})
        return LLMCall.objects.bulk_create(calls)

    return write
