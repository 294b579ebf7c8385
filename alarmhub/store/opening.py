"""The store a database URL names, opened for the daemon or for one CLI command.

`settings.database` says which (settings.parse_database_url): a SQLite file, the
embedded default, or a PostgreSQL server several instances share (issue 15). This
module is the one place that chooses; app.py and cli/db.py name no store class, and
every service is handed the ports of store/ports.py.

For the daemon (:func:`open_stores`): the writer's store, a reader's (HTTP, reports
and the notifier read there, never on the writer's connection), supervision's
history, the web's directory, and SQLite's WAL keeper, which PostgreSQL has no
use for (:class:`NoWal`).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

import asyncpg

from alarmhub.clock import Clock
from alarmhub.core.cluster import LeaseTiming
from alarmhub.settings import Settings
from alarmhub.store.cluster import AlarmChangeFeed, Coordination, Fence
from alarmhub.store.ports import (
    AlarmStore,
    Directory,
    SupervisionHistory,
)
from alarmhub.store.postgres import reads as pg_reads
from alarmhub.store.postgres.coordination import PgCoordination
from alarmhub.store.postgres.directory import PostgresDirectory
from alarmhub.store.postgres.notify import PgAlarmChangeFeed
from alarmhub.store.postgres.residents import PostgresResidentRows
from alarmhub.store.postgres.store import PostgresStore
from alarmhub.store.residents import ResidentRegister, ResidentRows
from alarmhub.store.sealing import Keyring
from alarmhub.store.sqlite import backlog_rows
from alarmhub.store.sqlite.directory import SqliteDirectory
from alarmhub.store.sqlite.instance_lock import held_by_this_instance
from alarmhub.store.sqlite.residents import SqliteResidentRows
from alarmhub.store.sqlite.store import SqliteStore
from alarmhub.store.sqlite.supervision_rows import SqliteHistory
from alarmhub.store.sqlite.wal import WalKeeper, WalMetrics

# The writer's pool: the gate serialises the daemon's writes, so a few connections
# serve the writer and the outbox marks; the reader's serves HTTP and reports.
WRITER_POOL = 4
READER_POOL = 8


class _Once(Protocol):
    def should_log(self, key: str) -> tuple[bool, int]: ...


class Wal(Protocol):
    """What the daemon runs of the WAL keeper: its loop, and a reset between batches."""

    reset_due: bool

    async def run(self) -> None: ...

    async def reset(self) -> None: ...


class NoWal:
    """PostgreSQL's WAL is the server's business: nothing to checkpoint or reset here."""

    reset_due = False

    async def run(self) -> None:
        return

    async def reset(self) -> None:
        return


@dataclass
class OpenedStores:
    store: AlarmStore
    reader: AlarmStore
    history: SupervisionHistory
    directory: Directory
    # The resident register's sealed rows (store/residents.py seals and opens them).
    residents: ResidentRows
    # PostgreSQL: the pool the directory and later coordination take; None for SQLite.
    pool: asyncpg.Pool | None = None
    # PostgreSQL: alarms other instances changed (LISTEN/NOTIFY on a connection of its
    # own); None for SQLite, where one process is the only writer.
    changes: AlarmChangeFeed | None = None
    # PostgreSQL: leases and presence, on a small pool of their own; None for SQLite,
    # whose one process owns everything (daemon/leadership.py SoleOwnership).
    coordination: Coordination | None = None
    _sqlite: tuple[SqliteStore, SqliteStore] | None = None
    _fenced: PostgresStore | None = None

    def fence_writes(self, grant: Callable[[], Fence]) -> None:
        """Fence the writer's single-owner writes by the owner's term (PostgreSQL only).

        SQLite ignores it: one process holds the file, there is nobody to fence.
        """
        if self._fenced is not None:
            self._fenced.fence_with(grant)

    def register(self, keys: tuple[bytes, ...], clock: Clock) -> ResidentRegister:
        """The resident register over these rows, sealing with `keys` (the current first)."""
        return ResidentRegister(self.residents, Keyring(keys), clock)

    async def last_received(self) -> datetime | None:
        """When the newest stored message arrived: the earliest a backlog can have begun."""
        if self.pool is not None:
            return await pg_reads.last_received(self.pool)
        assert isinstance(self.history, SqliteHistory)
        return await backlog_rows.last_received(self.history.path)

    def wal_keeper(
        self,
        *,
        lock: asyncio.Lock,
        room: asyncio.Event,
        limit_bytes: int,
        metrics: WalMetrics,
        once: _Once,
    ) -> Wal:
        """SQLite's WAL keeper on the writer's and the reader's connections; NoWal else."""
        if self._sqlite is None:
            return NoWal()
        writer, reader = self._sqlite
        return WalKeeper(
            writer,
            reader,
            lock=lock,
            room=room,
            limit_bytes=limit_bytes,
            metrics=metrics,
            once=once,
        )


@asynccontextmanager
async def open_stores(settings: Settings) -> AsyncIterator[OpenedStores]:
    """The daemon's stores, migrated first; closed when the block ends."""
    db = settings.database
    async with AsyncExitStack() as stack:
        if db.kind == "postgresql":
            assert db.dsn is not None
            # Half the lease's ttl: a transaction of a writer cut off from the server
            # holds the lease row's share lock at most that long (a takeover waits for it).
            idle = LeaseTiming.for_failover(settings.failover_s).ttl_s / 2
            writer = await PostgresStore.open(
                db.dsn, max_size=WRITER_POOL, idle_in_transaction_s=idle
            )
            stack.push_async_callback(writer.close)
            reader = await PostgresStore.open(db.dsn, migrate=False, max_size=READER_POOL)
            stack.push_async_callback(reader.close)
            coordination = await PgCoordination.open(db.dsn)
            stack.push_async_callback(coordination.close)
            yield OpenedStores(
                writer,
                reader,
                pg_reads.PostgresHistory(reader.pool),
                PostgresDirectory(reader.pool),
                PostgresResidentRows(reader.pool),
                pool=reader.pool,
                changes=PgAlarmChangeFeed(db.dsn),
                coordination=coordination,
                _fenced=writer,
            )
            return
        path = db.path
        assert path is not None
        # One daemon per file: nothing else says this process owns the work (SoleOwnership).
        stack.enter_context(held_by_this_instance(path, settings.instance_id))
        sqlite_writer = await SqliteStore.open(
            path,
            synchronous=settings.sqlite_synchronous,
            autocheckpoint=False,
            wal_size_limit=settings.sqlite_wal_limit_mb * 1024 * 1024,
        )
        stack.push_async_callback(sqlite_writer.close)
        # Reads for HTTP and reports use their own connection: never the writer's.
        sqlite_reader = await SqliteStore.open(
            path, synchronous=settings.sqlite_synchronous, migrate=False
        )
        stack.push_async_callback(sqlite_reader.close)
        yield OpenedStores(
            sqlite_writer,
            sqlite_reader,
            SqliteHistory(path),
            # The web's scoped reads and accounts: a short-lived connection per call.
            SqliteDirectory(path),
            SqliteResidentRows(path),
            _sqlite=(sqlite_writer, sqlite_reader),
        )


@asynccontextmanager
async def opened_store(settings: Settings) -> AsyncIterator[AlarmStore]:
    """One store for one CLI command, migrated first, closed on the way out."""
    db = settings.database
    store: AlarmStore
    if db.kind == "postgresql":
        assert db.dsn is not None
        store = await PostgresStore.open(db.dsn)
    else:
        assert db.path is not None
        store = await SqliteStore.open(db.path, synchronous=settings.sqlite_synchronous)
    try:
        yield store
    finally:
        await store.close()


@asynccontextmanager
async def opened_residents(settings: Settings) -> AsyncIterator[ResidentRows]:
    """The resident register's rows for one CLI command, migrated first."""
    async with opened_store(settings) as store:
        if isinstance(store, PostgresStore):
            yield PostgresResidentRows(store.pool)
        else:
            assert settings.database.path is not None
            yield SqliteResidentRows(settings.database.path)
