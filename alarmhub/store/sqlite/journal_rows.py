"""The journal outbox in SQLite (store/journal_outbox.py): written with the resolve,
moved on by the delivery worker on the writer's own thread."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any, TypeVar

import aiosqlite

from alarmhub.core.journal_status import JournalState
from alarmhub.store.accounts import ts
from alarmhub.store.journal_outbox import COLUMNS, NEEDS_A_PERSON, WAITING, JournalExport
from alarmhub.store.sqlite.rows import parse_ts

T = TypeVar("T")
_SELECT = f"SELECT {', '.join(COLUMNS)} FROM journal_exports"
# One export per alarm: a second resolve of a reopened alarm keeps the first row.
INSERT_JOURNAL = (
    f"INSERT INTO journal_exports ({', '.join(COLUMNS)}) "
    f"VALUES ({', '.join('?' * len(COLUMNS))}) ON CONFLICT (alarm_id) DO NOTHING"
)
_UPDATE = (
    "UPDATE journal_exports SET state = ?, reason = ?, location = ?, attempts = ?, "
    "next_at = ?, sent_at = ?, finished_at = ?, last_error = ? WHERE alarm_id = ?"
)


def journal_row(export: JournalExport) -> tuple[Any, ...]:
    return tuple(ts(v) if isinstance(v, datetime) else v for v in export.row())


def _export(r: Any) -> JournalExport:
    next_at, created_at = parse_ts(r[6]), parse_ts(r[7])
    assert next_at is not None  # NOT NULL
    assert created_at is not None
    return JournalExport(
        r[0],
        r[1],
        JournalState(r[2]),
        r[3],
        r[4],
        r[5],
        next_at,
        created_at,
        parse_ts(r[8]),
        parse_ts(r[9]),
        r[10],
    )


_FORGET_RELEASE = (
    "UPDATE journal_exports SET release_key_id = NULL, release_nonce = NULL, "
    "release_sealed = NULL WHERE alarm_id = ?"
)


def _save(conn: sqlite3.Connection, values: tuple[Any, ...], done: bool) -> None:
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(_UPDATE, values)
        if done:  # the note is over: the number a release named is kept no longer
            conn.execute(_FORGET_RELEASE, (values[-1],))
        conn.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
        raise


class SqliteJournalRows:
    """Mixed into SqliteStore, which provides `_conn` and `_in_writer_thread`."""

    _conn: aiosqlite.Connection

    async def _in_writer_thread(self, fn: Callable[..., T], *args: Any) -> T:
        raise NotImplementedError  # provided by SqliteStore

    async def due_journal(self, now: datetime, limit: int = 50) -> list[JournalExport]:
        sql = f"{_SELECT} WHERE state IN (?, ?) AND next_at <= ? ORDER BY next_at LIMIT ?"
        async with self._conn.execute(sql, (*WAITING, ts(now), limit)) as cur:
            return [_export(r) for r in await cur.fetchall()]

    async def journal_save(self, export: JournalExport) -> None:
        row = journal_row(export)
        values = (*row[2:7], *row[8:], export.alarm_id)
        await self._in_writer_thread(_save, values, export.done)

    async def journal_exports(
        self, alarm_ids: Iterable[str] | None = None, *, failed: bool = False, limit: int = 500
    ) -> list[JournalExport]:
        where, params = _filter(alarm_ids, failed)
        sql = f"{_SELECT}{where} ORDER BY created_at DESC LIMIT ?"
        async with self._conn.execute(sql, (*params, limit)) as cur:
            return [_export(r) for r in await cur.fetchall()]

    async def held_journal(self) -> int:
        sql = "SELECT count(*) FROM journal_exports WHERE state = ?"
        async with self._conn.execute(sql, (JournalState.HELD.value,)) as cur:
            row = await cur.fetchone()
        return int(row[0]) if row else 0

    async def oldest_waiting_journal(self) -> datetime | None:
        sql = "SELECT min(created_at) FROM journal_exports WHERE state IN (?, ?)"
        async with self._conn.execute(sql, WAITING) as cur:
            row = await cur.fetchone()
        return parse_ts(row[0]) if row and row[0] else None


def _filter(alarm_ids: Iterable[str] | None, failed: bool) -> tuple[str, list[Any]]:
    clauses: list[str] = []
    params: list[Any] = []
    if alarm_ids is not None:
        ids = list(alarm_ids)
        clauses.append(f"alarm_id IN ({', '.join('?' * len(ids)) or 'NULL'})")
        params.extend(ids)
    if failed:
        clauses.append("(state IN (?, ?) OR (state IN (?, ?) AND last_error IS NOT NULL))")
        params.extend([*NEEDS_A_PERSON, *WAITING])
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), params
