"""The daemon's store opens a new file in WAL mode even when its first switch is refused.

Switching a new file to WAL needs SQLite's exclusive lock. Of two connections switching
one new file at once, SQLite refuses one at once ("database is locked"), without its busy
handler (waiting could deadlock). `alarmhub db migrate` waited that out
(migrations.use_wal); the daemon's SqliteStore.open did not, so a daemon started beside a
migration of the same new file could stop at start-up. Both now pause and try again until
the busy timeout.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import aiosqlite
import pytest

from alarmhub.store.sqlite.migrations import use_wal_async
from alarmhub.store.sqlite.store import SqliteStore


def _hold_shared_lock(path: Path) -> sqlite3.Connection:
    """Another connection inside a read transaction: it holds SHARED until released."""
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("CREATE TABLE IF NOT EXISTS t (x)")
    other.execute("BEGIN")
    other.execute("SELECT count(*) FROM t").fetchone()
    return other


async def test_open_tries_a_refused_wal_switch_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite's refusal needs two switches racing (each holding SHARED, each wanting
    EXCLUSIVE), which a test cannot time; here the switch is refused three times as
    SQLite refuses it, and then done."""
    real = aiosqlite.Connection.execute
    refused: list[str] = []

    def execute(self: aiosqlite.Connection, sql: str, *args: Any) -> Any:
        if sql == "PRAGMA journal_mode=WAL" and len(refused) < 3:
            refused.append(sql)

            async def refuse() -> None:
                raise sqlite3.OperationalError("database is locked")

            return refuse()
        return real(self, sql, *args)

    monkeypatch.setattr(aiosqlite.Connection, "execute", execute)
    store = await SqliteStore.open(tmp_path / "new.db")
    await store.close()
    assert len(refused) == 3
    # WAL is the file's own setting: another connection finds it.
    check = sqlite3.connect(tmp_path / "new.db")
    assert check.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    check.close()


async def test_a_lock_held_past_the_timeout_or_another_error_is_not_waited_out(
    tmp_path: Path,
) -> None:
    path = tmp_path / "new.db"
    other = _hold_shared_lock(path)
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=0)
    calls: list[str] = []
    # A clock of the test's own: the verdict never depends on how fast the machine is.
    now = [0.0]

    async def sleep(s: float) -> None:
        now[0] += s

    async def execute(sql: str) -> object:
        calls.append(sql)
        return conn.execute(sql)

    with pytest.raises(sqlite3.OperationalError, match="locked"):
        await use_wal_async(execute, 5.0, sleep=sleep, monotonic=lambda: now[0])
    assert len(calls) > 1  # tried again while the lock was held
    assert now[0] >= 5.0  # and gave up at the timeout, not before
    other.execute("COMMIT")
    other.close()

    async def failing(sql: str) -> object:
        calls.append(sql)
        raise sqlite3.OperationalError("disk I/O error")

    calls.clear()
    with pytest.raises(sqlite3.OperationalError, match="disk"):
        await use_wal_async(failing, 5.0, sleep=sleep, monotonic=lambda: now[0])
    assert calls == ["PRAGMA journal_mode=WAL"]  # only a lock is waited out
    conn.close()
