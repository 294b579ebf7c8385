"""Deleting inbox rows past their retention, a small batch per transaction.

Runs on the writer connection's thread (SqliteStore._in_writer_thread), one
batch per call, so an ingest batch waits for at most one of these. Each
retention has its own partial index on `received_at` (schema migration 10), so
finding the oldest rows reads only them, however large the inbox.
"""

from __future__ import annotations

import contextlib
import sqlite3

from alarmhub.core.retention import RetainedTable

# Each with its partial index named: for dead letters SQLite otherwise picks the
# older inbox_rejected (verdict, seq), reading every dead letter and sorting them.
_WHICH = {
    RetainedTable.INBOX: "inbox INDEXED BY inbox_kept_received WHERE verdict != 'rejected'",
    RetainedTable.DEAD_LETTERS: (
        "inbox INDEXED BY inbox_rejected_received WHERE verdict = 'rejected'"
    ),
}

# A message whose events raised or joined an alarm that is still active is kept
# past its retention: an operator's acknowledgement tells the device "handled"
# for the message that raised the alarm (AlarmHub._send_handled finds it here).
_STILL_NEEDED = (
    "EXISTS (SELECT 1 FROM json_each(coalesce(inbox.events, '[]')) e "
    "JOIN alarms a ON a.id = json_extract(e.value, '$.alarm_id') WHERE a.state != 'resolved')"
)


def candidates_sql(table: RetainedTable) -> str:
    """The oldest rows past retention (parameters: before, limit), from the index alone."""
    return (
        f"SELECT seq FROM {_WHICH[table]} AND received_at < ? AND NOT {_STILL_NEEDED} "
        "ORDER BY received_at LIMIT ?"
    )


def oldest_sql(table: RetainedTable) -> str:
    return f"SELECT received_at FROM {_WHICH[table]} ORDER BY received_at LIMIT 1"


def prune_batch(conn: sqlite3.Connection, table: RetainedTable, before: str, limit: int) -> int:
    """Delete up to `limit` of the oldest rows received before `before`; return how many."""
    sql = f"DELETE FROM inbox WHERE seq IN ({candidates_sql(table)})"
    conn.execute("BEGIN IMMEDIATE")
    try:
        deleted = conn.execute(sql, (before, limit)).rowcount
        conn.execute("COMMIT")
    except BaseException:
        # The transaction may already be gone (SQLITE_FULL rolls back by itself).
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
        raise
    return int(deleted)


def oldest_received(conn: sqlite3.Connection, table: RetainedTable) -> str | None:
    """When the oldest row kept arrived (from the partial index alone)."""
    row = conn.execute(oldest_sql(table)).fetchone()
    return str(row[0]) if row else None
