"""SQLite through aiosqlite: the embedded store.

One writer connection commits each batch's effects in a single transaction
(WAL, `synchronous=FULL` by default, because an acknowledged alarm must survive
a power cut); readers open their own connections so a query never commits or
rolls back the writer's half-built batch. A `busy_timeout` lets the CLI write
beside a running daemon.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite
import orjson

from alarmhub.core.dedup import DEAD_LETTER_KEPT_BYTES, Prior
from alarmhub.core.device_settings import settings_json
from alarmhub.core.model import Alarm, Device, TimelineEntry
from alarmhub.core.people import AuditEntry
from alarmhub.core.pipeline import BatchEffects
from alarmhub.core.retention import RetainedTable
from alarmhub.store.accounts import ts
from alarmhub.store.columns import (
    ALARM_COLUMNS,
    DEAD_LETTER_KEYS,
    DEVICE_COLUMNS,
    DEVICE_LISTING,
    device_from_row,
    device_upsert_set,
)
from alarmhub.store.errors import IdTakenError, MoveRefusedError, StoreError
from alarmhub.store.ports import AlarmStore, DecidedRow
from alarmhub.store.sqlite.accounts import INSERT_AUDIT, audit_row
from alarmhub.store.sqlite.batch_rows import batch_rows, write_batch
from alarmhub.store.sqlite.bridge_rows import SqliteBridgeRows
from alarmhub.store.sqlite.device_moves import (
    check_bridges,
    check_moves,
    credentials_set_elsewhere,
)
from alarmhub.store.sqlite.escalation_rows import EscalationRows
from alarmhub.store.sqlite.inbox_rows import select_priors
from alarmhub.store.sqlite.journal_rows import SqliteJournalRows
from alarmhub.store.sqlite.migrations import migrate as apply_migrations
from alarmhub.store.sqlite.migrations import use_wal_async
from alarmhub.store.sqlite.refusals import refusals_as_store_errors
from alarmhub.store.sqlite.retention_rows import oldest_received, prune_batch
from alarmhub.store.sqlite.rows import (
    INSERT_TIMELINE,
    UPSERT_ALARM,
    alarm_from_row,
    alarm_row,
    device_dict,
    expect_written,
    parse_ts,
    timeline_row,
)
from alarmhub.store.sqlite.suppression_rows import SuppressionRows

# The errors live in store/errors.py (every store raises them); re-exported for old imports.
__all__ = ["IdTakenError", "MoveRefusedError", "SqliteStore", "StoreError", "disk_full"]


_DEVICE_COLUMNS = ", ".join(DEVICE_COLUMNS)
_DEVICE_FIELDS = len(DEVICE_COLUMNS)


_QUEUE_ORDER = "ORDER BY priority ASC, raised_at ASC, id ASC"
BUSY_TIMEOUT_MS = 5000
T = TypeVar("T")


@refusals_as_store_errors
class SqliteStore(EscalationRows, SuppressionRows, SqliteJournalRows, SqliteBridgeRows):
    """The writer's connection plus read helpers; create with :meth:`open`.

    Every public coroutine raises SQLite's refusals (locked, disk full, I/O) as
    StoreError (store/sqlite/refusals.py): the reads on the connection itself too,
    which the daemon's periodic tasks make and retry on their next turn.
    """

    def __init__(self, conn: aiosqlite.Connection, path: Path) -> None:
        self._conn = conn
        self.path = path

    @classmethod
    async def open(
        cls,
        path: Path,
        *,
        synchronous: str = "FULL",
        migrate: bool = True,
        autocheckpoint: bool = True,
        wal_size_limit: int | None = None,
    ) -> SqliteStore:
        """Open a connection; `autocheckpoint=False` for the ingest writer.

        SQLite's automatic WAL checkpoint runs inside the commit that crosses the
        threshold, so one batch in a thousand pages waited tens of milliseconds for
        it. The daemon's writer turns it off and a reader connection checkpoints
        once a second instead (:meth:`checkpoint`), off the ingest path.
        """
        if path.parent != Path():
            path.parent.mkdir(parents=True, exist_ok=True)
        conn = await aiosqlite.connect(path, isolation_level=None)
        try:
            await use_wal_async(conn.execute, BUSY_TIMEOUT_MS / 1000)
            await conn.execute(
                f"PRAGMA synchronous={'FULL' if synchronous == 'FULL' else 'NORMAL'}"
            )
            await conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            await conn.execute("PRAGMA foreign_keys=ON")
            if not autocheckpoint:
                await conn.execute("PRAGMA wal_autocheckpoint=0")
            if wal_size_limit is not None:
                # When the WAL starts over, a file grown by a burst is cut back to this.
                await conn.execute(f"PRAGMA journal_size_limit={int(wal_size_limit)}")
            store = cls(conn, path)
            if migrate:
                await store.migrate()
        except BaseException:
            await conn.close()
            raise
        return store

    async def checkpoint(self, *, truncate: bool = False) -> tuple[int, int, int]:
        """A passive WAL checkpoint: copies what it can, never blocks the writer.

        `truncate`: wait for readers and writers (busy_timeout), copy everything
        and cut the WAL file to zero bytes, giving its space back to the file
        system; for a full disk, where the WAL's size is the space needed.
        Returns SQLite's (busy, WAL pages, pages checkpointed).
        """
        mode = "TRUNCATE" if truncate else "PASSIVE"
        async with self._conn.execute(f"PRAGMA wal_checkpoint({mode})") as cur:
            row = await cur.fetchone()
        return (int(row[0]), int(row[1]), int(row[2])) if row else (0, 0, 0)

    async def truncate_wal(self, wait_ms: int) -> bool:
        """Checkpoint everything and cut the WAL to zero bytes, waiting at most `wait_ms`.

        SQLite reuses its WAL from the start only when no reader is still using
        it. Readers that never pause (a dashboard polling, a script's loop) kept
        that from happening, and the WAL grew by every commit: 308 MB beside a
        10 MB database in 8 s of small commits. TRUNCATE waits for those readers
        to finish their current read (new readers then read the database file)
        and blocks the writer while it waits, so the wait is kept short; a busy
        result is retried on the next turn. Returns whether it succeeded.
        """
        await self._conn.execute(f"PRAGMA busy_timeout={int(wait_ms)}")
        try:
            busy, _pages, _done = await self.checkpoint(truncate=True)
        finally:
            await self._conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        return busy == 0

    async def page_size(self) -> int:
        async with self._conn.execute("PRAGMA page_size") as cur:
            row = await cur.fetchone()
        return int(row[0]) if row else 4096

    async def close(self) -> None:
        await self._conn.close()

    async def migrate(self) -> list[int]:
        """Apply the versions this file lacks (store/sqlite/migrations.py); those applied."""
        return await self._in_writer_thread(apply_migrations, None)

    # --- the ingest path -------------------------------------------------

    async def latest_messages(self, fingerprints: Iterable[str]) -> dict[str, Prior]:
        """The latest stored message per fingerprint, for dedup (core/dedup.py)."""
        wanted = list(dict.fromkeys(fingerprints))
        if not wanted:
            return {}
        return await self._in_writer_thread(select_priors, wanted)

    async def commit_batch(
        self,
        effects: BatchEffects,
        municipality_of: dict[str, str],
        decided: Sequence[DecidedRow] = (),
    ) -> list[bool]:
        """Write one batch's every effect in one transaction, or nothing at all.

        `decided`: its new alarms' first escalation steps (IngestStore.commit_batch), per
        row whether it was recorded now.

        The whole transaction runs as one call on the connection's own thread:
        each awaited aiosqlite call costs a thread hop (~85 µs here), and a batch
        made six of them (docs/performance.md). Same connection, same transaction.
        """
        rows = batch_rows(effects, municipality_of, decided)
        return await self._in_writer_thread(write_batch, rows)

    async def _in_writer_thread(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn(sqlite3_connection, *args)` on this connection's own thread, in one hop.

        aiosqlite runs every call on its connection's thread through `_execute`; its
        public methods are that plus one sqlite3 call each. Going through it keeps
        one connection and its ordering with every other call on it.

        A refusal by SQLite (locked past busy_timeout, disk full, I/O error) comes
        out of the public method that called this as a StoreError
        (store/sqlite/refusals.py), which `AlarmHub.until_committed` retries.
        """
        conn = self._conn
        result: T = await conn._execute(lambda: fn(conn._conn, *args))  # type: ignore[no-untyped-call]  # noqa: SLF001
        return result

    # --- retention (issue 13 item 2) ----------------------------------------

    async def prune(self, table: RetainedTable, before: datetime, limit: int) -> int:
        """Delete one small batch of rows past retention, in its own transaction."""
        return await self._in_writer_thread(prune_batch, table, ts(before), limit)

    async def oldest_received(self, table: RetainedTable) -> datetime | None:
        return parse_ts(await self._in_writer_thread(oldest_received, table))

    async def save_alarm(self, alarm: Alarm, entries: Iterable[TimelineEntry]) -> None:
        """Commit an operator's change of one alarm with its timeline entries."""
        await self._conn.execute("BEGIN IMMEDIATE")
        try:
            async with self._conn.execute(UPSERT_ALARM, alarm_row(alarm)) as cur:
                expect_written(cur.rowcount, [alarm.id])
            await self._conn.executemany(INSERT_TIMELINE, [timeline_row(e) for e in entries])
            await self._conn.execute("COMMIT")
        except BaseException:
            await self._rollback()
            raise

    async def _rollback(self) -> None:
        # The transaction may already be gone (SQLITE_FULL rolls back by itself).
        with contextlib.suppress(aiosqlite.Error):
            await self._conn.execute("ROLLBACK")

    # --- state loaded at start ------------------------------------------

    async def load_devices(self) -> dict[str, Device]:
        async with self._conn.execute(f"SELECT {_DEVICE_COLUMNS} FROM devices") as cur:
            return {r[0]: device_from_row(r) for r in await cur.fetchall()}

    async def devices_changed_since(self, since: str) -> tuple[list[Device], str]:
        sql = (
            f"SELECT {_DEVICE_COLUMNS}, updated_at FROM devices "
            "WHERE updated_at > ? ORDER BY updated_at"
        )
        async with self._conn.execute(sql, (since,)) as cur:
            rows = list(await cur.fetchall())
        newest = rows[-1][_DEVICE_FIELDS] if rows else since
        return [device_from_row(r) for r in rows], newest

    async def get_devices(self, ids: Iterable[str]) -> list[Device]:
        wanted = list(dict.fromkeys(ids))
        if not wanted:
            return []
        sql = f"SELECT {_DEVICE_COLUMNS} FROM devices WHERE id IN ({','.join('?' * len(wanted))})"
        async with self._conn.execute(sql, wanted) as cur:
            return [device_from_row(r) for r in await cur.fetchall()]

    async def newest_device_update(self) -> str:
        async with self._conn.execute("SELECT coalesce(max(updated_at), '') FROM devices") as cur:
            row = await cur.fetchone()
        return str(row[0]) if row else ""

    async def load_active_alarms(self) -> list[Alarm]:
        # Oldest first: an alarm left open past the merge age has a newer one of the
        # same device and kind beside it (core/judge.py), and the newer must index last.
        sql = (
            f"SELECT {', '.join(ALARM_COLUMNS)} FROM alarms WHERE state != 'resolved' "
            "ORDER BY raised_at"
        )
        async with self._conn.execute(sql) as cur:
            return [alarm_from_row(r) for r in await cur.fetchall()]

    async def load_resolved_since(self, since: datetime) -> list[Alarm]:
        sql = (
            f"SELECT {', '.join(ALARM_COLUMNS)} FROM alarms "
            "WHERE state = 'resolved' AND resolved_at >= ? ORDER BY resolved_at"
        )
        async with self._conn.execute(sql, (ts(since),)) as cur:
            return [alarm_from_row(r) for r in await cur.fetchall()]

    # --- the registry ----------------------------------------------------

    async def register_devices(
        self,
        devices: Sequence[Device],
        now: datetime,
        keep: frozenset[str] = frozenset(),
        *,
        audit: Sequence[AuditEntry],
        existing_in: frozenset[str] | None = None,
        assign_bridges: bool = False,
    ) -> list[str]:
        """Insert or update devices, all or none; columns in `keep` stay as they are.

        A device with open alarms is never moved to another municipality: the whole
        write is refused with :class:`MoveRefusedError`, naming them (core/moves.py).
        An id registered outside `existing_in` (when given) refuses the whole write
        with :class:`IdTakenError`; a device on another municipality's bridge with
        :class:`BridgeTakenError`, the first device on a bridge no system admin
        assigned with :class:`BridgeUnassignedError` unless `assign_bridges` (a
        system admin's write: it assigns them). `audit` is required and written in the same
        transaction: a change and who made it commit together or not at all.
        Returns the written ids whose SIP credentials were set in another
        municipality (moved): the caller tells the person to have them set again.
        """
        rows = [
            (
                d.id,
                d.kind.value,
                d.municipality,
                d.profile,
                d.heartbeat_interval_s,
                d.label,
                int(d.active),
                d.resident,
                orjson.dumps(settings_json(d.settings)).decode(),
                d.bridge,
                ts(now),
                ts(now),
            )
            for d in devices
        ]
        await self._conn.execute("BEGIN IMMEDIATE")
        try:
            await check_moves(self._conn, devices, existing_in)
            await check_bridges(self._conn, devices, now, audit, may_assign=assign_bridges)
            await self._conn.executemany(
                "INSERT INTO devices (id, kind, municipality, profile, heartbeat_interval_s, "
                "label, active, resident, settings, bridge, registered_at, updated_at) "
                "VALUES (?,?,?,?,?,?,?,?,?,?,?,?) "
                "ON CONFLICT(id) DO UPDATE SET " + device_upsert_set(keep),
                rows,
            )
            if audit:
                await self._conn.executemany(INSERT_AUDIT, [audit_row(e) for e in audit])
            stale = await credentials_set_elsewhere(self._conn, [d.id for d in devices])
            await self._conn.execute("COMMIT")
        except BaseException:
            await self._rollback()
            raise
        return stale

    async def list_devices(self, municipality: str | None = None) -> list[dict[str, Any]]:
        sql = f"SELECT {DEVICE_LISTING} FROM devices"
        params: tuple[Any, ...] = ()
        if municipality is not None:
            sql += " WHERE municipality = ?"
            params = (municipality,)
        sql += " ORDER BY municipality, id"
        async with self._conn.execute(sql, params) as cur:
            rows = await cur.fetchall()
        return [device_dict(r) for r in rows]

    # --- reads for the CLI and the API -----------------------------------

    async def list_alarms(
        self,
        state: str | None = None,
        limit: int | None = None,
        municipalities: Sequence[str] | None = None,
    ) -> list[Alarm]:
        where: list[str] = []
        params: list[Any] = []
        if state is not None:
            where.append("state = ?")
            params.append(state)
        if municipalities is not None:
            where.append(f"municipality IN ({','.join('?' * len(municipalities))})")
            params.extend(municipalities)
        sql = f"SELECT {', '.join(ALARM_COLUMNS)} FROM alarms"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += f" {_QUEUE_ORDER}"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        async with self._conn.execute(sql, params) as cur:
            return [alarm_from_row(r) for r in await cur.fetchall()]

    async def get_alarm(self, alarm_id: str) -> Alarm | None:
        sql = f"SELECT {', '.join(ALARM_COLUMNS)} FROM alarms WHERE id = ?"
        async with self._conn.execute(sql, (alarm_id,)) as cur:
            row = await cur.fetchone()
        return alarm_from_row(row) if row else None

    async def get_alarms(self, ids: Iterable[str]) -> list[Alarm]:
        """The stored alarms of these ids, in one query (the port; one process never needs it)."""
        wanted = list(dict.fromkeys(ids))
        if not wanted:
            return []
        marks = ",".join("?" * len(wanted))
        sql = f"SELECT {', '.join(ALARM_COLUMNS)} FROM alarms WHERE id IN ({marks})"
        async with self._conn.execute(sql, wanted) as cur:
            return [alarm_from_row(r) for r in await cur.fetchall()]

    async def timeline(self, alarm_id: str) -> list[dict[str, Any]]:
        sql = "SELECT at, type, actor, detail FROM timeline WHERE alarm_id = ? ORDER BY id"
        async with self._conn.execute(sql, (alarm_id,)) as cur:
            rows = await cur.fetchall()
        return [
            {"at": r[0], "type": r[1], "actor": r[2], "detail": orjson.loads(r[3])} for r in rows
        ]

    async def hpr_of(self, name: str) -> str | None:
        async with self._conn.execute("SELECT hpr FROM users WHERE name = ?", (name,)) as cur:
            row = await cur.fetchone()
        return None if row is None else row[0]

    async def raising_message(self, alarm_id: str) -> tuple[str, str] | None:
        """The (topic, message id) of the message that raised an alarm."""
        sql = (
            "SELECT i.topic, i.msg_id FROM timeline t JOIN alarms a ON a.id = t.alarm_id "
            "JOIN inbox i ON i.device_id = a.device_id "
            "AND i.msg_id = json_extract(t.detail, '$.msg_id') "
            "WHERE t.alarm_id = ? AND t.type = 'raised' LIMIT 1"
        )
        async with self._conn.execute(sql, (alarm_id,)) as cur:
            row = await cur.fetchone()
        return (str(row[0]), str(row[1])) if row else None

    async def dead_letters(self, limit: int | None = None) -> list[dict[str, Any]]:
        sql = (
            "SELECT seq, received_at, topic, device_id, municipality, msg_id, reason, detail, "
            "payload, payload_bytes FROM inbox WHERE verdict = 'rejected' ORDER BY seq DESC"
        )
        params: list[Any] = []
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        async with self._conn.execute(sql, params) as cur:
            rows = await cur.fetchall()
        keys = DEAD_LETTER_KEYS
        out = []
        for r in rows:
            item = dict(zip(keys, r[:8], strict=True))
            payload: bytes = r[8]
            item["payload"] = payload[:DEAD_LETTER_KEPT_BYTES].decode("utf-8", "replace")
            # The whole size when only the first bytes are stored (schema migration 10).
            item["payload_bytes"] = r[9] if r[9] is not None else len(payload)
            out.append(item)
        return out

    async def count(self, sql: str, params: Sequence[Any] = ()) -> int:
        async with self._conn.execute(sql, params) as cur:
            row = await cur.fetchone()
        return int(row[0]) if row else 0


def disk_full(exc: BaseException) -> bool:
    """Did this write fail for want of disk? The ingest then waits for the WAL keeper."""
    cause = exc.__cause__ if isinstance(exc, StoreError) else exc  # the store's, converted
    code = getattr(cause, "sqlite_errorcode", None)
    return code == sqlite3.SQLITE_FULL or "disk is full" in str(exc)


def _is_an_alarm_store(store: SqliteStore) -> AlarmStore:
    """mypy's proof that SqliteStore implements every port in store/ports.py."""
    return store
