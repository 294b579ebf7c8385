"""What supervision reads back from the store at start (issue 12 items 15, 17).

A restart must not make alarmhub forget how long a device has been silent: the
last-heard time is read back from `devices.last_seen_at` (written with every
batch), or, for a device never heard, its registration time, so a device that
never sent anything is supervised from when it was registered, not from each
start. Read on a connection of its own, once, before ingest starts.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import aiosqlite
import orjson

from alarmhub.store.accounts import ts
from alarmhub.store.ports import DoseHistory
from alarmhub.store.sqlite.refusals import refusals_as_store_errors

_LAST_HEARD = "SELECT id, coalesce(last_seen_at, registered_at) FROM devices WHERE active = 1"


async def load_last_heard(path: Path) -> dict[str, datetime]:
    """Device id -> when it was last heard, or registered if never heard."""
    async with aiosqlite.connect(path) as conn, conn.execute(_LAST_HEARD) as cur:
        return {row[0]: datetime.fromisoformat(row[1]) for row in await cur.fetchall()}


# The dose alarmhub reported missed is in the raising (or repeating) timeline entry:
# supervise.py gives each `dose.overdue` the msg_id "dose:<scheduled, ISO 8601>".
_MISSED = (
    "SELECT a.device_id, max(substr(json_extract(t.detail, '$.msg_id'), 6)) "
    "FROM timeline t JOIN alarms a ON a.id = t.alarm_id "
    "WHERE a.device_id = ? AND json_extract(t.detail, '$.msg_id') LIKE 'dose:%'"
)
_TAKEN = (
    "SELECT events FROM inbox WHERE device_id = ? AND received_at >= ? "
    "AND events LIKE '%dose.taken%' ORDER BY seq"
)
_REGISTERED = "SELECT registered_at FROM devices WHERE id = ?"


async def load_dose_history(
    path: Path, device_ids: list[str], now: datetime, lookback: timedelta
) -> dict[str, DoseHistory]:
    """Per dispenser, where its doses stand: read once at start (issue 12 item 17)."""
    out: dict[str, DoseHistory] = {}
    async with aiosqlite.connect(path) as conn:
        for device_id in device_ids:
            since = now - lookback
            async with conn.execute(_REGISTERED, (device_id,)) as cur:
                row = await cur.fetchone()
            if row is not None and row[0]:
                since = max(since, datetime.fromisoformat(row[0]))
            async with conn.execute(_MISSED, (device_id,)) as cur:
                row = await cur.fetchone()
            if row is not None and row[1]:
                since = max(since, datetime.fromisoformat(row[1]))
            since = min(since, now)
            taken: list[datetime] = []
            async with conn.execute(_TAKEN, (device_id, ts(since))) as cur:
                for (events,) in await cur.fetchall():
                    taken.extend(
                        datetime.fromisoformat(e["ts"])
                        for e in orjson.loads(events)
                        if e.get("type") == "dose.taken" and "ts" in e
                    )
            out[device_id] = DoseHistory(since, tuple(sorted(t for t in taken if t > since)))
    return out


@refusals_as_store_errors
class SqliteHistory:
    """:class:`~alarmhub.store.ports.SupervisionHistory` on the database file.

    Each read opens a connection of its own, as the functions above always did:
    read once at each owner's term's start, before ingest, never on the writer's
    connection. A refusal is a StoreError, which the term's start waits out.
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    async def last_heard(self) -> dict[str, datetime]:
        return await load_last_heard(self.path)

    async def dose_history(
        self, device_ids: list[str], now: datetime, lookback: timedelta
    ) -> dict[str, DoseHistory]:
        return await load_dose_history(self.path, device_ids, now, lookback)
