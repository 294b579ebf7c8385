"""Escalation deadlines decided, the notification outbox and silences, in SQLite.

A decided deadline is a row written in the same transaction as its effects
(the alarm's new level, the timeline entry, the outbox row), so after a crash
a step is either wholly done or still due: it fires exactly once.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import aiosqlite
import orjson

from alarmhub.core.escalation import Deadline, DeadlineKey, EscalationDecision
from alarmhub.core.model import Alarm, TimelineEntry
from alarmhub.core.suppress import Silence
from alarmhub.store.rows import (
    INSERT_TIMELINE,
    UPSERT_ALARM,
    alarm_row,
    parse_ts,
    timeline_row,
    ts,
)

_CHUNK = 500


@dataclass(frozen=True, slots=True)
class OutboxItem:
    id: int
    alarm_id: str
    target: str
    channel: str  # "mqtt" or "webhook"
    address: str  # topic or URL
    payload: bytes
    attempts: int


@dataclass(frozen=True, slots=True)
class Notification:
    target: str
    channel: str
    address: str
    payload: dict[str, Any]


class EscalationRows:
    """Mixed into SqliteStore: needs `_conn`, `_rollback` and the alarm/timeline writers."""

    _conn: aiosqlite.Connection

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

    async def commit_decision(
        self,
        decision: EscalationDecision,
        alarm_id: str,
        decided_at: datetime,
        alarm: Alarm | None,
        timeline: Sequence[TimelineEntry],
        notifications: Sequence[Notification],
    ) -> bool:
        """Record a decided deadline with its effects; False if it was already recorded."""

        d: Deadline = decision.deadline
        await self._conn.execute("BEGIN IMMEDIATE")
        try:
            cur = await self._conn.execute(
                "INSERT OR IGNORE INTO escalations (alarm_id, round, step, due_at, decided_at, "
                "reason, level, target) VALUES (?,?,?,?,?,?,?,?)",
                (
                    alarm_id,
                    d.round,
                    d.step_index,
                    ts(d.due_at),
                    ts(decided_at),
                    decision.reason.value,
                    d.level,
                    d.target,
                ),
            )
            if cur.rowcount == 0:  # another worker (or an earlier life) decided it
                await self._conn.execute("ROLLBACK")
                return False
            if alarm is not None:
                await self._conn.execute(UPSERT_ALARM, alarm_row(alarm))
            if timeline:
                await self._conn.executemany(INSERT_TIMELINE, [timeline_row(e) for e in timeline])
            if notifications:
                await self._conn.executemany(
                    "INSERT INTO outbox (alarm_id, target, channel, address, payload, created_at, "
                    "next_attempt_at) VALUES (?,?,?,?,?,?,?)",
                    [
                        (
                            alarm_id,
                            n.target,
                            n.channel,
                            n.address,
                            orjson.dumps(n.payload).decode(),
                            ts(decided_at),
                            ts(decided_at),
                        )
                        for n in notifications
                    ],
                )
            await self._conn.execute("COMMIT")
        except BaseException:
            await self._rollback()
            raise
        return True

    async def due_outbox(self, now: datetime, limit: int = 100) -> list[OutboxItem]:

        sql = (
            "SELECT id, alarm_id, target, channel, address, payload, attempts FROM outbox "
            "WHERE sent_at IS NULL AND next_attempt_at <= ? ORDER BY next_attempt_at, id LIMIT ?"
        )
        async with self._conn.execute(sql, (ts(now), limit)) as cur:
            rows = await cur.fetchall()
        return [OutboxItem(r[0], r[1], r[2], r[3], r[4], r[5].encode(), r[6]) for r in rows]

    async def outbox_sent(self, item_id: int, at: datetime) -> None:

        await self._conn.execute(
            "UPDATE outbox SET sent_at = ?, attempts = attempts + 1 WHERE id = ?", (ts(at), item_id)
        )

    async def outbox_failed(self, item_id: int, next_at: datetime, error: str) -> None:

        await self._conn.execute(
            "UPDATE outbox SET attempts = attempts + 1, next_attempt_at = ?, last_error = ? "
            "WHERE id = ?",
            (ts(next_at), error[:500], item_id),
        )

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

        sql = (
            "SELECT s.id, s.municipality, s.starts_at, s.ends_at, s.device_id, s.reason "
            "FROM silences s WHERE s.deleted_at IS NULL AND s.ends_at > ?"
        )
        try:
            async with self._conn.execute(sql, (ts(now),)) as cur:
                rows = await cur.fetchall()
        except aiosqlite.OperationalError:
            return []  # no silences table in this schema version
        out = []
        for r in rows:
            starts, ends = parse_ts(r[2]), parse_ts(r[3])
            assert starts is not None
            assert ends is not None
            out.append(Silence(r[0], r[1], starts, ends, device_id=r[4], reason=r[5]))
        return out
