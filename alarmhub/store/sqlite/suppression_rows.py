"""Writes that end a suppression together with what it hid (issue 12 items 2, 7, 8).

A released alarm must come back in the same transaction as the change that
ended its cause: an operator resolving the inhibiting alarm or the incident, a
silence deleted or reaching its end. Written apart, a crash between the two
would leave the cause gone and the alarm still hidden, for good.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Any, TypeVar

from alarmhub.core.model import Alarm, TimelineEntry
from alarmhub.core.people import AuditEntry
from alarmhub.store.accounts import ts
from alarmhub.store.journal_outbox import JournalExport
from alarmhub.store.sqlite.accounts import INSERT_AUDIT, audit_row
from alarmhub.store.sqlite.journal_rows import INSERT_JOURNAL, journal_row
from alarmhub.store.sqlite.rows import INSERT_TIMELINE, alarm_row, timeline_row, upsert_alarms

T = TypeVar("T")

_END_SILENCE = (
    "UPDATE silences SET deleted_at = ?, deleted_by = ? WHERE id = ? AND deleted_at IS NULL"
)


def _write(
    conn: sqlite3.Connection,
    alarms: list[tuple[Any, ...]],
    timeline: list[tuple[Any, ...]],
    end_silence: tuple[str | None, str, str] | None,
    audit: list[tuple[Any, ...]],
    journal: Sequence[tuple[Any, ...]] = (),
) -> bool:
    conn.execute("BEGIN IMMEDIATE")
    try:
        ended = True
        if end_silence is not None:
            ended = conn.execute(_END_SILENCE, end_silence).rowcount > 0
        if ended:
            if alarms:
                upsert_alarms(conn, alarms)
            if timeline:
                conn.executemany(INSERT_TIMELINE, timeline)
            if audit:  # who did it, in the change's own transaction (issue 13 item 4)
                conn.executemany(INSERT_AUDIT, audit)
            if journal:  # the answered alarm's journal export, with the answer (issue 17)
                conn.executemany(INSERT_JOURNAL, journal)
        conn.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
        raise
    return ended


class SuppressionRows:
    """Mixed into SqliteStore, which provides `_in_writer_thread`."""

    async def _in_writer_thread(self, fn: Callable[..., T], *args: Any) -> T:
        raise NotImplementedError  # provided by SqliteStore

    async def save_alarms(
        self,
        alarms: Iterable[Alarm],
        entries: Iterable[TimelineEntry],
        *,
        audit: Sequence[AuditEntry],
        journal: Sequence[JournalExport] = (),
    ) -> None:
        """Commit several alarms' changes with their timeline entries, all or nothing.

        `audit` is required so no caller can forget it: a person's action passes
        its entry, the daemon's own releases pass (). `journal`: the journal exports
        a resolve starts (store/journal_outbox.py), in the same transaction.
        """
        await self._in_writer_thread(
            _write,
            [alarm_row(a) for a in alarms],
            [timeline_row(e) for e in entries],
            None,
            [audit_row(e) for e in audit],
            [journal_row(j) for j in journal],
        )

    async def end_silence_releasing(
        self,
        silence_id: str,
        by: str,
        now: datetime,
        released: Sequence[Alarm],
        entries: Sequence[TimelineEntry],
        *,
        audit: Sequence[AuditEntry],
    ) -> bool:
        """End a silence now, release its alarms and audit it, in one transaction.

        False (and nothing written) when it was already deleted. The row stays:
        who silenced what, and who ended it, remains provable.
        """
        return await self._in_writer_thread(
            _write,
            [alarm_row(a) for a in released],
            [timeline_row(e) for e in entries],
            (ts(now), by, silence_id),
            [audit_row(e) for e in audit],
        )
