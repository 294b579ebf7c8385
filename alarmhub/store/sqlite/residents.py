"""The resident register's sealed rows in SQLite (store/residents.py seals and opens them).

Each call runs on a short-lived connection of its own in a worker thread, as the
directory's do; each change and each read of a number is one transaction with its
audit rows (BEGIN IMMEDIATE: the read and its audit row commit together).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from alarmhub.core.people import AuditEntry
from alarmhub.store.accounts import ts
from alarmhub.store.residents import ListAudit, Reseal, ResidentRows, SealedRow
from alarmhub.store.sqlite.accounts import append_audit, run, transaction
from alarmhub.store.sqlite.rows import parse_ts

_COLUMNS = "municipality, resident, key_id, nonce, sealed, updated_at, updated_by"
_UPSERT = (
    f"INSERT INTO residents ({_COLUMNS}) VALUES (?,?,?,?,?,?,?) "
    "ON CONFLICT (municipality, resident) DO UPDATE SET key_id = excluded.key_id, "
    "nonce = excluded.nonce, sealed = excluded.sealed, updated_at = excluded.updated_at, "
    "updated_by = excluded.updated_by"
)
_ONE = f"SELECT {_COLUMNS} FROM residents WHERE municipality = ? AND resident = ?"


def _row(r: Sequence[Any]) -> SealedRow:
    updated = parse_ts(r[5])
    assert updated is not None
    return SealedRow(r[0], r[1], r[2], bytes(r[3]), bytes(r[4]), updated, r[6])


def _put(conn: sqlite3.Connection, row: SealedRow, audit: Sequence[AuditEntry]) -> bool:
    with transaction(conn):
        existed = conn.execute(_ONE, (row.municipality, row.resident)).fetchone() is not None
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
    return not existed


def _delete(
    conn: sqlite3.Connection, municipality: str, resident: str, audit: Sequence[AuditEntry]
) -> bool:
    with transaction(conn):
        cur = conn.execute(
            "DELETE FROM residents WHERE municipality = ? AND resident = ?",
            (municipality, resident),
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


class SqliteResidentRows:
    """One database file; every call opens, uses and closes its own connection."""

    def __init__(self, path: Path) -> None:
        self.path = path

    async def put_resident(self, row: SealedRow, audit: Sequence[AuditEntry]) -> bool:
        return await run(self.path, _put, row, audit)

    async def delete_resident(
        self, municipality: str, resident: str, audit: Sequence[AuditEntry]
    ) -> bool:
        return await run(self.path, _delete, municipality, resident, audit)

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


def _is_rows(r: SqliteResidentRows) -> ResidentRows:
    return r  # mypy checks here that the class implements the port
