"""The narrow interface the collector writes through; the platform hands it an implementation.

The collector authenticates a caller's key to a tenant and writes one normalised export at a time.
`write` returns only once the export is durable (committed), so the collector can acknowledge it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from collector.records import Batch


@dataclass(frozen=True, slots=True)
class TenantRef:
    organization_id: int
    ingest_key_id: int
    project_id: int | None = None


@dataclass(frozen=True, slots=True)
class WriteResult:
    stored_calls: int


class SinkUnavailable(Exception):
    """The store cannot take writes right now (database down, pool exhausted); the export may be retried."""


class Sink(Protocol):
    async def authenticate(self, secret: str) -> TenantRef | None:
        """The tenant an ingest key belongs to, or None for an unknown or revoked key."""
        ...

    async def write(self, tenant: TenantRef, batch: Batch) -> WriteResult:
        """Store the batch durably and idempotently; raise SinkUnavailable when that is not possible."""
        ...
