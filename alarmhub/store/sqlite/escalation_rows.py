"""Escalation deadlines decided, the notification outbox and silences, in SQLite.

A decided deadline is a row written in the same transaction as its effects
(the alarm's new level, the timeline entry, the outbox row), so after a crash
a step is either wholly done or still due: it fires exactly once.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable, Collection, Iterable, Sequence
from datetime import datetime
from typing import Any, TypeVar

import aiosqlite
import orjson

from alarmhub.core.escalation import DeadlineKey
from alarmhub.core.suppress import Silence
from alarmhub.store.accounts import ts
from alarmhub.store.columns import SILENCE_KEYS
from alarmhub.store.ports import DecidedRow, Notification, OutboxItem
from alarmhub.store.sqlite.accounts import silence_from_row
from alarmhub.store.sqlite.rows import INSERT_TIMELINE, alarm_row, timeline_row, upsert_alarms

_CHUNK = 500
T = TypeVar("T")


_INSERT_DECIDED = (
    "INSERT OR IGNORE INTO escalations (alarm_id, round, step, due_at, decided_at, "
    "reason, level, target) VALUES (?,?,?,?,?,?,?,?)"
)
_INSERT_OUTBOX = (
    "INSERT INTO outbox (alarm_id, target, channel, address, payload, created_at, "
    "next_attempt_at) VALUES (?,?,?,?,?,?,?)"
)


def claim_decided(
    conn: sqlite3.Connection, payload: Sequence[tuple[Any, ...]]
) -> tuple[list[bool], dict[str, tuple[Any, ...]], list[Any], list[Any]]:
    """Insert each decided row in the caller's transaction; the effects of those recorded now.

    Per row whether it was recorded now (False: decided before, by an earlier life or
    another worker); the alarm rows to write (the last recorded decision's alarm is the
    alarm's state: each decision of one alarm was taken on the same revision), and the
    timeline and outbox rows of the recorded ones, for the caller to write.
    """
    recorded = _claim(conn, [row[0] for row in payload])
    alarms: dict[str, tuple[Any, ...]] = {}
    timeline: list[Any] = []
    outbox: list[Any] = []
    for now, (_decided, alarm, entries, notes) in zip(recorded, payload, strict=True):
        if not now:
            continue
        if alarm is not None:
            alarms[alarm[0]] = alarm
        timeline.extend(entries)
        outbox.extend(notes)
    return recorded, alarms, timeline, outbox


def _claim(conn: sqlite3.Connection, rows: list[tuple[Any, ...]]) -> list[bool]:
    """Per decided row, whether it was inserted now (INSERT OR IGNORE: not if stored before).

    Almost always every row is new: one executemany under a savepoint claims them all
    (its rowcount counts the rows inserted; a row ignored adds none). If any was
    refused, the savepoint undoes the lot and each row is claimed by itself, in order,
    so which ones were refused is known exactly (a key twice in `rows`: the second).
    """
    if not rows:
        return []
    conn.execute("SAVEPOINT claim")
    if conn.executemany(_INSERT_DECIDED, rows).rowcount == len(rows):
        conn.execute("RELEASE claim")
        return [True] * len(rows)
    conn.execute("ROLLBACK TO claim")
    conn.execute("RELEASE claim")
    return [conn.execute(_INSERT_DECIDED, row).rowcount == 1 for row in rows]


def write_effects(conn: sqlite3.Connection, timeline: list[Any], outbox: list[Any]) -> None:
    if timeline:
        conn.executemany(INSERT_TIMELINE, timeline)
    if outbox:
        conn.executemany(_INSERT_OUTBOX, outbox)


def _write_decisions(conn: sqlite3.Connection, payload: list[tuple[Any, ...]]) -> list[bool]:
    conn.execute("BEGIN IMMEDIATE")
    try:
        recorded, alarms, timeline, outbox = claim_decided(conn, payload)
        write_effects(conn, timeline, outbox)
        upsert_alarms(conn, list(alarms.values()))
        conn.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
        raise
    return recorded


def decided_payload(rows: Sequence[DecidedRow], decided_at: datetime | None) -> list[Any]:
    """The rows claim_decided takes; `decided_at` None: each row's own (DecidedRow.decided_at)."""
    payload = []
    for r in rows:
        at = ts(decided_at or r.decided_at)
        d = r.decision.deadline
        decided = (r.alarm_id, d.round, d.step_index, ts(d.due_at), at, r.decision.reason.value)
        notes = [
            (r.alarm_id, n.target, n.channel, n.address, orjson.dumps(n.payload).decode(), at, at)
            for n in r.notifications
        ]
        payload.append(
            (
                (*decided, d.level, d.target),
                alarm_row(r.alarm) if r.alarm is not None else None,
                [timeline_row(e) for e in r.timeline],
                notes,
            )
        )
    return payload


class EscalationRows:
    """Mixed into SqliteStore: needs `_conn`, `_rollback` and the alarm/timeline writers."""

    _conn: aiosqlite.Connection

    async def _in_writer_thread(self, fn: Callable[..., T], *args: Any) -> T:
        raise NotImplementedError  # provided by SqliteStore

    async def _rollback(self) -> None:
        with contextlib.suppress(aiosqlite.Error):
            await self._conn.execute("ROLLBACK")

    async def fired_keys(self, alarm_ids: Iterable[str]) -> dict[str, set[DeadlineKey]]:
        wanted = list(alarm_ids)
        out: dict[str, set[DeadlineKey]] = {a: set() for a in wanted}
        for i in range(0, len(wanted), _CHUNK):
            chunk = wanted[i : i + _CHUNK]
            sql = (
                "SELECT alarm_id, round, step FROM escalations "
                f"WHERE alarm_id IN ({','.join('?' * len(chunk))})"
            )
            async with self._conn.execute(sql, chunk) as cur:
                for alarm_id, rnd, step in await cur.fetchall():
                    out[alarm_id].add((rnd, step))
        return out

    async def commit_decisions(
        self, rows: Sequence[DecidedRow], decided_at: datetime
    ) -> list[bool]:
        """Record decided deadlines with their effects, all in one transaction.

        Returns, per row, whether it was recorded now: False when the row already
        existed (an earlier life, or another worker, decided it) and its effects
        were therefore not written again.
        """
        payload = decided_payload(rows, decided_at)
        return await self._in_writer_thread(_write_decisions, payload)

    # The notifier and the receipts (daemon/actions.py) retry a StoreError; an sqlite3
    # error (locked past busy_timeout, disk full) out of these ended the daemon. Every
    # public coroutine here converts it (SqliteStore: store/sqlite/refusals.py).

    async def due_outbox(
        self, now: datetime, limit: int = 100, busy: Collection[str] = ()
    ) -> list[OutboxItem]:
        sql = (
            "SELECT id, alarm_id, target, channel, address, payload, attempts FROM outbox "
            "WHERE sent_at IS NULL AND next_attempt_at <= ? "
            "AND address NOT IN (SELECT value FROM json_each(?)) "
            "ORDER BY next_attempt_at, id LIMIT ?"
        )
        params = (ts(now), orjson.dumps(list(busy)).decode(), limit)
        async with self._conn.execute(sql, params) as cur:
            rows = await cur.fetchall()
        return [OutboxItem(r[0], r[1], r[2], r[3], r[4], r[5].encode(), r[6]) for r in rows]

    async def outbox_sent(self, item_id: int, at: datetime) -> None:
        sql = "UPDATE outbox SET sent_at = ?, attempts = attempts + 1 WHERE id = ?"
        await self._conn.execute(sql, (ts(at), item_id))

    async def outbox_failed(self, item_id: int, next_at: datetime, error: str) -> None:
        sql = (
            "UPDATE outbox SET attempts = attempts + 1, next_attempt_at = ?, last_error = ? "
            "WHERE id = ?"
        )
        await self._conn.execute(sql, (ts(next_at), error[:500], item_id))

    async def queue_outbox(self, alarm_id: str, note: Notification, at: datetime) -> None:
        payload = orjson.dumps(note.payload).decode()
        row = (alarm_id, note.target, note.channel, note.address, payload, ts(at), ts(at))
        await self._conn.execute(_INSERT_OUTBOX, row)

    async def outbox_for(self, alarm_id: str) -> list[dict[str, Any]]:
        sql = (
            "SELECT target, channel, created_at, attempts, sent_at, last_error FROM outbox "
            "WHERE alarm_id = ? ORDER BY id"
        )
        async with self._conn.execute(sql, (alarm_id,)) as cur:
            rows = await cur.fetchall()
        keys = ("target", "channel", "created_at", "attempts", "sent_at", "last_error")
        return [dict(zip(keys, r, strict=True)) for r in rows]

    async def active_silences(self, now: datetime) -> list[Silence]:
        """Silences not yet ended, for the pipeline (one not yet begun covers nothing yet)."""
        sql = (
            f"SELECT {', '.join(SILENCE_KEYS)} FROM silences "
            "WHERE deleted_at IS NULL AND ends_at > ?"
        )
        try:
            async with self._conn.execute(sql, (ts(now),)) as cur:
                rows = await cur.fetchall()
        except aiosqlite.OperationalError as exc:
            # No silences table in this schema version: none in force. Any other refusal
            # (locked, I/O) is no answer: read as "none", it ended every silence in force
            # at the registry's next refresh, and the silenced alarms escalated.
            if "no such table: silences" not in str(exc):
                raise
            return []
        return [silence_from_row(r) for r in rows]
