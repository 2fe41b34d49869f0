"""OTLP/HTTP: what a service's exporter sees when it sends traces to the collector."""

from __future__ import annotations

import gzip
import json
import time
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import Any

import httpx
import pytest
from google.rpc import status_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

from costline.tenancy.actions import revoke_ingest_key
from costline.usage.models import LLMCall
from tests.conftest import RunningCollector, TenantKeys
from tests.otlp_builders import (
    SERVER,
    chat_attrs,
    export,
    new_trace_id,
    span,
    to_json,
    to_protobuf,
)

PROTOBUF = {"Content-Type": "application/x-protobuf"}
JSON = {"Content-Type": "application/json"}


def post(
    collector: RunningCollector, body: bytes, headers: dict[str, str], path: str = "/v1/traces"
) -> httpx.Response:
    return httpx.post(collector.http_url + path, content=body, headers=headers, timeout=30)


def calls_of(tenant: TenantKeys) -> list[LLMCall]:
    return list(LLMCall.objects.filter(tenant_id=tenant.id).order_by("start_time"))


def status_message(response: httpx.Response) -> str:
    if response.headers["content-type"] == "application/x-protobuf":
        return str(status_pb2.Status.FromString(response.content).message)
    return str(response.json()["message"])


@pytest.fixture
def tenant(make_live_tenant: Any) -> TenantKeys:
    return make_live_tenant()  # type: ignore[no-any-return]


def test_it_stores_a_chat_call_priced_exactly(collector: RunningCollector, tenant: TenantKeys) -> None:
    body = to_protobuf(export(span(attrs=chat_attrs(input_tokens=1000, output_tokens=200))))

    response = post(collector, body, {**PROTOBUF, **tenant.auth})

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/x-protobuf"
    assert not trace_service_pb2.ExportTraceServiceResponse.FromString(response.content).HasField(
        "partial_success"
    )
    (call,) = calls_of(tenant)
    assert (call.provider, call.model, call.service, call.environment) == (
        "openai",
        "gpt-4o-mini",
        "checkout-api",
        "production",
    )
    # gpt-4o-mini: $0.15 per million input tokens, $0.60 per million output tokens.
    assert call.cost_usd == Decimal("0.00015") + Decimal("0.00012")
    assert call.price_source == "genai-prices"


def test_it_accepts_otlp_json_and_answers_in_json(collector: RunningCollector, tenant: TenantKeys) -> None:
    body = to_json(export(span(attrs=chat_attrs())))

    response = post(collector, body, {**JSON, **tenant.auth})

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {}
    assert len(calls_of(tenant)) == 1


def test_it_accepts_gzip_bodies(collector: RunningCollector, tenant: TenantKeys) -> None:
    body = gzip.compress(to_protobuf(export(span(attrs=chat_attrs()))))

    response = post(collector, body, {**PROTOBUF, "Content-Encoding": "gzip", **tenant.auth})

    assert response.status_code == 200
    assert len(calls_of(tenant)) == 1


def test_it_answers_the_langfuse_sdk_at_its_path_with_basic_auth(
    collector: RunningCollector, tenant: TenantKeys
) -> None:
    body = to_json(export(span(attrs=chat_attrs())))

    response = httpx.post(
        collector.http_url + "/api/public/otel/v1/traces",
        content=body,
        headers=JSON,
        auth=("pk-lf-anything", tenant.ingest_key),
    )

    assert response.status_code == 200
    assert len(calls_of(tenant)) == 1


@pytest.mark.parametrize(
    ("content_type", "body", "fragment"),
    [
        (
            "application/x-protobuf",
            b"\xff\xff\xff not protobuf",
            "not a valid OTLP ExportTraceServiceRequest",
        ),
        ("application/json", b'{"resourceSpans": [', "not valid JSON"),
        ("application/json", b'{"resourceSpans": {"oops": 1}}', "resourceSpans must be a list"),
    ],
)
def test_it_refuses_a_malformed_body_with_400_and_says_why(
    collector: RunningCollector, tenant: TenantKeys, content_type: str, body: bytes, fragment: str
) -> None:
    response = post(collector, body, {"Content-Type": content_type, **tenant.auth})

    assert response.status_code == 400
    assert fragment in status_message(response)
    assert response.headers["content-type"] == content_type


def test_it_refuses_a_corrupt_gzip_body_with_400(collector: RunningCollector, tenant: TenantKeys) -> None:
    response = post(collector, b"\x1f\x8b not gzip", {**PROTOBUF, "Content-Encoding": "gzip", **tenant.auth})

    assert response.status_code == 400
    assert "gzip" in status_message(response)


def test_it_answers_401_without_a_key(collector: RunningCollector, db: None) -> None:
    response = post(collector, to_protobuf(export(span(attrs=chat_attrs()))), PROTOBUF)

    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert "Authorization: Bearer <ingest key>" in status_message(response)


def test_it_answers_401_for_an_unknown_key(collector: RunningCollector, db: None) -> None:
    body = to_protobuf(export(span(attrs=chat_attrs())))

    response = post(collector, body, {**PROTOBUF, "Authorization": "Bearer clik_not-a-real-key"})

    assert response.status_code == 401
    assert "unknown or revoked ingest key" in status_message(response)


def test_it_answers_401_for_a_revoked_key(
    collector: RunningCollector, make_live_tenant: Any, django_db_blocker: Any
) -> None:
    tenant = make_live_tenant()
    key_id = tenant.org.ingest_keys.get().id
    with ThreadPoolExecutor(1) as pool:  # commit the revocation where the collector can see it
        pool.submit(revoke_ingest_key, tenant.org, key_id).result()

    response = post(collector, to_protobuf(export(span(attrs=chat_attrs()))), {**PROTOBUF, **tenant.auth})

    assert response.status_code == 401
    assert calls_of(tenant) == []


def test_it_refuses_a_body_over_the_limit_with_413(collector: RunningCollector, tenant: TenantKeys) -> None:
    limit = collector.server.app.max_body_bytes  # type: ignore[attr-defined]

    response = post(collector, b"\0" * (limit + 1), {**PROTOBUF, **tenant.auth})

    assert response.status_code == 413
    assert "smaller batches" in status_message(response)


def test_it_refuses_a_gzip_bomb_with_413(collector: RunningCollector, tenant: TenantKeys) -> None:
    limit = collector.server.app.max_body_bytes  # type: ignore[attr-defined]
    bomb = gzip.compress(b"\0" * (limit * 4))  # ~16 KiB on the wire, 16 MiB inflated
    assert len(bomb) < limit // 100

    response = post(collector, bomb, {**PROTOBUF, "Content-Encoding": "gzip", **tenant.auth})

    assert response.status_code == 413
    assert "after decompression" in status_message(response)


def test_it_refuses_an_unsupported_content_type_with_415(
    collector: RunningCollector, tenant: TenantKeys
) -> None:
    response = post(collector, b"traces", {"Content-Type": "text/plain", **tenant.auth})

    assert response.status_code == 415
    assert "application/x-protobuf or application/json" in response.json()["message"]


def test_it_refuses_an_unsupported_content_encoding_with_415(
    collector: RunningCollector, tenant: TenantKeys
) -> None:
    body = to_protobuf(export(span(attrs=chat_attrs())))

    response = post(collector, body, {**PROTOBUF, "Content-Encoding": "br", **tenant.auth})

    assert response.status_code == 415
    assert "gzip" in status_message(response)


def test_it_answers_404_off_the_otlp_paths_and_405_for_get(collector: RunningCollector, db: None) -> None:
    assert httpx.post(collector.http_url + "/v2/traces", headers=JSON).status_code == 404
    assert httpx.get(collector.http_url + "/v1/traces").status_code == 405


def test_it_answers_429_with_retry_after_when_overloaded(
    collector: RunningCollector, tenant: TenantKeys
) -> None:
    pipeline = collector.server.pipeline  # type: ignore[attr-defined]
    saved = pipeline.max_in_flight
    pipeline.max_in_flight = 0  # as if every place in the queue were taken
    try:
        response = post(collector, to_protobuf(export(span(attrs=chat_attrs()))), {**PROTOBUF, **tenant.auth})
    finally:
        pipeline.max_in_flight = saved

    assert response.status_code == 429
    assert int(response.headers["retry-after"]) > 0
    assert calls_of(tenant) == []


def test_it_rejects_invalid_spans_with_partial_success_and_keeps_the_rest(
    collector: RunningCollector, tenant: TenantKeys
) -> None:
    good = span(attrs=chat_attrs())
    bad_id = {**span(attrs=chat_attrs()), "spanId": "not-hex"}
    ancient = span(attrs=chat_attrs(), start_ns=time.time_ns() - 400 * 86400 * 10**9)

    response = post(collector, to_json(export(good, bad_id, ancient)), {**JSON, **tenant.auth})

    assert response.status_code == 200
    partial = response.json()["partialSuccess"]
    assert partial["rejectedSpans"] == "2"
    assert "spanId must be 16 hex digits" in partial["errorMessage"]
    assert "older than raw retention" in partial["errorMessage"]
    assert [c.span_id for c in calls_of(tenant)] == [good["spanId"]]


def test_a_retried_export_is_stored_once(collector: RunningCollector, tenant: TenantKeys) -> None:
    body = to_protobuf(export(span(attrs=chat_attrs()), span(attrs=chat_attrs(model="gpt-4o"))))

    first = post(collector, body, {**PROTOBUF, **tenant.auth})
    again = post(collector, body, {**PROTOBUF, **tenant.auth})

    assert (first.status_code, again.status_code) == (200, 200)
    assert len(calls_of(tenant)) == 2


def test_concurrent_retries_of_one_export_are_stored_once(
    collector: RunningCollector, tenant: TenantKeys
) -> None:
    trace = new_trace_id()
    root = span(trace_id=trace, name="POST /summarize", kind=SERVER, attrs={"http.route": "/summarize"})
    children = [span(trace_id=trace, parent=root["spanId"], attrs=chat_attrs()) for _ in range(20)]
    body = to_protobuf(export(root, *children))

    with ThreadPoolExecutor(max_workers=6) as pool:
        statuses = list(
            pool.map(lambda _: post(collector, body, {**PROTOBUF, **tenant.auth}).status_code, range(6))
        )

    assert statuses == [200] * 6
    assert len(calls_of(tenant)) == 20


def test_an_acknowledged_export_is_already_durable(collector: RunningCollector, tenant: TenantKeys) -> None:
    body = to_protobuf(export(*[span(attrs=chat_attrs()) for _ in range(50)]))

    response = post(collector, body, {**PROTOBUF, **tenant.auth})

    # Read on this test's own connection, right after the answer: the rows were committed before it.
    assert response.status_code == 200
    assert LLMCall.objects.filter(tenant_id=tenant.id).count() == 50


def test_the_ingest_key_decides_the_tenant(collector: RunningCollector, make_live_tenant: Any) -> None:
    alice, bob = make_live_tenant("Alice"), make_live_tenant("Bob")
    shared_trace = new_trace_id()
    body = to_protobuf(
        export(span(trace_id=shared_trace, attrs=chat_attrs()), resource={"tenant.id": str(bob.id)})
    )

    post(collector, body, {**PROTOBUF, **alice.auth})
    post(collector, body, {**PROTOBUF, **bob.auth})

    assert [c.trace_id for c in calls_of(alice)] == [shared_trace]
    assert [c.trace_id for c in calls_of(bob)] == [shared_trace]
    assert LLMCall.objects.filter(trace_id=shared_trace).count() == 2


def test_a_model_without_a_price_is_stored_unpriced_not_free(
    collector: RunningCollector, tenant: TenantKeys
) -> None:
    body = to_json(export(span(attrs=chat_attrs(model="acme-secret-model-9", response_model=None))))

    post(collector, body, {**JSON, **tenant.auth})

    (call,) = calls_of(tenant)
    assert call.cost_usd is None
    assert not call.priced
    assert call.model == "acme-secret-model-9"


def test_missing_usage_is_stored_as_unknown_not_zero(collector: RunningCollector, tenant: TenantKeys) -> None:
    body = to_json(export(span(attrs=chat_attrs(input_tokens=None, output_tokens=None))))

    post(collector, body, {**JSON, **tenant.auth})

    (call,) = calls_of(tenant)
    assert (call.input_tokens, call.output_tokens, call.cost_usd) == (None, None, None)


def test_metrics_and_logs_exports_are_accepted_and_not_stored(
    collector: RunningCollector, tenant: TenantKeys
) -> None:
    for path in ("/v1/metrics", "/v1/logs"):
        response = post(collector, b"{}", {**JSON, **tenant.auth}, path=path)
        assert response.status_code == 200
    assert calls_of(tenant) == []


def test_health_answers_without_a_key(collector: RunningCollector) -> None:
    response = httpx.get(collector.http_url + "/health")

    assert response.status_code == 200
    assert json.loads(response.content) == {"status": "ok"}
