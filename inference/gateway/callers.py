"""Who is calling: gateway keys resolved to their organisation, project and team, over PostgreSQL.

A resolved key is trusted for `COSTLINE_GATEWAY_KEY_CACHE_SECONDS` (10 s): the revocation delay, and
what keeps a key lookup off the path of nearly every request. Budget names (for refusal messages)
are read the same way.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from costline.tenancy.keys import GATEWAY_KEY_PREFIX, hash_secret

LAST_USED_RESOLUTION_SECONDS = 60.0


class StoreUnavailable(Exception):
    """PostgreSQL cannot be reached: the caller is answered 503 with Retry-After."""


@dataclass(frozen=True)
class Caller:
    organization_id: int
    key_id: int
    key_prefix: str
    project: str  # the project's slug, "" when the key names none
    team: str  # the team's slug, "" when none
    cache_enabled: bool
    secret: str = field(repr=False)  # the key itself: the gateway exports this caller's spans with it


_KEY_SQL = """
SELECT k.id, k.organization_id, k.prefix, coalesce(p.slug, ''), coalesce(t.slug, ''), k.cache_enabled
FROM tenancy_gatewaykey k
LEFT JOIN tenancy_project p ON p.id = k.project_id
LEFT JOIN tenancy_team t ON t.id = k.team_id
WHERE k.secret_hash = %s AND k.revoked_at IS NULL
"""


class CallerStore:
    def __init__(self, conninfo: str, *, key_cache_seconds: float = 10.0, pool_size: int = 4) -> None:
        self.pool = AsyncConnectionPool(
            conninfo,
            min_size=1,
            max_size=pool_size,
            open=False,
            timeout=5.0,
            kwargs={"autocommit": True},
        )
        self.key_cache_seconds = key_cache_seconds
        self._keys: dict[str, tuple[Caller | None, float]] = {}
        self._last_used: dict[int, float] = {}
        self._budget_names: dict[int, tuple[str, float]] = {}

    async def open(self) -> None:
        await self.pool.open(wait=False)

    async def close(self) -> None:
        await self.pool.close()

    async def caller(self, secret: str) -> Caller | None:
        """The caller a gateway key stands for; None for an unknown or revoked key."""
        if not secret.startswith(GATEWAY_KEY_PREFIX):
            return None
        digest = hash_secret(secret)
        now = time.monotonic()
        cached = self._keys.get(digest)
        if cached is not None and cached[1] > now:
            return cached[0]
        try:
            async with self.pool.connection() as conn:
                row = await (await conn.execute(_KEY_SQL, [digest])).fetchone()
                found = Caller(row[1], row[0], row[2], row[3], row[4], bool(row[5]), secret) if row else None
                if found is not None and now - self._last_used.get(found.key_id, -1e9) > (
                    LAST_USED_RESOLUTION_SECONDS
                ):
                    self._last_used[found.key_id] = now
                    await conn.execute(
                        "UPDATE tenancy_gatewaykey SET last_used_at = now() WHERE id = %s", [found.key_id]
                    )
        except (psycopg.OperationalError, PoolTimeout) as exc:
            raise StoreUnavailable(f"cannot reach PostgreSQL to check the gateway key: {exc}") from exc
        if len(self._keys) > 100_000:
            self._keys.clear()
        self._keys[digest] = (found, now + self.key_cache_seconds)
        return found

    async def budget_names(self, organization_id: int, ids: list[int]) -> dict[int, str]:
        """Names of the organisation's budgets (for a refusal's message); ids it lacks are left out."""
        now = time.monotonic()
        names = {i: hit[0] for i in ids if (hit := self._budget_names.get(i)) and hit[1] > now}
        missing = [i for i in ids if i not in names]
        if not missing:
            return names
        try:
            async with self.pool.connection() as conn:
                cur = await conn.execute(
                    "SELECT id, name FROM budgets_budget WHERE organization_id = %s AND id = ANY(%s)",
                    [organization_id, missing],
                )
                rows: list[Any] = await cur.fetchall()
        except (psycopg.OperationalError, PoolTimeout):
            return names  # a refusal still names the budget by id
        for budget_id, name in rows:
            names[budget_id] = name
            self._budget_names[budget_id] = (name, now + 60)
        return names
