"""Bring a SQLite file to the schema this alarmhub knows, or say how far it is.

The same runner serves `SqliteStore.open` (a fresh file, the tests, the demo)
and `alarmhub db migrate`. Each version is applied in its own `BEGIN IMMEDIATE`
transaction with its row in `schema_version`, and the version is read again
inside that transaction: two processes migrating one file at once (two CLI
commands, or a command beside a starting daemon) apply each version once, the
second finding it done, instead of both running its `CREATE TABLE` and one failing.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Awaitable, Callable

from alarmhub.store.sqlite.schema import MIGRATIONS

KNOWN_VERSION = len(MIGRATIONS)
WAL_RETRY_S = 0.01


def use_wal(
    conn: sqlite3.Connection,
    within_s: float,
    *,
    sleep: Callable[[float], None] = time.sleep,
    monotonic: Callable[[], float] = time.monotonic,
) -> None:
    """`PRAGMA journal_mode=WAL`, tried again while another connection switches it too.

    Two connections switching one new file at once each hold a shared lock and want
    the exclusive one; SQLite answers one of them "database is locked" at once,
    without calling its busy handler (waiting could deadlock). Seen in a full test run:
    of two `db migrate` of one new file, one failed. The other switch is done in
    milliseconds, so short pauses until `within_s` (the busy timeout) are enough.
    """
    deadline = monotonic() + within_s
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
        except sqlite3.OperationalError as exc:
            if not _locked(exc) or monotonic() >= deadline:
                raise
            sleep(WAL_RETRY_S)
        else:
            return


async def use_wal_async(
    execute: Callable[[str], Awaitable[object]],
    within_s: float,
    *,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    monotonic: Callable[[], float] = time.monotonic,
) -> None:
    """use_wal for the daemon's aiosqlite connection (`execute`: its `execute`).

    The daemon starting on a new file beside a `db migrate` of it met the same
    refusal; the pauses are the event loop's, not a blocked thread's.
    """
    deadline = monotonic() + within_s
    while True:
        try:
            await execute("PRAGMA journal_mode=WAL")
        except sqlite3.OperationalError as exc:
            if not _locked(exc) or monotonic() >= deadline:
                raise
            await sleep(WAL_RETRY_S)
        else:
            return


def _locked(exc: sqlite3.OperationalError) -> bool:
    return "locked" in str(exc)


def schema_version(conn: sqlite3.Connection) -> int:
    """The newest version applied; 0 for a file alarmhub has never touched."""
    exists = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'"
    ).fetchone()
    if exists is None:
        return 0
    row = conn.execute("SELECT max(version) FROM schema_version").fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def migrate(conn: sqlite3.Connection, progress: Callable[[int], None] | None = None) -> list[int]:
    """Apply every version not yet applied, in order; the versions this call applied.

    `conn` must be in autocommit mode (`isolation_level=None`): the transactions
    are this function's own. `progress(version)` is called just before a version
    is applied. A file newer than this alarmhub is left alone (nothing to apply);
    refusing it is the caller's decision (store/versions.py).
    """
    if schema_version(conn) >= KNOWN_VERSION:
        return []  # the common case, without taking the write lock
    conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER)")
    applied: list[int] = []
    for version, script in enumerate(MIGRATIONS, start=1):
        conn.execute("BEGIN IMMEDIATE")
        try:
            if schema_version(conn) >= version:
                conn.execute("ROLLBACK")
                continue
            if progress is not None:
                progress(version)
            for statement in statements(script):
                conn.execute(statement)
            conn.execute("INSERT INTO schema_version VALUES (?)", (version,))
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        applied.append(version)
    return applied


def statements(script: str) -> list[str]:
    """Split a migration into statements; a trigger's body keeps its own semicolons."""
    out: list[str] = []
    pending = ""
    for piece in script.split(";"):
        pending += piece + ";"
        if sqlite3.complete_statement(pending):
            if pending.strip(" \n\t;"):
                out.append(pending.strip().removesuffix(";").strip())
            pending = ""
    if pending.strip(" \n\t;"):
        out.append(pending.strip().removesuffix(";").strip())
    return out
