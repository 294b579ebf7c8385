"""Bridge assignments in PostgreSQL: SQLite's (store/sqlite/bridge_rows.py), under the
registry's advisory lock, which every write of a device's bridge or municipality
holds: an assignment and a registration on the same bridge never interleave, even
from two instances.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import asyncpg

from alarmhub.core.bridges import bridge_assigned
from alarmhub.core.people import AuditEntry
from alarmhub.store.accounts import ts
from alarmhub.store.errors import BridgeInUseError
from alarmhub.store.postgres.accounts import append_audit
from alarmhub.store.postgres.rows import connection, transaction
from alarmhub.store.postgres.sql import Conn

__all__ = ["REGISTRY_LOCK", "PgBridgeRows", "assigned_bridges", "record_assignments"]

# pg_advisory_xact_lock key of registry writes ("registry" read as a number): two
# registrations of one new id queue up, so the second sees the first's row.
REGISTRY_LOCK = 0x7265676973747279

_UPSERT = (
    "INSERT INTO bridges (id, municipality, assigned_at, assigned_by) VALUES ($1, $2, $3, $4) "
    "ON CONFLICT (id) DO UPDATE SET municipality = excluded.municipality, "
    "assigned_at = excluded.assigned_at, assigned_by = excluded.assigned_by"
)


async def assigned_bridges(conn: Conn, bridges: Sequence[str]) -> dict[str, str]:
    """bridge -> municipality, for those of `bridges` that are assigned."""
    rows = await conn.fetch(
        "SELECT id, municipality FROM bridges WHERE id = ANY($1::text[])", list(bridges)
    )
    return {r[0]: r[1] for r in rows}


async def record_assignments(
    conn: Conn,
    assign: dict[str, tuple[str | None, str]],
    now: datetime,
    by: AuditEntry | None,
) -> None:
    """Write `assign` (bridge -> (before, after)) and audit each, in the caller's
    transaction; `by`: the write's first audit entry, whose actor made the change."""
    actor = by.actor if by is not None else "system"
    await conn.executemany(_UPSERT, [(b, m, now, actor) for b, (_, m) in sorted(assign.items())])
    await append_audit(
        conn,
        [
            bridge_assigned(actor, now, b, was, m, by.address if by else None)
            for b, (was, m) in sorted(assign.items())
        ],
    )


class PgBridgeRows:
    """Mixed into PostgresStore, which provides `pool`."""

    pool: asyncpg.Pool

    async def assign_bridge(
        self, bridge: str, municipality: str, now: datetime, *, actor: str
    ) -> str | None:
        """SqliteStore.assign_bridge: refused while the bridge has another's devices."""
        async with transaction(self.pool) as conn:
            await conn.execute("SELECT pg_advisory_xact_lock($1)", REGISTRY_LOCK)
            there = tuple(
                r[0]
                for r in await conn.fetch(
                    "SELECT DISTINCT municipality FROM devices WHERE bridge = $1 "
                    "AND municipality <> $2 ORDER BY 1",
                    bridge,
                    municipality,
                )
            )
            if there:
                raise BridgeInUseError(bridge, there)
            was = (await assigned_bridges(conn, [bridge])).get(bridge)
            if was != municipality:
                by = AuditEntry(actor, "bridge.assigned", now)
                await record_assignments(conn, {bridge: (was, municipality)}, now, by)
        return was

    async def list_bridges(self) -> list[dict[str, str]]:
        """SqliteStore.list_bridges: every assigned bridge, by id."""
        async with connection(self.pool) as conn:
            rows = await conn.fetch(
                "SELECT id, municipality, assigned_at, assigned_by FROM bridges ORDER BY id"
            )
        return [
            {"id": r[0], "municipality": r[1], "assigned_at": ts(r[2]) or "", "assigned_by": r[3]}
            for r in rows
        ]
