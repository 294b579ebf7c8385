"""Bring a PostgreSQL database to the schema this alarmhub knows, or say how far it is.

Several instances may start at once against one database: the migration runs
under a transaction-scoped advisory lock, so one applies each version and the
others find it applied. Each version is applied in its own transaction with its
row in `schema_version`, so a failed migration leaves the previous version whole.
"""

from __future__ import annotations

from collections.abc import Callable

import asyncpg

from alarmhub.store.postgres.schema import MIGRATIONS

# pg_advisory_xact_lock key: "alarmhub" read as a number; any constant that no
# other application on the same server uses.
MIGRATION_LOCK = 0x616C61726D687562
KNOWN_VERSION = len(MIGRATIONS)

_CREATE_VERSION_TABLE = """
CREATE TABLE IF NOT EXISTS schema_version (
    version integer PRIMARY KEY,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""


async def schema_version(conn: asyncpg.Connection) -> int:
    """The newest version applied; 0 for a database alarmhub has never touched."""
    exists = await conn.fetchval("SELECT to_regclass('schema_version') IS NOT NULL")
    if not exists:
        return 0
    version = await conn.fetchval("SELECT max(version) FROM schema_version")
    return int(version or 0)


async def migrate(
    conn: asyncpg.Connection, progress: Callable[[int], None] | None = None
) -> list[int]:
    """Apply every version not yet applied, in order; the versions this call applied.

    `progress(version)` is called just before a version is applied (`alarmhub db
    migrate` prints it). A database newer than this alarmhub is left alone;
    refusing it is the caller's decision (store/versions.py).
    """
    applied: list[int] = []
    for version, script in enumerate(MIGRATIONS, start=1):
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
            await conn.execute(_CREATE_VERSION_TABLE)
            done = await conn.fetchval(
                "SELECT EXISTS (SELECT 1 FROM schema_version WHERE version = $1)", version
            )
            if done:
                continue
            if progress is not None:
                progress(version)
            await conn.execute(script)
            await conn.execute("INSERT INTO schema_version (version) VALUES ($1)", version)
            applied.append(version)
    return applied
