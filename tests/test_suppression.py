"""Suppression and its end, as tables of plain values on the pure core (issue 12 items 1, 2, 7, 8).

Each row names a situation a review reproduced as a lost alarm; the pipeline
(`process_batch` / `process_internal`) and `suppress` run exactly as the daemon
runs them, with an index updated after each "commit" as the shell does.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson
import pytest

from alarmhub.core.decode import DecodeLimits
from alarmhub.core.index import AlarmIndex
from alarmhub.core.model import (
    Alarm,
    Device,
    DeviceKind,
    DeviceSettings,
    Event,
    EventType,
    RawMessage,
)
from alarmhub.core.pipeline import (
    BatchEffects,
    Context,
    decode_all,
    fingerprint,
    process_batch,
    process_internal,
)
from alarmhub.core.suppress import Silence
from alarmhub.profiles import load_catalog
from alarmhub.rules_file import load_rules
from tests.support import REPO

RULES = load_rules(REPO / "config" / "rules.toml")
CATALOG = load_catalog(REPO / "devices")
NIGHT = datetime(2026, 11, 22, 1, 0, tzinfo=UTC)  # 02:00 Oslo
KINDS = {
    "pendant": DeviceKind.SAFETY_ALARM,
    "fall": DeviceKind.FALL_SENSOR,
    "door": DeviceKind.DOOR_SENSOR,
    "gps": DeviceKind.GPS_TRACKER,
}
EVENTS = {  # what each device sends to raise its alarm
    "pendant": ("button.pressed", {}),
    "fall": ("fall.detected", {}),
    "door": ("door.opened", {}),
    "gps": ("location", {"lat": 60.5, "lon": 10.75, "accuracy_m": 5}),
    "battery": ("battery.low", {"battery_pct": 5}),
}
FENCE = (59.9139, 10.7522, 500.0)  # Oslo centre; the "gps" fix above is 60 km north


class Hub:
    """The shell's bookkeeping in miniature: an index updated after each 'commit'."""

    def __init__(self, devices: list[Device], silences: tuple[Silence, ...] = (), rules=RULES) -> None:
        self.index = AlarmIndex()
        self.devices = {d.id: d for d in devices}
        self.ctx = Context(self.devices, CATALOG, rules, DecodeLimits(), silences)
        self.seq = 0

    def send(self, device: str, what: str, at: datetime) -> BatchEffects:
        etype, fields = EVENTS.get(what, (what, {}))
        self.seq += 1
        payload = {"id": f"m{self.seq}", "ts": at.isoformat(), "type": etype, **fields}
        raws = [RawMessage(f"alarmhub/v1/{device}/events", orjson.dumps(payload), at)]
        decoded = decode_all(raws, self.ctx)
        effects = process_batch(raws, decoded, [fingerprint(raws[0], decoded[0])], set(), self.index, self.ctx)
        assert effects.messages[0].rejected is None, effects.messages[0].rejected
        return self.apply(effects)

    def internal(self, device: str, etype: EventType, at: datetime) -> BatchEffects:
        self.seq += 1
        event = Event(device, f"x{self.seq}", etype, at, at)
        return self.apply(process_internal([(event, self.devices[device])], self.index, self.ctx))

    def apply(self, effects: BatchEffects) -> BatchEffects:
        for a in effects.alarms.values():
            self.index.put(a)
        return effects

    def alarm(self, device: str, kind: str) -> Alarm:
        found = self.index.active((device, kind))
        assert found is not None, f"no active {kind} alarm of {device}"
        return found


def device(id_: str, what: str, municipality: str = "0301", resident: str | None = None) -> Device:
    settings = DeviceSettings(geofence_circle=FENCE) if what == "gps" else DeviceSettings()
    return Device(id_, KINDS[what], municipality, resident=resident, settings=settings)


# --- item 1: residents are identified per municipality ------------------------------------


@pytest.mark.parametrize(
    ("first", "then", "suppressed"),
    [
        # (municipality, resident, device kind) of the urgent alarm, then of the later one
        (("4601", "r-17", "pendant"), ("0301", "r-17", "door"), False),  # same reference, other town
        (("4601", "r-17", "fall"), ("0301", "r-17", "gps"), False),
        (("4601", "r-17", "pendant"), ("0301", "r-17", "battery"), False),
        (("0301", "r-17", "pendant"), ("0301", "r-17", "door"), True),  # the same person: inhibited
        (("0301", "r-17", "fall"), ("0301", "r-17", "battery"), True),
        (("0301", "r-17", "pendant"), ("0301", "r-18", "door"), False),  # another person
    ],
)
def test_inhibition_only_within_the_residents_own_municipality(
    first: tuple[str, str, str], then: tuple[str, str, str], suppressed: bool
) -> None:
    m1, r1, k1 = first
    m2, r2, k2 = then
    dev2_kind = "pendant" if k2 == "battery" else k2
    hub = Hub([device("a", k1, m1, r1), device("b", dev2_kind, m2, r2)])
    [urgent] = hub.send("a", k1, NIGHT).alarms.values()
    effects = hub.send("b", k2, NIGHT + timedelta(seconds=10))
    [new] = [a for a in effects.alarms.values() if a.device_id == "b"]
    assert new.suppressed_by == (f"inhibited:{urgent.id}" if suppressed else None)


@pytest.mark.parametrize(
    ("municipality", "expected"),
    [("4601", 2), ("0301", 1)],
)
def test_the_index_keys_residents_by_municipality(municipality: str, expected: int) -> None:
    hub = Hub([device("a", "pendant", "4601", "r-17"), device("b", "pendant", municipality, "r-17")])
    hub.send("a", "pendant", NIGHT)
    hub.send("b", "pendant", NIGHT)
    assert len(hub.index.for_resident("4601", "r-17")) == expected
