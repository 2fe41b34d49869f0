"""Routing: ordered fallbacks on upstream failure, client errors passed through, cascades."""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("redis_db")]
HELLO = [{"role": "user", "content": "route me"}]


def test_a_failing_upstream_falls_back_to_the_next(gateway, live_key):
    answer = gateway.post("/chat/completions", live_key().key, {"model": "fallback", "messages": HELLO})

    assert answer.status_code == 200
    assert answer.headers["x-costline-upstream"] == "backup/gpt-4o-mini"
    tried = [r["body"]["model"] for r in gateway.upstream.recorded.requests[-2:]]
    assert tried == ["gpt-4o-fail", "gpt-4o-mini"]


def test_a_stream_falls_back_before_its_first_byte(gateway, live_key):
    body = {"model": "fallback", "messages": HELLO, "stream": True}
    answer = gateway.post("/chat/completions", live_key().key, body)

    assert answer.status_code == 200
    assert answer.headers["x-costline-upstream"] == "backup/gpt-4o-mini"
    assert answer.text.endswith("data: [DONE]\n\n")


def test_when_every_upstream_fails_the_answer_is_a_retryable_502(gateway, live_key):
    answer = gateway.post("/chat/completions", live_key().key, {"model": "all-down", "messages": HELLO})

    assert answer.status_code == 502
    message = answer.json()["error"]["message"]
    assert "fake/gpt-4o-fail" in message
    assert "backup/gpt-4o-429" in message


def test_a_client_error_is_answered_as_the_upstream_said_without_fallback(gateway, live_key):
    before = gateway.upstream.recorded.count("gpt-4o-mini")
    answer = gateway.post("/chat/completions", live_key().key, {"model": "bad", "messages": HELLO})

    assert answer.status_code == 400
    assert answer.json()["error"]["message"] == "bad parameter x"
    assert gateway.upstream.recorded.count("gpt-4o-mini") == before  # the backup was not tried


def test_a_cascade_escalates_when_the_cheap_answer_is_cut_off(gateway, live_key):
    answer = gateway.post("/chat/completions", live_key().key, {"model": "smart", "messages": HELLO})

    assert answer.status_code == 200
    assert answer.headers["x-costline-upstream"] == "fake/gpt-4o"
    tried = [r["body"]["model"] for r in gateway.upstream.recorded.requests[-2:]]
    assert tried == ["gpt-4o-mini-short", "gpt-4o"]


def test_a_cascade_keeps_a_good_cheap_answer(gateway, live_key):
    answer = gateway.post("/chat/completions", live_key().key, {"model": "smart-ok", "messages": HELLO})

    assert answer.headers["x-costline-upstream"] == "fake/gpt-4o-mini"
    assert gateway.upstream.recorded.requests[-1]["body"]["model"] == "gpt-4o-mini"
