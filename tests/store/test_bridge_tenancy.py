"""A Zigbee2MQTT bridge serves one municipality, checked inside the registry write.

A municipality admin could register a device id on another municipality's bridge:
that bridge's device's door, fall and SOS events then landed in the wrong queue.
The check reads the bridge's devices inside the write's transaction (BEGIN
IMMEDIATE in SQLite, the registry's advisory lock in PostgreSQL), so two
registrations on one new bridge from two municipalities cannot both succeed, even
from two processes (two stores here, each with its own connections).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from alarmhub.core.bridges import BridgeTaken, bridge_conflicts
from alarmhub.core.model import Device, DeviceKind
from alarmhub.core.people import AuditEntry
from alarmhub.store.errors import BridgeTakenError
from alarmhub.store.ports import AlarmStore
from alarmhub.store.postgres.store import PostgresStore
from alarmhub.store.sqlite.store import SqliteStore
from tests.store.conftest import OpenedStore

T0 = datetime(2026, 12, 6, 10, 0, tzinfo=UTC)
OSLO = Device("0xa4c1380000000105", DeviceKind.SAFETY_ALARM, "0301", bridge="z2m-0301-a")
DOOR = Device("0xa4c1380000000106", DeviceKind.DOOR_SENSOR, "0301", bridge="z2m-0301-a")


def _audit(device: Device) -> list[AuditEntry]:
    return [AuditEntry("tester", "device.registered", T0, device_id=device.id)]


# --- the pure decision -----------------------------------------------------------------


def _d(device_id: str, municipality: str, bridge: str | None = "b") -> Device:
    return Device(device_id, DeviceKind.DOOR_SENSOR, municipality, bridge=bridge)


@pytest.mark.parametrize(
    ("written", "stored", "on_bridge", "taken"),
    [
        # A new bridge: its first device fixes the municipality.
        ([_d("x", "0301")], {}, [], []),
        # Another device of the same municipality on it.
        ([_d("x", "0301")], {}, [("y", "b", "0301")], []),
        # Another municipality's bridge.
        ([_d("x", "4601")], {}, [("y", "b", "0301")], [("x", ("0301",))]),
        # Two municipalities in one write on one new bridge: both named.
        ([_d("x", "0301"), _d("y", "4601")], {}, [], [("x", ("4601",)), ("y", ("0301",))]),
        # A move that leaves the bridge's other devices behind.
        ([_d("x", "4601")], {"x": ("b", "0301")}, [("x", "b", "0301"), ("y", "b", "0301")],
         [("x", ("0301",))]),
        # The bridge's only device moves: the bridge goes with it.
        ([_d("x", "4601")], {"x": ("b", "0301")}, [("x", "b", "0301")], []),
        # Every device of the bridge moved together (one import).
        ([_d("x", "4601"), _d("y", "4601")], {"x": ("b", "0301"), "y": ("b", "0301")},
         [("x", "b", "0301"), ("y", "b", "0301")], []),
        # A move that changes the bridge too.
        ([_d("x", "4601", "c")], {"x": ("b", "0301")}, [], []),
        # A bridge shared from before this check: its devices can still be edited...
        ([_d("x", "0301")], {"x": ("b", "0301")}, [("x", "b", "0301"), ("y", "b", "4601")], []),
        # ...but it gains no device.
        ([_d("z", "0301")], {}, [("x", "b", "0301"), ("y", "b", "4601")], [("z", ("4601",))]),
        # No bridge: nothing to check.
        ([_d("x", "4601", None)], {}, [("y", "b", "0301")], []),
    ],
)  # fmt: skip
def test_bridge_conflicts(
    written: list[Device],
    stored: dict[str, tuple[str | None, str]],
    on_bridge: list[tuple[str, str, str]],
    taken: list[tuple[str, tuple[str, ...]]],
) -> None:
    found = bridge_conflicts(written, stored, on_bridge)
    assert [(t.device_id, t.others) for t in found] == taken


def test_the_message_says_what_to_do_and_not_whose_the_bridge_is() -> None:
    message = BridgeTaken("x", "z2m-0301-a", "4601", ("0301",)).message()
    assert "z2m-0301-a" in message
    assert "a bridge of 4601" in message
    assert message.count("0301") == 1  # only in the bridge's own name


# --- in each store ---------------------------------------------------------------------


async def test_a_device_on_another_municipality_s_bridge_is_refused(opened: OpenedStore) -> None:
    store = opened.store
    # A system admin's registration opens the new bridge (tests/store/test_bridge_assignment.py).
    await store.register_devices([OSLO], T0, audit=_audit(OSLO), assign_bridges=True)
    await store.register_devices([DOOR], T0, audit=_audit(DOOR))  # same municipality: fine
    bergen = Device("0xa4c1380000000107", DeviceKind.SAFETY_ALARM, "4601", bridge=OSLO.bridge)
    with pytest.raises(BridgeTakenError) as refused:
        await store.register_devices([bergen], T0, audit=_audit(bergen))
    assert [(t.device_id, t.others) for t in refused.value.taken] == [(bergen.id, ("0301",))]
    # A move that leaves the bridge's other device in Oslo is refused too...
    with pytest.raises(BridgeTakenError):
        await store.register_devices([replace(OSLO, municipality="4601")], T0, audit=_audit(OSLO))
    # ...and with a bridge of Bergen's it is not.
    moved = replace(OSLO, municipality="4601", bridge="z2m-4601-a")
    await store.register_devices([moved], T0, audit=_audit(OSLO), assign_bridges=True)
    assert await store.get_devices([bergen.id]) == []
    found = {d.id: (d.municipality, d.bridge) for d in await store.get_devices([OSLO.id, DOOR.id])}
    assert found == {OSLO.id: ("4601", "z2m-4601-a"), DOOR.id: ("0301", "z2m-0301-a")}
    # Nothing of a refused write is kept, its audit entry neither (two bridges assigned).
    assert await opened.count("SELECT count(*) FROM audit") == 3 + 2


@asynccontextmanager
async def _second(opened: OpenedStore) -> AsyncIterator[AlarmStore]:
    """Another store on the same database: another process's connections."""
    other: AlarmStore
    if opened.path is not None:
        other = await SqliteStore.open(opened.path)
    else:
        assert opened.url is not None
        other = await PostgresStore.open(opened.url)
    try:
        yield other
    finally:
        await other.close()


async def test_two_municipalities_cannot_both_take_a_new_bridge(opened: OpenedStore) -> None:
    async with _second(opened) as other:
        for round_ in range(10):
            bridge = f"z2m-new-{round_}"
            results = await asyncio.gather(
                *(
                    store.register_devices(
                        [Device(f"{m}-{round_}", DeviceKind.DOOR_SENSOR, m, bridge=bridge)],
                        T0,
                        audit=[AuditEntry("tester", "device.created", T0, municipality=m)],
                        assign_bridges=True,
                    )
                    for store, m in ((opened.store, "0301"), (other, "4601"))
                ),
                return_exceptions=True,
            )
            assert sorted(type(r).__name__ for r in results) == ["BridgeTakenError", "list"]
            sql = "SELECT count(DISTINCT municipality), count(*) FROM devices WHERE bridge = ?"
            assert await opened.rows(sql, bridge) == [(1, 1)]
    # The losers' rolled back; each winner's write assigned its bridge too.
    assert await opened.count("SELECT count(*) FROM audit") == 10 * 2
    assert await opened.count("SELECT count(*) FROM bridges") == 10
