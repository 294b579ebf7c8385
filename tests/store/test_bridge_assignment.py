"""A new Zigbee2MQTT bridge is assigned to its municipality by a system admin.

Before, the first device registered on a bridge fixed its municipality: a
municipality admin of 0301 could register an id on the new bridge a care home of
4601 was about to set up, after which 4601's own registrations on it were refused
(`bridge_taken`) and the devices that bridge pairs reported into 0301's rules.
Now a bridge without devices takes a municipality admin's first device only if a
system admin assigned it to that municipality (`alarmhub bridges assign`); a
system admin's own registration (the CLI) assigns it. Checked and recorded in the
registry write's transaction, the assignment audited with it, on both stores.
"""

from __future__ import annotations

import sqlite3
from dataclasses import replace
from datetime import UTC, datetime

import asyncpg
import pytest

from alarmhub.core.bridges import judge_bridges
from alarmhub.core.model import Device, DeviceKind
from alarmhub.core.people import AuditEntry
from alarmhub.store.errors import BridgeInUseError, BridgeTakenError, BridgeUnassignedError
from alarmhub.store.postgres.schema import MIGRATIONS as PG_MIGRATIONS
from alarmhub.store.sqlite.schema import MIGRATIONS as SQLITE_MIGRATIONS
from tests.store.conftest import OpenedStore

T0 = datetime(2026, 12, 6, 10, 0, tzinfo=UTC)
NEW = "z2m-4601-care"
BERGEN = Device("0xa4c1380000000201", DeviceKind.SAFETY_ALARM, "4601", bridge=NEW)
CLAIM = Device("0xa4c1380000000202", DeviceKind.SAFETY_ALARM, "0301", bridge=NEW)


def _audit(device: Device, actor: str = "madm") -> list[AuditEntry]:
    return [AuditEntry(actor, "device.registered", T0, device_id=device.id)]


# --- the pure decision -----------------------------------------------------------------


def _d(device_id: str, municipality: str, bridge: str = "b") -> Device:
    return Device(device_id, DeviceKind.DOOR_SENSOR, municipality, bridge=bridge)


@pytest.mark.parametrize(
    ("written", "stored", "on_bridge", "assigned", "may_assign", "verdict"),
    [
        # A new, unassigned bridge: a municipality admin is told who must assign it...
        ([_d("x", "0301")], {}, [], {}, False, ([], ["x"], {})),
        # ...a system admin's registration assigns it.
        ([_d("x", "0301")], {}, [], {}, True, ([], [], {"b": (None, "0301")})),
        # Assigned to the writer's municipality: the first device is welcome.
        ([_d("x", "4601")], {}, [], {"b": "4601"}, False, ([], [], {})),
        # Assigned to another: taken, even for a system admin (reassign it first).
        ([_d("x", "0301")], {}, [], {"b": "4601"}, False, ([("x", ("4601",))], [], {})),
        ([_d("x", "0301")], {}, [], {"b": "4601"}, True, ([("x", ("4601",))], [], {})),
        # A bridge with devices is theirs, as before (a legacy bridge was never assigned).
        ([_d("x", "0301")], {}, [("y", "b", "0301")], {}, False, ([], [], {"b": (None, "0301")})),
        ([_d("x", "4601")], {}, [("y", "b", "0301")], {"b": "0301"}, False,
         ([("x", ("0301",))], [], {})),
        # Every device of a bridge moved together: the assignment follows them.
        ([_d("x", "4601"), _d("y", "4601")], {"x": ("b", "0301"), "y": ("b", "0301")},
         [("x", "b", "0301"), ("y", "b", "0301")], {"b": "0301"}, False,
         ([], [], {"b": ("0301", "4601")})),
        # An edit that changes neither bridge nor municipality checks nothing.
        ([_d("x", "0301")], {"x": ("b", "0301")}, [("x", "b", "0301")], {}, False,
         ([], [], {})),
    ],
)  # fmt: skip
def test_judge_bridges(
    written: list[Device],
    stored: dict[str, tuple[str | None, str]],
    on_bridge: list[tuple[str, str, str]],
    assigned: dict[str, str],
    may_assign: bool,
    verdict: tuple[list[tuple[str, tuple[str, ...]]], list[str], dict[str, object]],
) -> None:
    found = judge_bridges(written, stored, on_bridge, assigned, may_assign=may_assign)
    taken = [(t.device_id, t.others) for t in found.taken]
    assert (taken, [u.device_id for u in found.unassigned], found.assign) == verdict


def test_the_unassigned_message_says_who_must_do_what() -> None:
    found = judge_bridges([CLAIM], {}, [], {}, may_assign=False)
    [message] = [u.message() for u in found.unassigned]
    assert "bridge z2m-4601-care is not assigned to a municipality" in message
    assert "a system admin assigns it with `alarmhub bridges assign z2m-4601-care" in message


# --- in each store ---------------------------------------------------------------------


async def test_a_new_bridge_cannot_be_claimed_by_another_municipality(
    opened: OpenedStore,
) -> None:
    store = opened.store
    # Unassigned: 0301's admin is refused, and nothing of the write is kept.
    with pytest.raises(BridgeUnassignedError) as refused:
        await store.register_devices([CLAIM], T0, audit=_audit(CLAIM))
    assert [u.bridge for u in refused.value.unassigned] == [NEW]
    assert await opened.count("SELECT count(*) FROM devices") == 0
    assert await opened.count("SELECT count(*) FROM audit") == 0

    # The system admin assigns it to 4601, audited in the same transaction.
    assert await store.assign_bridge(NEW, "4601", T0, actor="root") is None
    rows = await opened.rows("SELECT actor, action, municipality FROM audit")
    assert rows == [("root", "bridge.assigned", "4601")]

    # 0301 is still refused, as for any other municipality's bridge; 4601 registers.
    with pytest.raises(BridgeTakenError):
        await store.register_devices([CLAIM], T0, audit=_audit(CLAIM))
    await store.register_devices([BERGEN], T0, audit=_audit(BERGEN))
    assert [(d.municipality, d.bridge) for d in await store.get_devices([BERGEN.id])] == [
        ("4601", NEW)
    ]
    assert await opened.count("SELECT count(*) FROM devices") == 1


async def test_a_system_admin_s_registration_assigns_the_bridge_it_opens(
    opened: OpenedStore,
) -> None:
    store = opened.store
    await store.register_devices([BERGEN], T0, audit=_audit(BERGEN, "root"), assign_bridges=True)
    assert await opened.rows("SELECT id, municipality, assigned_by FROM bridges") == [
        (NEW, "4601", "root")
    ]
    assert await opened.count("SELECT count(*) FROM audit WHERE action = 'bridge.assigned'") == 1
    # The bridge has devices now: reassigning it elsewhere is refused, naming where they are.
    with pytest.raises(BridgeInUseError) as in_use:
        await store.assign_bridge(NEW, "0301", T0, actor="root")
    assert in_use.value.municipalities == ("4601",)
    assert await store.assign_bridge(NEW, "4601", T0, actor="root") == "4601"  # no change
    assert await opened.count("SELECT count(*) FROM audit WHERE action = 'bridge.assigned'") == 1


async def test_the_assignment_follows_a_bridge_whose_devices_all_move(
    opened: OpenedStore,
) -> None:
    store = opened.store
    await store.assign_bridge(NEW, "4601", T0, actor="root")
    await store.register_devices([BERGEN], T0, audit=_audit(BERGEN))
    moved = replace(BERGEN, municipality="0301")
    await store.register_devices([moved], T0, audit=_audit(moved))  # its only device
    assert await opened.rows("SELECT municipality FROM bridges WHERE id = ?", NEW) == [("0301",)]
    rows = await opened.rows(
        "SELECT municipality FROM audit WHERE action = 'bridge.assigned' ORDER BY id"
    )
    assert rows == [("4601",), ("0301",)]


async def test_the_migration_assigns_each_bridge_its_devices_municipality(
    opened: OpenedStore,
) -> None:
    """Existing bridges are assigned where their devices are; a bridge shared from
    before the check stays unassigned, as documented (no device may be added)."""
    store = opened.store
    others = [
        Device("0xa4c1380000000203", DeviceKind.DOOR_SENSOR, "4601", bridge=NEW),
        Device("0xa4c1380000000204", DeviceKind.DOOR_SENSOR, "0301", bridge="z2m-0301-a"),
        Device("0xa4c1380000000205", DeviceKind.DOOR_SENSOR, "4601", bridge="z2m-0301-a"),
    ]
    await store.register_devices(others[:2], T0, audit=[], assign_bridges=True)
    await store.register_devices(
        [replace(others[2], bridge="z2m-4601-b")], T0, audit=[], assign_bridges=True
    )
    shared = "UPDATE devices SET bridge = 'z2m-0301-a' WHERE id = '0xa4c1380000000205'"
    if opened.path is not None:
        conn = sqlite3.connect(opened.path)
        try:
            conn.executescript(f"DROP TABLE bridges; {shared};")
            conn.executescript(SQLITE_MIGRATIONS[20 - 1])  # migration 20
        finally:
            conn.close()
    else:
        pg = await asyncpg.connect(opened.url)
        try:
            await pg.execute(f"DROP TABLE bridges; {shared};")
            await pg.execute(PG_MIGRATIONS[9 - 1])  # migration 9
        finally:
            await pg.close()
    rows = await opened.rows("SELECT id, municipality, assigned_by FROM bridges ORDER BY id")
    assert rows == [(NEW, "4601", "migration")]
    [listed] = await store.list_bridges()
    assert (listed["id"], listed["municipality"], listed["assigned_by"]) == (
        NEW,
        "4601",
        "migration",
    )
    assert listed["assigned_at"].startswith("2026-12-06T10:00:00")  # its first device's
    # The shared bridge gains no device, by either municipality's admin.
    late = Device("0xa4c1380000000206", DeviceKind.DOOR_SENSOR, "0301", bridge="z2m-0301-a")
    with pytest.raises(BridgeTakenError):
        await store.register_devices([late], T0, audit=[])
