"""Row shapes shared by the SQLite store's modules: alarms, timeline, times."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import orjson

from alarmhub.core.model import Alarm, AlarmState, Priority, TimelineEntry
from alarmhub.store.accounts import ts
from alarmhub.store.columns import ALARM_COLUMNS, DEVICE_KEYS, TIME_COLUMNS, alarm_values
from alarmhub.store.errors import StaleAlarmError

# A row is written at the revision after the one it was decided on (alarm_row),
# and only over that revision: a row another writer moved on is left alone, and
# upsert_alarms sees fewer rows changed than it wrote (Alarm.rev, StaleAlarmError).
UPSERT_ALARM = (
    f"INSERT INTO alarms ({', '.join(ALARM_COLUMNS)}) "
    f"VALUES ({', '.join('?' for _ in ALARM_COLUMNS)}) ON CONFLICT(id) DO UPDATE SET "
    + ", ".join(f"{c}=excluded.{c}" for c in ALARM_COLUMNS if c != "id")
    + " WHERE alarms.rev = excluded.rev - 1"
)


def device_dict(row: Sequence[Any]) -> dict[str, Any]:
    """A row of DEVICE_KEYS as the API and the CLI list it."""
    item = dict(zip(DEVICE_KEYS, row, strict=True))
    item["active"] = bool(item["active"])
    item["settings"] = orjson.loads(item["settings"] or "{}")
    return item


INSERT_TIMELINE = "INSERT INTO timeline (alarm_id, at, type, actor, detail) VALUES (?,?,?,?,?)"


def parse_ts(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value is not None else None


_TIME_INDEXES = tuple(i for i, name in enumerate(ALARM_COLUMNS) if name in TIME_COLUMNS)


def alarm_row(alarm: Alarm) -> tuple[Any, ...]:
    """The alarm as UPSERT_ALARM binds it (times as text), at the revision after its own."""
    out = alarm_values(alarm)
    for i in _TIME_INDEXES:
        if out[i] is not None:
            out[i] = ts(out[i])
    return tuple(out)


def upsert_alarms(conn: sqlite3.Connection, rows: list[tuple[Any, ...]]) -> None:
    """Write alarm rows made by alarm_row; StaleAlarmError if any had moved on.

    The caller's transaction is rolled back by its own error handling, so the
    batch is written whole or not at all.
    """
    if not rows:
        return
    # executemany sums the changes of every row; a refused update changes none.
    expect_written(conn.executemany(UPSERT_ALARM, rows).rowcount, [row[0] for row in rows])


def expect_written(changed: int, ids: list[str]) -> None:
    """StaleAlarmError unless every alarm row of `ids` was written."""
    if changed != len(ids):
        raise StaleAlarmError(ids)


def alarm_from_row(row: Sequence[Any]) -> Alarm:
    values = dict(zip(ALARM_COLUMNS, row, strict=True))
    for name in TIME_COLUMNS:
        values[name] = parse_ts(values[name])
    values["priority"] = Priority(values["priority"])
    values["state"] = AlarmState(values["state"])
    return Alarm(**values)


def timeline_row(entry: TimelineEntry) -> tuple[Any, ...]:
    return (
        entry.alarm_id,
        ts(entry.at),
        entry.type.value,
        entry.actor,
        orjson.dumps(entry.detail).decode(),
    )
