"""`Alarm.trigger_ts`, the device time of an alarm's newest trigger, in both stores.

A clearing event from before it (a buffered GPS fix delivered late) must not clear
the alarm (core/judge.py clear): after a restart, or read by another instance, the
alarm must still know it, to the microsecond, apart from raised_at (receipt time).
"""

from __future__ import annotations

import sqlite3
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

from alarmhub.core.model import Alarm, AlarmState
from alarmhub.store.sqlite.schema import MIGRATIONS
from alarmhub.store.sqlite.store import SqliteStore
from tests.store.conftest import OpenedStore
from tests.store.test_store_contract import T0, alarm, new_alarm_batch, registered

# Taken on the device 93.000123 s before it was received: a buffered fix.
TAKEN = T0 - timedelta(seconds=93, microseconds=123)


async def test_an_alarm_keeps_its_triggers_device_time_through_every_read(
    opened: OpenedStore,
) -> None:
    store = opened.store
    await registered(opened)
    a = alarm(trigger_ts=TAKEN)
    batch = new_alarm_batch()
    await store.commit_batch(replace(batch, alarms={a.id: a}), {})

    stored = replace(a, rev=1)
    assert await store.get_alarm("a-1") == stored
    assert await store.load_active_alarms() == [stored]
    assert await store.list_alarms() == [stored]
    assert await store.get_alarms(["a-1"]) == [stored]
    assert stored.raised_at == T0  # unchanged: the receipt time of the first trigger

    # A re-trigger moves it; an operator's action keeps it.
    later = TAKEN + timedelta(minutes=5)
    acked = replace(stored, state=AlarmState.ACKNOWLEDGED, acknowledged_by="ola", trigger_ts=later)
    await store.save_alarms([acked], [], audit=())
    assert (await store.get_alarm("a-1")) == replace(acked, rev=2)


async def test_an_alarm_without_one_reads_back_none(opened: OpenedStore) -> None:
    store = opened.store
    await registered(opened)
    await store.commit_batch(new_alarm_batch(), {})
    got = await store.get_alarm("a-1")
    assert got is not None
    assert got.trigger_ts is None


async def test_an_alarm_stored_before_the_column_reads_back_none(tmp_path: Path) -> None:
    """A SQLite file of the version before: migrated, its open alarm has no trigger time
    (and so is cleared as before: core/judge.py checks only a known one)."""
    db = tmp_path / "old.db"
    before = next(i for i, m in enumerate(MIGRATIONS) if "trigger_ts" in m)
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE schema_version (version INTEGER)")
    for version, script in enumerate(MIGRATIONS[:before], start=1):
        conn.executescript(script)
        conn.execute("INSERT INTO schema_version VALUES (?)", (version,))
    at = T0.isoformat(timespec="microseconds")
    conn.execute(
        "INSERT INTO alarms (id, device_id, municipality, kind, priority, state, raised_at, "
        "last_seen_at) VALUES ('a-old', 'gps-1', '0301', 'left_safe_zone', 2, 'open', ?, ?)",
        (at, at),
    )
    conn.commit()
    conn.close()
    store = await SqliteStore.open(db)
    try:
        [old] = await store.load_active_alarms()
    finally:
        await store.close()
    assert isinstance(old, Alarm)
    assert (old.id, old.trigger_ts, old.raised_at) == ("a-old", None, T0)
