"""One ingest batch's rows written in one transaction on the writer's thread.

SqliteStore.commit_batch builds the rows on the event loop (batch_rows) and hands
them here through `_in_writer_thread`: the whole BEGIN … executemany … COMMIT is
one hop to aiosqlite's thread instead of one per statement (docs/performance.md),
on the same single writer connection, so its ordering with every other write holds.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from alarmhub.core.model import Alarm, Verdict
from alarmhub.core.pipeline import BatchEffects
from alarmhub.store.accounts import ts
from alarmhub.store.inbox import inbox_row
from alarmhub.store.ports import DecidedRow
from alarmhub.store.sqlite.escalation_rows import claim_decided, decided_payload, write_effects
from alarmhub.store.sqlite.inbox_rows import INSERT_INBOX
from alarmhub.store.sqlite.rows import INSERT_TIMELINE, alarm_row, timeline_row, upsert_alarms

__all__ = ["BatchRows", "batch_rows", "write_batch"]


@dataclass(frozen=True, slots=True)
class BatchRows:
    """What write_batch writes. `alarms`: the rows of the alarms without a step decided
    in the batch; `held`: the alarms with one, each written as its step's row (the alarm
    at its new level) when the step is recorded now, else as itself."""

    inbox: list[tuple[Any, ...]]
    alarms: list[tuple[Any, ...]]
    held: list[Alarm]
    timeline: list[tuple[Any, ...]]
    seen: list[tuple[str | None, str]]
    decided: list[Any]


def batch_rows(
    effects: BatchEffects, municipality_of: dict[str, str], decided: Sequence[DecidedRow]
) -> BatchRows:
    """The batch's rows, built on the loop; an alarm row only where it is written.

    A new alarm whose first step is decided in the batch has two candidate rows, its
    own and the step's; the step's is almost always the one written, so its own waits
    as the Alarm and is built on the writer's thread only if the claim is refused.
    """
    inbox = [
        inbox_row(m, municipality_of.get(m.rejected.device_id or "") if m.rejected else None)
        for m in effects.messages
        if m.verdict is not Verdict.REDELIVERY
    ]
    stepped = {r.alarm_id for r in decided if r.alarm is not None}
    alarms: list[tuple[Any, ...]] = []
    held: list[Alarm] = []
    for a in effects.alarms.values():
        if a.id in stepped:
            held.append(a)
        else:
            alarms.append(alarm_row(a))
    return BatchRows(
        inbox,
        alarms,
        held,
        [timeline_row(e) for e in effects.timeline],
        [(ts(at), dev) for dev, at in effects.device_seen.items()],
        decided_payload(decided, None),
    )


def write_batch(conn: sqlite3.Connection, rows: BatchRows) -> list[bool]:
    """Commit one ingest batch's rows, or none of them: the batch is retried whole.

    `rows.decided`: the first escalation steps of its new alarms (escalation_rows.decided_payload),
    each claimed as the escalator's own transaction claims it; a recorded one's alarm row
    (the alarm at its new level) is written instead of the batch's, at the same revision.
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        if rows.inbox:
            conn.executemany(INSERT_INBOX, rows.inbox)
        recorded, escalated, steps, outbox = claim_decided(conn, rows.decided)
        alarms = rows.alarms
        if rows.held:
            alarms = alarms + [escalated.get(a.id) or alarm_row(a) for a in rows.held]
        if alarms:
            upsert_alarms(conn, alarms)
        if rows.timeline:
            conn.executemany(INSERT_TIMELINE, rows.timeline)
        write_effects(conn, steps, outbox)
        if rows.seen:
            conn.executemany("UPDATE devices SET last_seen_at=? WHERE id=?", rows.seen)
        conn.execute("COMMIT")
    except BaseException:
        # The transaction may already be gone (SQLITE_FULL rolls back by itself).
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
        raise
    return recorded
