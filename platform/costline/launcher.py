"""What `make run` does after migrating: keep the demo organisation's credentials, supervise the processes.

`python manage.py run` seeds the demo organisation (credentials, a sign-in, and 30 days of traffic
through the ingest path, topped up on later starts), then starts one child process per Costline process
(collector, web, Celery worker and beat, the inference gateway, and vLLM when it is installed). The
`Supervisor` prefixes every line a child prints with the child's name, waits until the children's
ports answer, and stops them all together: on Ctrl-C or SIGTERM, or as soon as one of them dies.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, TextIO

from django.db import transaction

from costline.tenancy.actions import issue_api_token, issue_gateway_key, issue_ingest_key
from costline.tenancy.keys import hash_secret
from costline.tenancy.models import ApiToken, GatewayKey, IngestKey, Organization
from costline.usage.demo import (
    DEMO_EMAIL,
    DEMO_NAME,
    DemoRun,
    Progress,
    ensure_demo_organization,
    ensure_demo_user,
    generate_demo,
)

logger = logging.getLogger(__name__)

DEMO_SLUG = "demo"  # what create_organization(DEMO_NAME) gets in a database that has no "demo" yet


# --- The demo organisation ----------------------------------------------------------------------


@dataclass(frozen=True)
class DemoCredentials:
    organization_id: int
    organization_name: str
    ingest_key: str
    api_token: str
    # The web sign-in: the demo user owns the demo organisation.
    email: str = DEMO_EMAIL
    password: str = ""
    slug: str = DEMO_SLUG
    gateway_key: str = ""  # the OpenAI clients' api_key for the inference gateway


def load_credentials(path: Path) -> DemoCredentials | None:
    """The credentials saved by an earlier run, or None when there are none (or the file is damaged)."""
    try:
        data = json.loads(path.read_text())
        return DemoCredentials(
            organization_id=int(data["organization_id"]),
            organization_name=str(data["organization_name"]),
            ingest_key=str(data["ingest_key"]),
            api_token=str(data["api_token"]),
            # Files written before the web sign-in existed lack these; a password is then issued.
            email=str(data.get("email", DEMO_EMAIL)),
            password=str(data.get("password", "")),
            slug=str(data.get("slug", DEMO_SLUG)),
            gateway_key=str(data.get("gateway_key", "")),
        )
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError) as exc:
        logger.warning("ignoring %s (%s): fresh demo credentials will be issued", path, exc)
        return None


def save_credentials(path: Path, credentials: DemoCredentials) -> None:
    """Write the file atomically and readable by its owner only: it holds live secrets."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # O_CREAT's mode applies only to a file it creates
    with os.fdopen(fd, "w") as file:
        json.dump(asdict(credentials), file, indent=2)
        file.write("\n")
    os.replace(partial, path)


def _is_active(
    model: type[IngestKey] | type[ApiToken] | type[GatewayKey], org: Organization, plaintext: str
) -> bool:
    return model.objects.active().filter(organization=org, secret_hash=hash_secret(plaintext)).exists()


def ensure_demo_credentials(path: Path) -> DemoCredentials:
    """The demo organisation with an ingest key, an API token and a web sign-in that work, kept in `path`.

    Idempotent: a second run finds the organisation (by slug, so a file left from another database
    is never trusted for its ids) and reuses the saved secrets while they are still active; a secret
    that was revoked or is unknown to this database is replaced by a fresh one. The demo user's
    password is generated once and kept: if it was changed since, the saved one is set again, so the
    banner's sign-in always works.
    """
    saved = load_credentials(path)
    with transaction.atomic():
        org = ensure_demo_organization(DEMO_NAME)
        if saved is not None and _is_active(IngestKey, org, saved.ingest_key):
            ingest_key = saved.ingest_key
        else:
            ingest_key = issue_ingest_key(org, "demo ingest key (make run)").plaintext
        if saved is not None and _is_active(ApiToken, org, saved.api_token):
            api_token = saved.api_token
        else:
            api_token = issue_api_token(org, "demo API token (make run)").plaintext
        if saved is not None and saved.gateway_key and _is_active(GatewayKey, org, saved.gateway_key):
            gateway_key = saved.gateway_key
        else:
            gateway_key = issue_gateway_key(org, "demo gateway key (make run)").plaintext
        password = saved.password if saved is not None and saved.password else secrets.token_urlsafe(12)
        ensure_demo_user(org, email=DEMO_EMAIL, password=password)
    credentials = DemoCredentials(
        org.id, org.name, ingest_key, api_token, DEMO_EMAIL, password, org.slug, gateway_key
    )
    if credentials != saved:
        save_credentials(path, credentials)
    return credentials


def fill_demo(credentials: DemoCredentials, *, days: int, progress: Progress) -> DemoRun:
    """The demo organisation's traffic: `days` days on the first start, the hours since on later ones."""
    org = Organization.objects.get(id=credentials.organization_id)
    return generate_demo(org, days=days, progress=progress)


# --- Process supervision ------------------------------------------------------------------------


@dataclass(frozen=True)
class Process:
    """A child process: its name (prefixed to its output) and the TCP ports that answer once it is up."""

    name: str
    argv: Sequence[str]
    ports: Sequence[int] = ()
    host: str = "127.0.0.1"  # where its ports are reached from this machine


class ChildExited(Exception):
    def __init__(self, name: str, returncode: int) -> None:
        if returncode < 0:
            how = f"was killed by signal {-returncode} ({signal.strsignal(-returncode)})"
        else:
            how = f"exited with status {returncode}"
        super().__init__(f"{name} {how}; the other processes were stopped")
        self.name = name
        self.returncode = returncode


class PortBusy(Exception):
    pass


def reachable_host(bind_host: str) -> str:
    """Where a server bound to `bind_host` is reached from this machine (a wildcard means loopback)."""
    return {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(bind_host, bind_host)  # noqa: S104


def port_answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


class Supervisor:
    """Start processes, relay their output, and stop them all together.

    Each child runs in a session of its own, so that Ctrl-C in the terminal reaches the supervisor
    alone and the children are stopped in order (SIGTERM, then SIGKILL to the whole process group,
    gunicorn's workers included, after `stop_timeout` seconds).
    """

    def __init__(
        self,
        processes: Sequence[Process],
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        output: TextIO,
        stop_timeout: float = 10.0,
    ) -> None:
        self.processes = list(processes)
        self.env = env
        self.cwd = cwd
        self.output = output
        self.stop_timeout = stop_timeout
        self.stop_requested = threading.Event()
        self.children: dict[str, subprocess.Popen[bytes]] = {}
        self._relays: list[threading.Thread] = []
        self._output_lock = threading.Lock()
        self._name_width = max((len(p.name) for p in self.processes), default=0)

    def start(self) -> None:
        for process in self.processes:
            for port in process.ports:
                # Something already answering would pass for our child being ready.
                if port_answers(process.host, port):
                    raise PortBusy(
                        f"port {port} ({process.name}) is already in use: is Costline already running? "
                        "Stop it, or choose other ports (see README)."
                    )
        for process in self.processes:
            child = subprocess.Popen(  # noqa: S603 - argv built by the launcher, never from input
                list(process.argv),
                env=self.env,
                cwd=self.cwd,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            self.children[process.name] = child
            assert child.stdout is not None
            relay = threading.Thread(
                target=self._relay,
                args=(process.name, child.stdout),
                name=f"relay-{process.name}",
                daemon=True,
            )
            relay.start()
            self._relays.append(relay)

    def request_stop(self) -> None:
        """Safe to call from a signal handler: the waiting loops notice and return."""
        self.stop_requested.set()

    def wait_ready(self, timeout: float) -> bool:
        """Wait until every port answers: True when they all do, False when a stop was requested first.

        Raises ChildExited when a child dies first, TimeoutError when a port stays silent too long.
        """
        deadline = time.monotonic() + timeout
        pending = [(process, port) for process in self.processes for port in process.ports]
        while pending:
            self._raise_if_a_child_exited()
            pending = [(process, port) for process, port in pending if not port_answers(process.host, port)]
            if not pending:
                break
            if time.monotonic() > deadline:
                process, port = pending[0]
                raise TimeoutError(f"{process.name} did not answer on port {port} within {timeout:.0f} s")
            if self.stop_requested.wait(0.1):
                return False
        return not self.stop_requested.is_set()

    def wait(self) -> None:
        """Block until a stop is requested; raises ChildExited as soon as a child dies."""
        while not self.stop_requested.wait(0.2):
            self._raise_if_a_child_exited()

    def stop(self) -> None:
        self.stop_requested.set()
        for child in self.children.values():
            if child.poll() is None:
                child.terminate()
        deadline = time.monotonic() + self.stop_timeout
        for name, child in self.children.items():
            try:
                child.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.say(name, f"did not stop within {self.stop_timeout:.0f} s; killing it")
                with contextlib.suppress(ProcessLookupError):  # it exited in the meantime
                    os.killpg(child.pid, signal.SIGKILL)
                child.wait()
        for relay in self._relays:
            relay.join(timeout=2)

    def say(self, name: str, line: str) -> None:
        with self._output_lock:
            self.output.write(f"{name:<{self._name_width}} | {line}\n")
            self.output.flush()

    def announce(self, text: str) -> None:
        """Print a block (the banner) without a child's line landing in the middle of it."""
        with self._output_lock:
            self.output.write(text if text.endswith("\n") else text + "\n")
            self.output.flush()

    def _relay(self, name: str, stream: IO[bytes]) -> None:
        with stream:
            for raw in iter(stream.readline, b""):
                self.say(name, raw.decode(errors="replace").rstrip("\r\n"))

    def _raise_if_a_child_exited(self) -> None:
        for name, child in self.children.items():
            returncode = child.poll()
            if returncode is not None:
                raise ChildExited(name, returncode)
