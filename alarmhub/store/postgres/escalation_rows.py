"""Escalation decisions, the outbox and the writes that end a suppression, in PostgreSQL.

A decided deadline is a row of `escalations`, keyed (alarm, round, step), written in
the same transaction as its effects: the step is wholly done or still due, and a
second decision of the same step (an earlier life, another instance) inserts
nothing and writes none of its effects: it fires at most once.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import orjson

from alarmhub.core.escalation import DeadlineKey
from alarmhub.core.model import Alarm, TimelineEntry
from alarmhub.core.people import AuditEntry
from alarmhub.store.ports import DecidedRow
from alarmhub.store.postgres.rows import (
    INSERT_AUDIT,
    INSERT_TIMELINE,
    audit_columns,
    renumbered,
    status_count,
    timeline_columns,
    upsert_alarms,
)

_DECIDED_ROWS = (
    "INSERT INTO escalations (alarm_id, round, step, due_at, decided_at, reason, level, target) "
    "SELECT a, r, s, d, $5, w, l, t FROM unnest($1::text[], $2::integer[], $3::integer[], "
    "$4::timestamptz[], $6::text[], $7::integer[], $8::text[]) AS u(a, r, s, d, w, l, t)"
)
_CLAIM = " ON CONFLICT (alarm_id, round, step) DO NOTHING RETURNING alarm_id, round, step"
INSERT_DECIDED = _DECIDED_ROWS + _CLAIM


def insert_decided(offset: int, only_if: str) -> str:
    """INSERT_DECIDED with its parameters after `offset` others, inserting only if
    the condition `only_if` holds (a part of a larger statement: inbox_rows.py)."""
    return f"{renumbered(_DECIDED_ROWS, offset)} WHERE {only_if}{_CLAIM}"


INSERT_OUTBOX = (
    "INSERT INTO outbox (alarm_id, target, channel, address, payload, created_at, "
    "next_attempt_at) SELECT a, t, c, d, p, $6, $6 FROM unnest($1::text[], $2::text[], "
    "$3::text[], $4::text[], $5::text[]) WITH ORDINALITY AS u(a, t, c, d, p, n) ORDER BY n"
)
END_SILENCE = (
    "UPDATE silences SET deleted_at = $1, deleted_by = $2 WHERE id = $3 AND deleted_at IS NULL"
)


async def write_decisions(
    conn: Any, rows: Sequence[DecidedRow], decided_at: datetime
) -> list[bool]:
    """Insert the decided keys; write the effects of those inserted now. In a transaction."""
    recorded = await claim_decided(conn, rows, decided_at)
    kept = [r for r, now in zip(rows, recorded, strict=True) if now]
    # The last decision's alarm is the alarm's state.
    alarms = {r.alarm_id: r.alarm for r in kept if r.alarm is not None}
    if alarms:
        await upsert_alarms(conn, list(alarms.values()))
    await write_effects(conn, kept, decided_at)
    return recorded


async def claim_decided(conn: Any, rows: Sequence[DecidedRow], decided_at: datetime) -> list[bool]:
    """Insert the decided keys in the caller's transaction; per row, whether it was
    recorded now (False: decided before, its effects are not to be written again)."""
    if not rows:
        return []
    fresh = await conn.fetch(INSERT_DECIDED, *decided_args(rows, decided_at))
    return recorded_now(rows, {(r[0], r[1], r[2]) for r in fresh})


def decided_args(rows: Sequence[DecidedRow], decided_at: datetime | None) -> list[Any]:
    """INSERT_DECIDED's parameters for `rows`."""
    return [
        [r.alarm_id for r in rows],
        [r.decision.deadline.round for r in rows],
        [r.decision.deadline.step_index for r in rows],
        [r.decision.deadline.due_at for r in rows],
        decided_at,
        [r.decision.reason.value for r in rows],
        [r.decision.deadline.level for r in rows],
        [r.decision.deadline.target for r in rows],
    ]


def recorded_now(rows: Sequence[DecidedRow], fresh: set[tuple[str, int, int]]) -> list[bool]:
    """Per row, whether its key is among those the insert returned (`fresh`)."""
    recorded: list[bool] = []
    claimed: set[tuple[str, int, int]] = set()
    for r in rows:
        key = (r.alarm_id, r.decision.deadline.round, r.decision.deadline.step_index)
        # The same key twice in one call: the first is recorded, as one row at a time would.
        recorded.append(key in fresh and key not in claimed)
        claimed.add(key)
    return recorded


def outbox_rows(kept: Sequence[DecidedRow]) -> list[tuple[str, str, str, str, str]]:
    """The outbox rows of decisions recorded now (INSERT_OUTBOX's first five columns)."""
    return [
        (r.alarm_id, n.target, n.channel, n.address, orjson.dumps(n.payload).decode())
        for r in kept
        for n in r.notifications
    ]


async def write_effects(conn: Any, kept: Sequence[DecidedRow], decided_at: datetime) -> None:
    """The timeline entries and outbox rows of decisions recorded now."""
    timeline = [e for r in kept for e in r.timeline]
    outbox = outbox_rows(kept)
    if timeline:
        await conn.execute(INSERT_TIMELINE, *timeline_columns(timeline))
    if outbox:
        cols = [list(c) for c in zip(*outbox, strict=True)]
        await conn.execute(INSERT_OUTBOX, *cols, decided_at)


def fired_rows(rows: Sequence[Any], wanted: Sequence[str]) -> dict[str, set[DeadlineKey]]:
    out: dict[str, set[DeadlineKey]] = {a: set() for a in wanted}
    for alarm_id, rnd, step in rows:
        out[alarm_id].add((rnd, step))
    return out


async def write_release(
    conn: Any,
    alarms: Sequence[Alarm],
    entries: Sequence[TimelineEntry],
    end_silence: tuple[datetime, str, str] | None,
    audit: Sequence[AuditEntry],
) -> bool:
    """Alarms, timeline and audit (and a silence ended first), in the caller's transaction.

    False, with nothing written, when the silence to end was already ended.
    """
    if end_silence is not None and status_count(await conn.execute(END_SILENCE, *end_silence)) == 0:
        return False
    if alarms:
        await upsert_alarms(conn, alarms)
    if entries:
        await conn.execute(INSERT_TIMELINE, *timeline_columns(entries))
    if audit:  # who did it, in the change's own transaction (issue 13 item 4)
        await conn.execute(INSERT_AUDIT, *audit_columns(audit))
    return True
