"""Suppression and its end, as tables of plain values on the pure core (issue 12 items 1, 2, 7, 8).

Each row names a situation a review reproduced as a lost alarm; the pipeline
(`process_batch` / `process_internal`) and `suppress` run exactly as the daemon
runs them, with an index updated after each "commit" as the shell does.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypedDict

import orjson
import pytest

from alarmhub.cli.rules_tool import explain
from alarmhub.config.profiles import load_catalog
from alarmhub.config.rules import RulesError, load_rules, parse_rules
from alarmhub.core import suppress
from alarmhub.core.actions import Action, Applied, apply_action
from alarmhub.core.decode import DecodeLimits
from alarmhub.core.escalation import next_for_alarm
from alarmhub.core.index import AlarmIndex
from alarmhub.core.model import (
    Alarm,
    AlarmState,
    Device,
    DeviceKind,
    DeviceSettings,
    Event,
    EventType,
    Priority,
    RawMessage,
    TimelineType,
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
from alarmhub.store.sqlite import accounts
from tests.support.helpers import REPO, run_cli, sqlite_at

RULES = load_rules(REPO / "config" / "rules.toml")
CATALOG = load_catalog(REPO / "devices")
NIGHT = datetime(2026, 11, 22, 1, 0, tzinfo=UTC)  # 02:00 Oslo
KINDS = {
    "pendant": DeviceKind.SAFETY_ALARM,
    "fall": DeviceKind.FALL_SENSOR,
    "door": DeviceKind.DOOR_SENSOR,
    "gps": DeviceKind.GPS_TRACKER,
}
EVENTS: dict[str, tuple[str, dict[str, object]]] = {  # what each device sends to raise its alarm
    "pendant": ("button.pressed", {}),
    "fall": ("fall.detected", {}),
    "door": ("door.opened", {}),
    "gps": ("location", {"lat": 60.5, "lon": 10.75, "accuracy_m": 5}),
    "battery": ("battery.low", {"battery_pct": 5}),
    "power": ("power.lost", {}),
}
FENCE = (59.9139, 10.7522, 500.0)  # Oslo centre; the "gps" fix above is 60 km north


class Hub:
    """The shell's bookkeeping in miniature: an index updated after each 'commit'."""

    def __init__(
        self, devices: list[Device], silences: tuple[Silence, ...] = (), rules=RULES
    ) -> None:
        self.index = AlarmIndex()
        self.devices = {d.id: d for d in devices}
        self.ctx = Context(self.devices, CATALOG, rules, DecodeLimits(), silences)
        self.seq = 0

    def send(self, device: str, what: str, at: datetime, *, refused: bool = False) -> BatchEffects:
        """`refused`: the device is not one alarmhub takes messages from (a stray)."""
        etype, fields = EVENTS.get(what, (what, {}))
        self.seq += 1
        payload = {"id": f"m{self.seq}", "ts": at.isoformat(), "type": etype, **fields}
        raws = [RawMessage(f"alarmhub/v1/{device}/events", orjson.dumps(payload), at)]
        decoded = decode_all(raws, self.ctx)
        effects = process_batch(
            raws, decoded, [fingerprint(raws[0], decoded[0])], set(), self.index, self.ctx
        )
        assert (effects.messages[0].rejected is not None) is refused, effects.messages[0]
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
        (
            ("4601", "r-17", "pendant"),
            ("0301", "r-17", "door"),
            False,
        ),  # same reference, other town
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
    hub = Hub(
        [device("a", "pendant", "4601", "r-17"), device("b", "pendant", municipality, "r-17")]
    )
    hub.send("a", "pendant", NIGHT)
    hub.send("b", "pendant", NIGHT)
    assert len(hub.index.for_resident("4601", "r-17")) == expected


# --- item 2: suppression ends with its cause --------------------------------------------

P2_POLICY = RULES.policies["p2"]
LATER = NIGHT + timedelta(minutes=30)


def _resolve_by_operator(hub: Hub, alarm: Alarm, at: datetime) -> list[suppress.Release]:
    """What the shell does when an operator resolves: the action, then its releases."""
    done = apply_action(alarm, Action.RESOLVE, "kari", at, outcome="false alarm")
    assert isinstance(done, Applied)
    hub.index.put(done.alarm)
    releases = suppress.on_resolved(done.alarm, hub.index.attached, at, "kari")
    for r in releases:
        hub.index.put(r.alarm)
    return releases


def _press_mistake(hub: Hub) -> tuple[str, list[suppress.Release]]:
    """A press resolved as a mistake: the resident's 'left safe zone' comes back."""
    hub.send("pend", "pendant", NIGHT)
    hub.send("gps", "gps", NIGHT + timedelta(seconds=30))
    return "left_safe_zone", _resolve_by_operator(hub, hub.alarm("pend", "button"), LATER)


def _dose_taken(hub: Hub) -> tuple[str, list[suppress.Release]]:
    """A follow-up alarm auto-resolved by its device: what it inhibited comes back in the batch."""
    hub.internal("disp", EventType.DOSE_OVERDUE, NIGHT)
    hub.send("pend", "battery", NIGHT + timedelta(seconds=30))
    # The late take that settles the missed dose (supervision raises dose.late for it).
    effects = hub.internal("disp", EventType.DOSE_LATE, LATER)
    released = [
        suppress.Release(effects.alarms[e.alarm_id], e)
        for e in effects.timeline
        if e.type is TimelineType.RELEASED
    ]
    return "battery_low", released


def _incident_by_hand(hub: Hub) -> tuple[str, list[suppress.Release]]:
    for i in range(RULES.storm.threshold):  # type: ignore[union-attr]
        hub.internal(f"p{i}", EventType.DEVICE_SILENT, NIGHT + timedelta(seconds=i))
    [incident] = [a for a in hub.index.by_id.values() if a.kind == "incident"]
    return "device_offline", _resolve_by_operator(hub, incident, LATER)


SETUPS = {
    "press resolved as a mistake": _press_mistake,
    "dose taken": _dose_taken,
    "incident resolved by hand": _incident_by_hand,
}


@pytest.mark.parametrize(
    ("setup", "reason", "released"),
    [
        ("press resolved as a mistake", "inhibitor_resolved", 1),
        ("dose taken", "inhibitor_resolved", 1),
        ("incident resolved by hand", "incident_resolved", 10),
    ],
)
def test_an_ended_cause_releases_what_it_suppressed(setup: str, reason: str, released: int) -> None:
    devices = [
        device("pend", "pendant", resident="r-17"),
        device("gps", "gps", resident="r-17"),
        Device("disp", DeviceKind.MEDICATION_DISPENSER, "0301", resident="r-17"),
        *(
            Device(f"p{i}", DeviceKind.SAFETY_ALARM, "0301", heartbeat_interval_s=60)
            for i in range(10)
        ),
    ]
    hub = Hub(devices)
    kind, releases = SETUPS[setup](hub)
    assert len(releases) == released
    for r in releases:
        alarm = hub.index.get(r.alarm.id)
        assert alarm is not None
        assert alarm.kind == kind
        assert alarm.is_active
        assert alarm.suppressed_by is None
        assert alarm.raised_at < LATER  # response time still counts from the call
        assert (r.entry.type, r.entry.at, r.entry.detail["reason"]) == (
            TimelineType.RELEASED,
            LATER,
            reason,
        )
        # Escalation starts at the release: its first step is due now, not never.
        policy = RULES.policy_named(alarm.policy, alarm.municipality)
        assert policy is not None
        first = next_for_alarm(alarm, policy, set())
        assert first is not None
        assert first.due_at == LATER


@pytest.mark.parametrize(
    ("ends_in_s", "deleted", "now_s", "reason"),
    [
        (3600, False, 3599, None),  # still in force: nothing
        (3600, False, 3600, "silence_ended"),  # reached its end
        (3600, True, 600, "silence_deleted"),  # deleted early by someone
        (3600, False, 7200, "silence_ended"),  # ended while alarmhub was down
    ],
)
def test_a_silence_that_ends_releases_its_alarms(
    ends_in_s: int, deleted: bool, now_s: int, reason: str | None
) -> None:
    silence = Silence(
        "s1",
        "0301",
        NIGHT,
        NIGHT + timedelta(seconds=ends_in_s),
        device_id="door",
        reason="renovation",
    )
    hub = Hub([device("door", "door")], silences=(silence,))
    [alarm] = hub.send("door", "door", NIGHT + timedelta(seconds=1)).alarms.values()
    assert alarm.suppressed_by == "silence:s1"
    now = NIGHT + timedelta(seconds=now_s)
    in_force = () if deleted else (silence,)
    releases = suppress.ended_silences(
        hub.index.suppressed_with("silence:"), in_force, now, frozenset({"s1"} if deleted else ())
    )
    assert [r.entry.detail["reason"] for r in releases] == ([reason] if reason else [])
    for r in releases:
        assert (r.alarm.suppressed_by, r.alarm.raised_at, r.alarm.escalation_from) == (
            None,
            alarm.raised_at,
            now,
        )


# --- item 7: outage incidents escalate, are bounded by the storm window, and let go ------


def _storm_hub() -> Hub:
    return Hub(
        [
            Device(f"p{i}", DeviceKind.SAFETY_ALARM, "0301", heartbeat_interval_s=60)
            for i in range(20)
        ]
    )


def test_an_incident_escalates_under_a_policy() -> None:
    hub = _storm_hub()
    for i in range(10):
        hub.internal(f"p{i}", EventType.DEVICE_SILENT, NIGHT + timedelta(seconds=i))
    [incident] = [a for a in hub.index.by_id.values() if a.kind == "incident"]
    assert incident.policy == "p2"  # the storm's priority
    policy = RULES.policy_named(incident.policy, incident.municipality)
    assert policy is not None
    first = next_for_alarm(incident, policy, set())
    assert first is not None
    assert first.due_at == incident.raised_at


@pytest.mark.parametrize(
    ("gap", "folded"),
    [
        (timedelta(seconds=60), True),  # the same outage
        (timedelta(seconds=300), True),  # the window's edge, counted from the last one attached
        (timedelta(seconds=301), False),  # past the window: a device of its own
        (timedelta(weeks=3), False),  # a device offline three weeks later is not part of it
    ],
)
def test_an_incident_absorbs_alarms_only_within_the_storm_window(
    gap: timedelta, folded: bool
) -> None:
    hub = _storm_hub()
    for i in range(10):
        hub.internal(f"p{i}", EventType.DEVICE_SILENT, NIGHT + timedelta(seconds=i))
    [incident] = [a for a in hub.index.by_id.values() if a.kind == "incident"]
    last = NIGHT + timedelta(seconds=9)
    effects = hub.internal("p15", EventType.DEVICE_SILENT, last + gap)
    [late] = [a for a in effects.alarms.values() if a.device_id == "p15"]
    assert (late.suppressed_by == f"incident:{incident.id}") is folded
    if not folded:
        assert late.suppressed_by is None


@pytest.mark.parametrize(
    ("kinds", "refused"),
    [
        (["device_offline", "power_lost"], None),
        (["device_offline", "battery_low", "tamper"], None),
        (["device_offline", "button"], "button"),  # a press is never folded into an outage
        (["left_safe_zone"], "left_safe_zone"),  # a person alarm (priority 2)
        (["no_such_kind"], "no_such_kind"),  # a typo folds nothing: refused too
    ],
)
def test_storm_kinds_refuse_person_alarms(kinds: list[str], refused: str | None) -> None:
    text = (REPO / "config" / "rules.toml").read_text()
    text = text.replace(
        'kinds = ["device_offline", "power_lost"]', f"kinds = {orjson.dumps(kinds).decode()}"
    )
    if refused is None:
        assert parse_rules(text).storm.kinds == frozenset(kinds)  # type: ignore[union-attr]
        return
    with pytest.raises(RulesError, match=f"storm.kinds.*{refused}"):
        parse_rules(text)


# --- item 8: a municipality-wide silence works, is bounded, and spares priority 1 --------


class _P1(TypedDict, total=False):
    include_priority_1: bool


def _p1(include: bool) -> _P1:
    """Only name the new field when it is set: the rows without it ran on the old code too."""
    return {"include_priority_1": True} if include else {}


@pytest.mark.parametrize(
    ("silence_of", "what", "include_p1", "suppressed"),
    [
        # a silence of the whole municipality (no device, no resident) ...
        ("0301", "door", False, True),  # ... covers a night door (P2) of that municipality
        ("0301", "battery", False, True),  # ... and technical alarms
        ("0301", "pendant", False, False),  # ... but never hides a press (P1) from escalation
        ("0301", "fall", False, False),
        ("0301", "pendant", True, True),  # unless the silence says so explicitly
        ("4601", "door", False, False),  # another municipality's silence: nothing here
    ],
)
def test_a_municipality_wide_silence(
    silence_of: str, what: str, include_p1: bool, suppressed: bool
) -> None:
    silence = Silence(
        "s1",
        silence_of,
        NIGHT - timedelta(hours=1),
        NIGHT + timedelta(hours=1),
        reason="network work",
        **_p1(include_p1),
    )
    kind = "pendant" if what == "battery" else what
    hub = Hub([device("d", kind)], silences=(silence,))
    [alarm] = hub.send("d", what, NIGHT).alarms.values()
    assert alarm.suppressed_by == ("silence:s1" if suppressed else None)


@pytest.mark.parametrize(
    ("device_id", "include_p1", "suppressed"),
    [("pend", False, False), ("pend", True, True), ("other", True, False)],
)
def test_a_device_silence_spares_priority_1_unless_it_says_so(
    device_id: str, include_p1: bool, suppressed: bool
) -> None:
    silence = Silence(
        "s1",
        "0301",
        NIGHT - timedelta(hours=1),
        NIGHT + timedelta(hours=1),
        device_id=device_id,
        **_p1(include_p1),
    )
    hub = Hub([device("pend", "pendant")], silences=(silence,))
    [alarm] = hub.send("pend", "pendant", NIGHT).alarms.values()
    assert alarm.suppressed_by == ("silence:s1" if suppressed else None)


@pytest.mark.parametrize(("include_p1", "suppressed"), [(False, False), (True, True)])
def test_a_press_from_a_decommissioned_pendant_is_spared_by_its_silence_as_p1_is(
    include_p1: bool, suppressed: bool
) -> None:
    """The stray alarm (`unregistered_device`, priority 2) stands for the press: a
    "pendant being replaced" silence hid it for its week while the resident still
    wore the old pendant (found in review, 2026-12-06)."""
    silence = Silence(
        "s1",
        "0301",
        NIGHT - timedelta(hours=1),
        NIGHT + timedelta(days=7),
        device_id="pend",
        **_p1(include_p1),
    )
    hub = Hub([replace(device("pend", "pendant"), active=False)], silences=(silence,))
    [alarm] = hub.send("pend", "pendant", NIGHT, refused=True).alarms.values()
    assert alarm.kind == "unregistered_device"
    assert alarm.suppressed_by == ("silence:s1" if suppressed else None)


@pytest.mark.parametrize(
    ("device_id", "asked", "expected"),
    [
        (None, None, timedelta(hours=24)),  # municipality-wide, no end given: the default bound
        (None, timedelta(hours=2), timedelta(hours=2)),
        (None, timedelta(hours=25), None),  # longer than the bound: refused
        ("pend", None, None),  # a device's silence names its end
        ("pend", timedelta(days=30), timedelta(days=30)),
    ],
)
def test_silence_bounds(
    device_id: str | None, asked: timedelta | None, expected: timedelta | None
) -> None:
    limit = timedelta(hours=24)
    ends = NIGHT + asked if asked is not None else None
    got = suppress.silence_end(device_id, NIGHT, ends, limit)
    if expected is None:
        assert isinstance(got, str)  # the reason it is refused
    else:
        assert got == NIGHT + expected


# --- `rules explain`: every suppression that could apply, and when it would end -----------


def _explained(
    what: str, silences: tuple[Silence, ...] = (), active: tuple[Alarm, ...] = ()
) -> list[tuple[object, ...]]:
    dev = device("d", "pendant" if what in {"battery", "power"} else what, resident="r-17")
    etype = EventType(EVENTS[what][0])
    out = explain(RULES, dev, etype, NIGHT, dict(EVENTS[what][1]), silences=silences, alarms=active)
    return [(s["by"].split(":")[0], s["applies"], s["ends"]) for s in out["suppressions"]]


def _open(
    kind: str, priority: int, municipality: str = "0301", resident: str | None = "r-17"
) -> Alarm:
    return Alarm(
        f"a-{kind}",
        "x",
        municipality,
        kind,
        Priority(priority),
        AlarmState.OPEN,
        NIGHT,
        NIGHT,
        resident=resident,
    )


INCIDENT_ENDS = "when the incident is resolved (by hand, or when every device recovered)"
WIDE = Silence(
    "s1", "0301", NIGHT - timedelta(hours=1), NIGHT + timedelta(hours=2), reason="network"
)
LATER_SILENCE = Silence(
    "s2", "0301", NIGHT + timedelta(hours=1), NIGHT + timedelta(hours=3), device_id="d"
)


@pytest.mark.parametrize(
    ("what", "silences", "active", "expected"),
    [
        ("door", (), (), []),
        ("door", (WIDE,), (), [("silence", True, WIDE.ends_at.isoformat())]),
        ("pendant", (WIDE,), (), [("silence", False, WIDE.ends_at.isoformat())]),  # P1 spared
        (
            "door",
            (LATER_SILENCE,),
            (),
            [("silence", False, LATER_SILENCE.ends_at.isoformat())],
        ),  # not yet
        ("door", (), (_open("button", 1),), [("inhibited", True, "when that alarm is resolved")]),
        ("door", (), (_open("button", 1, "4601"),), []),  # another municipality's r-17
        (
            "battery",
            (WIDE,),
            (_open("fall", 1),),
            [
                ("silence", True, WIDE.ends_at.isoformat()),
                ("inhibited", True, "when that alarm is resolved"),
            ],
        ),
        ("power", (), (), [("incident", False, INCIDENT_ENDS)]),  # could become part of an outage
        ("power", (), (_open("incident", 2, resident=None),), [("incident", True, INCIDENT_ENDS)]),
    ],
)
def test_explain_lists_every_suppression_and_its_end(
    what: str, silences: tuple, active: tuple, expected: list
) -> None:
    assert _explained(what, silences, active) == expected


def test_rules_explain_reads_the_stores_silences_and_alarms(tmp_path: Path) -> None:
    """The CLI, on a real store: a silence of the whole municipality, with its end."""
    db = tmp_path / "a.db"
    env = {"ALARMHUB_DATABASE_URL": f"sqlite:///{db}"}
    assert (
        run_cli(
            [
                "devices",
                "register",
                "--id",
                "door-1",
                "--kind",
                "door_sensor",
                "--municipality",
                "0301",
            ],
            env,
        ).returncode
        == 0
    )
    with sqlite_at(db) as conn:
        accounts.insert_silence(
            conn,
            Silence(
                "sil_1",
                "0301",
                NIGHT - timedelta(hours=1),
                NIGHT + timedelta(hours=5),
                reason="network",
                created_by="madm",
                created_at=NIGHT,
            ),
            (),
        )
    out = run_cli(
        [
            "rules",
            "explain",
            "--device",
            "door-1",
            "--event",
            "door.opened",
            "--at",
            NIGHT.isoformat(),
            "--json",
        ],
        env,
    )
    assert out.returncode == 0, out.stderr
    [silence] = orjson.loads(out.stdout)["suppressions"]
    assert (silence["by"], silence["applies"], silence["ends"]) == (
        "silence:sil_1",
        True,
        (NIGHT + timedelta(hours=5)).isoformat(),
    )


@pytest.mark.parametrize(
    ("tag_kind", "cause_active", "reason"),
    [
        ("inhibited", True, None),
        ("inhibited", False, "inhibitor_resolved"),  # resolved by a version that never released
        ("incident", True, None),
        ("incident", False, "incident_resolved"),
        ("silence", False, None),  # silences are ended_silences' business
    ],
)
def test_an_alarm_whose_cause_is_gone_is_released_by_the_sweep(
    tag_kind: str, cause_active: bool, reason: str | None
) -> None:
    cause = _open("button", 1)
    if not cause_active:
        cause = replace(cause, state=AlarmState.RESOLVED, resolved_at=NIGHT)
    hidden = replace(
        _open("door_open_night", 2), id="hidden", suppressed_by=f"{tag_kind}:{cause.id}"
    )
    index = AlarmIndex()
    index.load([cause, hidden])
    releases = suppress.orphaned([hidden], index.get, LATER)
    assert [r.entry.detail["reason"] for r in releases] == ([reason] if reason else [])


def test_an_incident_after_one_resolved_by_hand_is_a_new_incident_with_an_id_of_its_own() -> None:
    """The operator's resolve puts the incident's alarms back in the queue; one more
    within the window makes an incident of the same first alarm again. It took the
    resolved incident's id, and the store refused that write round after round,
    holding every later message (found in review, 2026-12-06)."""
    hub = _storm_hub()
    for i in range(10):
        hub.internal(f"p{i}", EventType.DEVICE_SILENT, NIGHT + timedelta(seconds=i))
    [incident] = [a for a in hub.index.by_id.values() if a.kind == "incident"]
    assert len(_resolve_by_operator(hub, incident, NIGHT + timedelta(seconds=60))) == 10
    effects = hub.internal("p10", EventType.DEVICE_SILENT, NIGHT + timedelta(seconds=120))
    [again] = [i for i in effects.new_alarm_ids if effects.alarms[i].kind == "incident"]
    assert again != incident.id
    assert effects.alarms[again].is_active
