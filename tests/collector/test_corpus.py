"""Every captured OTLP body in ../shared/corpus/otlp, posted as it was captured, stores the truth.

The ground truth (`*.expected.json`) comes from what the fake provider returned, not from the spans.
Each provider request must be stored exactly once (two emitters reporting it count once), with the
tokens, models, provider, streaming flag, error, user and session the provider saw.

Where an emitter does not carry a value at all (the corpus lists it as "not present" or "dropped"),
the collector cannot know it: the stored value must be unknown (None) or, where Costline recovered
it from elsewhere in the trace, the true value; never a wrong number. The few places where an emitter
reports a wrong value that no documented rule can correct are listed in EMITTER_ERRORS with the reason.
"""

from __future__ import annotations

import json
from collections import defaultdict
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from costline.usage.models import LLMCall
from tests.conftest import SHARED, RunningCollector, TenantKeys

CORPUS = SHARED / "corpus" / "otlp"
pytestmark = pytest.mark.skipif(
    not CORPUS.exists(), reason="../shared/corpus/otlp is not available beside the checkout"
)

# (library/case, emitter, field) → why the stored value cannot equal the provider's truth.
EMITTER_ERRORS = {
    (
        "openlit/anthropic_stream",
        "openlit",
        "input_tokens",
    ): "OpenLIT reports cache reads/writes of 0 when streaming",
    (
        "openlit/anthropic_stream",
        "openlit",
        "cache_read_tokens",
    ): "OpenLIT reports 0 cache reads when streaming",
    (
        "openlit/anthropic_stream",
        "openlit",
        "cache_write_tokens",
    ): "OpenLIT reports 0 cache writes when streaming",
    ("otelv2/openai_chat_stream", "otel-contrib-openai-v2", "streaming"): (
        "opentelemetry-instrumentation-openai-v2 omits gen_ai.request.stream; unset means false by semconv"
    ),
}

# Stored field → field of the expected record.
FIELDS = {
    "provider": "provider",
    "operation": "operation",
    "request_model": "request_model",
    "response_model": "response_model",
    "input_tokens": "input_tokens",
    "output_tokens": "output_tokens",
    "cache_read_tokens": "cache_read_tokens",
    "cache_write_tokens": "cache_creation_tokens",
    "reasoning_tokens": "reasoning_tokens",
    "streaming": "streaming",
    "user_id": "user_id",
    "session_id": "session_id",
}
# Token details where "not reported" (None) and "reported as zero" (0) both mean no such tokens.
ZERO_OR_UNKNOWN = {"cache_read_tokens", "cache_write_tokens", "reasoning_tokens"}


def trace_bodies() -> list[Path]:
    if not CORPUS.exists():
        return []
    return sorted(
        p
        for p in CORPUS.glob("*/*")
        if p.suffix in (".json", ".bin", ".gz")
        and not p.name.endswith((".expected.json", ".meta.json"))
        and ".metrics." not in p.name
        and ".logs." not in p.name
    )


def other_signal_bodies() -> list[Path]:
    if not CORPUS.exists():
        return []
    return sorted(
        p
        for p in CORPUS.glob("*/*")
        if (".metrics." in p.name or ".logs." in p.name) and not p.name.endswith(".meta.json")
    )


def post_captured(collector: RunningCollector, body_path: Path, tenant: TenantKeys) -> httpx.Response:
    meta = json.loads(body_path.with_name(body_path.name + ".meta.json").read_text())
    headers = {"Content-Type": meta["content_type"], **tenant.auth}
    if meta.get("content_encoding"):
        headers["Content-Encoding"] = meta["content_encoding"]
    return httpx.post(collector.http_url + meta["path"], content=body_path.read_bytes(), headers=headers)


def discrepancy_fields(span: dict[str, Any]) -> set[str]:
    """Fields the emitter did not carry at all ("not present", "dropped")."""
    missing = set()
    for note in span["discrepancies"]:
        field, _, text = note.partition(":")
        if "not present" in text or "dropped" in text:
            missing.add(field.strip())
    return missing


@pytest.mark.parametrize("body_path", trace_bodies(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_it_stores_each_provider_request_once_with_its_true_usage(
    collector: RunningCollector, make_live_tenant: Any, body_path: Path
) -> None:
    tenant = make_live_tenant()
    expected = json.loads(body_path.with_name(body_path.name + ".expected.json").read_text())
    case = f"{body_path.parent.name}/{expected['case']}"

    response = post_captured(collector, body_path, tenant)

    assert response.status_code == 200, response.text
    stored = {c.span_id: c for c in LLMCall.objects.filter(tenant_id=tenant.id)}
    by_request: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for span in expected["llm_spans"]:
        by_request[span["matched_provider_request_seq"]].append(span)
    assert len(stored) == len(by_request), (
        f"{len(stored)} calls stored for {len(by_request)} provider requests"
    )
    for spans in by_request.values():
        matches = [s for s in spans if s["span_id"] in stored]
        assert len(matches) == 1, f"request {spans[0]['expected']['response_id']} stored {len(matches)} times"
        span = matches[0]
        call = stored[span["span_id"]]
        truth = span["expected"]
        missing = discrepancy_fields(span)
        for ours, theirs in FIELDS.items():
            value, true_value = getattr(call, ours), truth[theirs]
            if (case, span["emitter"], ours) in EMITTER_ERRORS:
                continue
            if ours in missing or theirs in missing:
                assert value in (None, true_value), f"{ours}: {value!r}, but the emitter did not carry it"
            elif ours in ZERO_OR_UNKNOWN and {value, true_value} <= {None, 0}:
                continue
            else:
                assert value == true_value, f"{ours}: stored {value!r}, provider said {true_value!r}"
        assert (call.status == "error") == (truth["error"] is not None)
        if truth["error"] is not None:
            status = truth["error"]["http_status"]
            assert call.error_type == {429: "rate_limit", 500: "server_error"}[status]
            assert call.cost_usd == 0  # providers bill nothing for a refused or failed request
        elif (case, span["emitter"], "input_tokens") not in EMITTER_ERRORS and not missing & {
            "cache_read_tokens",
            "reasoning_tokens",
        }:
            assert call.cost_usd == Decimal(str(truth["reference_cost_usd"]))


@pytest.mark.parametrize("body_path", other_signal_bodies()[:4], ids=lambda p: f"{p.parent.name}/{p.name}")
def test_it_accepts_metrics_and_logs_exports_without_storing_them(
    collector: RunningCollector, make_live_tenant: Any, body_path: Path
) -> None:
    tenant = make_live_tenant()

    response = post_captured(collector, body_path, tenant)

    assert response.status_code == 200
    assert not LLMCall.objects.filter(tenant_id=tenant.id).exists()
