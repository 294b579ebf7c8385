"""Bridge assignments in SQLite (core/bridges.py judge_bridges): read and written
inside the registry write's own BEGIN IMMEDIATE, or in `assign_bridge`'s, so an
assignment and a registration on the same bridge never interleave.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import aiosqlite

from alarmhub.core.bridges import bridge_assigned
from alarmhub.core.people import AuditEntry
from alarmhub.store.accounts import ts
from alarmhub.store.errors import BridgeInUseError
from alarmhub.store.sqlite.accounts import INSERT_AUDIT, audit_row

__all__ = ["SqliteBridgeRows", "assigned_bridges", "record_assignments"]

_UPSERT = (
    "INSERT INTO bridges (id, municipality, assigned_at, assigned_by) VALUES (?,?,?,?) "
    "ON CONFLICT(id) DO UPDATE SET municipality = excluded.municipality, "
    "assigned_at = excluded.assigned_at, assigned_by = excluded.assigned_by"
)


async def assigned_bridges(conn: aiosqlite.Connection, bridges: Sequence[str]) -> dict[str, str]:
    """bridge -> municipality, for those of `bridges` that are assigned."""
    found: dict[str, str] = {}
    for i in range(0, len(bridges), 500):
        chunk = bridges[i : i + 500]
        sql = f"SELECT id, municipality FROM bridges WHERE id IN ({','.join('?' * len(chunk))})"
        async with conn.execute(sql, chunk) as cur:
            found.update({r[0]: r[1] async for r in cur})
    return found


async def record_assignments(
    conn: aiosqlite.Connection,
    assign: dict[str, tuple[str | None, str]],
    now: datetime,
    by: AuditEntry | None,
) -> None:
    """Write `assign` (bridge -> (before, after)) and audit each, in the caller's
    transaction; `by`: the write's first audit entry, whose actor made the change."""
    actor = by.actor if by is not None else "system"
    rows = [(b, m, ts(now), actor) for b, (_, m) in sorted(assign.items())]
    await conn.executemany(_UPSERT, rows)
    entries = [
        bridge_assigned(actor, now, b, was, m, by.address if by else None)
        for b, (was, m) in sorted(assign.items())
    ]
    await conn.executemany(INSERT_AUDIT, [audit_row(e) for e in entries])


class SqliteBridgeRows:
    """Mixed into SqliteStore, which provides `_conn` and `_rollback`."""

    _conn: aiosqlite.Connection

    async def _rollback(self) -> None:
        raise NotImplementedError  # provided by SqliteStore

    async def assign_bridge(
        self, bridge: str, municipality: str, now: datetime, *, actor: str
    ) -> str | None:
        """Assign `bridge` to `municipality`, audited with it; the municipality it had.

        Refused (:class:`BridgeInUseError`) when the bridge has devices of another
        municipality: they decide, and move together (core/bridges.py).
        """
        await self._conn.execute("BEGIN IMMEDIATE")
        try:
            was = await _assign(self._conn, bridge, municipality, now, actor)
            await self._conn.execute("COMMIT")
        except BaseException:
            await self._rollback()
            raise
        return was

    async def list_bridges(self) -> list[dict[str, str]]:
        """Every assigned bridge: id, municipality, assigned_at, assigned_by."""
        sql = "SELECT id, municipality, assigned_at, assigned_by FROM bridges ORDER BY id"
        async with self._conn.execute(sql) as cur:
            rows = await cur.fetchall()
        keys = ("id", "municipality", "assigned_at", "assigned_by")
        return [dict(zip(keys, r, strict=True)) for r in rows]  # times stored as ts() writes


async def _assign(
    conn: aiosqlite.Connection, bridge: str, municipality: str, now: datetime, actor: str
) -> str | None:
    sql = "SELECT DISTINCT municipality FROM devices WHERE bridge = ? ORDER BY 1"
    async with conn.execute(sql, (bridge,)) as cur:
        there = tuple([r[0] async for r in cur if r[0] != municipality])
    if there:
        raise BridgeInUseError(bridge, there)
    was = (await assigned_bridges(conn, [bridge])).get(bridge)
    if was != municipality:
        by = AuditEntry(actor, "bridge.assigned", now)
        await record_assignments(conn, {bridge: (was, municipality)}, now, by)
    return was
