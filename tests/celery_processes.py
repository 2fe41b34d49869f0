"""A real `celery worker` and `celery beat` on the test database, for end-to-end tests of periodic work."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
from django.conf import settings

ROOT = Path(__file__).resolve().parents[1]


def database_url() -> str:
    """The test database as a DATABASE_URL, for processes started by a test."""
    db = settings.DATABASES["default"]
    host = db["HOST"]
    where = (
        f"@/{db['NAME']}?host={host}"
        if str(host).startswith("/")
        else f"@{host}:{db['PORT'] or 5432}/{db['NAME']}"
    )
    auth = db["USER"] + (f":{db['PASSWORD']}" if db["PASSWORD"] else "")
    return f"postgres://{auth}{where}"


@contextlib.contextmanager
def worker_and_beat(tmp_path: Path, *, queues: str, concurrency: int = 1) -> Iterator[Path]:
    """A worker for `queues` and beat until the block ends; yields the log file both write to.

    The processes commit what they do. Their worker state (the rollups' watermark above all) is
    removed when they stop, so that a later test does not find rollups promised complete up to a
    moment whose calls it inserts itself.
    """
    env = {
        **os.environ,
        "DATABASE_URL": database_url(),
        "REDIS_URL": settings.REDIS_URL,
        "PYTHONUNBUFFERED": "1",
    }
    celery = [sys.executable, "-m", "celery", "--app", "costline"]
    worker = [*celery, "worker", "--queues", queues, "--concurrency", str(concurrency), "--loglevel", "INFO"]
    worker += ["--without-mingle", "--without-gossip", "--without-heartbeat"]
    beat = [*celery, "beat", "--loglevel", "INFO", "--schedule", str(tmp_path / "beat-schedule")]
    log = tmp_path / "celery.log"
    processes = []
    with log.open("wb") as output:
        for command in (worker, beat):
            processes.append(
                subprocess.Popen(
                    command,
                    cwd=ROOT,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=output,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
    try:
        yield log
    finally:
        for process in processes:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        with psycopg.connect(database_url(), autocommit=True) as conn:
            conn.execute("DELETE FROM usage_workerstate")
