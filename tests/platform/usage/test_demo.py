"""`python manage.py demo`: traffic sent through the collector's ingest, rolled up, topped up, reset.

The command writes over its own database connections (the collector's pool), so it runs in a thread
of its own and commits, as `make_live_tenant` does; every test uses an organisation of its own name.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import pytest
from django.core.management import CommandError, call_command
from django.db import connections
from django.db.models import Count, Sum
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

from costline.tenancy.actions import create_organization
from costline.tenancy.models import Membership, Organization, Project, Role, User
from costline.usage.demo import DEMO_EMAIL, hours_to_send, reset_demo_data
from costline.usage.demo_traffic import ANTHROPIC_SCOPE, OPENAI_SCOPE, SELF_HOSTED_MODEL, hours_export
from costline.usage.metrics import UsageQuery, usage
from costline.usage.models import LLMCall, PriceOverride, TraceRoot
from tests.platform.usage.factories import make_call

T = TypeVar("T")


def committed(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run `fn` on a connection of its own, so that what it writes is committed at once.

    The test's own transaction must not hold what the command waits for (the partition lock).
    """

    def run() -> T:
        try:
            return fn(*args, **kwargs)
        finally:
            connections.close_all()

    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(run).result()


def run_demo(*args: str) -> str:
    """Run the command as `manage.py demo` would, committing on connections of its own."""
    out = io.StringIO()
    committed(call_command, "demo", *args, stdout=out, stderr=out)
    return out.getvalue()


def forget(name: str) -> None:
    """Delete a demo organisation the command committed, with its calls, and the demo user."""
    org = Organization.objects.get(name=name)
    reset_demo_data(org)
    org.delete()
    User.objects.filter(email=DEMO_EMAIL, memberships__isnull=True).delete()


@pytest.fixture(scope="module")
def two_days(django_db_setup: None, django_db_blocker: Any) -> Iterator[tuple[int, str]]:
    """An organisation filled with two days of demo traffic once for the module: (its id, the output)."""
    with django_db_blocker.unblock():
        output = run_demo("--name", "Demo two days", "--days", "2")
        yield Organization.objects.get(name="Demo two days").id, output
        committed(forget, "Demo two days")


def test_it_stores_the_traffic_as_the_collector_stores_otlp_spans(
    db: None, two_days: tuple[int, str]
) -> None:
    org_id, output = two_days
    calls = LLMCall.objects.filter(tenant_id=org_id)

    assert "new calls stored" in output
    assert calls.count() > 4000
    # The emitter is the instrumentation scope of each span, and its convention family, as ingest sets them.
    assert set(calls.values_list("emitter", "emitter_kind").distinct()) == {
        (OPENAI_SCOPE, "semconv"),
        (ANTHROPIC_SCOPE, "semconv"),
    }
    assert set(calls.values_list("provider", flat=True).distinct()) == {"openai", "anthropic", "vllm"}
    assert set(calls.values_list("environment", flat=True).distinct()) == {"production", "staging"}
    assert {
        "support-chat",
        "ticket-tagging",
        "ticket-tagging-fallback",
        "/v1/answer",
        "/v1/summaries",
    } <= set(calls.values_list("feature", flat=True).distinct())
    assert TraceRoot.objects.filter(tenant_id=org_id).count() > 1000


def test_it_has_what_the_dashboards_show(db: None, two_days: tuple[int, str]) -> None:
    org_id, _ = two_days
    calls = LLMCall.objects.filter(tenant_id=org_id)

    streamed = calls.filter(streaming=True)
    assert streamed.exists()
    assert not streamed.filter(ttft_ms__isnull=True, status="ok").exists()
    assert {"rate_limit", "timeout"} <= set(calls.values_list("error_type", flat=True).distinct())
    assert calls.filter(cache_read_tokens__gt=0, cache_savings_usd__gt=0).exists()
    assert calls.filter(operation="embeddings").exists()
    assert calls.filter(reasoning_tokens__gt=0).exists()
    assert calls.values("user_id").distinct().count() >= 20
    assert calls.values("session_id").distinct().count() >= 50
    # Projects own services by pattern, and every call is priced: the self-hosted model by the override.
    assert set(Project.objects.filter(organization_id=org_id).values_list("slug", flat=True)) == {
        "customer-support",
        "search",
        "developer-tools",
    }
    assert not calls.filter(project__isnull=True).exists()
    assert not calls.filter(cost_usd__isnull=True).exists()
    llama = calls.filter(model=SELF_HOSTED_MODEL, status="ok")
    assert llama.exists()
    assert set(llama.values_list("price_source", flat=True).distinct()) == {"override"}
    assert PriceOverride.objects.filter(tenant_id=org_id, provider="vllm").count() == 1


def test_it_rolls_the_traffic_up_so_the_query_layer_answers_the_raw_totals(
    db: None, two_days: tuple[int, str]
) -> None:
    org_id, _ = two_days
    raw = LLMCall.objects.filter(tenant_id=org_id).aggregate(
        requests=Count("*"),
        cost=Sum("cost_usd"),
        input_tokens=Sum("input_tokens"),
        output_tokens=Sum("output_tokens"),
        cache_read_tokens=Sum("cache_read_tokens"),
    )
    now = datetime.now(UTC)

    result = usage(
        org_id,
        UsageQuery(
            start=now - timedelta(days=4),
            end=now + timedelta(hours=2),
            interval="hour",
            metrics=("requests", "cost_usd", "input_tokens", "output_tokens", "cache_read_tokens"),
        ),
    )

    assert result.totals["requests"] == raw["requests"]
    assert result.totals["cost_usd"] == raw["cost"]
    assert isinstance(result.totals["cost_usd"], Decimal)
    assert result.totals["input_tokens"] == raw["input_tokens"]
    assert result.totals["output_tokens"] == raw["output_tokens"]
    assert result.totals["cache_read_tokens"] == raw["cache_read_tokens"]
    assert result.complete_through is not None


def test_it_makes_the_demo_user_an_owner(db: None, two_days: tuple[int, str]) -> None:
    org_id, output = two_days

    membership = Membership.objects.get(organization_id=org_id, user__email="demo@costline.local")

    assert membership.role == Role.OWNER
    assert "Sign in as demo@costline.local" in output


@pytest.fixture
def rerun(db: None) -> Iterator[str]:
    yield "Demo rerun"
    committed(forget, "Demo rerun")


def test_it_stores_nothing_twice_when_run_again_and_the_same_traffic_after_a_reset(rerun: str) -> None:
    started = datetime.now(UTC)
    run_demo("--name", rerun, "--days", "1")
    org = Organization.objects.get(name=rerun)
    first = set(LLMCall.objects.filter(tenant=org).values_list("trace_id", "span_id", "start_time"))

    again = run_demo("--name", rerun, "--days", "1")

    after = set(LLMCall.objects.filter(tenant=org).values_list("trace_id", "span_id", "start_time"))
    added = after - first
    # Only requests still running during the first run (or begun since) are new: nothing is stored twice.
    assert first <= after
    assert f"{len(added)} new calls stored" in again
    assert all(start > started - timedelta(minutes=5) for _, _, start in added)

    stranger = committed(
        make_call, org, start_time=datetime.now(UTC) - timedelta(hours=3), service="not-the-demo"
    )
    reset = run_demo("--name", rerun, "--days", "1", "--reset")

    assert "Deleted the calls" in reset
    after = set(LLMCall.objects.filter(tenant=org).values_list("trace_id", "span_id", "start_time"))
    assert (stranger.trace_id, stranger.span_id, stranger.start_time) not in after
    # The same seed draws the same spans: all but those of the window's first minutes (which moved on).
    assert len(first & after) > 0.95 * len(first)
    assert Project.objects.filter(organization=org).count() == 3


def test_it_refuses_an_organisation_with_other_members(db: None) -> None:
    org = create_organization("Acme")
    person = User.objects.create_user("someone@acme.example")
    Membership.objects.create(organization=org, user=person, role=Role.OWNER)

    with pytest.raises(CommandError, match="has members other than demo@costline"):
        call_command("demo", "--name", "Acme", "--reset", stdout=io.StringIO())

    assert Project.objects.filter(organization=org).count() == 0


def test_it_draws_the_same_hours_every_time_as_a_valid_otlp_export() -> None:
    hours = [datetime(2025, 3, 12, 14, tzinfo=UTC), datetime(2025, 3, 12, 15, tzinfo=UTC)]  # a Wednesday
    bounds = {"start": hours[0], "end": hours[0] + timedelta(hours=3)}

    drawn = hours_export(7, hours, ZoneInfo("UTC"), **bounds)

    assert hours_export(7, hours, ZoneInfo("UTC"), **bounds).body == drawn.body
    assert hours_export(8, hours, ZoneInfo("UTC"), **bounds).body != drawn.body
    request = trace_service_pb2.ExportTraceServiceRequest.FromString(drawn.body)
    sent = [span for rs in request.resource_spans for ss in rs.scope_spans for span in ss.spans]
    assert len(sent) == drawn.spans
    assert min(drawn.calls) > 100
    client_spans = [span for span in sent if span.kind == span.SPAN_KIND_CLIENT]
    assert len(client_spans) == sum(drawn.calls)
    assert all(span.parent_span_id for span in client_spans)
    names = {kv.key for span in client_spans for kv in span.attributes}
    assert {"gen_ai.operation.name", "gen_ai.provider.name", "gen_ai.usage.input_tokens"} <= names


def test_it_sends_only_the_hours_it_lacks() -> None:
    start = datetime(2025, 3, 10, 9, 30, tzinfo=UTC)
    end = datetime(2025, 3, 10, 16, 10, tzinfo=UTC)
    hours = [datetime(2025, 3, 10, h, tzinfo=UTC) for h in range(9, 17)]

    assert hours_to_send(start, end, set()) == hours
    # 10:00 to 13:00 stored: the edges are sent again, the hours between them are complete.
    stored = set(hours[1:5])
    assert hours_to_send(start, end, stored) == [hours[0], hours[1], hours[4], hours[5], hours[6], hours[7]]
