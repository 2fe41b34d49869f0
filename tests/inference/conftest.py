"""The real vLLM engine, started once per test session, for the vLLM tier's and the gateway's tests.

Fixtures (stable: the gateway's tests use them):

`vllm_server` (session) -> RunningVllm, the bundled chat model served by vLLM's OpenAI server
    .base_url   "http://127.0.0.1:<port>/v1"  (the OpenAI API root: POST {base_url}/chat/completions)
    .root_url   "http://127.0.0.1:<port>"     (GET /health, GET /metrics in Prometheus text)
    .model      "smollm2-135m-instruct"       (the served model name requests must send)
    .tenant_key the ingest key vLLM exports its own spans with (see `vllm_tenant`)
    Started with --enforce-eager (ready after 25–40 s on 2 cores; compiled it took 81 s), the
    cpu-interactive profile otherwise (8 sequences, 1 GiB KV cache, prefix caching on), with its OTLP
    traces sent to the session's `collector` (tests/conftest.py). Requests are greedy with
    "temperature": 0; "The capital of France is" completes with " Paris". Its log is in the
    session's temporary folder; a failed start quotes its end.

`vllm_embeddings_server` (session) -> RunningVllm, all-MiniLM-L6-v2 (384 dimensions) on a second
    server (runner pooling): `.model` is "all-minilm-l6-v2"; POST {base_url}/embeddings. Started only
    when a test asks for it (about 30 s more).

`vllm_tenant` (function) -> TenantKeys of the organisation vLLM's spans are stored in. It is made
    once per session with a fixed ingest key, because vLLM is told the key when it starts; a
    transactional test that flushed the database in between has it made again with the same key.

Both servers skip their tests, saying why, when the inference extra is not installed or its model
not prepared (`make inference`; `make test` does it, so in CI they run). Each server is started
once; a session without vLLM tests starts none.
"""

from __future__ import annotations

import dataclasses
import socket
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pytest

from inference.vllm.launch import Launch, Tracing, plan_launch
from inference.vllm.models import unavailable_reason
from inference.vllm.profiles import CPU_EMBEDDINGS, CPU_INTERACTIVE
from inference.vllm.server import VllmServer
from tests.conftest import RunningCollector, TenantKeys

TENANT_NAME = "vLLM test tier"
# Enough for the prefix-cache test's ~2,000-token prompts; the KV cache of 1 GiB holds ~46,000 tokens
# of SmolLM2-135M, far more than 8 such prompts at once.
TEST_PROFILE = dataclasses.replace(CPU_INTERACTIVE, max_num_seqs=8, kv_cache_gib=1, enforce_eager=True)
TEST_EMBEDDINGS_PROFILE = dataclasses.replace(CPU_EMBEDDINGS, max_num_seqs=8, enforce_eager=True)


@dataclass(frozen=True)
class RunningVllm:
    base_url: str
    model: str
    root_url: str
    tenant_key: str | None = None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _require_inference() -> None:
    reason = unavailable_reason()
    if reason is not None:
        pytest.skip(f"vLLM tests skipped: {reason}")


@pytest.fixture(scope="session")
def vllm_ingest_key() -> str:
    from costline.tenancy.keys import INGEST_KEY_PREFIX, new_secret

    return new_secret(INGEST_KEY_PREFIX)


def _ensure_tenant(ingest_key: str) -> TenantKeys:
    """The organisation holding `ingest_key`, made (and committed) when the database lacks it."""
    from costline.tenancy.actions import create_organization, issue_api_token
    from costline.tenancy.keys import display_prefix, hash_secret
    from costline.tenancy.models import IngestKey

    def ensure() -> TenantKeys:
        from django.db import connections

        try:
            key = IngestKey.objects.filter(secret_hash=hash_secret(ingest_key)).select_related("organization")
            found = key.first()
            if found is not None:
                org = found.organization
            else:
                org = create_organization(TENANT_NAME)
                IngestKey.objects.create(
                    organization=org,
                    name="vLLM's own spans (tests)",
                    prefix=display_prefix(ingest_key),
                    secret_hash=hash_secret(ingest_key),
                )
            return TenantKeys(
                org=org, ingest_key=ingest_key, api_token=issue_api_token(org, "test").plaintext
            )
        finally:
            connections.close_all()

    # On a connection of its own, committed at once (as make_live_tenant does): the collector must see it.
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(ensure).result()


def _start(
    launch: Launch, log_dir: Any, say: Callable[[str], None], tenant_key: str | None = None
) -> Iterator[RunningVllm]:
    server = VllmServer(launch, log=log_dir / "server.log")
    say(f"starting vLLM ({launch.served_model_name}, {launch.profile.name}, eager) for the tests ...")
    server.start()
    try:
        seconds = server.wait_ready(timeout=600, progress=say)
        say(f"vLLM ({launch.served_model_name}) ready after {seconds:.0f} s")
        yield RunningVllm(
            base_url=launch.base_url,
            model=launch.served_model_name,
            root_url=server.root_url,
            tenant_key=tenant_key,
        )
    finally:
        server.stop()


@pytest.fixture(scope="session")
def _say(pytestconfig: pytest.Config) -> Callable[[str], None]:
    """Progress lines on the terminal while a server loads (a fixture's prints are captured)."""
    reporter = pytestconfig.pluginmanager.get_plugin("terminalreporter")
    lock = threading.Lock()

    def say(line: str) -> None:
        if reporter is not None:
            with lock:
                reporter.write_line(f"[vllm] {line}")

    return say


@pytest.fixture(scope="session")
def vllm_server(
    collector: RunningCollector,
    django_db_blocker: Any,
    vllm_ingest_key: str,
    tmp_path_factory: pytest.TempPathFactory,
    _say: Callable[[str], None],
) -> Iterator[RunningVllm]:
    _require_inference()
    with django_db_blocker.unblock():
        _ensure_tenant(vllm_ingest_key)
    launch = plan_launch(
        TEST_PROFILE,
        port=_free_port(),
        tracing=Tracing(endpoint=collector.http_url + "/v1/traces", ingest_key=vllm_ingest_key),
    )
    yield from _start(launch, tmp_path_factory.mktemp("vllm"), _say, tenant_key=vllm_ingest_key)


@pytest.fixture(scope="session")
def vllm_embeddings_server(
    tmp_path_factory: pytest.TempPathFactory, _say: Callable[[str], None]
) -> Iterator[RunningVllm]:
    _require_inference()
    launch = plan_launch(TEST_EMBEDDINGS_PROFILE, embeddings=True, port=_free_port())
    yield from _start(launch, tmp_path_factory.mktemp("vllm-embeddings"), _say)


@pytest.fixture
def vllm_tenant(db: None, vllm_server: RunningVllm, vllm_ingest_key: str) -> TenantKeys:
    return _ensure_tenant(vllm_ingest_key)
