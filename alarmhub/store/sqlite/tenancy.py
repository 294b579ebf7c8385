"""Every scoped read, in SQL: alarms, devices, dead letters, silences, report rows.

Each takes the caller's :class:`~alarmhub.core.tenancy.Scope` and filters by
municipality *in SQL*, so a handler cannot forget to: handlers never filter by
hand. A row of another municipality is simply not found, which the API answers
with 404 — the caller learns nothing about it. The rules of who may do what
are pure and live in core/tenancy.py; this module only turns them into WHERE.
"""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime
from typing import Any

from alarmhub.core.model import Alarm
from alarmhub.core.reports import ResponseRow
from alarmhub.core.suppress import Silence
from alarmhub.core.tenancy import AlarmFilter, DeviceFilter, Scope
from alarmhub.store.columns import (
    ALARM_COLUMNS,
    DEAD_LETTER_KEYS,
    DEVICE_LISTING,
    FIRST_ACKNOWLEDGED,
    SILENCE_KEYS,
)
from alarmhub.store.sqlite.accounts import (
    silence_from_row,
    ts,
)
from alarmhub.store.sqlite.rows import (
    alarm_from_row,
    device_dict,
    parse_ts,
)


def scope_where(scope: Scope, column: str = "municipality") -> tuple[str, list[Any]]:
    """An SQL condition (column names are constants, never input) and its parameters."""
    if scope.municipalities is None:
        return "1=1", []
    ms = sorted(scope.municipalities)
    if not ms:
        return "0=1", []
    return f"{column} IN ({','.join('?' * len(ms))})", ms


def _where(scope: Scope, column: str, extra: list[tuple[str, Any]]) -> tuple[str, list[Any]]:
    cond, params = scope_where(scope, column)
    parts = [cond]
    for clause, value in extra:
        parts.append(clause)
        params.append(value)
    return " AND ".join(parts), params


# --- alarms --------------------------------------------------------------------

_ALARM_SELECT = f"SELECT {', '.join(ALARM_COLUMNS)} FROM alarms"


def _alarm_where(scope: Scope, f: AlarmFilter) -> tuple[str, list[Any]]:
    """The filter's state, municipality and priority within the scope (not its cursor)."""
    extra: list[tuple[str, Any]] = []
    if f.state is not None:
        extra.append(("state = ?", f.state))
    if f.municipality is not None:
        extra.append(("municipality = ?", f.municipality))
    if f.priority is not None:
        extra.append(("priority = ?", f.priority))
    return _where(scope, "municipality", extra)


def list_alarms(conn: sqlite3.Connection, scope: Scope, f: AlarmFilter) -> list[Alarm]:
    """Most urgent first, then oldest first: the operators' queue order."""
    cond, params = _alarm_where(scope, f)
    if f.after is not None:
        cond += " AND (priority, raised_at, id) > (?, ?, ?)"
        params.extend(f.after)
    sql = f"{_ALARM_SELECT} WHERE {cond} ORDER BY priority, raised_at, id LIMIT ?"
    params.append(f.limit)
    return [alarm_from_row(r) for r in conn.execute(sql, params).fetchall()]


def count_alarms(conn: sqlite3.Connection, scope: Scope, f: AlarmFilter) -> int:
    """How many alarms the filter selects in all: its limit and cursor do not count."""
    cond, params = _alarm_where(scope, f)
    return int(conn.execute(f"SELECT COUNT(*) FROM alarms WHERE {cond}", params).fetchone()[0])


def get_alarm(conn: sqlite3.Connection, scope: Scope, alarm_id: str) -> Alarm | None:
    cond, params = _where(scope, "municipality", [("id = ?", alarm_id)])
    row = conn.execute(f"{_ALARM_SELECT} WHERE {cond}", params).fetchone()
    return alarm_from_row(row) if row else None


def timeline(conn: sqlite3.Connection, scope: Scope, alarm_id: str) -> list[dict[str, Any]]:
    cond, params = _where(scope, "a.municipality", [("t.alarm_id = ?", alarm_id)])
    rows = conn.execute(
        "SELECT t.at, t.type, t.actor, t.detail FROM timeline t "
        f"JOIN alarms a ON a.id = t.alarm_id WHERE {cond} ORDER BY t.id",
        params,
    ).fetchall()
    return [{"at": r[0], "type": r[1], "actor": r[2], "detail": json.loads(r[3])} for r in rows]


def recent_events(
    conn: sqlite3.Connection, scope: Scope, device_id: str, municipality: str, limit: int = 20
) -> list[dict[str, Any]]:
    """A device's latest messages, only those received while it belonged to `municipality`.

    A device moved between municipalities keeps its id; the inbox records the
    municipality of each message, so the old tenant's payloads stay out.
    """
    cond, params = _where(
        scope, "municipality", [("device_id = ?", device_id), ("municipality = ?", municipality)]
    )
    rows = conn.execute(
        "SELECT seq, received_at, msg_id, verdict, reason, events FROM inbox "
        f"WHERE {cond} ORDER BY seq DESC LIMIT ?",
        [*params, limit],
    ).fetchall()
    return [
        {
            "seq": r[0],
            "received_at": r[1],
            "msg_id": r[2],
            "verdict": r[3],
            "reason": r[4],
            "events": json.loads(r[5]) if r[5] else [],
        }
        for r in rows
    ]


# --- devices -------------------------------------------------------------------


def list_devices(
    conn: sqlite3.Connection, scope: Scope, municipality: str | None, include_inactive: bool
) -> list[dict[str, Any]]:
    """Every device in scope, unpaged: for the CSV import's check of the caller's own ids."""
    active = None if include_inactive else True
    return page_devices(conn, scope, DeviceFilter(municipality, active=active, limit=None))


def _like(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def page_devices(conn: sqlite3.Connection, scope: Scope, f: DeviceFilter) -> list[dict[str, Any]]:
    """Devices in scope in (municipality, id) order, at most `limit` after the cursor.

    The cursor only says where to start in that order; the scope's condition is
    applied as on every read, so a cursor naming another municipality's device
    skips ahead at most and never shows a row the caller could not see anyway.
    Keyset, not OFFSET: the index devices(municipality, id) finds the next page
    directly, however deep.
    """
    extra: list[tuple[str, Any]] = []
    if f.municipality is not None:
        extra.append(("municipality = ?", f.municipality))
    if f.active is not None:
        extra.append(("active = ?", int(f.active)))
    if f.kind is not None:
        extra.append(("kind = ?", f.kind))
    cond, params = _where(scope, "municipality", extra)
    if f.text:
        cond += " AND (id LIKE ? ESCAPE '\\' OR coalesce(label, '') LIKE ? ESCAPE '\\')"
        params += [_like(f.text), _like(f.text)]
    if f.after is not None:
        cond += " AND (municipality, id) > (?, ?)"
        params += list(f.after)
    sql = f"SELECT {DEVICE_LISTING} FROM devices WHERE {cond} ORDER BY municipality, id"
    if f.limit is not None:
        sql += " LIMIT ?"
        params.append(f.limit)
    return [device_dict(r) for r in conn.execute(sql, params).fetchall()]


def get_device(conn: sqlite3.Connection, scope: Scope, device_id: str) -> dict[str, Any] | None:
    cond, params = _where(scope, "municipality", [("id = ?", device_id)])
    row = conn.execute(f"SELECT {DEVICE_LISTING} FROM devices WHERE {cond}", params).fetchone()
    return device_dict(row) if row else None


# --- dead letters ----------------------------------------------------------------


def dead_letters(conn: sqlite3.Connection, scope: Scope, limit: int) -> list[dict[str, Any]]:
    """Rejected messages of known devices in scope; unknown devices' only for admins."""
    cond, params = _where(scope, "municipality", [("verdict = ?", "rejected")])
    rows = conn.execute(
        "SELECT seq, received_at, topic, device_id, municipality, msg_id, reason, detail "
        f"FROM inbox WHERE {cond} ORDER BY seq DESC LIMIT ?",
        [*params, limit],
    ).fetchall()
    return [dict(zip(DEAD_LETTER_KEYS, r, strict=True)) for r in rows]


# --- silences ----------------------------------------------------------------------


def list_silences(
    conn: sqlite3.Connection, scope: Scope, now: datetime, include_ended: bool
) -> list[Silence]:
    cond, params = _where(scope, "municipality", [])
    cond += " AND deleted_at IS NULL"
    if not include_ended:
        cond += " AND ends_at > ?"
        params.append(ts(now))
    rows = conn.execute(
        f"SELECT {', '.join(SILENCE_KEYS)} FROM silences WHERE {cond} ORDER BY starts_at DESC",
        params,
    ).fetchall()
    return [silence_from_row(r) for r in rows]


def get_silence(conn: sqlite3.Connection, scope: Scope, silence_id: str) -> Silence | None:
    cond, params = _where(scope, "municipality", [("id = ?", silence_id)])
    row = conn.execute(
        f"SELECT {', '.join(SILENCE_KEYS)} FROM silences WHERE {cond} AND deleted_at IS NULL",
        params,
    ).fetchone()
    return silence_from_row(row) if row else None


# --- report rows -----------------------------------------------------------------


def response_rows(
    conn: sqlite3.Connection,
    scope: Scope,
    municipality: str | None,
    since: datetime | None,
    until: datetime | None,
) -> list[ResponseRow]:
    """Alarms raised in [since, until) with their response times, for reports."""
    extra: list[tuple[str, Any]] = []
    if municipality is not None:
        extra.append(("municipality = ?", municipality))
    if since is not None:
        extra.append(("raised_at >= ?", ts(since)))
    if until is not None:
        extra.append(("raised_at < ?", ts(until)))
    cond, params = _where(scope, "municipality", extra)
    rows = conn.execute(
        f"SELECT kind, priority, raised_at, {FIRST_ACKNOWLEDGED}, on_site_at, resolved_at "
        f"FROM alarms WHERE {cond}",
        params,
    ).fetchall()
    out = []
    for r in rows:
        raised = parse_ts(r[2])
        assert raised is not None
        out.append(
            ResponseRow(r[0], int(r[1]), raised, parse_ts(r[3]), parse_ts(r[4]), parse_ts(r[5]))
        )
    return out
