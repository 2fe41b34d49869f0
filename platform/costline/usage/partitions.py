"""Daily partitions of the raw tables: created ahead and on demand, dropped after retention.

Partitions are named `<table>_pYYYYMMDD` and cover one UTC day. Creating one takes a short lock on the
parent table, so it runs in its own small transaction, serialised across processes by an advisory lock,
never inside an ingest transaction.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta
from typing import Any

PARTITIONED_TABLES = ("usage_llmcall", "usage_traceroot")  # raw: kept RAW_RETENTION_DAYS
ROLLUP_PARTITIONED_TABLES = (
    "usage_rollup_minute",
    "usage_userrollup_minute",
)  # kept ROLLUP_MINUTE_RETENTION_DAYS
_LOCK_KEY = 0x636F73746C696E65  # "costline": serialises partition DDL between processes
_NAME = re.compile(r"_p(\d{8})$")


def partition_name(table: str, day: date) -> str:
    return f"{table}_p{day:%Y%m%d}"


def day_of(moment: datetime) -> date:
    return moment.astimezone(UTC).date()


def create_partition_sql(table: str, day: date) -> str:
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    end = start + timedelta(days=1)
    return (
        f'CREATE TABLE IF NOT EXISTS "{partition_name(table, day)}" PARTITION OF "{table}" '
        f"FOR VALUES FROM ('{start.isoformat()}') TO ('{end.isoformat()}')"
    )


LIST_PARTITIONS_SQL = """
    SELECT child.relname
    FROM pg_inherits
    JOIN pg_class parent ON parent.oid = pg_inherits.inhparent
    JOIN pg_class child ON child.oid = pg_inherits.inhrelid
    WHERE parent.relname = %s
"""


def days_from_names(names: Iterable[str]) -> set[date]:
    days = set()
    for name in names:
        match = _NAME.search(name)
        if match:
            days.add(datetime.strptime(match.group(1), "%Y%m%d").replace(tzinfo=UTC).date())
    return days


def existing_days(cursor: Any, table: str) -> set[date]:
    cursor.execute(LIST_PARTITIONS_SQL, [table])
    return days_from_names(row[0] for row in cursor.fetchall())


def ensure_partitions(cursor: Any, days: Iterable[date], tables: Iterable[str] = PARTITIONED_TABLES) -> int:
    """Create the missing daily partitions (sync cursor, Django or psycopg); returns how many were made."""
    wanted = sorted(set(days))
    created = 0
    cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_LOCK_KEY])
    for table in tables:
        have = existing_days(cursor, table)
        for day in wanted:
            if day not in have:
                cursor.execute(create_partition_sql(table, day))
                created += 1
    return created


async def existing_days_async(conn: Any, table: str = "usage_llmcall") -> set[date]:
    cur = await conn.execute(LIST_PARTITIONS_SQL, [table])
    return days_from_names(row[0] for row in await cur.fetchall())


async def ensure_partitions_async(
    conn: Any, days: Iterable[date], tables: Iterable[str] = PARTITIONED_TABLES
) -> int:
    """The same for a psycopg AsyncConnection, one transaction per partition.

    Creating a partition locks its parent table exclusively. Were several made in one transaction, it
    would hold the first parent while waiting for the next, and an export writing the two tables in
    the other order would deadlock with it (seen when two exports opened new days at once).
    """
    wanted = sorted(set(days))
    created = 0
    for table in tables:
        for day in wanted:
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock(%s)", [_LOCK_KEY])
                cur = await conn.execute(LIST_PARTITIONS_SQL, [table])
                if day not in days_from_names(row[0] for row in await cur.fetchall()):
                    await conn.execute(create_partition_sql(table, day))
                    created += 1
    return created


def days_around(today: date, back: int, ahead: int) -> list[date]:
    return [today + timedelta(days=offset) for offset in range(-back, ahead + 1)]


def drop_partitions_before(
    cursor: Any, cutoff: date, tables: Iterable[str] = PARTITIONED_TABLES
) -> list[str]:
    """Drop every daily partition wholly older than `cutoff`; returns the dropped names."""
    dropped = []
    cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_LOCK_KEY])
    for table in tables:
        for day in sorted(existing_days(cursor, table)):
            if day < cutoff:
                name = partition_name(table, day)
                cursor.execute(f'DROP TABLE IF EXISTS "{name}"')
                dropped.append(name)
    return dropped
