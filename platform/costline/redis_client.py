"""The process's connection pool to Redis (REDIS_URL): budget state, reservations, counters.

One client per process, created on first use; a forked child (a Celery or gunicorn worker) makes its
own, since a connection must never be shared across processes.
"""

from __future__ import annotations

import os

import redis
from django.conf import settings

_client: redis.Redis | None = None
_pid: int | None = None


def client() -> redis.Redis:
    global _client, _pid
    if _client is None or _pid != os.getpid():
        _client = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=5, health_check_interval=30)
        _pid = os.getpid()
    return _client
