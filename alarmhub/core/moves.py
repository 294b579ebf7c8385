"""Whether a device may move to another municipality: never with alarms still open.

An alarm belongs to the municipality its device was in when it was raised. A
device moved while it had open alarms left them in the old municipality's queue,
and its next press joined them there: the new municipality never saw the call
(issue 12 item 9). Moving is refused until those alarms are resolved, naming
them, so the person moving the device knows what to close first and where.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from alarmhub.core.model import Device


@dataclass(frozen=True, slots=True)
class MoveRefused:
    device_id: str
    from_municipality: str
    to_municipality: str
    alarm_ids: tuple[str, ...]

    def message(self) -> str:
        """One line that says what is wrong and what to do."""
        return (
            f"device {self.device_id} has open alarm(s) {', '.join(self.alarm_ids)} in "
            f"{self.from_municipality}: resolve them before moving it to {self.to_municipality}"
        )


def refused_moves(
    devices: Iterable[Device],
    registered_in: Mapping[str, str],
    open_alarms: Mapping[str, Sequence[str]],
) -> list[MoveRefused]:
    """The moves among `devices` that must be refused.

    `registered_in`: device id -> the municipality it is registered in now (new
    devices are absent). `open_alarms`: device id -> ids of its alarms not yet
    resolved (open or acknowledged, suppressed or not), oldest first.
    """
    refused = []
    for device in devices:
        current = registered_in.get(device.id)
        if current is None or current == device.municipality:
            continue
        alarms = tuple(open_alarms.get(device.id, ()))
        if alarms:
            refused.append(MoveRefused(device.id, current, device.municipality, alarms))
    return refused


def move_errors(devices: Sequence[Device], refused: Iterable[MoveRefused]) -> list[str]:
    """The import's row errors for refused moves, numbered as the CSV parser numbers rows.

    `devices` are a parsed CSV's devices in file order, with no row errors (the
    import stops at those first): the header is line 1, so the n-th device is
    on line n + 2 counting from zero.
    """
    line = {d.id: n for n, d in enumerate(devices, start=2)}
    return [f"line {line.get(r.device_id, '?')}: {r.message()}" for r in refused]


def resident_left_behind(found: Mapping[str, Any], changes: Mapping[str, Any]) -> str | None:
    """The resident reference a change of the stored device `found` must clear, if any.

    Resident references are per municipality: in the new one "r-17" is another person,
    whose national id the moved device's alarms would show and whose record they would
    journal to. A move clears it unless the same change names the resident. Settings
    stay: they describe the home and the device (windows, geofence, doses), name nobody,
    and clearing them would silently end the alarms they drive.
    """
    moved = changes.get("municipality", found["municipality"]) != found["municipality"]
    if not moved or "resident" in changes:
        return None
    resident = found.get("resident")
    return None if resident is None else str(resident)


def moved_since(
    decided_with: Mapping[str, Device], stored: Iterable[tuple[str, str, str | None]]
) -> list[str]:
    """Of the devices a batch was decided with, those stored now elsewhere: sorted ids.

    `stored`: (id, municipality, resident) rows as the registry holds them now. A
    device another process moved (the CLI, another instance) or gave another
    resident after this instance read it would have its alarm raised in the old
    municipality, about the old resident. A device without a row is not one of them
    (none is ever deleted): there is nothing to reload it from.
    """
    moved = []
    for device_id, municipality, resident in stored:
        device = decided_with.get(device_id)
        if device is not None and (device.municipality, device.resident) != (
            municipality,
            resident,
        ):
            moved.append(device_id)
    return sorted(moved)
