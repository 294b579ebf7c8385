"""The journal outbox in PostgreSQL (store/journal_outbox.py): written with the resolve,
moved on by the delivery worker under the owner's fence."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Any

import asyncpg

from alarmhub.core.journal_status import JournalState
from alarmhub.store.cluster import Fence
from alarmhub.store.journal_outbox import COLUMNS, NEEDS_A_PERSON, WAITING, JournalExport
from alarmhub.store.postgres.leases import Conn, check_fence
from alarmhub.store.postgres.rows import connection, transaction

_SELECT = f"SELECT {', '.join(COLUMNS)} FROM journal_exports"
# One export per alarm: a second resolve of a reopened alarm keeps the first row.
_INSERT = (
    f"INSERT INTO journal_exports ({', '.join(COLUMNS)}) "
    f"VALUES ({', '.join(f'${i}' for i in range(1, len(COLUMNS) + 1))}) "
    "ON CONFLICT (alarm_id) DO NOTHING"
)
_UPDATE = (
    "UPDATE journal_exports SET state = $1, reason = $2, location = $3, attempts = $4, "
    "next_at = $5, sent_at = $6, finished_at = $7, last_error = $8 WHERE alarm_id = $9"
)

_FORGET_RELEASE = (
    "UPDATE journal_exports SET release_key_id = NULL, release_nonce = NULL, "
    "release_sealed = NULL WHERE alarm_id = $1"
)


async def insert_journal(conn: Conn, journal: Sequence[JournalExport]) -> None:
    """In the caller's transaction: the resolve's (escalation_rows.write_release)."""
    if journal:
        await conn.executemany(_INSERT, [j.row() for j in journal])


def _export(r: Any) -> JournalExport:
    return JournalExport(
        r[0], r[1], JournalState(r[2]), r[3], r[4], r[5], r[6], r[7], r[8], r[9], r[10]
    )


class PgJournalRows:
    """Mixed into PostgresStore, which provides `pool` and the owner's fence."""

    pool: asyncpg.Pool
    _grant: Callable[[], Fence] | None

    async def due_journal(self, now: datetime, limit: int = 50) -> list[JournalExport]:
        sql = f"{_SELECT} WHERE state = ANY($1::text[]) AND next_at <= $2 ORDER BY next_at LIMIT $3"
        async with connection(self.pool) as conn:
            return [_export(r) for r in await conn.fetch(sql, list(WAITING), now, limit)]

    async def journal_save(self, export: JournalExport) -> None:
        grant = None if self._grant is None else self._grant()
        row = export.row()
        async with transaction(self.pool) as conn:
            if grant is not None:
                await check_fence(conn, grant)
            await conn.execute(_UPDATE, *row[2:7], *row[8:], export.alarm_id)
            if export.done:  # the note is over: the number a release named is kept no longer
                await conn.execute(_FORGET_RELEASE, export.alarm_id)

    async def journal_exports(
        self, alarm_ids: Iterable[str] | None = None, *, failed: bool = False, limit: int = 500
    ) -> list[JournalExport]:
        clauses: list[str] = []
        params: list[object] = []
        if alarm_ids is not None:
            params.append(list(alarm_ids))
            clauses.append(f"alarm_id = ANY(${len(params)}::text[])")
        if failed:
            params.extend([list(NEEDS_A_PERSON), list(WAITING)])
            clauses.append(
                f"(state = ANY(${len(params) - 1}::text[]) OR "
                f"(state = ANY(${len(params)}::text[]) AND last_error IS NOT NULL))"
            )
        where = " WHERE " + " AND ".join(clauses) if clauses else ""
        params.append(limit)
        sql = f"{_SELECT}{where} ORDER BY created_at DESC LIMIT ${len(params)}"
        async with connection(self.pool) as conn:
            return [_export(r) for r in await conn.fetch(sql, *params)]

    async def held_journal(self) -> int:
        sql = "SELECT count(*) FROM journal_exports WHERE state = $1"
        async with connection(self.pool) as conn:
            return int(await conn.fetchval(sql, JournalState.HELD.value))

    async def oldest_waiting_journal(self) -> datetime | None:
        sql = "SELECT min(created_at) FROM journal_exports WHERE state = ANY($1::text[])"
        async with connection(self.pool) as conn:
            value: datetime | None = await conn.fetchval(sql, list(WAITING))
        return value
