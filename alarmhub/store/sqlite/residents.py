"""The resident register's sealed rows in SQLite (store/residents.py seals and opens them).

Each call runs on a short-lived connection of its own in a worker thread, as the
directory's do; each change and each read of a number is one transaction with its
audit rows (BEGIN IMMEDIATE: the read and its audit row commit together). A number
replaced by another, or removed, records the change in `resident_changes` in the same
transaction; a held journal note's release or cancellation changes only a row still
`held`, of the municipality named, with its audit rows. A refusal (a table gone, a
failing disk) is a StoreError, as for the store's own reads (refusals.py); `run`
already makes a locked or missing file StoreUnavailableError.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from alarmhub.core.journal_status import JournalState
from alarmhub.core.people import AuditEntry
from alarmhub.store.accounts import ts
from alarmhub.store.residents import (
    JournalRead,
    ListAudit,
    Release,
    ReleaseReseal,
    Reseal,
    ResidentRows,
    SameNumber,
    SealedRelease,
    SealedRow,
)
from alarmhub.store.sealing import Sealed
from alarmhub.store.sqlite.accounts import append_audit, run, transaction
from alarmhub.store.sqlite.refusals import refusals_as_store_errors
from alarmhub.store.sqlite.rows import parse_ts

_COLUMNS = "municipality, resident, key_id, nonce, sealed, updated_at, updated_by"
_UPSERT = (
    f"INSERT INTO residents ({_COLUMNS}) VALUES (?,?,?,?,?,?,?) "
    "ON CONFLICT (municipality, resident) DO UPDATE SET key_id = excluded.key_id, "
    "nonce = excluded.nonce, sealed = excluded.sealed, updated_at = excluded.updated_at, "
    "updated_by = excluded.updated_by"
)
_ONE = f"SELECT {_COLUMNS} FROM residents WHERE municipality = ? AND resident = ?"
# The latest change wins, even from a clock behind another's: a note is held, not sent.
_CHANGED = (
    "INSERT INTO resident_changes (municipality, resident, changed_at) VALUES (?,?,?) "
    "ON CONFLICT (municipality, resident) DO UPDATE SET "
    "changed_at = max(resident_changes.changed_at, excluded.changed_at)"
)
_CHANGED_AT = "SELECT changed_at FROM resident_changes WHERE municipality = ? AND resident = ?"
_RELEASED = (
    "SELECT release_key_id, release_nonce, release_sealed FROM journal_exports "
    "WHERE alarm_id = ? AND municipality = ? AND release_sealed IS NOT NULL"
)
_RELEASE = (
    "UPDATE journal_exports SET state = ?, reason = NULL, last_error = NULL, next_at = ?, "
    "release_key_id = ?, release_nonce = ?, release_sealed = ? "
    "WHERE alarm_id = ? AND municipality = ? AND state = ?"
)
_CANCEL = (
    "UPDATE journal_exports SET state = ?, reason = ?, last_error = NULL, finished_at = ?, "
    "next_at = ?, release_key_id = NULL, release_nonce = NULL, release_sealed = NULL "
    "WHERE alarm_id = ? AND municipality = ? AND state = ?"
)


def _row(r: Sequence[Any]) -> SealedRow:
    updated = parse_ts(r[5])
    assert updated is not None
    return SealedRow(r[0], r[1], r[2], bytes(r[3]), bytes(r[4]), updated, r[6])


def _put(
    conn: sqlite3.Connection, row: SealedRow, audit: Sequence[AuditEntry], same: SameNumber
) -> bool:
    with transaction(conn):
        old = conn.execute(_ONE, (row.municipality, row.resident)).fetchone()
        if old is not None and not same(_row(old)):
            conn.execute(_CHANGED, (row.municipality, row.resident, ts(row.updated_at)))
        conn.execute(
            _UPSERT,
            (
                row.municipality,
                row.resident,
                row.key_id,
                row.nonce,
                row.sealed,
                ts(row.updated_at),
                row.updated_by,
            ),
        )
        append_audit(conn, audit)
    return old is None


def _delete(
    conn: sqlite3.Connection,
    municipality: str,
    resident: str,
    at: datetime,
    audit: Sequence[AuditEntry],
) -> bool:
    with transaction(conn):
        cur = conn.execute(
            "DELETE FROM residents WHERE municipality = ? AND resident = ?",
            (municipality, resident),
        )
        if cur.rowcount:
            conn.execute(_CHANGED, (municipality, resident, ts(at)))
            append_audit(conn, audit)
    return bool(cur.rowcount)


def _journal_read(
    conn: sqlite3.Connection,
    municipality: str,
    resident: str,
    alarm_id: str,
    audit: Sequence[AuditEntry],
) -> JournalRead:
    with transaction(conn):
        found = conn.execute(_ONE, (municipality, resident)).fetchone()
        changed = conn.execute(_CHANGED_AT, (municipality, resident)).fetchone()
        released = conn.execute(_RELEASED, (alarm_id, municipality)).fetchone()
        if found is not None or released is not None:
            append_audit(conn, audit)
    return JournalRead(
        _row(found) if found is not None else None,
        parse_ts(changed[0]) if changed is not None else None,
        Sealed(released[0], bytes(released[1]), bytes(released[2])) if released else None,
    )


def _release(conn: sqlite3.Connection, r: Release, audit: Sequence[AuditEntry]) -> bool:
    s = r.sealed
    with transaction(conn):
        cur = conn.execute(
            _RELEASE,
            (
                JournalState.PENDING.value,
                ts(r.at),
                s.key_id,
                s.nonce,
                s.sealed,
                r.alarm_id,
                r.municipality,
                JournalState.HELD.value,
            ),
        )
        if cur.rowcount:
            append_audit(conn, audit)
    return bool(cur.rowcount)


def _cancel(
    conn: sqlite3.Connection,
    alarm_id: str,
    municipality: str,
    reason: str,
    at: datetime,
    audit: Sequence[AuditEntry],
) -> bool:
    with transaction(conn):
        cur = conn.execute(
            _CANCEL,
            (
                JournalState.CANCELLED.value,
                reason,
                ts(at),
                ts(at),
                alarm_id,
                municipality,
                JournalState.HELD.value,
            ),
        )
        if cur.rowcount:
            append_audit(conn, audit)
    return bool(cur.rowcount)


def _read(
    conn: sqlite3.Connection, municipality: str, resident: str, audit: Sequence[AuditEntry]
) -> SealedRow | None:
    with transaction(conn):
        found = conn.execute(_ONE, (municipality, resident)).fetchone()
        if found is not None:
            append_audit(conn, audit)
    return _row(found) if found is not None else None


def _list(conn: sqlite3.Connection, municipality: str, audit: ListAudit) -> list[SealedRow]:
    with transaction(conn):
        rows = [
            _row(r)
            for r in conn.execute(
                f"SELECT {_COLUMNS} FROM residents WHERE municipality = ? ORDER BY resident",
                (municipality,),
            )
        ]
        if rows:
            append_audit(conn, audit(rows))
    return rows


def _stale(
    conn: sqlite3.Connection, current_key: str, after: tuple[str, str] | None, limit: int
) -> list[SealedRow]:
    start = after or ("", "")
    sql = (
        f"SELECT {_COLUMNS} FROM residents WHERE key_id <> ? AND (municipality, resident) > "
        "(?, ?) ORDER BY municipality, resident LIMIT ?"
    )
    return [_row(r) for r in conn.execute(sql, (current_key, *start, limit))]


# Compare-and-set: the row is resealed only if it still holds what rekey read. Inside
# BEGIN IMMEDIATE nobody else writes between this check and the write.
_RESEAL = (
    "UPDATE residents SET key_id = ?, nonce = ?, sealed = ? WHERE municipality = ? "
    "AND resident = ? AND key_id = ? AND nonce = ? AND sealed = ?"
)


def _reseal(conn: sqlite3.Connection, reseals: Sequence[Reseal]) -> int:
    written = 0
    with transaction(conn):
        for r in reseals:
            old = r.before
            where = (old.municipality, old.resident, old.key_id, old.nonce, old.sealed)
            cur = conn.execute(_RESEAL, (r.key_id, r.nonce, r.sealed, *where))
            if cur.rowcount:
                append_audit(conn, [r.audit])
                written += 1
    return written


# The numbers held notes were released for, by alarm id (the primary key's order).
_STALE_RELEASES = (
    "SELECT e.alarm_id, e.municipality, a.resident, e.release_key_id, e.release_nonce, "
    "e.release_sealed FROM journal_exports e LEFT JOIN alarms a ON a.id = e.alarm_id "
    "WHERE e.release_sealed IS NOT NULL AND e.release_key_id <> ? AND e.alarm_id > ? "
    "ORDER BY e.alarm_id LIMIT ?"
)
# Compare-and-set as _RESEAL: a note done meanwhile has NULLs here and keeps them.
_RESEAL_RELEASE = (
    "UPDATE journal_exports SET release_key_id = ?, release_nonce = ?, release_sealed = ? "
    "WHERE alarm_id = ? AND municipality = ? AND release_key_id = ? AND release_nonce = ? "
    "AND release_sealed = ?"
)


def _stale_releases(
    conn: sqlite3.Connection, current_key: str, after: str | None, limit: int
) -> list[SealedRelease]:
    return [
        SealedRelease(r[0], r[1], r[2], Sealed(r[3], bytes(r[4]), bytes(r[5])))
        for r in conn.execute(_STALE_RELEASES, (current_key, after or "", limit))
    ]


def _reseal_releases(conn: sqlite3.Connection, reseals: Sequence[ReleaseReseal]) -> int:
    written = 0
    with transaction(conn):
        for r in reseals:
            old, new = r.before, r.sealed
            where = (old.alarm_id, old.municipality, *_sealing(old.sealed))
            cur = conn.execute(_RESEAL_RELEASE, (*_sealing(new), *where))
            if cur.rowcount:
                append_audit(conn, [r.audit])
                written += 1
    return written


def _sealing(s: Sealed) -> tuple[str, bytes, bytes]:
    return s.key_id, s.nonce, s.sealed


@refusals_as_store_errors
class SqliteResidentRows:
    """One database file; every call opens, uses and closes its own connection."""

    def __init__(self, path: Path) -> None:
        self.path = path

    async def put_resident(
        self, row: SealedRow, audit: Sequence[AuditEntry], same: SameNumber
    ) -> bool:
        return await run(self.path, _put, row, audit, same)

    async def delete_resident(
        self, municipality: str, resident: str, at: datetime, audit: Sequence[AuditEntry]
    ) -> bool:
        return await run(self.path, _delete, municipality, resident, at, audit)

    async def read_for_journal(
        self, municipality: str, resident: str, alarm_id: str, audit: Sequence[AuditEntry]
    ) -> JournalRead:
        return await run(self.path, _journal_read, municipality, resident, alarm_id, audit)

    async def release_held(self, release: Release, audit: Sequence[AuditEntry]) -> bool:
        return await run(self.path, _release, release, audit)

    async def cancel_held(
        self,
        alarm_id: str,
        municipality: str,
        reason: str,
        at: datetime,
        audit: Sequence[AuditEntry],
    ) -> bool:
        return await run(self.path, _cancel, alarm_id, municipality, reason, at, audit)

    async def read_resident(
        self, municipality: str, resident: str, audit: Sequence[AuditEntry]
    ) -> SealedRow | None:
        return await run(self.path, _read, municipality, resident, audit)

    async def list_residents(self, municipality: str, audit: ListAudit) -> list[SealedRow]:
        return await run(self.path, _list, municipality, audit)

    async def stale_residents(
        self, current_key: str, after: tuple[str, str] | None, limit: int
    ) -> list[SealedRow]:
        return await run(self.path, _stale, current_key, after, limit)

    async def reseal_residents(self, reseals: Sequence[Reseal]) -> int:
        return await run(self.path, _reseal, reseals)

    async def stale_releases(
        self, current_key: str, after: str | None, limit: int
    ) -> list[SealedRelease]:
        return await run(self.path, _stale_releases, current_key, after, limit)

    async def reseal_releases(self, reseals: Sequence[ReleaseReseal]) -> int:
        return await run(self.path, _reseal_releases, reseals)


def _is_rows(r: SqliteResidentRows) -> ResidentRows:
    return r  # mypy checks here that the class implements the port
