"""Reads and small writes of the PostgreSQL store that SQLite's store does row by row.

Retention (issue 13 item 2), what supervision reads back at start (issue 12 items
15, 17), and the time of the newest message: each a function of a connection, so
:class:`~alarmhub.store.postgres.store.PostgresStore` and
:class:`PostgresHistory` share them.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import orjson

from alarmhub.core.bridges import judge_bridges
from alarmhub.core.model import Device
from alarmhub.core.moves import refused_moves
from alarmhub.core.people import AuditEntry
from alarmhub.core.retention import RetainedTable
from alarmhub.store.columns import CREDENTIALS_SET_ELSEWHERE
from alarmhub.store.errors import (
    IdTakenError,
    MoveRefusedError,
    refuse_bridges,
)
from alarmhub.store.ports import DoseHistory
from alarmhub.store.postgres.bridge_rows import assigned_bridges, record_assignments
from alarmhub.store.postgres.rows import connection

# --- retention ---------------------------------------------------------------

_WHICH = {
    RetainedTable.INBOX: "verdict <> 'rejected'",
    RetainedTable.DEAD_LETTERS: "verdict = 'rejected'",
}
# A message whose events raised or joined an alarm still active is kept past its
# retention: an operator's acknowledgement tells the device "handled" for the
# message that raised the alarm (raising_message finds it here).
_STILL_NEEDED = (
    "EXISTS (SELECT 1 FROM jsonb_array_elements(coalesce(i.events, '[]'::jsonb)) e "
    "JOIN alarms a ON a.id = e->>'alarm_id' WHERE a.state <> 'resolved')"
)


def prune_sql(table: RetainedTable) -> str:
    """Delete the oldest rows past retention (parameters: before, limit)."""
    return (
        "DELETE FROM inbox WHERE seq IN (SELECT i.seq FROM inbox i "
        f"WHERE i.{_WHICH[table]} AND i.received_at < $1 AND NOT {_STILL_NEEDED} "
        "ORDER BY i.received_at LIMIT $2)"
    )


def oldest_sql(table: RetainedTable) -> str:
    return f"SELECT received_at FROM inbox WHERE {_WHICH[table]} ORDER BY received_at LIMIT 1"


# --- moves -------------------------------------------------------------------


async def check_moves(
    conn: Any, devices: Sequence[Device], existing_in: frozenset[str] | None
) -> None:
    """SQLite's check_moves (store/sqlite/device_moves.py) inside the registry write.

    The device rows are locked (FOR UPDATE) and the caller holds the registry's
    advisory lock, so no second registration of a new id and no alarm's commit
    (which updates the same device rows first) comes between this check and the write.
    """
    ids = [d.id for d in devices]
    rows = await conn.fetch(
        "SELECT id, municipality FROM devices WHERE id = ANY($1::text[]) ORDER BY id FOR UPDATE",
        ids,
    )
    registered_in: dict[str, str] = {r[0]: r[1] for r in rows}
    if existing_in is not None:
        taken = [i for i in ids if i in registered_in and registered_in[i] not in existing_in]
        if taken:
            raise IdTakenError(taken)
    moving = [d.id for d in devices if registered_in.get(d.id, d.municipality) != d.municipality]
    open_alarms: dict[str, list[str]] = {}
    if moving:
        for device_id, alarm_id in await conn.fetch(
            "SELECT device_id, id FROM alarms WHERE device_id = ANY($1::text[]) "
            "AND state <> 'resolved' ORDER BY raised_at, id",
            moving,
        ):
            open_alarms.setdefault(device_id, []).append(alarm_id)
    refused = refused_moves(devices, registered_in, open_alarms)
    if refused:
        raise MoveRefusedError(refused)


async def check_bridges(
    conn: Any,
    devices: Sequence[Device],
    now: datetime,
    audit: Sequence[AuditEntry],
    *,
    may_assign: bool,
) -> None:
    """SQLite's check_bridges (store/sqlite/device_moves.py) inside the registry write.

    Every write of a device's bridge or municipality holds the registry's advisory
    lock, so two registrations on one new bridge from two municipalities cannot
    both find it free.
    """
    bridged = [d for d in devices if d.bridge is not None]
    if not bridged:
        return
    bridges = sorted({d.bridge for d in bridged if d.bridge is not None})
    rows = await conn.fetch(
        "SELECT id, bridge, municipality FROM devices "
        "WHERE id = ANY($1::text[]) OR bridge = ANY($2::text[])",
        [d.id for d in bridged],
        bridges,
    )
    ids = {d.id for d in bridged}
    stored = {r[0]: (r[1], r[2]) for r in rows if r[0] in ids}
    on_bridges = [(r[0], r[1], r[2]) for r in rows if r[1] in bridges]
    assigned = await assigned_bridges(conn, bridges)
    verdict = judge_bridges(bridged, stored, on_bridges, assigned, may_assign=may_assign)
    refuse_bridges(verdict)
    if verdict.assign:
        await record_assignments(conn, verdict.assign, now, audit[0] if audit else None)


async def credentials_set_elsewhere(conn: Any, ids: Sequence[str]) -> list[str]:
    """SQLite's credentials_set_elsewhere (store/sqlite/device_moves.py), after the write."""
    sql = CREDENTIALS_SET_ELSEWHERE.format(ids="SELECT unnest($1::text[])")
    return [r[0] for r in await conn.fetch(sql, list(ids))]


# --- supervision's history ---------------------------------------------------

_LAST_HEARD = "SELECT id, coalesce(last_seen_at, registered_at) FROM devices WHERE active"
# supervise.py gives each `dose.overdue` the msg_id "dose:<scheduled, ISO 8601>".
_MISSED = (
    "SELECT max(substr(t.detail->>'msg_id', 6)) FROM timeline t "
    "JOIN alarms a ON a.id = t.alarm_id "
    "WHERE a.device_id = $1 AND t.detail->>'msg_id' LIKE 'dose:%'"
)
_TAKEN = (
    "SELECT events FROM inbox WHERE device_id = $1 AND received_at >= $2 "
    """AND events @> '[{"type": "dose.taken"}]' ORDER BY seq"""
)


async def dose_history_of(
    conn: Any, device_id: str, now: datetime, lookback: timedelta
) -> DoseHistory:
    since = now - lookback
    registered = await conn.fetchval("SELECT registered_at FROM devices WHERE id = $1", device_id)
    if registered is not None:
        since = max(since, registered)
    missed = await conn.fetchval(_MISSED, device_id)
    if missed:
        since = max(since, datetime.fromisoformat(missed))
    since = min(since, now)
    taken: list[datetime] = []
    for (events,) in await conn.fetch(_TAKEN, device_id, since):
        taken.extend(
            datetime.fromisoformat(e["ts"])
            for e in orjson.loads(events)
            if e.get("type") == "dose.taken" and "ts" in e
        )
    return DoseHistory(since, tuple(sorted(t for t in taken if t > since)))


class PostgresHistory:
    """:class:`~alarmhub.store.ports.SupervisionHistory` on the store's pool: read once at start."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def last_heard(self) -> dict[str, datetime]:
        async with connection(self._pool) as conn:
            return {r[0]: r[1] for r in await conn.fetch(_LAST_HEARD)}

    async def dose_history(
        self, device_ids: list[str], now: datetime, lookback: timedelta
    ) -> dict[str, DoseHistory]:
        async with connection(self._pool) as conn:
            return {d: await dose_history_of(conn, d, now, lookback) for d in device_ids}


async def last_received(pool: asyncpg.Pool) -> datetime | None:
    """When the newest inbox row arrived (None for an empty inbox)."""
    async with connection(pool) as conn:
        at: datetime | None = await conn.fetchval(
            "SELECT received_at FROM inbox ORDER BY seq DESC LIMIT 1"
        )
    return at


__all__ = [
    "PostgresHistory",
    "check_moves",
    "dose_history_of",
    "last_received",
    "oldest_sql",
    "prune_sql",
]
