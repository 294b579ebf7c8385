"""A PostgreSQL database of a test's own on the server at 127.0.0.1:5432 (trust auth).

Each test gets a database with a unique name, created empty and dropped (with
FORCE, whatever connections are left) when it ends: tests never share rows, and a
failed run leaves nothing behind that a later run would trip over.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg

PG_ADMIN_URL = os.environ.get(
    "ALARMHUB_TEST_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)


def _url_of(database: str) -> str:
    base, _, _ = PG_ADMIN_URL.rpartition("/")
    return f"{base}/{database}"


@asynccontextmanager
async def scratch_database(prefix: str = "alarmhub_t") -> AsyncIterator[str]:
    """Create an empty database, yield its URL, drop it afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:16]}"
    admin = await asyncpg.connect(PG_ADMIN_URL)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        yield _url_of(name)
    finally:
        admin = await asyncpg.connect(PG_ADMIN_URL)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


# --- an outage of one test's database, on the shared server ----------------------


async def admin(sql: str, *args: object) -> object:
    conn = await asyncpg.connect(PG_ADMIN_URL)
    try:
        return await conn.fetchval(sql, *args)
    finally:
        await conn.close()


async def terminate_backends(url: str) -> int:
    """Cut every connection to the test's database, as a PostgreSQL restart would."""
    cut = await admin(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
        "WHERE datname = $1 AND pid <> pg_backend_pid()",
        url.rsplit("/", 1)[-1],
    )
    return int(cut or 0)  # type: ignore[call-overload]


async def allow_connections(url: str, allow: bool) -> None:
    """Refuse (or allow again) every new connection to the test's database: an outage."""
    await admin(f'ALTER DATABASE "{url.rsplit("/", 1)[-1]}" ALLOW_CONNECTIONS {str(allow).lower()}')
