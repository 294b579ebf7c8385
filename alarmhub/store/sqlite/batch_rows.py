"""One ingest batch's rows written in one transaction on the writer's thread.

SqliteStore.commit_batch builds the rows on the event loop and hands them here
through `_in_writer_thread`: the whole BEGIN … executemany … COMMIT is one hop
to aiosqlite's thread instead of one per statement (docs/performance.md), on
the same single writer connection, so its ordering with every other write holds.
"""

from __future__ import annotations

import contextlib
import sqlite3
from typing import Any

from alarmhub.store.sqlite.escalation_rows import claim_decided, write_effects
from alarmhub.store.sqlite.inbox_rows import INSERT_INBOX
from alarmhub.store.sqlite.rows import INSERT_TIMELINE, upsert_alarms

__all__ = ["write_batch"]


def write_batch(
    conn: sqlite3.Connection,
    inbox: list[tuple[Any, ...]],
    alarms: list[tuple[Any, ...]],
    timeline: list[tuple[Any, ...]],
    seen: list[tuple[str | None, str]],
    decided: list[Any],
) -> list[bool]:
    """Commit one ingest batch's rows, or none of them: the batch is retried whole.

    `decided`: the first escalation steps of its new alarms (escalation_rows.decided_payload),
    each claimed as the escalator's own transaction claims it; a recorded one's alarm row
    (the alarm at its new level) is written instead of the batch's, at the same revision.
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        if inbox:
            conn.executemany(INSERT_INBOX, inbox)
        recorded, escalated, steps, outbox = claim_decided(conn, decided)
        if escalated:
            alarms = [escalated.get(row[0], row) for row in alarms]
        if alarms:
            upsert_alarms(conn, alarms)
        if timeline:
            conn.executemany(INSERT_TIMELINE, timeline)
        write_effects(conn, steps, outbox)
        if seen:
            conn.executemany("UPDATE devices SET last_seen_at=? WHERE id=?", seen)
        conn.execute("COMMIT")
    except BaseException:
        # The transaction may already be gone (SQLITE_FULL rolls back by itself).
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
        raise
    return recorded
