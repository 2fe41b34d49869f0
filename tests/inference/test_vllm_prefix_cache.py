"""A long prefix sent twice is prefilled once: vLLM's /metrics count the cached tokens."""

from __future__ import annotations

import re

import httpx
import pytest

from tests.inference.conftest import RunningVllm

pytestmark = pytest.mark.slow

HITS = re.compile(r"^vllm:prefix_cache_hits_total(?:\{[^}]*\})? ([0-9.e+]+)$", re.MULTILINE)


def prefix_cache_hits(server: RunningVllm) -> float:
    text = httpx.get(f"{server.root_url}/metrics", timeout=10).text
    values = HITS.findall(text)
    assert values, "vllm:prefix_cache_hits_total is missing from /metrics"
    return sum(float(v) for v in values)


def test_a_repeated_long_prefix_hits_the_prefix_cache(vllm_server: RunningVllm) -> None:
    # About 1,500 tokens of a policy document, as a support bot would send before every question.
    policy = " ".join(
        f"Rule {n}: refunds for order class {n} are granted within {n % 30 + 1} days." for n in range(90)
    )
    before = prefix_cache_hits(vllm_server)
    for question in ("How long do refunds of class 7 take?", "Which rule covers class 12?"):
        response = httpx.post(
            f"{vllm_server.base_url}/chat/completions",
            json={
                "model": vllm_server.model,
                "messages": [{"role": "system", "content": policy}, {"role": "user", "content": question}],
                "max_tokens": 1,
                "temperature": 0,
            },
            timeout=120,
        )
        assert response.status_code == 200, response.text
    prompt_tokens = response.json()["usage"]["prompt_tokens"]
    assert prompt_tokens > 1000
    # The second request reused every full block of the shared prefix: vLLM's CPU backend caches in
    # blocks of 128 tokens (1,792 of 1,865 here), so at most two blocks' worth are prefilled again.
    assert prefix_cache_hits(vllm_server) - before >= prompt_tokens - 2 * 128
