"""The exact response cache and request coalescing: what may share an answer, and what never does."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("redis_db")]


def ask(content: str, **params):
    return {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": content}], **params}


def test_a_repeated_request_is_answered_from_the_cache(gateway, live_key):
    caller = live_key()
    before = gateway.upstream.recorded.count()

    first = gateway.post("/chat/completions", caller.key, ask("cache me"))
    second = gateway.post("/chat/completions", caller.key, ask("cache me"))

    assert first.headers["x-costline-cache"] == "miss"
    assert second.headers["x-costline-cache"] == "hit"
    assert gateway.upstream.recorded.count() == before + 1
    assert second.json()["choices"] == first.json()["choices"]
    assert second.json()["id"] != first.json()["id"]  # each answer is a call of its own


def test_different_parameters_never_share_an_answer(gateway, live_key):
    caller = live_key()
    gateway.post("/chat/completions", caller.key, ask("params", temperature=0))

    for variant in (
        ask("params", temperature=0.7),
        ask("params", temperature=0, max_tokens=5),
        ask("params!"),
    ):
        assert gateway.post("/chat/completions", caller.key, variant).headers["x-costline-cache"] == "miss"
    # Parameters that do not change the answer do share it.
    same = gateway.post("/chat/completions", caller.key, ask("params", temperature=0, user="someone"))
    assert same.headers["x-costline-cache"] == "hit"


def test_streaming_and_non_streaming_share_answers(gateway, live_key):
    caller = live_key()
    gateway.post("/chat/completions", caller.key, ask("both ways"))

    streamed = gateway.post(
        "/chat/completions", caller.key, ask("both ways", stream=True, stream_options={"include_usage": True})
    )

    assert streamed.headers["x-costline-cache"] == "hit"
    assert '"content": "echo: both ways"' in streamed.text
    assert '"usage"' in streamed.text
    assert streamed.text.endswith("data: [DONE]\n\n")
    gateway.post("/chat/completions", caller.key, ask("streamed first", stream=True))
    plain = gateway.post("/chat/completions", caller.key, ask("streamed first"))
    assert plain.headers["x-costline-cache"] == "hit"
    assert plain.json()["choices"][0]["message"]["content"] == "echo: streamed first"


def test_organisations_never_share_a_cached_answer(gateway, live_key):
    gateway.post("/chat/completions", live_key().key, ask("secret of org a"))
    other = gateway.post("/chat/completions", live_key().key, ask("secret of org a"))
    assert other.headers["x-costline-cache"] == "miss"


def test_the_cache_can_be_refused_per_request_and_per_key(gateway, live_key):
    caller = live_key()
    gateway.post("/chat/completions", caller.key, ask("opt out"))

    no_store = gateway.post("/chat/completions", caller.key, ask("opt out"), **{"Cache-Control": "no-store"})
    off = gateway.post("/chat/completions", caller.key, ask("opt out"), **{"X-Costline-Cache": "off"})
    private = live_key(cache_enabled=False)
    gateway.post("/chat/completions", private.key, ask("private"))
    again = gateway.post("/chat/completions", private.key, ask("private"))

    assert no_store.headers["x-costline-cache"] == "miss"
    assert off.headers["x-costline-cache"] == "miss"
    assert again.headers["x-costline-cache"] == "miss"


def test_identical_concurrent_requests_share_one_upstream_call(gateway, live_key):
    caller = live_key()
    body = {"model": "slow", "messages": [{"role": "user", "content": "together"}]}
    before = gateway.upstream.recorded.count("gpt-4o-mini-slow")

    with ThreadPoolExecutor(max_workers=5) as pool:
        answers = list(pool.map(lambda _: gateway.post("/chat/completions", caller.key, body), range(5)))

    assert [a.status_code for a in answers] == [200] * 5
    assert gateway.upstream.recorded.count("gpt-4o-mini-slow") == before + 1
    assert sorted(a.headers["x-costline-cache"] for a in answers) == ["coalesced"] * 4 + ["miss"]
