"""The real vLLM server answers the OpenAI chat and completions API with the bundled SmolLM2."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.inference.conftest import RunningVllm

pytestmark = pytest.mark.slow


def test_it_completes_greedily_with_the_right_fact(vllm_server: RunningVllm) -> None:
    response = httpx.post(
        f"{vllm_server.base_url}/completions",
        json={
            "model": vllm_server.model,
            "prompt": "The capital of France is",
            "max_tokens": 4,
            "temperature": 0,
        },
        timeout=60,
    )
    assert response.status_code == 200, response.text
    assert "Paris" in response.json()["choices"][0]["text"]


def test_it_answers_a_chat_with_usage(vllm_server: RunningVllm) -> None:
    response = httpx.post(
        f"{vllm_server.base_url}/chat/completions",
        json={
            "model": vllm_server.model,
            "messages": [{"role": "user", "content": "What is the capital of France?"}],
            "max_tokens": 16,
            "temperature": 0,
        },
        timeout=60,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == "smollm2-135m-instruct"
    # A 135M model's greedy answer is fragile: "Paris" alone, or the French landmarks around it, as the
    # KV blocks it reuses from earlier requests (prefix caching) shift its bfloat16 sums.
    assert body["choices"][0]["message"]["content"].strip()
    assert body["choices"][0]["finish_reason"] in ("stop", "length")
    # The chat template wrapped the question (SmolLM2's adds a system prompt): more tokens than it has.
    assert body["usage"]["prompt_tokens"] > 20
    assert 0 < body["usage"]["completion_tokens"] <= 16


def test_it_streams_and_ends_with_a_usage_chunk(vllm_server: RunningVllm) -> None:
    request = {
        "model": vllm_server.model,
        "messages": [{"role": "user", "content": "Count from one to five."}],
        "max_tokens": 12,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    chunks = []
    with httpx.stream(
        "POST", f"{vllm_server.base_url}/chat/completions", json=request, timeout=60
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                chunks.append(json.loads(line.removeprefix("data: ")))
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text.strip()
    usage = chunks[-1]
    assert usage["choices"] == []
    assert usage["usage"]["completion_tokens"] == 12
    assert usage["usage"]["prompt_tokens"] > 0


def test_it_lists_the_served_model(vllm_server: RunningVllm) -> None:
    models = httpx.get(f"{vllm_server.base_url}/models", timeout=10).json()
    assert [m["id"] for m in models["data"]] == ["smollm2-135m-instruct"]
