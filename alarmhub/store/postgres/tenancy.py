"""Every scoped read in PostgreSQL: alarms, devices, dead letters, silences, report rows.

The same reads as ``store/sqlite/tenancy.py``, with the same rule: each takes the
caller's :class:`~alarmhub.core.tenancy.Scope` and filters by municipality in
SQL, so a row of another municipality is simply not found (the API's 404) and a
handler cannot forget to filter. Rows come back in the shapes the SQLite store
gives, times in its text where it gives text (``sql.text_time``).
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import asyncpg

from alarmhub.core.model import Alarm, AlarmState, Priority
from alarmhub.core.reports import ResponseRow
from alarmhub.core.suppress import Silence
from alarmhub.core.tenancy import AlarmFilter, DeviceFilter, Scope
from alarmhub.store.accounts import ts
from alarmhub.store.columns import (
    ALARM_COLUMNS,
    DEAD_LETTER_KEYS,
    DEVICE_KEYS,
    DEVICE_LISTING,
    FIRST_ACKNOWLEDGED,
)
from alarmhub.store.postgres.accounts import SILENCE_SELECT, silence_from_record
from alarmhub.store.postgres.sql import Conn, Params, storable, text_time, where

# --- alarms --------------------------------------------------------------------

_ALARM_SELECT = f"SELECT {', '.join(ALARM_COLUMNS)} FROM alarms"
# raised_at as ts() prints it, for a cursor whose time is not in that form (below).
_RAISED_TEXT = (
    'to_char(raised_at AT TIME ZONE \'UTC\', \'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"\') COLLATE "C"'
)


def alarm_from_record(r: asyncpg.Record) -> Alarm:
    values = {c: r[c] for c in ALARM_COLUMNS}
    values["priority"] = Priority(values["priority"])
    values["state"] = AlarmState(values["state"])
    return Alarm(**values)


def _after(after: tuple[int, str, str], params: Params) -> str:
    """The queue's keyset cursor: rows after (priority, raised_at text, id).

    SQLite compares the cursor's time as text. A cursor this API made holds the
    time as ts() prints it, whose text order is time order: compare timestamps
    (the index serves it). Anything else a client sends is compared as text
    against ts()'s form of each row, as SQLite would: the same page, never an error.
    The priority is bound as bigint, as SQLite takes any 64-bit integer a client
    puts in a cursor (asyncpg would refuse one past int4 for an integer column).
    """
    priority, raised, alarm_id = after
    try:
        parsed: datetime | None = datetime.fromisoformat(raised)
    except ValueError:
        parsed = None
    if parsed is not None and parsed.tzinfo is not None and ts(parsed) == raised:
        row = f"{params.add(priority)}::bigint, {params.add(parsed)}, {params.add(alarm_id)}"
        return f'(priority, raised_at, id COLLATE "C") > ({row})'
    row = f"{params.add(priority)}::bigint, {params.add(raised)}::text, {params.add(alarm_id)}"
    return f'(priority, {_RAISED_TEXT}, id COLLATE "C") > ({row})'


def _alarm_where(scope: Scope, f: AlarmFilter, p: Params) -> str:
    """The filter's state, municipality and priority within the scope (not its cursor)."""
    extra: list[tuple[str, Any]] = []
    if f.state is not None:
        extra.append(("state = {}", f.state))
    if f.municipality is not None:
        extra.append(("municipality = {}", f.municipality))
    if f.priority is not None:
        extra.append(("priority = {}::bigint", f.priority))
    return where(scope, p, "municipality", extra)


async def list_alarms(conn: Conn, scope: Scope, f: AlarmFilter) -> list[Alarm]:
    """Most urgent first, then oldest first: the operators' queue order."""
    if not storable(f.state, f.municipality, *(f.after or ())):
        return []
    p = Params()
    cond = _alarm_where(scope, f, p)
    if f.after is not None:
        cond += " AND " + _after(f.after, p)
    sql = (
        f'{_ALARM_SELECT} WHERE {cond} ORDER BY priority, raised_at, id COLLATE "C" '
        f"LIMIT {p.add(f.limit)}"
    )
    return [alarm_from_record(r) for r in await conn.fetch(sql, *p.values)]


async def count_alarms(conn: Conn, scope: Scope, f: AlarmFilter) -> int:
    """How many alarms the filter selects in all: its limit and cursor do not count."""
    if not storable(f.state, f.municipality):
        return 0
    p = Params()
    cond = _alarm_where(scope, f, p)
    return int(await conn.fetchval(f"SELECT COUNT(*) FROM alarms WHERE {cond}", *p.values))


async def get_alarm(conn: Conn, scope: Scope, alarm_id: str) -> Alarm | None:
    if not storable(alarm_id):
        return None
    p = Params()
    cond = where(scope, p, "municipality", [("id = {}", alarm_id)])
    row = await conn.fetchrow(f"{_ALARM_SELECT} WHERE {cond}", *p.values)
    return alarm_from_record(row) if row else None


async def timeline(conn: Conn, scope: Scope, alarm_id: str) -> list[dict[str, Any]]:
    if not storable(alarm_id):
        return []
    p = Params()
    cond = where(scope, p, "a.municipality", [("t.alarm_id = {}", alarm_id)])
    rows = await conn.fetch(
        "SELECT t.at, t.type, t.actor, t.detail FROM timeline t "
        f"JOIN alarms a ON a.id = t.alarm_id WHERE {cond} ORDER BY t.id",
        *p.values,
    )
    return [
        {"at": text_time(r[0]), "type": r[1], "actor": r[2], "detail": json.loads(r[3])}
        for r in rows
    ]


async def recent_events(
    conn: Conn, scope: Scope, device_id: str, municipality: str, limit: int = 20
) -> list[dict[str, Any]]:
    """A device's latest messages, only those received while it belonged to `municipality`.

    A device moved between municipalities keeps its id; the inbox records the
    municipality of each message, so the old tenant's payloads stay out.
    """
    if not storable(device_id, municipality):
        return []
    p = Params()
    extra = [("device_id = {}", device_id), ("municipality = {}", municipality)]
    cond = where(scope, p, "municipality", extra)
    rows = await conn.fetch(
        "SELECT seq, received_at, msg_id, verdict, reason, events FROM inbox "
        f"WHERE {cond} ORDER BY seq DESC LIMIT {p.add(limit)}",
        *p.values,
    )
    return [
        {
            "seq": r[0],
            "received_at": text_time(r[1]),
            "msg_id": r[2],
            "verdict": r[3],
            "reason": r[4],
            "events": json.loads(r[5]) if r[5] else [],
        }
        for r in rows
    ]


# --- devices -------------------------------------------------------------------


def _device_dict(r: asyncpg.Record) -> dict[str, Any]:
    """A row of DEVICE_KEYS as the API and the CLI list it (store/sqlite/rows.py's shape)."""
    item = {k: r[k] for k in DEVICE_KEYS}
    item["settings"] = json.loads(item["settings"] or "{}")
    item["registered_at"] = text_time(item["registered_at"])
    item["last_seen_at"] = text_time(item["last_seen_at"])
    return item


def _like(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


async def page_devices(conn: Conn, scope: Scope, f: DeviceFilter) -> list[dict[str, Any]]:
    """Devices in scope in (municipality, id) byte order, at most `limit` after the cursor.

    As in SQLite: the cursor only says where to start, the scope applies as on
    every read (a cursor naming another municipality's device skips ahead at
    most), and the page is found by keyset, not OFFSET. The text search is
    ILIKE, SQLite's LIKE being case-blind for ASCII letters.
    """
    if not storable(f.municipality, f.kind, f.text, *(f.after or ())):
        return []
    extra: list[tuple[str, Any]] = []
    if f.municipality is not None:
        extra.append(("municipality = {}", f.municipality))
    if f.active is not None:
        extra.append(("active = {}", f.active))
    if f.kind is not None:
        extra.append(("kind = {}", f.kind))
    p = Params()
    cond = where(scope, p, "municipality", extra)
    if f.text:
        pattern = p.add(_like(f.text))
        cond += f" AND (id ILIKE {pattern} OR coalesce(label, '') ILIKE {pattern})"
    if f.after is not None:
        after = f"{p.add(f.after[0])}, {p.add(f.after[1])}"
        cond += f' AND (municipality COLLATE "C", id COLLATE "C") > ({after})'
    sql = (
        f"SELECT {DEVICE_LISTING} FROM devices WHERE {cond} "
        'ORDER BY municipality COLLATE "C", id COLLATE "C"'
    )
    if f.limit is not None:
        sql += f" LIMIT {p.add(f.limit)}"
    return [_device_dict(r) for r in await conn.fetch(sql, *p.values)]


async def get_device(conn: Conn, scope: Scope, device_id: str) -> dict[str, Any] | None:
    if not storable(device_id):
        return None
    p = Params()
    cond = where(scope, p, "municipality", [("id = {}", device_id)])
    row = await conn.fetchrow(f"SELECT {DEVICE_LISTING} FROM devices WHERE {cond}", *p.values)
    return _device_dict(row) if row else None


# --- dead letters ----------------------------------------------------------------


async def dead_letters(conn: Conn, scope: Scope, limit: int) -> list[dict[str, Any]]:
    """Rejected messages of known devices in scope; unknown devices' only for admins."""
    p = Params()
    cond = where(scope, p, "municipality", [("verdict = {}", "rejected")])
    rows = await conn.fetch(
        f"SELECT {', '.join(DEAD_LETTER_KEYS)} "
        f"FROM inbox WHERE {cond} ORDER BY seq DESC LIMIT {p.add(limit)}",
        *p.values,
    )
    out = []
    for r in rows:
        item = {k: r[k] for k in DEAD_LETTER_KEYS}
        item["received_at"] = text_time(item["received_at"])
        out.append(item)
    return out


# --- silences ----------------------------------------------------------------------


async def list_silences(
    conn: Conn, scope: Scope, now: datetime, include_ended: bool
) -> list[Silence]:
    p = Params()
    cond = where(scope, p, "municipality", []) + " AND deleted_at IS NULL"
    if not include_ended:
        cond += f" AND ends_at > {p.add(now)}"
    rows = await conn.fetch(f"{SILENCE_SELECT} WHERE {cond} ORDER BY starts_at DESC", *p.values)
    return [silence_from_record(r) for r in rows]


async def get_silence(conn: Conn, scope: Scope, silence_id: str) -> Silence | None:
    if not storable(silence_id):
        return None
    p = Params()
    cond = where(scope, p, "municipality", [("id = {}", silence_id)])
    row = await conn.fetchrow(f"{SILENCE_SELECT} WHERE {cond} AND deleted_at IS NULL", *p.values)
    return silence_from_record(row) if row else None


# --- report rows -----------------------------------------------------------------


async def response_rows(
    conn: Conn,
    scope: Scope,
    municipality: str | None,
    since: datetime | None,
    until: datetime | None,
) -> list[ResponseRow]:
    """Alarms raised in [since, until) with their response times, for reports."""
    if not storable(municipality):
        return []
    extra: list[tuple[str, Any]] = []
    if municipality is not None:
        extra.append(("municipality = {}", municipality))
    if since is not None:
        extra.append(("raised_at >= {}", since))
    if until is not None:
        extra.append(("raised_at < {}", until))
    p = Params()
    cond = where(scope, p, "municipality", extra)
    rows = await conn.fetch(
        f"SELECT kind, priority, raised_at, {FIRST_ACKNOWLEDGED}, on_site_at, resolved_at "
        f"FROM alarms WHERE {cond}",
        *p.values,
    )
    return [ResponseRow(r[0], int(r[1]), r[2], r[3], r[4], r[5]) for r in rows]
