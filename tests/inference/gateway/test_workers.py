"""`manage.py gateway --workers 2`: two processes on one port, as a deployment with more cores runs it.

The gateway runs as its own process tree (a supervisor and two workers) on the test database and Redis,
in front of the session's stand-in provider, its spans going to the session's collector."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.celery_processes import ROOT, database_url
from tests.inference.gateway.conftest import routes_for

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("redis_db")]
HELLO = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello"}]}


@dataclass
class Workers:
    process: subprocess.Popen[str]
    url: str

    def health(self) -> int:
        """The pid of the worker that answered, on a new connection (the kernel picks a worker per one)."""
        answer = httpx.get(f"{self.url}/health", timeout=10)
        assert answer.status_code == 200
        return int(answer.json()["worker"])

    def children(self) -> set[int]:
        return {
            int(p)
            for p in Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children").read_text().split()
        }


def wait_for(condition, timeout_s: float = 20.0, what: str = "condition"):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def workers(gateway, collector) -> Iterator[Workers]:
    env = {
        **os.environ,
        "DATABASE_URL": database_url(),
        "COSTLINE_GATEWAY_ROUTES": json.dumps(routes_for(gateway.upstream_url)),
        "COSTLINE_GATEWAY_OTLP_URL": collector.http_url,
        "COSTLINE_GATEWAY_KEY_CACHE_SECONDS": "0",
        "PYTHONUNBUFFERED": "1",
    }
    process = subprocess.Popen(
        [sys.executable, "manage.py", "gateway", "--host", "127.0.0.1", "--port", "0", "--workers", "2"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        first = process.stdout.readline() if process.stdout else ""
        found = re.search(r"OpenAI API on :(\d+) .*2 workers", first)
        assert found, f"the gateway said: {first!r}"
        running = Workers(process, f"http://127.0.0.1:{found.group(1)}")
        wait_for(lambda: len(running.children()) == 2, what="two workers")
        wait_for(lambda: _answers(running), what="the workers to serve")
        yield running
    finally:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _answers(workers: Workers) -> bool:
    try:
        workers.health()
    except httpx.TransportError:
        return False
    return True


def test_two_workers_share_the_port_and_each_answers_for_the_whole_gateways_metrics(workers, live_key):
    caller = live_key()
    answered_by = {workers.health() for _ in range(40)}  # 40 connections: both workers, bar a 2^-39 chance
    assert answered_by == workers.children()

    for _ in range(12):
        answer = httpx.post(
            f"{workers.url}/v1/chat/completions",
            json=HELLO,
            headers={"Authorization": f"Bearer {caller.key}", "Cache-Control": "no-store"},
            timeout=30,
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["choices"][0]["message"]["content"] == "echo: hello"

    # Whichever worker answers /metrics counts the calls both made.
    for _ in range(6):
        text = httpx.get(f"{workers.url}/metrics", timeout=10).text
        counted = re.findall(r'^costline_gateway_requests_total\{[^}]*status="200"[^}]*\} (\S+)$', text, re.M)
        assert sum(float(v) for v in counted) == 12


def test_a_worker_that_dies_is_replaced_and_the_port_keeps_answering(workers):
    before = workers.children()
    dead = min(before)
    os.kill(dead, signal.SIGKILL)

    def replaced() -> set[int] | None:
        now = workers.children()
        return now if len(now) == 2 and dead not in now else None

    after = wait_for(replaced, what="a new worker")
    assert len(after & before) == 1
    answered_by = {workers.health() for _ in range(40)}
    assert answered_by == after
    assert workers.process.poll() is None


def test_sigterm_stops_every_worker_and_removes_the_metrics_files(workers):
    pids = workers.children()
    # The workers' metrics files are named after them: counter_<pid>.db, histogram_<pid>.db.
    folders = {
        path.parent
        for path in Path(tempfile.gettempdir()).glob("costline-gateway-metrics-*/*.db")
        if int(path.stem.rsplit("_", 1)[1]) in pids
    }
    assert len(folders) == 1
    folder = folders.pop()

    workers.process.send_signal(signal.SIGTERM)

    assert workers.process.wait(timeout=20) == 0
    assert not any(Path(f"/proc/{pid}").exists() for pid in pids)
    assert not folder.exists()


def test_workers_that_keep_failing_at_start_stop_the_supervisor_with_status_1():
    # A serve function that exits at once: the supervisor starts workers again until it gives up.
    program = (
        "import os, sys\n"
        "sys.path[:0] = ['platform', '.']\n"
        "from inference.gateway.workers import Supervisor, reuse_port_sockets\n"
        "sockets = reuse_port_sockets('127.0.0.1', 0, 2)\n"
        "sys.exit(Supervisor(sockets, lambda sock: os._exit(3)).run())\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", program], cwd=ROOT, capture_output=True, text=True, timeout=60
    )

    assert done.returncode == 1, done.stderr
    assert "died 5 times within 5 s of starting (last: exit status 3)" in done.stderr


def test_zero_workers_is_refused():
    from django.core.management import CommandError, call_command

    with pytest.raises(CommandError, match="--workers must be 1 or more; got 0"):
        call_command("gateway", workers=0)
