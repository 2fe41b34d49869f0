"""Where the gateway sends a model: aliases to upstreams, ordered fallbacks, and cascades.

A route table is plain data read once at start-up (`COSTLINE_GATEWAY_ROUTES`, JSON or a file of it):

    {"upstreams": {"vllm": {"kind": "openai", "base_url": "http://127.0.0.1:8200/v1", "provider": "vllm"},
                   "openai": {"kind": "openai", "base_url": "https://api.openai.com/v1",
                              "api_key_env": "COSTLINE_OPENAI_API_KEY", "passthrough": ["gpt-*"]}},
     "models": {"chat": {"targets": ["openai/gpt-4o-mini", "vllm/smollm2-135m-instruct"]},
                "smart": {"targets": ["openai/gpt-4o"],
                          "cascade": {"first": "openai/gpt-4o-mini",
                                      "escalate_on": ["finish_reason:length"]}}}}

- `targets` are tried in order: the next one when an upstream fails (connection error, timeout, 5xx,
  429), never after it answered a client error (4xx: the request itself is wrong).
- `cascade` calls the cheap `first` target and escalates to `targets` when its answer shows one of
  `escalate_on`: `finish_reason:<reason>` (e.g. length: the answer was cut off), `empty` (no content),
  `error` (the cheap model failed), or `contains:<text>` (e.g. a refusal phrase). Streaming requests
  skip the cascade (an answer already streamed cannot be taken back).
- A model that is no alias goes to the first upstream whose `passthrough` globs match it, unchanged.
"""

from __future__ import annotations

import fnmatch
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from inference.vllm.models import CHAT_MODEL_NAME, EMBEDDING_MODEL_NAME

KINDS = ("openai", "anthropic")
ESCALATION_SIGNALS = ("finish_reason:", "empty", "error", "contains:")


class RouteConfigError(ValueError):
    """The route table is malformed; the message names the entry and what to fix."""


class UnknownModel(LookupError):
    def __init__(self, model: str, known: list[str]) -> None:
        listed = ", ".join(known[:20]) or "none are configured"
        super().__init__(
            f"The model {model!r} does not exist on this gateway. Models: {listed} (GET /v1/models lists "
            "them; operators add aliases in COSTLINE_GATEWAY_ROUTES)."
        )
        self.model = model


@dataclass(frozen=True)
class Upstream:
    name: str
    kind: str  # "openai": any OpenAI-compatible API (vLLM, OpenAI, …); "anthropic": the Messages API
    base_url: str
    api_key: str = field(repr=False, default="")
    provider: str = "openai"  # gen_ai.provider.name of its calls: how the collector prices them
    timeout_s: float = 60.0
    passthrough: tuple[str, ...] = ()


@dataclass(frozen=True)
class Target:
    upstream: Upstream
    model: str

    @property
    def label(self) -> str:
        return f"{self.upstream.name}/{self.model}"


@dataclass(frozen=True)
class Cascade:
    first: Target
    escalate_on: tuple[str, ...]


@dataclass(frozen=True)
class Route:
    alias: str
    targets: tuple[Target, ...]
    cascade: Cascade | None = None


@dataclass(frozen=True)
class RouteTable:
    upstreams: dict[str, Upstream]
    routes: dict[str, Route]

    def resolve(self, model: str) -> Route:
        route = self.routes.get(model)
        if route is not None:
            return route
        for upstream in self.upstreams.values():
            if any(fnmatch.fnmatchcase(model, pattern) for pattern in upstream.passthrough):
                return Route(alias=model, targets=(Target(upstream, model),))
        raise UnknownModel(model, sorted(self.routes))

    def models(self) -> list[str]:
        return sorted(self.routes)


def _target(spec: Any, upstreams: dict[str, Upstream], where: str) -> Target:
    if not isinstance(spec, str) or "/" not in spec:
        raise RouteConfigError(f"{where}: a target is 'upstream/model', e.g. 'vllm/smollm2-135m-instruct'")
    name, model = spec.split("/", 1)
    if name not in upstreams:
        raise RouteConfigError(f"{where}: no upstream {name!r}; upstreams: {', '.join(sorted(upstreams))}")
    if not model:
        raise RouteConfigError(f"{where}: {spec!r} names no model after the '/'")
    return Target(upstreams[name], model)


def _upstream(name: str, spec: Any, default_timeout_s: float) -> Upstream:
    where = f"upstreams.{name}"
    if not isinstance(spec, dict):
        raise RouteConfigError(f"{where}: an upstream is an object with kind and base_url")
    kind = spec.get("kind", "openai")
    if kind not in KINDS:
        raise RouteConfigError(f"{where}.kind: {kind!r} is not one of {', '.join(KINDS)}")
    base_url = spec.get("base_url")
    if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
        raise RouteConfigError(f"{where}.base_url: an http(s):// URL is required")
    api_key = spec.get("api_key", "")
    if "api_key_env" in spec:
        api_key = os.environ.get(str(spec["api_key_env"]), "")
    passthrough = spec.get("passthrough", [])
    if not isinstance(passthrough, list) or not all(isinstance(p, str) for p in passthrough):
        raise RouteConfigError(f'{where}.passthrough: a list of model globs, e.g. ["gpt-*"]')
    timeout = spec.get("timeout_seconds", default_timeout_s)
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
        raise RouteConfigError(f"{where}.timeout_seconds: a positive number of seconds")
    return Upstream(
        name=name,
        kind=kind,
        base_url=base_url.rstrip("/"),
        api_key=str(api_key),
        provider=str(spec.get("provider", "anthropic" if kind == "anthropic" else "openai")),
        timeout_s=float(timeout),
        passthrough=tuple(passthrough),
    )


def parse(config: dict[str, Any], *, default_timeout_s: float = 60.0) -> RouteTable:
    """A route table from its JSON form; RouteConfigError names what is wrong."""
    if not isinstance(config, dict):
        raise RouteConfigError("the route table is a JSON object with 'upstreams' and 'models'")
    unknown = set(config) - {"upstreams", "models"}
    if unknown:
        raise RouteConfigError(f"unknown top-level keys {sorted(unknown)}: use 'upstreams' and 'models'")
    raw_upstreams = config.get("upstreams") or {}
    if not isinstance(raw_upstreams, dict):
        raise RouteConfigError("upstreams: an object of name → upstream")
    upstreams = {name: _upstream(name, spec, default_timeout_s) for name, spec in raw_upstreams.items()}
    routes: dict[str, Route] = {}
    raw_models = config.get("models") or {}
    if not isinstance(raw_models, dict):
        raise RouteConfigError("models: an object of alias → {targets, cascade}")
    for alias, spec in raw_models.items():
        where = f"models.{alias}"
        if not isinstance(spec, dict) or not isinstance(spec.get("targets"), list) or not spec["targets"]:
            raise RouteConfigError(f"{where}: needs 'targets', a non-empty list of 'upstream/model'")
        targets = tuple(_target(t, upstreams, f"{where}.targets") for t in spec["targets"])
        cascade = None
        if spec.get("cascade") is not None:
            raw = spec["cascade"]
            if not isinstance(raw, dict) or "first" not in raw:
                raise RouteConfigError(f"{where}.cascade: needs 'first' (the cheap 'upstream/model')")
            signals = raw.get("escalate_on", ["error", "empty", "finish_reason:length"])
            if not isinstance(signals, list) or not all(
                isinstance(s, str) and s.startswith(ESCALATION_SIGNALS) for s in signals
            ):
                raise RouteConfigError(
                    f"{where}.cascade.escalate_on: a list of finish_reason:<reason>, empty, error or "
                    "contains:<text>"
                )
            cascade = Cascade(_target(raw["first"], upstreams, f"{where}.cascade.first"), tuple(signals))
        routes[alias] = Route(alias=alias, targets=targets, cascade=cascade)
    return RouteTable(upstreams=upstreams, routes=routes)


def default_config(
    *,
    vllm_url: str,
    vllm_embeddings_url: str,
    openai_base_url: str,
    openai_api_key: str,
    anthropic_base_url: str,
    anthropic_api_key: str,
) -> dict[str, Any]:
    """The bundled vLLM tier's models; OpenAI's and Anthropic's by name when their keys are set."""
    config: dict[str, Any] = {
        "upstreams": {
            "vllm": {"kind": "openai", "base_url": vllm_url, "provider": "vllm"},
            "vllm-embeddings": {"kind": "openai", "base_url": vllm_embeddings_url, "provider": "vllm"},
        },
        "models": {
            CHAT_MODEL_NAME: {"targets": [f"vllm/{CHAT_MODEL_NAME}"]},
            EMBEDDING_MODEL_NAME: {"targets": [f"vllm-embeddings/{EMBEDDING_MODEL_NAME}"]},
        },
    }
    if openai_api_key:
        config["upstreams"]["openai"] = {
            "kind": "openai",
            "base_url": openai_base_url,
            "api_key": openai_api_key,
            "provider": "openai",
            "passthrough": ["gpt-*", "o1*", "o3*", "o4*", "chatgpt-*", "text-embedding-*"],
        }
    if anthropic_api_key:
        config["upstreams"]["anthropic"] = {
            "kind": "anthropic",
            "base_url": anthropic_base_url,
            "api_key": anthropic_api_key,
            "provider": "anthropic",
            "passthrough": ["claude-*"],
        }
    return config


def load(raw: str, **defaults: str) -> dict[str, Any]:
    """COSTLINE_GATEWAY_ROUTES as a config: inline JSON, a path to a JSON file, or empty (defaults)."""
    text = raw.strip()
    if not text:
        return default_config(**defaults)
    if not text.startswith("{"):
        path = Path(text)
        if not path.is_file():
            raise RouteConfigError(f"COSTLINE_GATEWAY_ROUTES: {text!r} is neither JSON nor a readable file")
        text = path.read_text()
    try:
        config = json.loads(text)
    except json.JSONDecodeError as exc:
        raise RouteConfigError(f"COSTLINE_GATEWAY_ROUTES is not valid JSON: {exc}") from exc
    if not isinstance(config, dict):
        raise RouteConfigError("COSTLINE_GATEWAY_ROUTES: the route table is a JSON object")
    return config
