"""The Celery app of the worker and beat, and the rules every Costline task follows.

    celery -A costline worker -Q rollups,budgets,alerts,advisor,notifications
    celery -A costline beat

The broker is Redis (`REDIS_URL`, see settings). Declare every task with `costline_task` and every
periodic run in `BEAT_SCHEDULE` with `every`; never `@shared_task`, whose tasks bind to whichever app
is current and send to `amqp://localhost` in a process that has not imported this module.

- **Names are explicit and stable** (`costline.<app>.<verb>`): messages in flight and beat entries
  carry the name, so renaming or moving the function must not change it.
- **Arguments are ids and JSON**, never model instances: the JSON serializer is the only one accepted.
- **A queue per kind of work**, chosen by the name's prefix (`QUEUE_BY_PREFIX`), so a slow kind never
  starves another and each kind scales by running workers for its queue.
- **Late acknowledgement**: a message is acknowledged when its task ends, so a task whose worker dies
  runs again. Tasks must therefore be idempotent (STYLE.md), as they must be anyway to retry.
- **Retries on transient errors only** (a database or Redis that is restarting, a serialization
  failure), with exponential backoff and jitter; a bug fails at once and loudly.
- **Scheduled runs expire after one period**: after an outage, beat's stale runs are dropped by the
  worker instead of running as a burst; the next run does the work.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable
from typing import Any

import django.db
import kombu.exceptions
import psycopg
import redis
from celery import Celery
from celery.signals import beat_init
from django.conf import settings

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "costline.settings")

QUEUES = ("rollups", "budgets", "alerts", "advisor", "notifications")
QUEUE_BY_PREFIX = {
    "costline.usage.": "rollups",
    "costline.budgets.": "budgets",
    "costline.alerts.": "alerts",
    "costline.advisor.": "advisor",
    "costline.notifications.": "notifications",
}
# Where a task outside the mapping goes (Celery's own, costline.ping): the queue every deployment
# consumes, because rollups feed everything else.
DEFAULT_QUEUE = "rollups"

TRANSIENT_ERRORS: tuple[type[Exception], ...] = (
    psycopg.OperationalError,  # connection lost, server restarting, serialization failure, deadlock
    django.db.OperationalError,  # the same errors as Django raises them
    django.db.InterfaceError,  # a connection Django had already seen closed
    redis.ConnectionError,
    redis.TimeoutError,
    kombu.exceptions.OperationalError,  # the broker, when a task sends another
)
MAX_RETRIES = 6
# 2, 4, 8, … s (full jitter), at most 5 min: the six retries span about two minutes, what a database
# failover or a Redis restart takes.
RETRY_BACKOFF_SECONDS = 2
RETRY_BACKOFF_MAX_SECONDS = 300

# A task running past its hard limit is killed. The limit stays well under the broker's visibility
# timeout, after which Redis hands an unacknowledged message to another worker: a task still running
# then would run twice at once. Countdowns (retries) must stay under it too.
TASK_TIME_LIMIT_SECONDS = 15 * 60
VISIBILITY_TIMEOUT_SECONDS = 60 * 60


def queue_for(task_name: str) -> str:
    """The queue a task runs on, by the prefix of its name."""
    for prefix, queue in QUEUE_BY_PREFIX.items():
        if task_name.startswith(prefix):
            return queue
    return DEFAULT_QUEUE


def route_task(name: str, args: object, kwargs: object, options: object, **extra: object) -> dict[str, str]:
    """Celery's router: an explicit `queue=` (a task's own, or a call's) still wins over this."""
    return {"queue": queue_for(name)}


def every(seconds: float, task_name: str, *, queue: str | None = None) -> dict[str, Any]:
    """A beat entry: `task_name` every `seconds`, dropped when no worker started it within one period."""
    return {
        "task": task_name,
        "schedule": seconds,
        "options": {"expires": seconds, "queue": queue or queue_for(task_name)},
    }


BEAT_SCHEDULE: dict[str, dict[str, Any]] = {
    # Beat sends by name, so an entry whose task a worker does not know yet only logs an error there.
    "costline.usage.rollup_tick": every(10, "costline.usage.rollup_tick"),
    "costline.usage.reprice_pending": every(15, "costline.usage.reprice_pending"),
    "costline.usage.maintain_partitions": every(60 * 60, "costline.usage.maintain_partitions"),
    # Self-hosted calls: each deployment's hourly price shared among its calls (costline.usage.selfhosted).
    "costline.usage.price_self_hosted": every(60, "costline.usage.price_self_hosted"),
    # Notification retries whose back-off ended (costline.alerts.tasks); at most 15 s late.
    "costline.notifications.deliver_due": every(15, "costline.notifications.deliver_due"),
    # Budgets: state within seconds of ingestion (a run that finds nothing new is two small queries).
    "costline.budgets.evaluate": every(2, "costline.budgets.evaluate"),
    # Advisor: findings from the last 30 days, and realised savings of applied ones (costline.advisor).
    "costline.advisor.generate": every(24 * 60 * 60, "costline.advisor.generate"),
    "costline.advisor.measure": every(24 * 60 * 60, "costline.advisor.measure"),
    # Anomaly and threshold alert rules over the last complete hours (costline.alerts.monitoring).
    "costline.alerts.detect": every(60 * 60, "costline.alerts.detect"),
}

app = Celery("costline")
# The broker URL (and any CELERY_* setting) comes from the Django settings, read on first use.
app.config_from_object("django.conf:settings", namespace="CELERY")
app.conf.update(
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    enable_utc=True,
    timezone="UTC",
    task_acks_late=True,
    task_reject_on_worker_lost=True,  # a worker killed mid-task (OOM) puts the message back
    # With late acknowledgement, a task cut off from the broker is cancelled rather than finished:
    # its message is redelivered, and finishing it as well would run it twice.
    worker_cancel_long_running_tasks_on_connection_loss=True,
    worker_prefetch_multiplier=1,  # a worker reserves one message at a time: long tasks do not hoard
    task_ignore_result=True,  # no result backend: tasks write their results to PostgreSQL
    task_time_limit=TASK_TIME_LIMIT_SECONDS,
    task_soft_time_limit=TASK_TIME_LIMIT_SECONDS - 60,
    broker_transport_options={"visibility_timeout": VISIBILITY_TIMEOUT_SECONDS},
    broker_connection_retry_on_startup=True,  # a worker started before Redis waits for it
    task_default_queue=DEFAULT_QUEUE,
    task_routes=(route_task,),
    beat_schedule=BEAT_SCHEDULE,
)
app.autodiscover_tasks()  # each installed app's tasks.py

# Tasks beat sends once when it starts, not only a period later: hourly upkeep (partitions ahead,
# retention) must not wait an hour after a deployment, nor the first recommendations a day, nor the
# first incidents an hour (the demo's included: `make run` fills its traffic before beat starts).
RUN_AT_BEAT_START = (
    "costline.usage.maintain_partitions",
    "costline.advisor.generate",
    "costline.alerts.detect",
)


@beat_init.connect
def _run_at_start(sender: object = None, **kwargs: object) -> None:
    for name in RUN_AT_BEAT_START:
        app.send_task(name, queue=queue_for(name), expires=BEAT_SCHEDULE[name]["schedule"])


def costline_task(
    name: str, *, queue: str | None = None, **options: Any
) -> Callable[[Callable[..., Any]], Any]:
    """Declare a Costline task: `@costline_task("costline.usage.rollup_tick")`.

    `queue` overrides the queue of the name's prefix; other options (`max_retries`, `time_limit`, …)
    override the defaults above.
    """
    if not name.startswith("costline."):
        raise ValueError(f"task names are costline.<app>.<verb>, got {name!r}")
    defaults: dict[str, Any] = {
        "acks_late": True,
        "autoretry_for": TRANSIENT_ERRORS,
        "max_retries": MAX_RETRIES,
        "retry_backoff": RETRY_BACKOFF_SECONDS,
        "retry_backoff_max": RETRY_BACKOFF_MAX_SECONDS,
        "retry_jitter": True,
    }
    if queue is not None:
        defaults["queue"] = queue
    decorator: Callable[[Callable[..., Any]], Any] = app.task(name=name, **(defaults | options))
    return decorator


# --- Diagnostics ---------------------------------------------------------------------------------

PING_REPLY_SECONDS = 60


@costline_task("costline.ping")
def ping(reply_key: str | None = None) -> str:
    """Prove that a worker consumes the queue this was sent to (`costline.ping` defaults to rollups).

    With no result backend, a caller learns that it ran by the Redis key `reply_key`, which the worker
    sets for a minute; `ping_queue` does that.
    """
    if reply_key:
        with redis.Redis.from_url(settings.REDIS_URL) as client:
            client.set(reply_key, "pong", ex=PING_REPLY_SECONDS)
    return "pong"


def ping_queue(queue: str = DEFAULT_QUEUE, *, timeout: float = 10.0) -> bool:
    """True when a worker consuming `queue` ran `costline.ping` within `timeout` seconds.

    A health check of the whole path: broker, queue, a worker, and its access to Redis. Reads the
    settings when called (REDIS_URL, CELERY_BROKER_URL).
    """
    reply_key = f"costline:ping:{uuid.uuid4().hex}"
    with app.connection_for_write(settings.CELERY_BROKER_URL) as connection:
        ping.apply_async(args=[reply_key], queue=queue, expires=timeout, connection=connection)
    deadline = time.monotonic() + timeout
    with redis.Redis.from_url(settings.REDIS_URL) as client:
        while time.monotonic() < deadline:
            if client.delete(reply_key):
                return True
            time.sleep(0.05)
    return False
