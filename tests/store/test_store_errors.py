"""Every write path of the store reports a refused write as StoreError, never as a bare sqlite3 error.

`AlarmHub.until_committed` retries StoreError only. The escalator's decisions once
raised `sqlite3.OperationalError: database is locked` when another process held
the database past busy_timeout: the escalator task died and took the daemon's
TaskGroup with it (seen as an intermittent failure of
tests/system/test_faults.py::test_database_locked_by_another_process).
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest

from alarmhub.core.pipeline import BatchEffects
from alarmhub.store.sqlite.store import SqliteStore, StoreError


async def test_a_database_locked_elsewhere_is_a_store_error_on_every_writer_path(
    tmp_path: Path,
) -> None:
    db = tmp_path / "alarmhub.db"
    store = await SqliteStore.open(db, autocheckpoint=False)
    try:
        # The refusal, not the 5 s wait, is under test.
        await store._conn.execute("PRAGMA busy_timeout=50")
        lock = sqlite3.connect(db, isolation_level=None)
        lock.execute("BEGIN EXCLUSIVE")
        try:
            with pytest.raises(StoreError, match="locked"):
                await store.commit_decisions([], datetime.now(UTC))
            with pytest.raises(StoreError, match="locked"):
                await store.commit_batch(BatchEffects(), {})
        finally:
            lock.rollback()
            lock.close()
        # Released: the same calls go through (what until_committed's retry relies on).
        assert await store.commit_decisions([], datetime.now(UTC)) == []
        await store.commit_batch(BatchEffects(), {})
    finally:
        await store.close()
