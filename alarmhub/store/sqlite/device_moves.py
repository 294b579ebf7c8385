"""The store's half of refusing a move (core/moves.py) and a bridge shared by two
municipalities (core/bridges.py): read, inside the registry write's own transaction,
where each device is, which of its alarms are open and who else is on its bridge.

Read in the same BEGIN IMMEDIATE transaction as the write, so no alarm can be
committed between the check and the move, by the daemon or by another CLI, and no
other registration can put a device on the same bridge meanwhile.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import aiosqlite

from alarmhub.core.bridges import judge_bridges
from alarmhub.core.model import Device
from alarmhub.core.moves import refused_moves
from alarmhub.core.people import AuditEntry
from alarmhub.store.columns import CREDENTIALS_SET_ELSEWHERE
from alarmhub.store.errors import (
    IdTakenError,
    MoveRefusedError,
    refuse_bridges,
)
from alarmhub.store.sqlite.bridge_rows import assigned_bridges, record_assignments

__all__ = [
    "IdTakenError",
    "MoveRefusedError",
    "check_bridges",
    "check_moves",
    "credentials_set_elsewhere",
]

_CHUNK = 500


async def check_moves(
    conn: aiosqlite.Connection,
    devices: Sequence[Device],
    existing_in: frozenset[str] | None = None,
) -> None:
    """Raise :class:`MoveRefusedError` if any device would move with open alarms.

    With `existing_in`, raise :class:`IdTakenError` first for any id already
    registered in a municipality outside it (frozenset(): every id must be new).
    Checked here, inside the write's BEGIN IMMEDIATE, so two registrations of
    one new id cannot both pass the check and then both write.
    """
    registered_in: dict[str, str] = {}
    open_alarms: dict[str, list[str]] = {}
    ids = [d.id for d in devices]
    for i in range(0, len(ids), _CHUNK):
        chunk = ids[i : i + _CHUNK]
        marks = ",".join("?" * len(chunk))
        sql = f"SELECT id, municipality FROM devices WHERE id IN ({marks})"
        async with conn.execute(sql, chunk) as cur:
            registered_in.update({r[0]: r[1] async for r in cur})
    if existing_in is not None:
        taken = [i for i in ids if i in registered_in and registered_in[i] not in existing_in]
        if taken:
            raise IdTakenError(taken)
    moving = [d.id for d in devices if registered_in.get(d.id, d.municipality) != d.municipality]
    for i in range(0, len(moving), _CHUNK):
        chunk = moving[i : i + _CHUNK]
        marks = ",".join("?" * len(chunk))
        sql = (
            f"SELECT device_id, id FROM alarms WHERE device_id IN ({marks}) "
            "AND state != 'resolved' ORDER BY raised_at, id"
        )
        async with conn.execute(sql, chunk) as cur:
            async for device_id, alarm_id in cur:
                open_alarms.setdefault(device_id, []).append(alarm_id)
    refused = refused_moves(devices, registered_in, open_alarms)
    if refused:
        raise MoveRefusedError(refused)


async def check_bridges(
    conn: aiosqlite.Connection,
    devices: Sequence[Device],
    now: datetime,
    audit: Sequence[AuditEntry],
    *,
    may_assign: bool,
) -> None:
    """Raise :class:`BridgeTakenError` if the write would put a bridge in two municipalities,
    :class:`BridgeUnassignedError` if it would open a bridge no system admin assigned
    (unless `may_assign`); else record the assignments it makes, audited as `audit[0]`'s.

    Inside the write's BEGIN IMMEDIATE: two registrations on one new bridge from
    two municipalities cannot both see it free. No index on `bridge`: a scan of the
    registry per 500 devices written, bearable for the registry's size and rate.
    """
    stored: dict[str, tuple[str | None, str]] = {}
    on_bridges: list[tuple[str, str, str]] = []
    # The last row of an id is the one written (ON CONFLICT DO UPDATE in order).
    bridged = [d for d in {d.id: d for d in devices}.values() if d.bridge is not None]
    ids = [d.id for d in bridged]
    bridges = sorted({d.bridge for d in bridged if d.bridge is not None})
    for i in range(0, len(ids), _CHUNK):
        chunk = ids[i : i + _CHUNK]
        marks = ",".join("?" * len(chunk))
        sql = f"SELECT id, bridge, municipality FROM devices WHERE id IN ({marks})"
        async with conn.execute(sql, chunk) as cur:
            stored.update({r[0]: (r[1], r[2]) async for r in cur})
    for i in range(0, len(bridges), _CHUNK):
        chunk = bridges[i : i + _CHUNK]
        sql = (
            "SELECT id, bridge, municipality FROM devices "
            f"WHERE bridge IN ({','.join('?' * len(chunk))})"
        )
        async with conn.execute(sql, chunk) as cur:
            on_bridges.extend([(r[0], r[1], r[2]) async for r in cur])
    assigned = await assigned_bridges(conn, bridges)
    verdict = judge_bridges(bridged, stored, on_bridges, assigned, may_assign=may_assign)
    refuse_bridges(verdict)
    if verdict.assign:
        await record_assignments(conn, verdict.assign, now, audit[0] if audit else None)


async def credentials_set_elsewhere(conn: aiosqlite.Connection, ids: Sequence[str]) -> list[str]:
    """Of `ids`, those whose SIP credentials were set in another municipality (after the write)."""
    found: list[str] = []
    unique = list(dict.fromkeys(ids))
    for i in range(0, len(unique), _CHUNK):
        chunk = unique[i : i + _CHUNK]
        sql = CREDENTIALS_SET_ELSEWHERE.format(ids=",".join("?" * len(chunk)))
        async with conn.execute(sql, chunk) as cur:
            found.extend([r[0] async for r in cur])
    return found
