"""Every write path of the store reports a refused write as StoreError, never as a bare sqlite3 error.

`AlarmHub.until_committed` retries StoreError only. The escalator's decisions once
raised `sqlite3.OperationalError: database is locked` when another process held
the database past busy_timeout: the escalator task died and took the daemon's
TaskGroup with it (seen as an intermittent failure of
tests/system/test_faults.py::test_database_locked_by_another_process).
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from alarmhub.core.pipeline import BatchEffects
from alarmhub.core.retention import RetainedTable
from alarmhub.store.sqlite.store import SqliteStore, StoreError
from tests.store.conftest import OpenedStore
from tests.support.postgres import allow_connections, terminate_backends

T0 = datetime(2026, 12, 6, 10, 0, tzinfo=UTC)


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


# Every read a long-running task of the daemon makes on its turn (the journal worker, the
# notifier, the registry's refresh, ingest's device lookup, the escalator's and the term's
# loads, retention, receipts): each catches StoreError and tries again on its next turn.
PERIODIC_READS: list[tuple[str, str, Callable[[OpenedStore], Awaitable[object]]]] = [
    ("due_journal", "journal_exports", lambda o: o.store.due_journal(T0)),
    ("oldest_waiting_journal", "journal_exports", lambda o: o.store.oldest_waiting_journal()),
    ("due_outbox", "outbox", lambda o: o.store.due_outbox(T0)),
    ("devices_changed_since", "devices", lambda o: o.store.devices_changed_since("")),
    ("get_devices", "devices", lambda o: o.store.get_devices(["d-1"])),
    ("get_alarms", "alarms", lambda o: o.store.get_alarms(["a-1"])),
    ("load_active_alarms", "alarms", lambda o: o.store.load_active_alarms()),
    ("load_resolved_since", "alarms", lambda o: o.store.load_resolved_since(T0)),
    ("fired_keys", "escalations", lambda o: o.store.fired_keys(["a-1"])),
    ("timeline", "timeline", lambda o: o.store.timeline("a-1")),
    ("raising_message", "timeline", lambda o: o.store.raising_message("a-1")),
    ("hpr_of", "users", lambda o: o.store.hpr_of("kari")),
    ("oldest_received", "inbox", lambda o: o.store.oldest_received(RetainedTable.INBOX)),
    ("last_heard", "devices", lambda o: o.history.last_heard()),
    ("last_received", "inbox", lambda o: o.last_received()),
    # The journal worker's read of a resident's number for an export, the web's listing
    # and rekey's: they let asyncpg's and sqlite3's own errors out, which the worker's
    # catch-all took for the export's fault (found in review, 2026-12-06, third session).
    (
        "read_for_journal",
        "residents",
        lambda o: o.residents.read_for_journal("0301", "r-1", "a-1", []),
    ),
    ("read_resident", "residents", lambda o: o.residents.read_resident("0301", "r-1", [])),
    ("list_residents", "residents", lambda o: o.residents.list_residents("0301", lambda _: [])),
    ("stale_residents", "residents", lambda o: o.residents.stale_residents("k-1", None, 10)),
    (
        "stale_releases",
        "journal_exports",
        lambda o: o.residents.stale_releases("k-1", None, 10),
    ),
]


@contextlib.asynccontextmanager
async def refused(opened: OpenedStore, table: str) -> AsyncIterator[None]:
    """The database refuses `table`'s reads for the block, then answers again.

    PostgreSQL: the server refuses connections and cuts those open (a restart). SQLite:
    a reader of a WAL database cannot be locked out by another connection, so another
    process takes the table away (renames it) and puts it back.
    """
    if opened.url is not None:
        await allow_connections(opened.url, False)
        await terminate_backends(opened.url)
        try:
            yield
        finally:
            await allow_connections(opened.url, True)
        return
    assert opened.path is not None
    with contextlib.closing(sqlite3.connect(opened.path, isolation_level=None)) as other:
        other.execute(f"ALTER TABLE {table} RENAME TO {table}_away")
        try:
            yield
        finally:
            other.execute(f"ALTER TABLE {table}_away RENAME TO {table}")


@pytest.mark.parametrize(
    ("table", "read"), [(t, r) for _, t, r in PERIODIC_READS], ids=[n for n, _, _ in PERIODIC_READS]
)
async def test_a_refused_read_of_a_periodic_task_is_a_store_error(
    opened: OpenedStore, table: str, read: Callable[[OpenedStore], Awaitable[object]]
) -> None:
    """SQLite's reads on the store's own connection let sqlite3.OperationalError out, which
    no periodic task catches: the one that met it ended, and the daemon's TaskGroup with it
    (found in review, 2026-12-06; PostgreSQL's reads already converted)."""
    async with refused(opened, table):
        with pytest.raises(StoreError):
            await read(opened)
    await read(opened)  # answered again: what the task's next turn relies on


async def test_a_refused_read_of_the_silences_is_no_answer_not_none_in_force(
    tmp_path: Path,
) -> None:
    """`active_silences` read any OperationalError as "no silences table": none in force.
    The registry's refresh put that in memory, and the silence keeper released (and the
    escalator escalated) every alarm a silence still covered."""
    db = tmp_path / "alarmhub.db"
    store = await SqliteStore.open(db)
    try:
        with contextlib.closing(sqlite3.connect(db, isolation_level=None)) as other:
            other.execute("ALTER TABLE silences RENAME COLUMN ends_at TO ends_at_away")
            with pytest.raises(StoreError, match="ends_at"):
                await store.active_silences(T0)
            other.execute("ALTER TABLE silences RENAME COLUMN ends_at_away TO ends_at")
        assert await store.active_silences(T0) == []
    finally:
        await store.close()
