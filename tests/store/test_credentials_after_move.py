"""A SCAIP device's SIP credentials after a move to another municipality, on both stores.

They keep working: the device itself still holds the password, and refusing it
would refuse the moved resident's genuine alarms. But whoever in the old
municipality knows the password could then send alarms and resets as the device
into the new municipality's queue, so the move says so (register_devices returns
the ids), the device listing shows `set_before_move` until the new municipality
sets them again, and only the new municipality can set them.
"""

from __future__ import annotations

import sqlite3
from dataclasses import replace
from datetime import UTC, datetime

import asyncpg

from alarmhub.core.digest import credentials_for
from alarmhub.core.model import Device, DeviceKind
from alarmhub.core.people import AuditEntry, Role
from alarmhub.core.tenancy import Scope
from alarmhub.store.ports import Directory
from alarmhub.store.postgres.directory import PostgresDirectory
from alarmhub.store.postgres.schema import MIGRATIONS as PG_MIGRATIONS
from alarmhub.store.postgres.store import PostgresStore
from alarmhub.store.sqlite.directory import SqliteDirectory
from alarmhub.store.sqlite.schema import MIGRATIONS as SQLITE_MIGRATIONS
from tests.store.conftest import OpenedStore

T0 = datetime(2026, 12, 6, 10, 0, tzinfo=UTC)
CID = "4790012345"
DEVICE = Device(CID, DeviceKind.SAFETY_ALARM, "0301", profile="scaip")
OSLO = Scope("madm0301", Role.MUNICIPALITY_ADMIN, frozenset({"0301"}))
BERGEN = Scope("madm4601", Role.MUNICIPALITY_ADMIN, frozenset({"4601"}))
AUDIT = [AuditEntry("tester", "device.changed", T0, device_id=CID)]


def _directory(opened: OpenedStore) -> Directory:
    if opened.path is not None:
        return SqliteDirectory(opened.path)
    assert isinstance(opened.store, PostgresStore)
    return PostgresDirectory(opened.store.pool)


async def test_credentials_survive_a_move_flagged_until_the_new_municipality_sets_them(
    opened: OpenedStore,
) -> None:
    store, directory = opened.store, _directory(opened)
    assert await store.register_devices([DEVICE], T0, audit=AUDIT) == []
    old = credentials_for(CID, "alarmhub", "set in Oslo, known there")
    assert await directory.set_device_credentials(OSLO, old, T0, [])
    assert (await directory.get_device(OSLO, CID) or {})["sip_credentials"] == "set"
    # Written again where it is: nothing to say.
    assert await store.register_devices([DEVICE], T0, audit=AUDIT) == []

    moved = replace(DEVICE, municipality="4601")
    assert await store.register_devices([moved], T0, audit=AUDIT) == [CID]
    # Still accepted, so the moved device's genuine alarms are not refused...
    assert await directory.device_credentials(CID) == old
    # ...but shown to the new municipality as set before the move, and said again on
    # every write until they are set anew.
    assert (await directory.get_device(BERGEN, CID) or {})["sip_credentials"] == "set_before_move"
    [listed] = await store.list_devices("4601")
    assert listed["sip_credentials"] == "set_before_move"
    assert await store.register_devices([moved], T0, audit=AUDIT) == [CID]

    # The old municipality can no longer set (rotate) them; the new one can.
    assert not await directory.set_device_credentials(OSLO, old, T0, [])
    new = credentials_for(CID, "alarmhub", "set in Bergen")
    assert await directory.set_device_credentials(BERGEN, new, T0, [])
    assert await directory.device_credentials(CID) == new
    assert (await directory.get_device(BERGEN, CID) or {})["sip_credentials"] == "set"
    assert await store.register_devices([moved], T0, audit=AUDIT) == []
    assert (await directory.get_device(BERGEN, "no-such-device")) is None


async def test_a_device_without_credentials_has_none_listed(opened: OpenedStore) -> None:
    await opened.store.register_devices([DEVICE], T0, audit=AUDIT)
    [listed] = await opened.store.list_devices("0301")
    assert listed["sip_credentials"] is None
    assert await opened.store.register_devices([replace(DEVICE, municipality="4601")], T0,
                                               audit=AUDIT) == []  # fmt: skip


async def test_the_migration_takes_the_device_s_municipality_for_credentials_set_before(
    opened: OpenedStore,
) -> None:
    """Credentials stored before the column existed count as set where the device is."""
    await opened.store.register_devices([DEVICE], T0, audit=AUDIT)
    assert await _directory(opened).set_device_credentials(
        OSLO, credentials_for(CID, "alarmhub", "from before"), T0, []
    )
    if opened.path is not None:
        conn = sqlite3.connect(opened.path)
        try:
            conn.execute("ALTER TABLE device_credentials DROP COLUMN municipality")
            conn.executescript(SQLITE_MIGRATIONS[18 - 1])  # migration 18, not the last
        finally:
            conn.close()
    else:
        pg = await asyncpg.connect(opened.url)
        try:
            await pg.execute("ALTER TABLE device_credentials DROP COLUMN municipality")
            await pg.execute(PG_MIGRATIONS[7 - 1])  # migration 7, not the last
        finally:
            await pg.close()
    [listed] = await opened.store.list_devices("0301")
    assert listed["sip_credentials"] == "set"
