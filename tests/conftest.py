"""Fixtures shared by every test: tenants, and a real collector serving the test database.

Tests run against real PostgreSQL (DATABASE_URL, else the embedded server) in one test database per
run. Tests that go through the collector use `transactional_db`: the collector writes over its own
connections, so what a test creates must be committed for the collector to see it.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

SHARED = Path(__file__).resolve().parents[2] / "shared"


def shared_path(*parts: str) -> Path:
    """A file under ../shared, or skip the test with a clear message when the folder is absent."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is not available: these tests read ../shared beside the checkout")
    return path


_DB_FIXTURES = {
    "db",
    "transactional_db",
    "django_db_reset_sequences",
    "django_db_serialized_rollback",
    "live_server",
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test that reaches the database only through the collector (vLLM's own tests) still needs
    the test database: pytest-django creates it only for tests that ask for one, so such a test run
    alone had the collector write to DATABASE_URL's own database."""
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        if "collector" in names and not names & _DB_FIXTURES and item.get_closest_marker("django_db") is None:
            item.add_marker(pytest.mark.django_db)


@pytest.fixture(autouse=True)
def fast_password_hashing(settings: Any) -> None:
    """Hash passwords with MD5 in tests: PBKDF2's 10⁶ rounds cost ~0.3 s per user, and what tests
    check is who may do what, not the hash (Django's own advice for tests)."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@dataclass
class TenantKeys:
    org: object  # costline.tenancy.models.Organization
    ingest_key: str
    api_token: str

    @property
    def id(self) -> int:
        return self.org.id  # type: ignore[attr-defined, no-any-return]

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.ingest_key}"}

    @property
    def api_auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_token}"}


@pytest.fixture
def make_tenant() -> Callable[..., TenantKeys]:
    """Create an organisation with an ingest key and an API token (needs a db fixture in the test)."""
    from costline.tenancy.actions import create_organization, issue_api_token, issue_ingest_key

    counter = iter(range(1, 1_000_000))

    def make(name: str | None = None, **org_options: object) -> TenantKeys:
        org = create_organization(name or f"Tenant {next(counter)}", **org_options)  # type: ignore[arg-type]
        return TenantKeys(
            org=org,
            ingest_key=issue_ingest_key(org, "test key").plaintext,
            api_token=issue_api_token(org, "test token").plaintext,
        )

    return make


@pytest.fixture
def make_live_tenant(db: None, make_tenant: Callable[..., TenantKeys]) -> Callable[..., TenantKeys]:
    """Create a tenant the collector can see: committed at once, on a connection of its own.

    The test itself runs in a transaction that is rolled back; the tenant (and what the collector
    stores for it) stays in the test database, which each run creates afresh. Every test uses tenants
    of its own, so nothing one test leaves behind is visible to another.
    """

    def committed(*args: object, **kwargs: object) -> TenantKeys:
        def create() -> TenantKeys:
            from django.db import connections

            try:
                return make_tenant(*args, **kwargs)
            finally:
                connections.close_all()

        with ThreadPoolExecutor(max_workers=1) as pool:
            return pool.submit(create).result()

    return committed


@dataclass
class RunningCollector:
    http_url: str
    grpc_target: str
    server: object  # collector.server.CollectorServer
    sink: object  # costline.usage.ingest.PostgresSink


@contextmanager
def serving(server: Any) -> Iterator[None]:
    """Run a collector.server.CollectorServer in a background thread until the block ends."""
    ready = threading.Event()
    errors: list[BaseException] = []

    def run() -> None:
        try:
            asyncio.run(_serve(server, ready))
        except BaseException as exc:  # surfaced to the caller below
            errors.append(exc)
            ready.set()

    thread = threading.Thread(target=run, name="collector", daemon=True)
    thread.start()
    if not ready.wait(30) or errors:
        raise RuntimeError(f"the collector did not start: {errors}")
    try:
        yield
    finally:
        server.stop()
        thread.join(timeout=30)


@pytest.fixture(scope="session")
def collector(django_db_setup: None, django_db_blocker: object) -> Iterator[RunningCollector]:
    """One real collector (OTLP/HTTP and OTLP/gRPC on free ports) for the whole run."""
    from costline.usage.ingest import build_collector

    server = build_collector(host="127.0.0.1", http_port=0, grpc_port=0)
    sink = server.pipeline.sink
    sink.key_cache_seconds = 0  # a revoked key must be refused at once in tests
    # A small limit keeps the 413 tests fast; the default (64 MiB) is the OTLP recommendation.
    server.app.max_body_bytes = 4 * 1024 * 1024
    with serving(server):
        yield RunningCollector(
            http_url=f"http://127.0.0.1:{server.ports.http}",
            grpc_target=f"127.0.0.1:{server.ports.grpc}",
            server=server,
            sink=sink,
        )


async def _serve(server: Any, ready: threading.Event) -> None:
    task = asyncio.create_task(server.serve())
    # uvicorn binds after `started`; wait until it accepts connections.
    while server.uvicorn is None or not server.uvicorn.started:
        if task.done():
            await task
        await asyncio.sleep(0.01)
    ready.set()
    await task
