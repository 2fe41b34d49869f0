"""The second vLLM server embeds text with all-MiniLM-L6-v2 (what the gateway's /v1/embeddings uses)."""

from __future__ import annotations

import math

import httpx
import pytest

from tests.inference.conftest import RunningVllm

pytestmark = pytest.mark.slow


def cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


def test_it_embeds_in_384_dimensions_with_meaning(vllm_embeddings_server: RunningVllm) -> None:
    texts = ["A cat sits on the mat.", "A kitten is lying on a rug.", "Stock markets fell sharply today."]
    response = httpx.post(
        f"{vllm_embeddings_server.base_url}/embeddings",
        json={"model": vllm_embeddings_server.model, "input": texts},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    vectors = [item["embedding"] for item in sorted(body["data"], key=lambda item: item["index"])]
    assert [len(v) for v in vectors] == [384, 384, 384]
    assert cosine(vectors[0], vectors[1]) > cosine(vectors[0], vectors[2]) + 0.2
    assert body["model"] == "all-minilm-l6-v2"
    assert body["usage"]["prompt_tokens"] > 0
