"""What both receivers (OTLP/HTTP and OTLP/gRPC) do with an export: authenticate, admit, normalise, store.

Admission control keeps the collector honest under load: at most `max_concurrent` exports are written
at once and `max_queued` more may wait; beyond that the caller is told to retry later (429 / gRPC
UNAVAILABLE with a retry delay) instead of being queued without bound or dropped.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import functools
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from collector.normalise import normalise
from collector.otlp import DecodedExport
from collector.sink import Sink, TenantRef

NANOS = 1_000_000_000

# CPU-heavy steps (decoding, normalising, pricing) run on one worker thread, never on the event loop:
# an export holding its tenant's lock must not wait behind another export's 20 ms of decoding for
# each of its database round trips. One thread, so those steps never compete with each other.
_cpu = ThreadPoolExecutor(max_workers=1, thread_name_prefix="collector-cpu")


async def cpu_bound(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    return await asyncio.get_running_loop().run_in_executor(_cpu, functools.partial(fn, *args, **kwargs))


T = TypeVar("T")


class Unauthenticated(Exception):
    """No credentials, or credentials that name no active ingest key; the message says which."""


class Overloaded(Exception):
    """Too many exports in flight; retry after a delay."""


@dataclass(frozen=True, slots=True)
class ExportOutcome:
    accepted_spans: int
    rejected_spans: int
    message: str
    stored_calls: int


def secret_from_authorization(header: str | None) -> str:
    """The ingest key in an Authorization header: `Bearer <key>`, or HTTP Basic with the key as password.

    Basic is what the Langfuse SDK sends (public key as user name, secret key as password); the key is
    also accepted as the user name so that `-u KEY:` works with curl.
    """
    if not header:
        raise Unauthenticated(
            "missing ingest key: send 'Authorization: Bearer <ingest key>' "
            "(OTEL_EXPORTER_OTLP_HEADERS='Authorization=Bearer%20<ingest key>')"
        )
    scheme, _, value = header.strip().partition(" ")
    value = value.strip()
    if scheme.lower() == "bearer" and value:
        return value
    if scheme.lower() == "basic" and value:
        try:
            user, _, password = base64.b64decode(value, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            raise Unauthenticated(
                "malformed Basic credentials: expected base64 of 'user:ingest key'"
            ) from None
        return password or user
    raise Unauthenticated("unsupported Authorization scheme: use 'Bearer <ingest key>' or HTTP Basic")


class Pipeline:
    def __init__(
        self,
        sink: Sink,
        *,
        retention_days: int,
        max_future_skew_seconds: int,
        max_concurrent: int = 4,
        max_queued: int = 64,
    ) -> None:
        self.sink = sink
        self.retention_ns = retention_days * 86400 * NANOS
        self.future_ns = max_future_skew_seconds * NANOS
        self.max_in_flight = max_concurrent + max_queued
        self.in_flight = 0
        self._writers = asyncio.Semaphore(max_concurrent)

    async def authenticate(self, authorization: str | None) -> TenantRef:
        secret = secret_from_authorization(authorization)
        tenant = await self.sink.authenticate(secret)
        if tenant is None:
            raise Unauthenticated(
                "unknown or revoked ingest key: create one in Settings → Ingest keys "
                "(or `python manage.py create_tenant NAME --json`)"
            )
        return tenant

    @asynccontextmanager
    async def admitted(self) -> AsyncIterator[None]:
        """Hold a place among the exports in flight, or raise Overloaded when there is none."""
        if self.in_flight >= self.max_in_flight:
            raise Overloaded(f"the collector is busy ({self.in_flight} exports in flight); retry later")
        self.in_flight += 1
        try:
            yield
        finally:
            self.in_flight -= 1

    async def export(self, tenant: TenantRef, decoded: DecodedExport) -> ExportOutcome:
        now = time.time_ns()
        # CPU work runs in a worker thread: the event loop stays free to answer the database promptly
        # for exports that hold a tenant's lock.
        batch = await cpu_bound(
            normalise, decoded, min_start_ns=now - self.retention_ns, max_start_ns=now + self.future_ns
        )
        async with self._writers:
            result = await self.sink.write(tenant, batch)
        message = ""
        if batch.rejected_spans:
            message = f"{batch.rejected_spans} span(s) rejected: " + "; ".join(batch.rejection_reasons)
        return ExportOutcome(
            accepted_spans=decoded.received - batch.rejected_spans,
            rejected_spans=batch.rejected_spans,
            message=message,
            stored_calls=result.stored_calls,
        )
