"""The Celery app: its rules, routes and beat schedule, retries, the embedded Redis, and a real worker."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import django.db
import kombu
import pytest
import redis
from celery.beat import ScheduleEntry, Scheduler
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from costline.celery import (
    BEAT_SCHEDULE,
    MAX_RETRIES,
    QUEUE_BY_PREFIX,
    QUEUES,
    app,
    costline_task,
    ping_queue,
)
from costline.embedded import embedded_redis_url, release_embedded_redis
from costline.settings import celery_broker_url

ROOT = Path(__file__).resolve().parents[2]

# --- the app's rules ---------------------------------------------------------------------------------


def test_it_acknowledges_late_speaks_only_json_and_keeps_no_results() -> None:
    conf = app.conf

    assert (conf.task_acks_late, conf.task_reject_on_worker_lost) == (True, True)
    assert (conf.task_serializer, conf.accept_content) == ("json", ["json"])
    assert conf.worker_prefetch_multiplier == 1
    assert conf.task_ignore_result is True
    assert (conf.enable_utc, conf.timezone) == (True, "UTC")
    assert conf.broker_connection_retry_on_startup is True
    assert conf.task_time_limit < conf.broker_transport_options["visibility_timeout"]


@pytest.mark.parametrize(
    ("task_name", "queue"),
    [
        ("costline.usage.rollup_tick", "rollups"),
        ("costline.budgets.evaluate", "budgets"),
        ("costline.alerts.detect", "alerts"),
        ("costline.advisor.recommend", "advisor"),
        ("costline.notifications.deliver", "notifications"),
        ("costline.ping", "rollups"),
        ("celery.chord_unlock", "rollups"),
    ],
)
def test_it_routes_each_kind_of_work_to_its_queue(task_name: str, queue: str) -> None:
    assert app.amqp.router.route({}, task_name)["queue"].name == queue


def test_an_explicit_queue_wins_over_the_route() -> None:
    assert app.amqp.router.route({"queue": "alerts"}, "costline.usage.x")["queue"].name == "alerts"


def test_every_route_leads_to_a_queue_that_make_runs_worker_consumes() -> None:
    # A task routed to a queue no worker reads would wait forever, silently.
    assert {*QUEUE_BY_PREFIX.values(), app.conf.task_default_queue} <= set(QUEUES)


def test_it_refuses_a_task_without_a_stable_costline_name() -> None:
    with pytest.raises(ValueError, match=r"costline\.<app>\.<verb>"):
        costline_task("rollup_tick")


# --- beat --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("entry_name", "period"),
    [("costline.usage.rollup_tick", 10), ("costline.usage.maintain_partitions", 3600)],
)
def test_beat_sends_each_run_to_its_queue_expiring_after_one_period(entry_name: str, period: int) -> None:
    entry = ScheduleEntry(name=entry_name, app=app, **BEAT_SCHEDULE[entry_name])
    sent_at = datetime.now(UTC)

    # Beat sends by name, so this works before (and whether or not) a worker knows the task.
    with app.connection_for_write("memory://") as connection:
        Scheduler(app, lazy=True).apply_async(entry, producer=app.amqp.Producer(connection), advance=False)
        with connection.SimpleQueue(BEAT_SCHEDULE[entry_name]["options"]["queue"]) as queue:
            message = queue.get(timeout=1)

    assert entry.schedule.run_every == timedelta(seconds=period)
    assert BEAT_SCHEDULE[entry_name]["options"] == {"expires": period, "queue": "rollups"}
    assert message.headers["task"] == entry_name
    expires = datetime.fromisoformat(message.headers["expires"])
    assert sent_at + timedelta(seconds=period) <= expires <= sent_at + timedelta(seconds=period + 5)


# --- retries: transient errors only --------------------------------------------------------------------

attempts: list[int] = []


def _error(kind: str) -> Exception:
    return {
        "database": django.db.OperationalError("server closed the connection unexpectedly"),
        "redis": redis.ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused."),
        "bug": KeyError("tenant_id"),
    }[kind]


@costline_task("costline.tests.fail_then_succeed", bind=True)
def fail_then_succeed(self: Any, error: str, failures: int) -> int:
    attempts.append(self.request.retries)
    if self.request.retries < failures:
        raise _error(error)
    return int(self.request.retries)


@pytest.fixture
def no_attempts() -> Iterator[list[int]]:
    attempts.clear()
    yield attempts
    attempts.clear()


@pytest.mark.parametrize("error", ["database", "redis"])
def test_it_retries_a_transient_error_until_the_task_succeeds(error: str, no_attempts: list[int]) -> None:
    result = fail_then_succeed.apply(args=[error, 2])

    assert result.successful()
    assert result.get() == 2
    assert no_attempts == [0, 1, 2]


def test_it_gives_up_on_a_transient_error_after_its_retries(no_attempts: list[int]) -> None:
    result = fail_then_succeed.apply(args=["database", 1000])

    assert result.failed()
    assert isinstance(result.result, django.db.OperationalError)
    assert no_attempts == list(range(MAX_RETRIES + 1))


def test_it_never_retries_a_bug(no_attempts: list[int]) -> None:
    result = fail_then_succeed.apply(args=["bug", 1])

    assert result.failed()
    assert isinstance(result.result, KeyError)
    assert no_attempts == [0]


# --- Redis URLs and the embedded Redis -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("redis_url", "broker_url"),
    [
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        ("rediss://:secret@redis.example.com:6380/2", "rediss://:secret@redis.example.com:6380/2"),
        ("unix:///run/redis/redis.socket", "redis+socket:///run/redis/redis.socket"),
        ("unix:///run/redis/redis.socket?db=3", "redis+socket:///run/redis/redis.socket?virtual_host=3"),
    ],
)
def test_the_broker_url_is_the_redis_url_in_kombus_words(redis_url: str, broker_url: str) -> None:
    assert celery_broker_url(redis_url) == broker_url


def test_it_refuses_a_redis_url_it_cannot_use() -> None:
    with pytest.raises(ImproperlyConfigured, match="REDIS_URL must start with"):
        celery_broker_url("http://127.0.0.1:6379")


@pytest.fixture
def redis_dir(tmp_path: Path) -> Iterator[Path]:
    data_dir = tmp_path / "redis"
    yield data_dir
    release_embedded_redis(data_dir)  # whatever the test did: no server outlives it


def test_the_embedded_redis_serves_redis_py_and_celery_and_keeps_its_data(redis_dir: Path) -> None:
    url = embedded_redis_url(redis_dir)
    with redis.Redis.from_url(url) as client:
        client.set("costline:test", "kept")
    with kombu.Connection(celery_broker_url(url)) as connection, connection.SimpleQueue("test") as queue:
        queue.put({"tenant_id": 1})
        message = queue.get(timeout=1)
        message.ack()

    release_embedded_redis(redis_dir)
    stopped = not (redis_dir / "redis.socket").exists()
    url = embedded_redis_url(redis_dir)

    assert message.payload == {"tenant_id": 1}
    assert stopped
    with redis.Redis.from_url(url) as client:
        assert client.get("costline:test") == b"kept"


def hold_and_exit(data_dir: Path, how: str) -> None:
    """Another process joins the embedded Redis, then exits normally or without running atexit hooks."""
    code = "import os, sys; from pathlib import Path; from costline.embedded import embedded_redis_url\n"
    code += f"embedded_redis_url(Path(sys.argv[1])); {how}"
    subprocess.run([sys.executable, "-c", code, str(data_dir)], check=True, timeout=30)


def test_a_process_that_leaves_does_not_stop_the_server_under_another(redis_dir: Path) -> None:
    url = embedded_redis_url(redis_dir)

    hold_and_exit(redis_dir, "sys.exit(0)")

    with redis.Redis.from_url(url) as client:
        assert client.ping()
    release_embedded_redis(redis_dir)
    assert not (redis_dir / "redis.socket").exists()


def test_the_last_holder_stops_the_server_of_one_that_died_without_releasing_it(redis_dir: Path) -> None:
    hold_and_exit(redis_dir, "os._exit(0)")
    left_running = (redis_dir / "redis.socket").exists()

    embedded_redis_url(redis_dir)
    release_embedded_redis(redis_dir)

    assert left_running
    assert not (redis_dir / "redis.socket").exists()


def test_it_explains_a_socket_path_too_long_for_the_system(tmp_path: Path) -> None:
    with pytest.raises(ImproperlyConfigured, match="too long for a Unix socket"):
        embedded_redis_url(tmp_path / ("x" * 120))


def test_importing_costline_does_not_import_celery() -> None:
    code = "import sys, costline; assert 'celery' not in sys.modules; "
    code += "assert costline.celery_app.main == 'costline'"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=30)


# --- a real worker -------------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_worker_started_with_the_celery_command_answers_a_ping(tmp_path: Path) -> None:
    # The Redis of this test run: REDIS_URL, else the embedded server the settings exported. A queue of
    # its own keeps it apart from any other worker on that Redis.
    queue = f"test-{uuid.uuid4().hex[:12]}"
    celery = [str(Path(sys.executable).with_name("celery")), "-A", "costline", "worker", "--queues", queue]
    celery += ["--concurrency", "1", "--hostname", f"{queue}@%h", "--loglevel", "INFO"]
    celery += ["--without-mingle", "--without-gossip", "--without-heartbeat"]  # start in a second, not three
    log = tmp_path / "worker.log"
    with log.open("wb") as output:
        worker = subprocess.Popen(
            celery,
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        answered = ping_queue(queue, timeout=15)
    finally:
        with contextlib.suppress(ProcessLookupError):  # it may have died already
            os.killpg(worker.pid, signal.SIGTERM)  # the worker and its pool processes
        try:
            worker.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()
        with redis.Redis.from_url(settings.REDIS_URL) as client:  # kombu's record of the queue's binding
            client.delete(queue, f"_kombu.binding.{queue}", f"_kombu.binding_permanent.{queue}")

    assert answered, log.read_text(errors="replace")[-3000:]
    assert "Task costline.ping" in log.read_text()
