"""Read and migrate a database's schema version, whichever store the URL names.

`alarmhub db status`, `alarmhub db migrate` and the start of `alarmhub run`
(:func:`check_runnable`) come through here, so the SQLite file and the
PostgreSQL database are judged by one rule (store/schema_state.py). Reading the
version writes nothing: a missing SQLite file is not created, and `run` learns
that it must refuse before anything (not even SQLite's WAL switch) touches the
database.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from pathlib import Path

import asyncpg

from alarmhub.redact import redact_url
from alarmhub.settings import DatabaseTarget
from alarmhub.store.errors import StoreError
from alarmhub.store.postgres import migrations as pg
from alarmhub.store.schema_state import SchemaState, SchemaStatus, SchemaVersionError
from alarmhub.store.sqlite import migrations as lite
from alarmhub.store.sqlite.store import BUSY_TIMEOUT_MS

Progress = Callable[[int], None]


def known_version(target: DatabaseTarget) -> int:
    """The newest schema version this alarmhub has for the store `target` names."""
    return pg.KNOWN_VERSION if target.kind == "postgresql" else lite.KNOWN_VERSION


async def status(target: DatabaseTarget) -> SchemaStatus:
    """The version found in the database against the one this alarmhub knows."""
    if target.kind == "postgresql":
        conn = await _pg_connect(target)
        try:
            found = await pg.schema_version(conn)
        finally:
            await conn.close()
    else:
        found = await asyncio.to_thread(_sqlite_version, _sqlite_path(target))
    return SchemaStatus(found, known_version(target))


async def migrate(target: DatabaseTarget, progress: Progress | None = None) -> list[int]:
    """Apply the versions the database lacks; the versions applied (none: it was current).

    Raises SchemaVersionError, and touches nothing, when the database is newer
    than this alarmhub: a schema is never downgraded. Safe to run from several
    processes at once: each version is applied once (a lock in PostgreSQL,
    `BEGIN IMMEDIATE` with the version re-read in SQLite).
    """
    found = await status(target)
    if found.state is SchemaState.AHEAD:
        raise SchemaVersionError(
            f"the database schema is version {found.found}, newer than this alarmhub knows "
            f"({found.known}): nothing migrated (alarmhub never downgrades a schema); "
            "upgrade alarmhub or point it at another database",
            found,
        )
    if target.kind == "postgresql":
        conn = await _pg_connect(target)
        try:
            return await pg.migrate(conn, progress)
        finally:
            await conn.close()
    return await asyncio.to_thread(_sqlite_migrate, _sqlite_path(target), progress)


async def check_runnable(target: DatabaseTarget) -> None:
    """Refuse, before anything is written, a schema `alarmhub run` may not start on.

    Older: `alarmhub db migrate` first. Newer: a later alarmhub made it. An empty
    database passes: opening the store creates the schema at the current version.
    """
    found = await status(target)
    refusal = found.refusal()
    if refusal is not None:
        raise SchemaVersionError(refusal, found)


def _sqlite_path(target: DatabaseTarget) -> Path:
    assert target.path is not None  # parse_database_url sets it for sqlite
    return target.path


def _sqlite_version(path: Path) -> int:
    # mode=rw: a file that is not there is an empty database, and is not created.
    uri = f"{path.resolve().as_uri()}?mode=rw"
    for attempt in (1, 2):
        try:
            conn = sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT_MS / 1000)
            break
        except sqlite3.OperationalError:
            if not path.exists():
                return 0
            # There now but not when connect looked: another migrate beside this one
            # created it in between (seen in a test). Open it again before giving up.
            if attempt == 2:
                raise StoreError(f"cannot open {path}") from None
    try:
        return lite.schema_version(conn)
    except sqlite3.Error as exc:
        raise StoreError(f"cannot read the schema version of {path}: {exc}") from exc
    finally:
        conn.close()


def _sqlite_migrate(path: Path, progress: Progress | None) -> list[int]:
    if path.parent != Path():
        path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000)
    try:
        # As SqliteStore.open would leave it: the daemon and the CLI rely on WAL.
        lite.use_wal(conn, BUSY_TIMEOUT_MS / 1000)
        return lite.migrate(conn, progress)
    except sqlite3.Error as exc:
        raise StoreError(f"migrating {path} failed: {exc}") from exc
    finally:
        conn.close()


async def _pg_connect(target: DatabaseTarget) -> asyncpg.Connection:
    assert target.dsn is not None  # parse_database_url sets it for postgresql
    try:
        return await asyncpg.connect(target.dsn, timeout=30)
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        raise StoreError(f"cannot connect to {redact_url(target.dsn)}: {exc}") from exc
