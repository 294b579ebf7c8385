"""The resident register's sealed rows in PostgreSQL (store/residents.py seals and opens them).

The same behaviour as ``store/sqlite/residents.py``, on a connection taken from the
pool for one call: each change and each read of a number is one transaction with
its audit rows. `put_resident` says whether it created the row by PostgreSQL's own
answer (`xmax = 0` only for a freshly inserted row), not by a read before it that
another instance could make stale; the row it replaces is read `FOR UPDATE` first,
and a number replaced by another (or a row another instance inserted between that
read and the upsert: compared with nothing, counted as changed) or removed records
the change in `resident_changes` in the same transaction.

Every call goes through the store's `connection`/`transaction` (rows.py), so a server
out of reach is StoreUnavailableError and a refusal StoreError, as for the other
reads: the journal worker, reading a number for an export, waits for the database
then instead of charging that export an "unexpected error".
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import asyncpg

from alarmhub.core.journal_status import JournalState
from alarmhub.core.people import AuditEntry
from alarmhub.store.postgres.accounts import append_audit
from alarmhub.store.postgres.rows import connection, transaction
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

_COLUMNS = "municipality, resident, key_id, nonce, sealed, updated_at, updated_by"
_UPSERT = (
    f"INSERT INTO residents ({_COLUMNS}) VALUES ($1,$2,$3,$4,$5,$6,$7) "
    "ON CONFLICT (municipality, resident) DO UPDATE SET key_id = excluded.key_id, "
    "nonce = excluded.nonce, sealed = excluded.sealed, updated_at = excluded.updated_at, "
    "updated_by = excluded.updated_by RETURNING (xmax = 0) AS created"
)

_ONE = f"SELECT {_COLUMNS} FROM residents WHERE municipality = $1 AND resident = $2"
# The latest change wins, even from a clock behind another's: a note is held, not sent.
_CHANGED = (
    "INSERT INTO resident_changes (municipality, resident, changed_at) VALUES ($1,$2,$3) "
    "ON CONFLICT (municipality, resident) DO UPDATE SET "
    "changed_at = GREATEST(resident_changes.changed_at, excluded.changed_at)"
)
_CHANGED_AT = "SELECT changed_at FROM resident_changes WHERE municipality = $1 AND resident = $2"
_RELEASED = (
    "SELECT release_key_id, release_nonce, release_sealed FROM journal_exports "
    "WHERE alarm_id = $1 AND municipality = $2 AND release_sealed IS NOT NULL"
)
_RELEASE = (
    "UPDATE journal_exports SET state = $1, reason = NULL, last_error = NULL, next_at = $2, "
    "release_key_id = $3, release_nonce = $4, release_sealed = $5 "
    "WHERE alarm_id = $6 AND municipality = $7 AND state = $8 RETURNING alarm_id"
)
_CANCEL = (
    "UPDATE journal_exports SET state = $1, reason = $2, last_error = NULL, finished_at = $3, "
    "next_at = $3, release_key_id = NULL, release_nonce = NULL, release_sealed = NULL "
    "WHERE alarm_id = $4 AND municipality = $5 AND state = $6 RETURNING alarm_id"
)

_LOCK = (
    "SELECT key_id, nonce, sealed FROM residents WHERE municipality = $1 AND resident = $2 "
    "FOR UPDATE"
)
_RESEAL = (
    "UPDATE residents SET key_id = $1, nonce = $2, sealed = $3 "
    "WHERE municipality = $4 AND resident = $5"
)

# The numbers held notes were released for, by alarm id (the primary key's order).
_STALE_RELEASES = (
    "SELECT e.alarm_id, e.municipality, a.resident, e.release_key_id, e.release_nonce, "
    "e.release_sealed FROM journal_exports e LEFT JOIN alarms a ON a.id = e.alarm_id "
    "WHERE e.release_sealed IS NOT NULL AND e.release_key_id <> $1 AND e.alarm_id > $2 "
    "ORDER BY e.alarm_id LIMIT $3"
)
# Compare-and-set in one statement: an UPDATE that finds the row locked by another
# writer waits for it and checks the WHERE again on what that writer committed (READ
# COMMITTED), so a note done meanwhile (its number cleared) keeps no number.
_RESEAL_RELEASE = (
    "UPDATE journal_exports SET release_key_id = $1, release_nonce = $2, release_sealed = $3 "
    "WHERE alarm_id = $4 AND municipality = $5 AND release_key_id = $6 AND release_nonce = $7 "
    "AND release_sealed = $8 RETURNING alarm_id"
)


def _sealing(r: asyncpg.Record) -> tuple[str, bytes, bytes]:
    return r["key_id"], bytes(r["nonce"]), bytes(r["sealed"])


def _row(r: asyncpg.Record) -> SealedRow:
    return SealedRow(
        r["municipality"],
        r["resident"],
        r["key_id"],
        bytes(r["nonce"]),
        bytes(r["sealed"]),
        r["updated_at"],
        r["updated_by"],
    )


class PostgresResidentRows:
    """One pool; every call takes a connection of its own from it and gives it back."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def put_resident(
        self, row: SealedRow, audit: Sequence[AuditEntry], same: SameNumber
    ) -> bool:
        async with transaction(self.pool) as conn:
            old = await conn.fetchrow(f"{_ONE} FOR UPDATE", row.municipality, row.resident)
            created = await conn.fetchval(
                _UPSERT,
                row.municipality,
                row.resident,
                row.key_id,
                row.nonce,
                row.sealed,
                row.updated_at,
                row.updated_by,
            )
            replaced = not created and (old is None or not same(_row(old)))
            if replaced:
                await conn.execute(_CHANGED, row.municipality, row.resident, row.updated_at)
            await append_audit(conn, audit)
        return bool(created)

    async def delete_resident(
        self, municipality: str, resident: str, at: datetime, audit: Sequence[AuditEntry]
    ) -> bool:
        async with transaction(self.pool) as conn:
            gone = await conn.fetchval(
                "DELETE FROM residents WHERE municipality = $1 AND resident = $2 "
                "RETURNING resident",
                municipality,
                resident,
            )
            if gone is not None:
                await conn.execute(_CHANGED, municipality, resident, at)
                await append_audit(conn, audit)
        return gone is not None

    async def read_for_journal(
        self, municipality: str, resident: str, alarm_id: str, audit: Sequence[AuditEntry]
    ) -> JournalRead:
        async with transaction(self.pool) as conn:
            found = await conn.fetchrow(_ONE, municipality, resident)
            changed = await conn.fetchval(_CHANGED_AT, municipality, resident)
            released = await conn.fetchrow(_RELEASED, alarm_id, municipality)
            if found is not None or released is not None:
                await append_audit(conn, audit)
        return JournalRead(
            _row(found) if found is not None else None,
            changed,
            Sealed(released[0], bytes(released[1]), bytes(released[2])) if released else None,
        )

    async def release_held(self, release: Release, audit: Sequence[AuditEntry]) -> bool:
        s = release.sealed
        async with transaction(self.pool) as conn:
            done = await conn.fetchval(
                _RELEASE,
                JournalState.PENDING.value,
                release.at,
                s.key_id,
                s.nonce,
                s.sealed,
                release.alarm_id,
                release.municipality,
                JournalState.HELD.value,
            )
            if done is not None:
                await append_audit(conn, audit)
        return done is not None

    async def cancel_held(
        self,
        alarm_id: str,
        municipality: str,
        reason: str,
        at: datetime,
        audit: Sequence[AuditEntry],
    ) -> bool:
        async with transaction(self.pool) as conn:
            done = await conn.fetchval(
                _CANCEL,
                JournalState.CANCELLED.value,
                reason,
                at,
                alarm_id,
                municipality,
                JournalState.HELD.value,
            )
            if done is not None:
                await append_audit(conn, audit)
        return done is not None

    async def read_resident(
        self, municipality: str, resident: str, audit: Sequence[AuditEntry]
    ) -> SealedRow | None:
        async with transaction(self.pool) as conn:
            found = await conn.fetchrow(_ONE, municipality, resident)
            if found is not None:
                await append_audit(conn, audit)
        return _row(found) if found is not None else None

    async def list_residents(self, municipality: str, audit: ListAudit) -> list[SealedRow]:
        async with transaction(self.pool) as conn:
            rows = [
                _row(r)
                for r in await conn.fetch(
                    f"SELECT {_COLUMNS} FROM residents WHERE municipality = $1 ORDER BY resident",
                    municipality,
                )
            ]
            if rows:
                await append_audit(conn, audit(rows))
        return rows

    async def stale_residents(
        self, current_key: str, after: tuple[str, str] | None, limit: int
    ) -> list[SealedRow]:
        start = after or ("", "")
        async with connection(self.pool) as conn:
            records = await conn.fetch(
                f"SELECT {_COLUMNS} FROM residents WHERE key_id <> $1 AND "
                "(municipality, resident) > ($2, $3) ORDER BY municipality, resident LIMIT $4",
                current_key,
                *start,
                limit,
            )
        return [_row(r) for r in records]

    async def reseal_residents(self, reseals: Sequence[Reseal]) -> int:
        written = 0
        async with transaction(self.pool) as conn:
            for r in reseals:
                old = r.before
                # Lock the row and compare it with what rekey read: a change committed
                # meanwhile (or one still open, which FOR UPDATE waits for) is seen here.
                now = await conn.fetchrow(_LOCK, old.municipality, old.resident)
                if now is None or _sealing(now) != (old.key_id, old.nonce, old.sealed):
                    continue
                await conn.execute(
                    _RESEAL, r.key_id, r.nonce, r.sealed, old.municipality, old.resident
                )
                await append_audit(conn, [r.audit])
                written += 1
        return written

    async def stale_releases(
        self, current_key: str, after: str | None, limit: int
    ) -> list[SealedRelease]:
        async with connection(self.pool) as conn:
            records = await conn.fetch(_STALE_RELEASES, current_key, after or "", limit)
        return [
            SealedRelease(r[0], r[1], r[2], Sealed(r[3], bytes(r[4]), bytes(r[5]))) for r in records
        ]

    async def reseal_releases(self, reseals: Sequence[ReleaseReseal]) -> int:
        written = 0
        async with transaction(self.pool) as conn:
            for r in reseals:
                old, new = r.before, r.sealed
                done = await conn.fetchval(
                    _RESEAL_RELEASE,
                    new.key_id,
                    new.nonce,
                    new.sealed,
                    old.alarm_id,
                    old.municipality,
                    old.sealed.key_id,
                    old.sealed.nonce,
                    old.sealed.sealed,
                )
                if done is not None:
                    await append_audit(conn, [r.audit])
                    written += 1
        return written


def _is_rows(r: PostgresResidentRows) -> ResidentRows:
    return r  # mypy checks here that the class implements the port
