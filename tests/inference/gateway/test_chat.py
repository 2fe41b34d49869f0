"""The OpenAI API through the gateway, with the official `openai` client: chat, streaming, completions,
embeddings, models, and the errors a caller sees."""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.inference.gateway.conftest import committed
from tests.inference.gateway.fake_upstream import COMPLETION_TOKENS, PROMPT_TOKENS

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("redis_db")]
HELLO = [{"role": "user", "content": "hello"}]


def client(gateway, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.url, api_key=key, max_retries=0)


def test_it_answers_a_chat_completion(gateway, live_key):
    caller = live_key()

    answer = client(gateway, caller.key).chat.completions.create(model="gpt-4o-mini", messages=HELLO)

    assert answer.choices[0].message.content == "echo: hello"
    assert answer.usage.prompt_tokens == PROMPT_TOKENS
    assert answer.usage.completion_tokens == COMPLETION_TOKENS
    sent = gateway.upstream.recorded.requests[-1]
    assert sent["body"]["model"] == "gpt-4o-mini"
    assert "Authorization" not in sent["headers"] or caller.key not in sent["headers"].get(
        "authorization", ""
    )


def test_it_streams_with_usage(gateway, live_key):
    caller = live_key()

    chunks = list(
        client(gateway, caller.key).chat.completions.create(
            model="gpt-4o-mini", messages=HELLO, stream=True, stream_options={"include_usage": True}
        )
    )

    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "echo: hello"
    assert chunks[-1].usage.completion_tokens == COMPLETION_TOKENS
    assert chunks[-1].choices == []


def test_a_stream_without_include_usage_gets_no_usage_chunk(gateway, live_key):
    caller = live_key()

    chunks = list(
        client(gateway, caller.key).chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "no usage"}], stream=True
        )
    )

    assert all(c.choices for c in chunks)
    # The gateway still asked the upstream for usage: it settles every call with its real cost.
    assert gateway.upstream.recorded.requests[-1]["body"]["stream_options"] == {"include_usage": True}


def test_it_answers_completions_and_embeddings(gateway, live_key):
    caller = live_key()
    api = client(gateway, caller.key)

    completion = api.completions.create(model="gpt-4o-mini", prompt="once upon")
    embedding = api.embeddings.create(model="embed", input=["a", "b"])

    assert completion.choices[0].text == "echo: once upon"
    assert [len(e.embedding) for e in embedding.data] == [3, 3]
    assert gateway.upstream.recorded.requests[-1]["body"]["model"] == "text-embedding-3-small"


def test_it_lists_its_models(gateway, live_key):
    models = {m.id for m in client(gateway, live_key().key).models.list()}
    assert {"gpt-4o-mini", "fallback", "claude", "embed"} <= models


def test_a_model_no_alias_names_goes_to_a_passthrough_upstream(gateway, live_key):
    answer = client(gateway, live_key().key).chat.completions.create(model="gpt-4.1-nano", messages=HELLO)
    assert answer.choices[0].message.content == "echo: hello"
    assert gateway.upstream.recorded.requests[-1]["body"]["model"] == "gpt-4.1-nano"


def test_it_translates_anthropic(gateway, live_key):
    caller = live_key()
    api = client(gateway, caller.key)
    messages = [{"role": "system", "content": "be brief"}, *HELLO]

    answer = api.chat.completions.create(model="claude", messages=messages)
    chunks = list(
        api.chat.completions.create(
            model="claude", messages=messages, stream=True, stream_options={"include_usage": True}
        )
    )

    assert answer.choices[0].message.content == "echo: hello"
    assert answer.choices[0].finish_reason == "stop"
    assert answer.usage.prompt_tokens == 11  # Anthropic's 9 uncached + 2 cache reads
    assert answer.usage.prompt_tokens_details.cached_tokens == 2
    sent = gateway.upstream.recorded.requests[-1]
    assert sent["path"] == "/v1/messages"
    assert sent["body"]["system"] == "be brief"
    assert sent["headers"]["x-api-key"] == "sk-ant-test"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "echo: hello"
    assert chunks[-1].usage.completion_tokens == COMPLETION_TOKENS


def test_an_unknown_or_revoked_key_is_401(gateway, live_key):
    from costline.tenancy.actions import revoke_gateway_key

    caller = live_key()
    with pytest.raises(openai.AuthenticationError, match="Unknown or revoked gateway key"):
        client(gateway, "clgk_nope").chat.completions.create(model="gpt-4o-mini", messages=HELLO)
    committed(lambda: revoke_gateway_key(caller.org, caller.org.gateway_keys.get().id))
    with pytest.raises(openai.AuthenticationError):
        client(gateway, caller.key).chat.completions.create(model="gpt-4o-mini", messages=HELLO)
    missing = httpx.post(f"{gateway.url}/chat/completions", json={})
    assert missing.status_code == 401
    assert "Missing gateway key" in missing.json()["error"]["message"]


def test_an_unknown_model_is_404_naming_the_models(gateway, live_key):
    with pytest.raises(openai.NotFoundError, match="does not exist on this gateway") as raised:
        client(gateway, live_key().key).chat.completions.create(model="gpt-5-imaginary", messages=HELLO)
    assert raised.value.code == "model_not_found"


def test_malformed_bodies_are_400_and_oversized_413(gateway, live_key):
    caller = live_key()
    auth = {"Authorization": f"Bearer {caller.key}", "Content-Type": "application/json"}

    not_json = httpx.post(f"{gateway.url}/chat/completions", content=b"{nope", headers=auth)
    no_messages = gateway.post("/chat/completions", caller.key, {"model": "gpt-4o-mini"})
    huge = httpx.post(
        f"{gateway.url}/chat/completions", content=b"x" * (9 * 1024 * 1024), headers=auth, timeout=30
    )
    wrong_method = httpx.get(f"{gateway.url}/chat/completions", headers=auth)

    assert not_json.status_code == 400
    assert "not valid JSON" in not_json.json()["error"]["message"]
    assert no_messages.status_code == 400
    assert no_messages.json()["error"]["code"] == "missing_messages"
    assert huge.status_code == 413
    assert wrong_method.status_code == 405


def test_it_exposes_prometheus_metrics(gateway, live_key):
    client(gateway, live_key().key).chat.completions.create(model="gpt-4o-mini", messages=HELLO)

    text = httpx.get(gateway.url.removesuffix("/v1") + "/metrics").text

    assert (
        'costline_gateway_requests_total{cache="miss",model="gpt-4o-mini",operation="chat",status="200"}'
        in text
    )
    assert "costline_gateway_overhead_seconds_bucket" in text
