"""The rule engine's decisions on plain values: windows, zones, suppression, storms, supervision."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from alarmhub.config.profiles import load_catalog
from alarmhub.config.rules import RulesError, load_rules, parse_rules
from alarmhub.core.decode import DecodeLimits
from alarmhub.core.index import AlarmIndex
from alarmhub.core.model import (
    AlarmState,
    Device,
    DeviceKind,
    DeviceSettings,
    Event,
    EventType,
    Priority,
    RawMessage,
    Verdict,
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
from tests.support.helpers import REPO

RULES = load_rules(REPO / "config" / "rules.toml")
CATALOG = load_catalog(REPO / "devices")
NIGHT = datetime(2026, 11, 22, 1, 0, tzinfo=UTC)  # 02:00 Oslo
EVENING = datetime(2026, 11, 22, 21, 30, tzinfo=UTC)  # 22:30 Oslo
OSLO_CENTRE = (59.9139, 10.7522)


def dev(
    id_: str, kind: DeviceKind = DeviceKind.SAFETY_ALARM, municipality: str = "0301", **kw: object
) -> Device:
    return Device(id_, kind, municipality, **kw)  # type: ignore[arg-type]


class Hub:
    """The shell's bookkeeping in miniature: an index updated after each 'commit'."""

    def __init__(
        self, devices: list[Device], rules=RULES, silences: tuple[Silence, ...] = ()
    ) -> None:
        self.index = AlarmIndex()
        self.ctx = Context({d.id: d for d in devices}, CATALOG, rules, DecodeLimits(), silences)

    def send(
        self, device: str, etype: str, at: datetime, msg_id: str | None = None, **fields: object
    ) -> BatchEffects:
        payload = {
            "id": msg_id or f"{etype}@{at:%Y%m%dT%H%M%S}",
            "ts": at.isoformat(),
            "type": etype,
            **fields,
        }
        raws = [RawMessage(f"alarmhub/v1/{device}/events", orjson.dumps(payload), at)]
        decoded = decode_all(raws, self.ctx)
        effects = process_batch(
            raws, decoded, [fingerprint(raws[0], decoded[0])], set(), self.index, self.ctx
        )
        self._apply(effects)
        return effects

    def internal(self, device: Device, etype: EventType, at: datetime) -> BatchEffects:
        effects = process_internal(
            [(Event(device.id, f"x@{at:%Y%m%dT%H%M%S}", etype, at, at), device)],
            self.index,
            self.ctx,
        )
        self._apply(effects)
        return effects

    def _apply(self, effects: BatchEffects) -> None:
        for a in effects.alarms.values():
            self.index.put(a)

    def active(self) -> list:
        return sorted(self.index.by_id.values(), key=lambda a: (a.device_id, a.kind))


def verdict(effects: BatchEffects) -> Verdict:
    return effects.messages[0].events[0].verdict


# --- windows ----------------------------------------------------------------------------


def test_device_night_window_overrides_the_global_one() -> None:
    late_sleeper = dev(
        "door-2",
        DeviceKind.DOOR_SENSOR,
        settings=DeviceSettings(windows=(("night", "23:00", "06:00"),)),
    )
    hub = Hub([dev("door-1", DeviceKind.DOOR_SENSOR), late_sleeper])
    assert (
        verdict(hub.send("door-1", "door.opened", EVENING)) is Verdict.NEW
    )  # 22:30 is night globally
    assert (
        verdict(hub.send("door-2", "door.opened", EVENING)) is Verdict.LOGGED
    )  # not before 23:00 for door-2


def test_municipality_rules_and_windows_take_precedence() -> None:
    text = (
        (REPO / "config" / "rules.toml").read_text()
        + """
[municipalities."4601"]
windows = { night = ["21:00", "08:00"] }
[[municipalities."4601".rules]]
name = "Bergen: battery low is a P3"
event = "battery.low"
alarm = "battery_low"
priority = 3
"""
    )
    rules = parse_rules(text)
    hub = Hub(
        [
            dev("b-door", DeviceKind.DOOR_SENSOR, "4601"),
            dev("b-pend", municipality="4601"),
            dev("o-pend"),
        ],
        rules,
    )
    at = datetime(2026, 11, 22, 20, 30, tzinfo=UTC)  # 21:30 Oslo time
    assert verdict(hub.send("b-door", "door.opened", at)) is Verdict.NEW
    hub.send("b-pend", "battery.low", at, battery_pct=9)
    hub.send("o-pend", "battery.low", at, battery_pct=9)
    prio = {a.device_id: a.priority for a in hub.active()}
    assert prio["b-pend"] == Priority.NORMAL
    assert prio["o-pend"] == Priority.TECHNICAL


@pytest.mark.parametrize(
    ("utc", "expected"),
    [
        # Spring forward, Sunday 29 March 2026: 02:00 -> 03:00 local.
        (datetime(2026, 3, 29, 0, 59, tzinfo=UTC), Verdict.NEW),  # 01:59 CET
        (datetime(2026, 3, 29, 5, 59, tzinfo=UTC), Verdict.LOGGED),  # 07:59 CEST
        (datetime(2026, 3, 29, 4, 59, tzinfo=UTC), Verdict.NEW),  # 06:59 CEST
        (datetime(2026, 3, 29, 5, 0, tzinfo=UTC), Verdict.LOGGED),  # 07:00 CEST
        # Fall back, Sunday 25 October 2026: 03:00 -> 02:00 local.
        (datetime(2026, 10, 25, 5, 59, tzinfo=UTC), Verdict.NEW),  # 06:59 CET
        (datetime(2026, 10, 25, 6, 0, tzinfo=UTC), Verdict.LOGGED),  # 07:00 CET
        (datetime(2026, 10, 24, 19, 59, tzinfo=UTC), Verdict.LOGGED),  # 21:59 CEST
        (datetime(2026, 10, 24, 20, 0, tzinfo=UTC), Verdict.NEW),  # 22:00 CEST
    ],
)
def test_night_window_on_both_daylight_saving_days(utc: datetime, expected: Verdict) -> None:
    hub = Hub([dev("door-1", DeviceKind.DOOR_SENSOR)])
    assert verdict(hub.send("door-1", "door.opened", utc)) is expected


# --- geofences --------------------------------------------------------------------------


def tracker(**settings: object) -> Device:
    s = DeviceSettings(geofence_circle=(*OSLO_CENTRE, 500.0), **settings)  # type: ignore[arg-type]
    return dev("gps-1", DeviceKind.GPS_TRACKER, settings=s)


def test_leaving_the_zone_raises_and_coming_back_is_shown_but_waits_for_an_operator() -> None:
    # Issue 12 item 3 changed this: "back inside" no longer resolves a priority 2
    # person alarm by itself; it is recorded on the alarm, which stays open.
    hub = Hub([tracker()])
    inside = hub.send("gps-1", "location", NIGHT, lat=59.9139, lon=10.7522, accuracy_m=10)
    assert verdict(inside) is Verdict.LOGGED
    out = hub.send(
        "gps-1", "location", NIGHT + timedelta(minutes=1), lat=59.9300, lon=10.7522, accuracy_m=20
    )  # ~1.8 km north
    assert verdict(out) is Verdict.NEW
    [alarm] = hub.active()
    assert (alarm.kind, alarm.priority) == ("left_safe_zone", Priority.HIGH)
    back = hub.send(
        "gps-1", "location", NIGHT + timedelta(minutes=9), lat=59.9140, lon=10.7520, accuracy_m=15
    )
    assert verdict(back) is Verdict.HELD
    [still] = hub.active()
    assert (still.id, still.state, still.clearing_event) == (alarm.id, AlarmState.OPEN, "location")
    assert back.timeline[0].detail["rule"] == "back inside safe zone"


def test_a_noisy_fix_straddling_the_edge_raises_nothing() -> None:
    hub = Hub([tracker()])
    # 700 m from the centre of a 500 m fence, but +-400 m accuracy: maybe inside.
    lat = OSLO_CENTRE[0] + 700 / 111_320
    assert (
        verdict(hub.send("gps-1", "location", NIGHT, lat=lat, lon=OSLO_CENTRE[1], accuracy_m=400))
        is Verdict.LOGGED
    )
    # Accuracy worse than the device's max_accuracy_m (150 m default), straddling: nothing.
    near = OSLO_CENTRE[0] + 1000 / 111_320
    assert (
        verdict(hub.send("gps-1", "location", NIGHT, lat=near, lon=OSLO_CENTRE[1], accuracy_m=900))
        is Verdict.LOGGED
    )
    assert hub.active() == []


def test_a_poor_fix_wholly_outside_the_fence_raises_left_safe_zone() -> None:
    """Issue 12 item 18: 5 km away with 900 m accuracy is outside; it used to decide nothing."""
    hub = Hub([tracker()])
    far = OSLO_CENTRE[0] + 5000 / 111_320
    assert (
        verdict(hub.send("gps-1", "location", NIGHT, lat=far, lon=OSLO_CENTRE[1], accuracy_m=900))
        is Verdict.NEW
    )
    assert [a.kind for a in hub.active()] == ["left_safe_zone"]


def test_tracker_without_a_fence_never_alarms_on_location() -> None:
    hub = Hub([dev("gps-2", DeviceKind.GPS_TRACKER)])
    assert (
        verdict(hub.send("gps-2", "location", NIGHT, lat=10.0, lon=10.0, accuracy_m=5))
        is Verdict.LOGGED
    )


# --- suppression ------------------------------------------------------------------------


def test_silenced_device_records_the_alarm_as_suppressed() -> None:
    # Issue 12 item 8: a silence hides a priority 1 press only when it says so.
    silence = Silence(
        "s1",
        "0301",
        NIGHT - timedelta(hours=1),
        NIGHT + timedelta(hours=1),
        device_id="pend-1",
        reason="battery swap",
        include_priority_1=True,
    )
    hub = Hub([dev("pend-1")], silences=(silence,))
    effects = hub.send("pend-1", "button.pressed", NIGHT)
    [alarm] = effects.alarms.values()
    assert alarm.suppressed_by == "silence:s1"
    assert [e.type.value for e in effects.timeline] == ["raised", "suppressed"]
    # After the silence ends a press is a normal alarm again (the suppressed one is resolved first).
    hub.index.put(replace(alarm, state=AlarmState.RESOLVED, resolved_at=NIGHT, outcome="technical"))
    later = hub.send("pend-1", "button.pressed", NIGHT + timedelta(hours=2))
    assert next(iter(later.alarms.values())).suppressed_by is None


def test_silence_of_another_municipality_does_not_apply() -> None:
    silence = Silence(
        "s1", "4601", NIGHT - timedelta(hours=1), NIGHT + timedelta(hours=1), device_id="pend-1"
    )
    hub = Hub([dev("pend-1")], silences=(silence,))
    assert (
        next(iter(hub.send("pend-1", "button.pressed", NIGHT).alarms.values())).suppressed_by
        is None
    )


def test_a_fall_inhibits_the_same_residents_lower_priority_alarms_only() -> None:
    fall = dev("fall-1", DeviceKind.FALL_SENSOR, resident="r-17")
    pendant = dev("pend-1", resident="r-17")
    neighbour = dev("pend-2", resident="r-18")
    hub = Hub([fall, pendant, neighbour])
    hub.send("fall-1", "fall.detected", NIGHT)
    low = hub.send("pend-1", "battery.low", NIGHT + timedelta(seconds=5), battery_pct=5)
    other = hub.send("pend-2", "battery.low", NIGHT + timedelta(seconds=5), battery_pct=5)
    [fall_alarm] = [a for a in hub.active() if a.kind == "fall"]
    assert next(iter(low.alarms.values())).suppressed_by == f"inhibited:{fall_alarm.id}"
    assert next(iter(other.alarms.values())).suppressed_by is None
    # A person alarm of equal priority is never inhibited.
    press = hub.send("pend-1", "button.pressed", NIGHT + timedelta(seconds=6))
    assert next(iter(press.alarms.values())).suppressed_by is None


def test_an_outage_folds_technical_alarms_into_one_incident_but_never_person_alarms() -> None:
    devices = [
        dev(f"p{i}", kind=DeviceKind.SAFETY_ALARM, heartbeat_interval_s=60) for i in range(30)
    ]
    hub = Hub(devices)
    for i, d in enumerate(devices[:25]):
        hub.internal(d, EventType.DEVICE_SILENT, NIGHT + timedelta(seconds=i))
    press = hub.send("p29", "button.pressed", NIGHT + timedelta(seconds=30))
    active = hub.active()
    incidents = [a for a in active if a.kind == "incident"]
    assert len(incidents) == 1
    [incident] = incidents
    offline = [a for a in active if a.kind == "device_offline"]
    assert len(offline) == 25
    assert all(a.suppressed_by == f"incident:{incident.id}" for a in offline)
    assert incident.repeat_count == 24  # 25 devices attached: the first plus 24 more
    assert (incident.priority, incident.municipality) == (Priority.HIGH, "0301")
    assert next(iter(press.alarms.values())).suppressed_by is None
    # Every device heard again: each offline alarm resolves, and with the last the incident.
    for d in devices[:25]:
        hub.send(d.id, "heartbeat", NIGHT + timedelta(minutes=10))
    assert [a.kind for a in hub.active()] == ["button"]


def test_below_the_storm_threshold_each_offline_alarm_is_queued() -> None:
    devices = [dev(f"p{i}", heartbeat_interval_s=60) for i in range(5)]
    hub = Hub(devices)
    for d in devices:
        hub.internal(d, EventType.DEVICE_SILENT, NIGHT)
    assert all(a.suppressed_by is None for a in hub.active())
    assert len(hub.active()) == 5


def test_offline_alarm_is_technical_and_resolved_by_any_message() -> None:
    pendant = dev("pend-1", heartbeat_interval_s=300)
    hub = Hub([pendant])
    effects = hub.internal(pendant, EventType.DEVICE_SILENT, NIGHT)
    [alarm] = effects.alarms.values()
    assert (alarm.kind, alarm.priority) == ("device_offline", Priority.TECHNICAL)
    hub.send("pend-1", "battery.low", NIGHT + timedelta(minutes=1), battery_pct=30)
    assert [a.kind for a in hub.active()] == ["battery_low"]


def test_overdue_dose_raises_dose_missed_and_late_dose_resolves_it() -> None:
    dispenser = dev("disp-1", DeviceKind.MEDICATION_DISPENSER)
    hub = Hub([dispenser])
    hub.internal(dispenser, EventType.DOSE_OVERDUE, NIGHT)
    [alarm] = hub.active()
    assert (alarm.kind, alarm.priority) == ("dose_missed", Priority.NORMAL)
    # Issue 12 item 17: a dose.taken alone no longer resolves it (it may be the next
    # dose's); supervision's dose.late, for the dose the alarm lists, does.
    taken = hub.send("disp-1", "dose.taken", NIGHT + timedelta(minutes=20))
    assert verdict(taken) is Verdict.LOGGED
    assert [a.kind for a in hub.active()] == ["dose_missed"]
    hub.internal(dispenser, EventType.DOSE_LATE, NIGHT + timedelta(minutes=21))
    assert hub.active() == []


def test_a_device_cannot_claim_alarmhubs_own_events() -> None:
    hub = Hub([dev("pend-1")])
    effects = hub.send("pend-1", "device.silent", NIGHT)
    assert effects.messages[0].verdict is Verdict.REJECTED
    assert effects.messages[0].rejected is not None
    assert effects.messages[0].rejected.reason.value == "unknown_type"


def test_new_alarm_records_its_policy_and_resident() -> None:
    hub = Hub([dev("pend-1", resident="r-1")])
    [alarm] = hub.send("pend-1", "button.pressed", NIGHT).alarms.values()
    assert (alarm.policy, alarm.resident) == ("p1", "r-1")


# --- the rules file ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "names"),
    [
        (
            '[[rules]]\nname = "x"\nevent = "door.opened"\nalarm = "y"\npriority = 2\nbetween = "siesta"\n',
            "between",
        ),
        (
            '[[rules]]\nname = "x"\nevent = "door.opened"\nalarm = "y"\npriority = 2\npolicy = "nope"\n',
            "policy",
        ),
        (
            '[[rules]]\nname = "x"\nevent = "door.opened"\nalarm = "y"\npriority = 2\nzone = "outside"\n',
            "zone",
        ),
        ('[[rules]]\nname = "x"\nevent = "door.opened"\nresolves = ["ghost"]\n', "resolves"),
        (
            '[[rules]]\nname = "x"\nevent = "door.opened"\nalarm = "y"\npriority = 2\ncolour = "red"\n',
            "colour",
        ),
    ],
)
def test_rules_errors_name_the_key_path(extra: str, names: str) -> None:
    text = (REPO / "config" / "rules.toml").read_text() + "\n" + extra
    with pytest.raises(RulesError, match=names):
        parse_rules(text, "rules.toml")


def test_policy_step_targets_must_exist() -> None:
    text = (
        (REPO / "config" / "rules.toml")
        .read_text()
        .replace(
            'target = "supervisor", level = 2 },\n  { after_s = 180',
            'target = "superviser", level = 2 },\n  { after_s = 180',
            1,
        )
    )
    with pytest.raises(RulesError, match=r"policies\.p1\.steps\[1\]\.target"):
        parse_rules(text)
