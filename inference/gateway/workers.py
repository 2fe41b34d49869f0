"""The gateway as several processes on one port (`manage.py gateway --workers N`).

One gateway process is one event loop on one core. It is stateless (keys, budgets and the exact cache
live in PostgreSQL and Redis), so more cores serve more calls by running more processes:

    supervisor (this module)  binds N listening sockets to the port with SO_REUSEPORT, forks N workers,
                              and starts a worker again when one dies
    worker i                  serves the gateway (uvloop + uvicorn) on socket i; the kernel spreads new
                              connections over the N sockets

The supervisor keeps every socket open, so a worker started again takes over the connections its
socket queued meanwhile. Metrics: the workers write their counters and histograms to files in one
folder (prometheus_client's multiprocess mode) and each worker's `/metrics` reads them all, so any
worker answers for the whole gateway. Request coalescing is per worker: identical concurrent requests
that reach two workers make two upstream calls (the exact cache, in Redis, is shared).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

METRICS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"
# A worker that dies this soon after it started, this many times in a row, is not started again:
# something is wrong with the configuration, not with a call, and the supervisor exits (status 1).
CRASH_WINDOW_S = 5.0
CRASHES_ALLOWED = 5


def reuse_port_sockets(host: str, port: int, count: int) -> list[socket.socket]:
    """`count` listening sockets on one port (port 0: one the kernel picks) that share its connections.
    One alone does not set SO_REUSEPORT, so a second gateway started on its port fails to bind."""
    from collector.server import bind_socket

    sockets: list[socket.socket] = []
    for _ in range(count):
        sock = bind_socket(host, port, reuse_port=count > 1)
        port = sock.getsockname()[1]
        sockets.append(sock)
    return sockets


@dataclass
class Supervisor:
    """Forks `serve(sock)` once per socket and keeps that many running until SIGTERM or SIGINT."""

    sockets: list[socket.socket]
    serve: Callable[[socket.socket], None]
    workers: dict[int, int] = field(default_factory=dict)  # pid → socket index
    started_at: dict[int, float] = field(default_factory=dict)
    crashes: int = 0
    stopping: bool = False

    @property
    def port(self) -> int:
        return int(self.sockets[0].getsockname()[1])

    def run(self) -> int:
        """Run the workers; the exit status: 0 once stopped by a signal, 1 when workers kept crashing."""
        metrics_dir = tempfile.mkdtemp(prefix="costline-gateway-metrics-")
        os.environ[METRICS_DIR_ENV] = metrics_dir  # before any worker makes its metrics
        previous = {s: signal.signal(s, self._stop) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            for index in range(len(self.sockets)):
                self._start(index)
            return self._watch()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self._stop_all()
            shutil.rmtree(metrics_dir, ignore_errors=True)
            del os.environ[METRICS_DIR_ENV]

    def _start(self, index: int) -> None:
        pid = os.fork()
        if pid == 0:  # the worker
            status = 0
            try:
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                for i, sock in enumerate(self.sockets):
                    if i != index:
                        sock.close()
                _metrics_to_files()
                self.serve(self.sockets[index])
            except BaseException:
                log.exception("gateway worker %d failed", os.getpid())
                status = 1
            finally:
                logging.shutdown()
                os._exit(status)
        self.workers[pid] = index
        self.started_at[pid] = time.monotonic()

    def _watch(self) -> int:
        while self.workers:
            try:
                pid, status = os.wait()
            except ChildProcessError:
                break
            except InterruptedError:
                continue
            index = self.workers.pop(pid, None)
            started = self.started_at.pop(pid, 0.0)
            if index is None:
                continue
            _mark_dead(pid)
            if self.stopping:
                continue
            code = os.waitstatus_to_exitcode(status)
            self.crashes = self.crashes + 1 if time.monotonic() - started < CRASH_WINDOW_S else 0
            if self.crashes >= CRASHES_ALLOWED:
                log.error(
                    "gateway workers died %d times within %.0f s of starting (last: %s); stopping",
                    self.crashes,
                    CRASH_WINDOW_S,
                    _describe(code),
                )
                return 1
            log.warning("gateway worker %d ended (%s); starting another", pid, _describe(code))
            self._start(index)
        return 0

    def _stop(self, signum: int = signal.SIGTERM, frame: object = None) -> None:
        self.stopping = True
        for pid in self.workers:
            _signal(pid, signal.SIGTERM)

    def _stop_all(self, grace_s: float = 10.0) -> None:
        self._stop()
        deadline = time.monotonic() + grace_s
        while self.workers and time.monotonic() < deadline:
            pid, _ = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                time.sleep(0.05)
            else:
                self.workers.pop(pid, None)
        for pid in list(self.workers):
            _signal(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            self.workers.pop(pid)


def _signal(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def _metrics_to_files() -> None:
    """Make the metrics this worker creates keep their values in METRICS_DIR_ENV's files.
    prometheus_client picks where values live when it is imported, which was before the folder was
    named (Django's start-up imports it), so the worker says it again."""
    from prometheus_client import values

    values.ValueClass = values.MultiProcessValue()


def _mark_dead(pid: int) -> None:
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid)


def _describe(code: int) -> str:
    return f"signal {-code}" if code < 0 else f"exit status {code}"
