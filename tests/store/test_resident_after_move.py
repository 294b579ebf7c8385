"""A moved device's resident reference, on both stores.

Resident references are per municipality: in the new one "r-17" is another person.
An import whose file has no `resident` column keeps the stored resident (`keep`), but
only while the device stays where it is; a move clears it. Settings stay either way
(they describe the home, and name nobody).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

from alarmhub.core.model import Device, DeviceKind, DeviceSettings
from alarmhub.core.people import AuditEntry
from tests.store.conftest import OpenedStore

T0 = datetime(2026, 12, 6, 10, 0, tzinfo=UTC)
FENCE = DeviceSettings(geofence_circle=(59.9139, 10.7522, 500.0))
PEND = Device("pend-1", DeviceKind.SAFETY_ALARM, "0301", resident="r-17", settings=FENCE)
OTHER = Device("pend-2", DeviceKind.SAFETY_ALARM, "0301", resident="r-18")
AUDIT = [AuditEntry("tester", "device.imported", T0)]
KEEP = frozenset({"resident", "settings", "bridge"})  # a file of id,kind,municipality


async def test_an_import_without_residents_clears_only_a_moved_devices_resident(
    opened: OpenedStore,
) -> None:
    store = opened.store
    await store.register_devices([PEND, OTHER], T0, audit=AUDIT)
    # As the CSV parser reads a file without those columns: no resident, no settings.
    bare = [Device(d.id, d.kind, d.municipality) for d in (PEND, OTHER)]
    moved = [replace(bare[0], municipality="4601"), bare[1]]
    await store.register_devices(moved, T0, KEEP, audit=AUDIT)
    got = {d.id: d for d in await store.get_devices(["pend-1", "pend-2"])}
    assert (got["pend-1"].municipality, got["pend-1"].resident) == ("4601", None)
    assert got["pend-1"].settings == FENCE
    assert (got["pend-2"].municipality, got["pend-2"].resident) == ("0301", "r-18")
    # A file that names the resident sets it, moved or not.
    named = replace(bare[0], municipality="0301", resident="r-40")
    await store.register_devices([named], T0, KEEP - {"resident"}, audit=AUDIT)
    [back] = await store.get_devices(["pend-1"])
    assert (back.municipality, back.resident) == ("0301", "r-40")
