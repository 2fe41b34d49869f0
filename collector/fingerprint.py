"""Evidence about a prompt that the advisor can use without ever storing the prompt.

One function serves the collector (which reads the messages from a span's content attributes) and the
gateway (which sees the request body): both must give the same numbers for the same request, so the
canonical form below ignores how an emitter encodes messages (OpenAI `content` strings, GenAI `parts`).

- `prompt_hash`: the whole request as a cache would key it: tools, messages and the sampling
  parameters that change the answer (temperature, top_p, max tokens, seed, stop, response format).
- `prefix_hash`: the leading prefix a provider's prompt cache (or vLLM's prefix cache) can reuse: the
  tools and the system messages before the first other message.
- token lengths: the emitter's input token count for the whole prompt when it gave one, the prefix's
  share of it by characters; otherwise estimated at 4 characters a token (OpenAI's rule of thumb for
  English; the advisor only needs the order of magnitude to decide whether a prefix is cacheable).
- `simhash`: a 64-bit SimHash of the messages' text over word 3-shingles, so that prompts differing
  in a few words lie a few bits apart (Charikar 2002).

Hashes are the first 8 bytes of BLAKE2b as a signed 64-bit integer (PostgreSQL bigint): equality over
10 million calls collides with probability ~3e-6. No Django import here: the collector and the gateway
import it.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

CHARS_PER_TOKEN = 4
_WORD = re.compile(r"\w+", re.UNICODE)
# Beyond this many shingles the fingerprint is decided: long prompts cost at most ~2 ms to hash.
_MAX_SHINGLES = 2048
_SIMHASH_CACHE = 50_000
_simhashes: dict[int, int] = {}
# Request parameters that change the answer: two requests that differ in one are not repeats.
ANSWER_PARAMETERS = (
    "temperature",
    "top_p",
    "max_tokens",
    "max_completion_tokens",
    "seed",
    "stop",
    "response_format",
    "n",
)


@dataclass(frozen=True, slots=True)
class PromptEvidence:
    prompt_hash: int
    prefix_hash: int | None  # None: the prompt has no system message and no tools
    prompt_tokens: int
    prefix_tokens: int
    simhash: int

    def span_attributes(self) -> dict[str, int]:
        attributes = {
            "costline.prompt.hash": self.prompt_hash,
            "costline.prompt.tokens": self.prompt_tokens,
            "costline.prompt.prefix_tokens": self.prefix_tokens,
            "costline.prompt.simhash": self.simhash,
        }
        if self.prefix_hash is not None:
            attributes["costline.prompt.prefix_hash"] = self.prefix_hash
        return attributes


def _hash64(data: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big", signed=True)


def _text_of(content: Any) -> str:
    """The text of a message's content, whichever shape: a string, OpenAI parts or GenAI parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(_text_of(part) for part in content)
    if isinstance(content, dict):
        for key in ("content", "text"):
            if isinstance(content.get(key), str):
                return str(content[key])
        if "arguments" in content or "name" in content:  # tool calls: their name and arguments matter
            return json.dumps(content, sort_keys=True, separators=(",", ":"))
        return ""
    return str(content)


def canonical_messages(messages: list[Any]) -> list[tuple[str, str]]:
    out = []
    for message in messages:
        if not isinstance(message, dict):
            continue
        role = str(message.get("role") or "user").lower()
        if role == "developer":
            role = "system"  # OpenAI's newer name for the system role
        body = message.get("parts") if "parts" in message else message.get("content")
        text = _text_of(body)
        if message.get("tool_calls"):
            text += _text_of(message["tool_calls"])
        out.append((role, text))
    return out


def simhash64(text: str) -> int:
    """64-bit SimHash over lowercased word 3-shingles (words, when fewer than three)."""
    words = _WORD.findall(text.lower())
    if len(words) >= 3:
        shingles = [" ".join(words[i : i + 3]) for i in range(min(len(words) - 2, _MAX_SHINGLES))]
    else:
        shingles = words or [text]
    digests = b"".join(hashlib.blake2b(s.encode(), digest_size=8).digest() for s in shingles)
    bits = np.unpackbits(np.frombuffer(digests, dtype=np.uint8)).reshape(len(shingles), 64)
    votes = bits.sum(axis=0, dtype=np.int64) * 2 - len(shingles)
    packed = np.packbits((votes > 0).astype(np.uint8)).tobytes()
    return int.from_bytes(packed, "big", signed=True)


def hamming(a: int, b: int) -> int:
    return ((a ^ b) & 0xFFFFFFFFFFFFFFFF).bit_count()


def prompt_evidence(
    messages: list[Any],
    *,
    tools: Any = None,
    system: str | None = None,
    parameters: dict[str, Any] | None = None,
    input_tokens: int | None = None,
) -> PromptEvidence | None:
    """The evidence of one request, or None when it carries no message text."""
    canonical = canonical_messages(messages)
    if system:
        canonical.insert(0, ("system", system))
    if not any(text for _, text in canonical):
        return None
    tools_text = json.dumps(tools, sort_keys=True, separators=(",", ":")) if tools else ""
    prefix_parts = [tools_text] if tools_text else []
    for role, text in canonical:
        if role != "system":
            break
        prefix_parts.append(text)
    prefix_text = "\n".join(prefix_parts)
    chosen = {k: parameters[k] for k in ANSWER_PARAMETERS if parameters and parameters.get(k) is not None}
    whole = json.dumps(
        {"tools": tools_text, "messages": canonical, "parameters": chosen},
        sort_keys=True,
        separators=(",", ":"),
        default=str,
    )
    full_chars = len(tools_text) + sum(len(text) for _, text in canonical)
    if input_tokens is not None and input_tokens > 0:
        prompt_tokens = input_tokens
        prefix_tokens = round(input_tokens * len(prefix_text) / max(full_chars, 1))
    else:
        prompt_tokens = -(-full_chars // CHARS_PER_TOKEN)
        prefix_tokens = -(-len(prefix_text) // CHARS_PER_TOKEN)
    prompt_hash = _hash64(whole.encode())
    # Repeated prompts are common (that is what the advisor looks for); the SimHash, ~0.3 ms for 2 KB
    # of text, is computed once per distinct prompt.
    simhash = _simhashes.get(prompt_hash)
    if simhash is None:
        # Over what follows the prefix: a long shared system prompt would make every prompt of a feature
        # look alike, and near-duplicates are about the questions asked.
        asked = [text for role, text in canonical if role != "system"] or [t for _, t in canonical]
        simhash = simhash64("\n".join(asked))
        if len(_simhashes) >= _SIMHASH_CACHE:
            _simhashes.clear()
        _simhashes[prompt_hash] = simhash
    return PromptEvidence(
        prompt_hash=prompt_hash,
        prefix_hash=_hash64(prefix_text.encode()) if prefix_text else None,
        prompt_tokens=prompt_tokens,
        prefix_tokens=min(prefix_tokens, prompt_tokens),
        simhash=simhash,
    )


def from_openai_request(body: dict[str, Any], input_tokens: int | None = None) -> PromptEvidence | None:
    """Evidence of an OpenAI-compatible chat or completions request body (what the gateway sees)."""
    messages = body.get("messages")
    if not isinstance(messages, list):
        prompt = body.get("prompt")
        if isinstance(prompt, list):
            prompt = "\n".join(str(p) for p in prompt)
        if not isinstance(prompt, str):
            return None
        messages = [{"role": "user", "content": prompt}]
    return prompt_evidence(messages, tools=body.get("tools"), parameters=body, input_tokens=input_tokens)
