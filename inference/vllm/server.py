"""Run one vLLM server from a `Launch`: start it, say how loading goes, know when it answers, stop it.

Used by the `vllm` management command, the test fixtures and the benchmark, so all three start the
server the same way. The server runs in a session of its own: stopping it signals the whole group,
vLLM's engine-core worker process included, which would otherwise outlive its parent.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import IO

import httpx

from inference.vllm.launch import Launch

Progress = Callable[[str], None]

# Measured here (2 cores, SmolLM2-135M, bf16): ready 39 s after start with --enforce-eager, 74–105 s
# compiled. Ten minutes means something is wrong (or the machine is far busier than that).
READY_TIMEOUT_SECONDS = 600.0
PROGRESS_EVERY_SECONDS = 15.0


class ServerFailed(Exception):
    """vLLM exited, or never answered: the message carries the end of its output."""


def port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        return sock.connect_ex((host, port)) != 0


class VllmServer:
    """A vLLM OpenAI server child process. Use as a context manager, or call start/wait_ready/stop.

    Output goes to `log` (a file path; its end is quoted when the server fails), or, with None, to this
    process's own stdout and stderr (the management command, where vLLM's log is the progress).
    """

    def __init__(
        self,
        launch: Launch,
        *,
        log: Path | None = None,
        env: dict[str, str] | None = None,
        own_session: bool = True,
    ) -> None:
        self.launch = launch
        self.log = log
        self.own_session = own_session
        self.base_env = dict(os.environ if env is None else env)
        self.process: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0
        self._log_file: IO[bytes] | None = None

    @property
    def root_url(self) -> str:
        """The server without /v1: /health and /metrics live there."""
        return self.launch.base_url.removesuffix("/v1")

    def start(self) -> None:
        host, port = _host_port(self.root_url)
        if not port_is_free(host, port):
            raise ServerFailed(
                f"port {port} is already in use: another vLLM (or something else) answers there; "
                "stop it or choose another port (--port, COSTLINE_VLLM_PORT)"
            )
        output: IO[bytes] | None = None
        if self.log is not None:
            self.log.parent.mkdir(parents=True, exist_ok=True)
            self._log_file = output = self.log.open("wb")
        self.started_at = time.monotonic()
        self.process = subprocess.Popen(  # noqa: S603 - argv built by build_launch, never from input
            list(self.launch.argv),
            env={**self.base_env, **self.launch.env},
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT if output is not None else None,
            start_new_session=self.own_session,
        )

    def wait_ready(self, timeout: float = READY_TIMEOUT_SECONDS, progress: Progress | None = None) -> float:
        """Block until /health answers 200; the seconds since start. ServerFailed when it dies first."""
        assert self.process is not None, "start() first"
        deadline = self.started_at + timeout
        next_note = self.started_at + PROGRESS_EVERY_SECONDS
        with httpx.Client(timeout=2.0) as client:
            while True:
                returncode = self.process.poll()
                if returncode is not None:
                    raise ServerFailed(f"vLLM exited with status {returncode} while loading{self._tail()}")
                with contextlib.suppress(httpx.HTTPError):
                    if client.get(self.root_url + "/health").status_code == 200:
                        return time.monotonic() - self.started_at
                now = time.monotonic()
                if now > deadline:
                    raise ServerFailed(f"vLLM did not answer within {timeout:.0f} s{self._tail()}")
                if progress is not None and now >= next_note:
                    progress(
                        f"vLLM ({self.launch.served_model_name}) still loading: {now - self.started_at:.0f} s"
                    )
                    next_note = now + PROGRESS_EVERY_SECONDS
                time.sleep(0.5)

    def wait(self) -> int:
        """Block until the server exits; its status."""
        assert self.process is not None, "start() first"
        return self.process.wait()

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM, then SIGKILL after `timeout` seconds: to its process group when it has its own."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            self._signal(process, signal.SIGTERM)
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self._signal(process, signal.SIGKILL)
                process.wait()
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def _signal(self, process: subprocess.Popen[bytes], signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            if self.own_session:
                os.killpg(process.pid, signum)
            else:
                process.send_signal(signum)

    def __enter__(self) -> VllmServer:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _tail(self, lines: int = 30) -> str:
        if self.log is None or not self.log.exists():
            return ""
        with self.log.open(errors="replace") as file:
            tail = "".join(deque(file, maxlen=lines))
        return f"; the end of {self.log}:\n{tail}"


@contextlib.contextmanager
def running(
    launch: Launch, *, log: Path | None = None, progress: Progress | None = None
) -> Iterator[VllmServer]:
    """A started, answering server for the block; stopped after it."""
    server = VllmServer(launch, log=log)
    server.start()
    try:
        server.wait_ready(progress=progress)
        yield server
    finally:
        server.stop()


def _host_port(url: str) -> tuple[str, int]:
    parsed = httpx.URL(url)
    return parsed.host, parsed.port or 80
