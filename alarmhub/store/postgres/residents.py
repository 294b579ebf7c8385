"""The resident register's sealed rows in PostgreSQL (store/residents.py seals and opens them).

The same behaviour as ``store/sqlite/residents.py``, on a connection taken from the
pool for one call: each change and each read of a number is one transaction with
its audit rows. `put_resident` says whether it created the row by PostgreSQL's own
answer (`xmax = 0` only for a freshly inserted row), not by a read before it that
another instance could make stale.
"""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from alarmhub.core.people import AuditEntry
from alarmhub.store.postgres.accounts import append_audit
from alarmhub.store.residents import ListAudit, Reseal, ResidentRows, SealedRow

_COLUMNS = "municipality, resident, key_id, nonce, sealed, updated_at, updated_by"
_UPSERT = (
    f"INSERT INTO residents ({_COLUMNS}) VALUES ($1,$2,$3,$4,$5,$6,$7) "
    "ON CONFLICT (municipality, resident) DO UPDATE SET key_id = excluded.key_id, "
    "nonce = excluded.nonce, sealed = excluded.sealed, updated_at = excluded.updated_at, "
    "updated_by = excluded.updated_by RETURNING (xmax = 0) AS created"
)

_LOCK = (
    "SELECT key_id, nonce, sealed FROM residents WHERE municipality = $1 AND resident = $2 "
    "FOR UPDATE"
)
_RESEAL = (
    "UPDATE residents SET key_id = $1, nonce = $2, sealed = $3 "
    "WHERE municipality = $4 AND resident = $5"
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

    async def put_resident(self, row: SealedRow, audit: Sequence[AuditEntry]) -> bool:
        async with self.pool.acquire() as conn, conn.transaction():
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
            await append_audit(conn, audit)
        return bool(created)

    async def delete_resident(
        self, municipality: str, resident: str, audit: Sequence[AuditEntry]
    ) -> bool:
        async with self.pool.acquire() as conn, conn.transaction():
            gone = await conn.fetchval(
                "DELETE FROM residents WHERE municipality = $1 AND resident = $2 "
                "RETURNING resident",
                municipality,
                resident,
            )
            if gone is not None:
                await append_audit(conn, audit)
        return gone is not None

    async def read_resident(
        self, municipality: str, resident: str, audit: Sequence[AuditEntry]
    ) -> SealedRow | None:
        async with self.pool.acquire() as conn, conn.transaction():
            found = await conn.fetchrow(
                f"SELECT {_COLUMNS} FROM residents WHERE municipality = $1 AND resident = $2",
                municipality,
                resident,
            )
            if found is not None:
                await append_audit(conn, audit)
        return _row(found) if found is not None else None

    async def list_residents(self, municipality: str, audit: ListAudit) -> list[SealedRow]:
        async with self.pool.acquire() as conn, conn.transaction():
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
        async with self.pool.acquire() as conn:
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
        async with self.pool.acquire() as conn, conn.transaction():
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


def _is_rows(r: PostgresResidentRows) -> ResidentRows:
    return r  # mypy checks here that the class implements the port
