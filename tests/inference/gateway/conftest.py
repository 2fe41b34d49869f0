"""The gateway under test: a real gateway server (in a thread) in front of a local stand-in for the paid
providers (`fake_upstream`), its spans exported to the session's real collector, its budgets and cache
in the test Redis, its keys in the test database.

    gateway.url                 http://127.0.0.1:PORT/v1 (the OpenAI clients' base_url)
    gateway.upstream.recorded   every request that reached the stand-in provider
    live_key()                  a committed organisation and gateway key: GatewayCaller(org, key)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx
import pytest

from tests.inference.gateway.fake_upstream import FakeProvider, serving_asgi

T = TypeVar("T")


@dataclass
class RunningGateway:
    url: str
    server: Any  # inference.gateway.server.GatewayServer
    upstream: FakeProvider
    upstream_url: str  # the stand-in provider's root URL

    def post(self, path: str, key: str, body: Any, **headers: str) -> httpx.Response:
        return httpx.post(
            f"{self.url}{path}", json=body, headers={"Authorization": f"Bearer {key}", **headers}, timeout=30
        )


@dataclass
class GatewayCaller:
    org: Any
    key: str
    prefix: str
    ingest_key: str


def routes_for(fake_url: str) -> dict[str, Any]:
    return {
        "upstreams": {
            "fake": {
                "kind": "openai",
                "base_url": f"{fake_url}/v1",
                "provider": "openai",
                "passthrough": ["gpt-4.1*"],
            },
            "backup": {"kind": "openai", "base_url": f"{fake_url}/v1", "provider": "openai"},
            "claude": {
                "kind": "anthropic",
                "base_url": fake_url,
                "provider": "anthropic",
                "api_key": "sk-ant-test",
            },
        },
        "models": {
            "gpt-4o-mini": {"targets": ["fake/gpt-4o-mini"]},
            "gpt-4o": {"targets": ["fake/gpt-4o"]},
            "fallback": {"targets": ["fake/gpt-4o-fail", "backup/gpt-4o-mini"]},
            "all-down": {"targets": ["fake/gpt-4o-fail", "backup/gpt-4o-429"]},
            "bad": {"targets": ["fake/gpt-4o-bad", "backup/gpt-4o-mini"]},
            "smart": {
                "targets": ["fake/gpt-4o"],
                "cascade": {"first": "fake/gpt-4o-mini-short", "escalate_on": ["finish_reason:length"]},
            },
            "smart-ok": {
                "targets": ["fake/gpt-4o"],
                "cascade": {"first": "fake/gpt-4o-mini", "escalate_on": ["finish_reason:length"]},
            },
            "smart-priced": {
                "targets": ["fake/gpt-4o"],
                "cascade": {"first": "fake/gpt-4o-mini", "escalate_on": ["contains:escalate"]},
            },
            "slow": {"targets": ["fake/gpt-4o-mini-slow"]},
            "claude": {"targets": ["claude/claude-3-5-haiku-latest"]},
            "embed": {"targets": ["fake/text-embedding-3-small"]},
        },
    }


@pytest.fixture(scope="session")
def gateway(collector: Any) -> Iterator[RunningGateway]:
    from collector.server import bind_socket
    from inference.gateway.routes import parse
    from inference.gateway.server import build_server

    provider = FakeProvider()
    fake_socket = bind_socket("127.0.0.1", 0)
    fake_url = f"http://127.0.0.1:{fake_socket.getsockname()[1]}"
    with serving_asgi(provider, fake_socket):
        server = build_server("127.0.0.1", 0, routes=parse(routes_for(fake_url)), otlp_url=collector.http_url)
        server.app.store.key_cache_seconds = 0  # a revoked key must be refused at once in tests
        with serving_asgi(server.app, server.sock):
            yield RunningGateway(f"http://127.0.0.1:{server.port}/v1", server, provider, fake_url)


def committed(work: Callable[[], T]) -> T:
    """Run `work` on a connection of its own and commit it: the gateway reads over its own connections,
    and a row the test's (rolled back) transaction changed would stay locked to them."""
    from django.db import connections

    def run() -> T:
        try:
            return work()
        finally:
            connections.close_all()

    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(run).result()


@pytest.fixture
def live_key(db: None) -> Callable[..., GatewayCaller]:
    """A committed organisation with a gateway key."""
    from costline.tenancy.actions import create_organization, issue_gateway_key, issue_ingest_key

    counter = iter(range(1, 1_000_000))

    def make(**key_options: Any) -> GatewayCaller:
        def create() -> GatewayCaller:
            org = create_organization(f"Gateway org {next(counter)} {id(key_options)}")
            issued = issue_gateway_key(org, "test", **key_options)
            ingest = issue_ingest_key(org, "test").plaintext
            return GatewayCaller(org, issued.plaintext, issued.prefix, ingest)

        return committed(create)

    return make


@pytest.fixture
def redis_db() -> Iterator[None]:
    """The test Redis database (REDIS_URL names one per run), empty before and after: budgets, cache."""
    from costline.redis_client import client

    client().flushdb()
    yield
    client().flushdb()
