"""Budgets through the gateway: block, throttle and downgrade, scoped by key, and never overspent under
concurrent load; Redis unreachable answers 503 (fail-closed) or admits unchecked (fail-open)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from decimal import Decimal

import pytest

from costline.redis_client import client
from inference.gateway.budget import Budgets, cost, estimate_input_tokens, max_output_tokens
from inference.gateway.resp import LeanRedis
from tests.inference.gateway.conftest import committed
from tests.platform.budgets.reservation_fixtures import publish_budget

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("redis_db")]


def ask(content: str = "budget me", model: str = "gpt-4o-mini", **params):
    return {"model": model, "messages": [{"role": "user", "content": content}], **params}


def test_a_block_budget_refuses_with_429_naming_it(gateway, live_key):
    caller = live_key()
    # Committed, for the gateway to read its name; deleted after, since other tests sweep every budget.
    budget = committed(lambda: publish_budget(caller.org, "0.0001"))
    try:
        answer = gateway.post("/chat/completions", caller.key, ask())
    finally:
        committed(budget.delete)

    assert answer.status_code == 429
    assert answer.json()["error"]["code"] == "budget_exceeded"
    assert "Blocked by budget 'block 0.0001'" in answer.json()["error"]["message"]


def test_a_throttled_budget_answers_429_with_retry_after(gateway, live_key):
    caller = live_key()
    publish_budget(caller.org, "100", action="throttle", enforcement="throttle", throttle_rpm=1)

    first = gateway.post("/chat/completions", caller.key, ask("one"))
    second = gateway.post("/chat/completions", caller.key, ask("two"))

    assert first.status_code == 200
    assert second.status_code == 429
    assert second.json()["error"]["code"] == "budget_throttled"
    assert 1 <= int(second.headers["retry-after"]) <= 60


def test_a_downgrade_budget_routes_to_the_cheaper_model_and_says_so(gateway, live_key):
    caller = live_key()
    publish_budget(
        caller.org, "100", action="downgrade", enforcement="downgrade", downgrade_model="gpt-4o-mini"
    )

    answer = gateway.post("/chat/completions", caller.key, ask(model="gpt-4o"))

    assert answer.status_code == 200
    assert answer.headers["x-costline-downgraded-from"] == "gpt-4o"
    assert answer.headers["x-costline-model"] == "gpt-4o-mini"
    assert gateway.upstream.recorded.requests[-1]["body"]["model"] == "gpt-4o-mini"


def test_a_downgraded_call_is_not_answered_from_the_cache_of_the_model_it_asked_for(gateway, live_key):
    caller = live_key()
    assert gateway.post("/chat/completions", caller.key, ask("cached big", model="gpt-4o")).status_code == 200
    publish_budget(
        caller.org, "100", action="downgrade", enforcement="downgrade", downgrade_model="gpt-4o-mini"
    )

    answer = gateway.post("/chat/completions", caller.key, ask("cached big", model="gpt-4o"))

    # The lookup made before the reservation was for gpt-4o's answer: the downgrade looks up its own.
    assert answer.headers["x-costline-cache"] == "miss"
    assert answer.headers["x-costline-downgraded-from"] == "gpt-4o"
    assert gateway.upstream.recorded.requests[-1]["body"]["model"] == "gpt-4o-mini"
    again = gateway.post("/chat/completions", caller.key, ask("cached big", model="gpt-4o"))
    assert again.headers["x-costline-cache"] == "hit"  # the cheaper model's answer, cached under its key
    assert again.json()["model"] == answer.json()["model"]


def test_a_budget_on_one_gateway_key_leaves_the_others_alone(gateway, live_key):
    caller = live_key()
    publish_budget(caller.org, "0.0001", scope={"gateway_key": ["clgk_other"]})

    assert gateway.post("/chat/completions", caller.key, ask()).status_code == 200
    publish_budget(caller.org, "0.0001", scope={"gateway_key": [caller.prefix]})
    assert gateway.post("/chat/completions", caller.key, ask("again")).status_code == 429


def test_a_settled_call_counts_its_actual_cost(gateway, live_key):
    caller = live_key()
    budget = publish_budget(caller.org, "1.00")

    assert gateway.post("/chat/completions", caller.key, ask()).status_code == 200

    settled = client().hgetall(f"costline:budget:{budget.id}:settled")
    actual = cost("openai", "gpt-4o-mini", "chat", 11, 7)
    assert sum(int(v) for v in settled.values()) == int(actual * Decimal("1e9"))  # fake usage: 11 in, 7 out
    assert client().hlen(f"costline:budget:{budget.id}:reserved") == 0


def test_an_escalated_cascade_settles_both_calls_and_reserves_for_both(gateway, live_key):
    caller = live_key()
    budget = publish_budget(caller.org, "1.00")

    answer = gateway.post("/chat/completions", caller.key, ask("escalate me", model="smart-priced"))

    assert answer.headers["x-costline-upstream"] == "fake/gpt-4o"
    settled = client().hgetall(f"costline:budget:{budget.id}:settled")
    both = cost("openai", "gpt-4o-mini", "chat", 11, 7) + cost("openai", "gpt-4o", "chat", 11, 7)
    assert sum(int(v) for v in settled.values()) == int(both * Decimal("1e9"))

    # The worst case is both calls: a limit that covers the expensive one's alone refuses the call.
    body = ask("escalate again", model="smart-priced", max_tokens=100)
    worst = [
        cost("openai", model, "chat", estimate_input_tokens(body), max_output_tokens(body, "chat", 4096))
        for model in ("gpt-4o", "gpt-4o-mini")
    ]
    other = live_key()
    publish_budget(other.org, str(worst[0] + worst[1] / 2))
    refused = gateway.post("/chat/completions", other.key, body)
    assert refused.status_code == 429, refused.text
    assert refused.json()["error"]["code"] == "budget_exceeded"


def test_concurrent_calls_never_overspend_a_block_budget(gateway, live_key):
    caller = live_key()
    body = ask("slow and distinct 00", max_tokens=2000)
    estimate = cost(
        "openai", "gpt-4o-mini", "chat", estimate_input_tokens(body), max_output_tokens(body, "chat", 0)
    )
    limit = estimate * 5 + estimate / 2  # room for 5 estimates at once, not 6
    publish_budget(caller.org, str(limit.quantize(Decimal("0.000001"))))
    bodies = [ask(f"slow and distinct {i:02d}", max_tokens=2000) for i in range(20)]
    gateway.upstream.max_inflight = 0

    with ThreadPoolExecutor(max_workers=20) as pool:
        answers = list(pool.map(lambda b: gateway.post("/chat/completions", caller.key, b), bodies))

    assert {a.status_code for a in answers} == {200, 429}
    # Each call holds its worst case until it settles: never more than 5 at the upstream at once.
    assert 1 <= gateway.upstream.max_inflight <= 5


def test_redis_unreachable_is_503_unless_fail_open(gateway, live_key):
    caller = live_key()
    service = gateway.server.app.gateway
    working = service.budgets
    service.budgets = Budgets(LeanRedis("redis://127.0.0.1:1/0", connect_timeout_s=0.5))
    try:
        closed = gateway.post("/chat/completions", caller.key, ask("no redis"))
        service.settings = replace(service.settings, fail_open=True)
        opened = gateway.post("/chat/completions", caller.key, ask("no redis, open"))
    finally:
        service.budgets = working
        service.settings = replace(service.settings, fail_open=False)

    assert closed.status_code == 503
    assert closed.headers["retry-after"] == "1"
    assert opened.status_code == 200
    assert opened.headers["x-costline-budget"] == "unchecked"
