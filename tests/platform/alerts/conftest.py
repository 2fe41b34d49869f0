"""Fixtures for notifications: a real local webhook receiver, channels, and signed-in members."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from costline.alerts.delivery import new_signing_secret
from costline.alerts.models import Channel, ChannelKind
from costline.celery import app
from costline.tenancy.models import Organization
from tests.platform.dashboards.conftest import Member, sign_in

__all__ = ["Member", "Receiver", "sign_in"]


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    signature_ok: bool | None  # None: the receiver has no secret to check with

    @property
    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    """An HTTP server in a thread that answers POSTs with the statuses queued in `answers` (then 200).

    With `secret` set, it checks each request's signature as a customer's receiver would, and answers
    401 to a bad one.
    """

    url: str
    secret: str = ""
    answers: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    delay_s: float = 0.0  # how long it waits before answering (timeouts)
    received: list[Received] = field(default_factory=list)

    def answer(self, status: int, **headers: str) -> None:
        self.answers.append((status, headers))


def _handler(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            headers = {k.lower(): v for k, v in self.headers.items()}
            signature_ok = None
            if receiver.secret:
                timestamp = headers.get("x-costline-timestamp", "")
                expected = hmac.new(
                    receiver.secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256
                ).hexdigest()
                signature_ok = (
                    hmac.compare_digest(headers.get("x-costline-signature", ""), f"sha256={expected}")
                    and abs(time.time() - int(timestamp or 0)) < 300
                )
            receiver.received.append(Received(self.path, headers, body, signature_ok))
            if receiver.delay_s:
                time.sleep(receiver.delay_s)
            status, extra = receiver.answers.pop(0) if receiver.answers else (200, {})
            if signature_ok is False:
                status, extra = 401, {}
            self.send_response(status)
            for name, value in extra.items():
                self.send_header(name.replace("_", "-"), value)
            self.send_header("Content-Type", "text/plain")
            self.end_headers()
            self.wfile.write(b"ok" if status < 300 else f"answer {status}".encode())

        def log_message(self, format: str, *args: Any) -> None:  # quiet test output
            pass

    return Handler


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    recv = Receiver(url=f"http://127.0.0.1:{server.server_address[1]}/hooks/costline")
    server.RequestHandlerClass = _handler(recv)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield recv
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def make_channel(db: None) -> Callable[..., Channel]:
    def make(org: Organization, kind: str = ChannelKind.WEBHOOK, target: str = "", **fields: Any) -> Channel:
        secret = new_signing_secret() if kind == ChannelKind.WEBHOOK else ""
        return Channel.objects.create(
            organization=org,
            name=fields.pop("name", f"{kind} channel"),
            kind=kind,
            target=target or "ops@example.com",
            signing_secret=fields.pop("signing_secret", secret),
            **fields,
        )

    return make


@pytest.fixture
def eager_tasks() -> Iterator[None]:
    """Run queued tasks at once, in the test's process (what a worker on `notifications` would do)."""
    app.conf.task_always_eager = True
    try:
        yield
    finally:
        app.conf.task_always_eager = False
