"""Which Zigbee2MQTT bridge may speak for a Zigbee device (issue 13 item 9).

A Zigbee device has no MQTT account of its own: its bridge publishes for it, under
the bridge's base topic `zigbee2mqtt/<bridge>/<device>`, and the broker's ACL lets
each bridge account write only under its own name. So the bridge level of the topic
is authenticated and the device level is only what that bridge claims. Any bridge
can claim any device id; the registry records the one bridge that may.

A device with no bridge recorded is refused too, not let through from any bridge:
"accept anything until told otherwise" would reopen the hole for every newly
registered device, in every municipality, until someone remembered to set it.

A bridge serves one municipality (:func:`bridge_conflicts`): the one whose devices
are registered on it. Were a bridge shared, a municipality admin could register
an id on another municipality's bridge, and that bridge's device's door, fall and
SOS events would land in the wrong queue, hidden from the municipality that owns
the bridge. The store checks every write inside the registry write's transaction.

Who says which municipality a new bridge is? Once it has devices, they do. Before,
a system admin's assignment (the `bridges` table, `alarmhub bridges assign`): were
the first device to decide, any municipality admin could claim a care home's new
bridge by registering an id on it before the care home did (:func:`judge_bridges`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from alarmhub.core.model import Device, Rejected, RejectReason
from alarmhub.core.people import AuditEntry

__all__ = [
    "BRIDGE_ID_PATTERN",
    "BridgeTaken",
    "BridgeUnassigned",
    "BridgeVerdict",
    "bridge_assigned",
    "bridge_conflicts",
    "bridge_errors",
    "check_bridge",
    "judge_bridges",
    "valid_bridge",
]

# A bridge id is the bridge's MQTT username and a level of its base topic: the ACL's
# `%u` is refused for a name holding `+`, `#` or `/`, and a level must not be empty.
BRIDGE_ID_PATTERN = r"^[A-Za-z0-9._-]{1,64}$"
_BRIDGE_ID = re.compile(BRIDGE_ID_PATTERN)


def valid_bridge(value: str) -> bool:
    return _BRIDGE_ID.fullmatch(value) is not None


def check_bridge(device: Device, via: str | None) -> Rejected | None:
    """None when `device` may report through bridge `via`, else why not.

    `via` is None for a topic that names no bridge (native, OwnTracks): those are
    authenticated by the device's own account, and there is nothing to check.
    """
    if via is None or device.bridge == via:
        return None
    if device.bridge is None:
        return Rejected(
            RejectReason.WRONG_BRIDGE,
            f"device has no bridge recorded and came through bridge {via!r}: "
            "register the bridge it is paired with (--bridge, or the `bridge` field/column)",
            device.id,
        )
    return Rejected(
        RejectReason.WRONG_BRIDGE,
        f"device is registered to bridge {device.bridge!r} but came through bridge {via!r}",
        device.id,
    )


@dataclass(frozen=True, slots=True)
class BridgeTaken:
    """A device that would put its bridge in a second municipality.

    `others`: the other municipalities with devices on that bridge. Not in
    :meth:`message`, which a municipality admin reads: which municipality owns a
    bridge is not theirs to learn (the CLI, run by a system admin, adds it).
    """

    device_id: str
    bridge: str
    municipality: str
    others: tuple[str, ...]
    assigned: bool = False  # `others` is the assignment of a bridge without devices

    def message(self) -> str:
        """One line that says what is wrong and what to do."""
        return (
            f"device {self.device_id}: bridge {self.bridge!r} serves another municipality, "
            f"and a bridge serves one municipality: register the device with a "
            f"bridge of {self.municipality}, or have a system administrator move all the "
            "bridge's devices together (one import)"
        )


def bridge_conflicts(
    devices: Iterable[Device],
    stored: Mapping[str, tuple[str | None, str]],
    on_bridges: Iterable[tuple[str, str, str]],
) -> list[BridgeTaken]:
    """The devices of a registry write that would leave a bridge in two municipalities.

    `stored`: device id -> (bridge, municipality) as registered now, for the
    written ids (new ones absent). `on_bridges`: (device id, bridge, municipality)
    of every registered device on the written devices' bridges. A device is checked
    only when its bridge or municipality changes, so a bridge already shared before
    this check existed can still be edited and decommissioned, never grow.
    """
    written = {d.id: d for d in devices}  # the last row of an id wins, as in the write
    after: dict[str, set[str]] = {}
    for device_id, bridge, municipality in on_bridges:
        if device_id not in written:
            after.setdefault(bridge, set()).add(municipality)
    for d in written.values():
        if d.bridge is not None:
            after.setdefault(d.bridge, set()).add(d.municipality)
    return [
        BridgeTaken(
            d.id, d.bridge, d.municipality, tuple(sorted(after[d.bridge] - {d.municipality}))
        )
        for d in written.values()
        if d.bridge is not None
        and stored.get(d.id) != (d.bridge, d.municipality)
        and len(after[d.bridge]) > 1
    ]


@dataclass(frozen=True, slots=True)
class BridgeUnassigned:
    """A device that would be the first on a bridge no system admin has assigned."""

    device_id: str
    bridge: str
    municipality: str

    def message(self) -> str:
        """Who must do what: the municipality admin cannot assign it themselves."""
        return (
            f"device {self.device_id}: bridge {self.bridge} is not assigned to a "
            f"municipality; a system admin assigns it with "
            f"`alarmhub bridges assign {self.bridge} --municipality {self.municipality}`"
        )


@dataclass(frozen=True, slots=True)
class BridgeVerdict:
    """What a registry write does to bridges: refused (`taken`, `unassigned`), or
    accepted with `assign`: bridge -> (municipality before or None, after)."""

    taken: list[BridgeTaken]
    unassigned: list[BridgeUnassigned]
    assign: dict[str, tuple[str | None, str]]


def judge_bridges(
    devices: Iterable[Device],
    stored: Mapping[str, tuple[str | None, str]],
    on_bridges: Iterable[tuple[str, str, str]],
    assigned: Mapping[str, str],
    *,
    may_assign: bool,
) -> BridgeVerdict:
    """:func:`bridge_conflicts`, and who may put the first device on a bridge.

    `assigned`: bridge -> municipality, for the written devices' bridges that have
    one. A bridge with devices is theirs, as before. A bridge without any may take
    a first device only of the municipality it is assigned to; unassigned, only
    when `may_assign` (a system admin's write, which then assigns it). An accepted
    write records each changed device's bridge as its municipality's, so the
    assignment follows a bridge's devices when they all move together.
    """
    on = list(on_bridges)
    written = list({d.id: d for d in devices}.values())
    taken = bridge_conflicts(written, stored, on)
    if taken:
        return BridgeVerdict(taken, [], {})
    populated = {bridge for _, bridge, _ in on}
    changed = [
        d
        for d in written
        if d.bridge is not None and stored.get(d.id) != (d.bridge, d.municipality)
    ]
    unassigned: list[BridgeUnassigned] = []
    for d in changed:
        owner = assigned.get(d.bridge or "")
        if d.bridge in populated or owner == d.municipality:
            continue
        if owner is not None:
            taken.append(BridgeTaken(d.id, d.bridge or "", d.municipality, (owner,), assigned=True))
        elif not may_assign:
            unassigned.append(BridgeUnassigned(d.id, d.bridge or "", d.municipality))
    if taken or unassigned:
        return BridgeVerdict(taken, unassigned, {})
    assign = {
        d.bridge: (assigned.get(d.bridge), d.municipality)
        for d in changed
        if d.bridge is not None and assigned.get(d.bridge) != d.municipality
    }
    return BridgeVerdict([], [], assign)


def bridge_assigned(
    actor: str,
    now: datetime,
    bridge: str,
    was: str | None,
    municipality: str,
    address: str | None = None,
) -> AuditEntry:
    """The audit entry of a bridge's (re)assignment, written with it."""
    return AuditEntry(
        actor,
        "bridge.assigned",
        now,
        address=address,
        municipality=municipality,
        detail={"bridge": bridge, "previous": was},
    )


def bridge_errors(
    devices: Sequence[Device], taken: Iterable[BridgeTaken | BridgeUnassigned]
) -> list[str]:
    """An import's row errors for `taken`, numbered as the CSV parser numbers rows."""
    line = {d.id: n for n, d in enumerate(devices, start=2)}
    return [f"line {line.get(t.device_id, '?')}: {t.message()}" for t in taken]
