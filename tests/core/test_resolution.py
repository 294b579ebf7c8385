"""Issue 12 items 3 and 4 as tables of plain values on the pure core.

3: a device event closes only technical and follow-up alarms; a person alarm
   waits for an operator, with the clearing event shown on it.
4: a trigger never joins an alarm that is too old or whose suppression has ended;
   a repeat on an acknowledged person alarm re-alerts; a reopened alarm escalates
   afresh and is asked about suppression again.

Items 5 and 6 (escalation policy) are in tests/core/test_escalation_policy.py.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from alarmhub.config.profiles import load_catalog
from alarmhub.config.rules import parse_rules, person_alarm_auto_resolvers
from alarmhub.core.decode import DecodeLimits
from alarmhub.core.escalation import next_for_alarm
from alarmhub.core.index import AlarmIndex
from alarmhub.core.model import (
    Alarm,
    AlarmState,
    Device,
    DeviceKind,
    Priority,
    RawMessage,
    TimelineType,
    Verdict,
)
from alarmhub.core.pipeline import BatchEffects, Context, decode_all, fingerprint, process_batch
from alarmhub.core.suppress import Silence
from tests.support.helpers import REPO

NIGHT = datetime(2026, 11, 22, 1, 0, tzinfo=UTC)  # 02:00 in Oslo
RULES_TEXT = (REPO / "config" / "rules.toml").read_text()
RULES = parse_rules(RULES_TEXT)
CATALOG = load_catalog(REPO / "devices")
FENCE = {"lat": 59.9139, "lon": 10.7522}
INSIDE = {"lat": 59.9140, "lon": 10.7520, "accuracy_m": 15}
OUTSIDE = {"lat": 59.9300, "lon": 10.7522, "accuracy_m": 20}  # ~1.8 km north
DEVICES = {
    d.id: d
    for d in (
        Device("pend-1", DeviceKind.SAFETY_ALARM, "0301", resident="r-1"),
        Device("door-1", DeviceKind.DOOR_SENSOR, "0301"),
        Device("disp-1", DeviceKind.MEDICATION_DISPENSER, "0301"),
        Device("plug-1", DeviceKind.SAFETY_ALARM, "0301"),
        Device(
            "gps-1",
            DeviceKind.GPS_TRACKER,
            "0301",
            settings=replace(
                Device("x", DeviceKind.GPS_TRACKER, "0").settings,
                geofence_circle=(59.9139, 10.7522, 500.0),
            ),
        ),
    )
}


def opted_in(text: str = RULES_TEXT) -> str:
    """The default rules with "door closed" allowed to close the night-door alarm."""
    return text.replace(
        'resolves = ["door_open_night"]',
        'resolves = ["door_open_night"]\nauto_resolve_person_alarm = true',
    )


class View(AlarmIndex):
    def apply(self, effects: BatchEffects) -> None:
        for a in effects.alarms.values():
            self.put(a)


def ctx(rules_text: str = RULES_TEXT, silences: tuple[Silence, ...] = ()) -> Context:
    rules = RULES if rules_text == RULES_TEXT else parse_rules(rules_text)
    return Context(DEVICES, CATALOG, rules, DecodeLimits(), silences)


_seq = iter(range(10**9))


def send(
    view: View, device: str, etype: str, at: datetime, c: Context | None = None, **fields: object
) -> BatchEffects:
    c = c or ctx()
    payload = {"id": f"m{next(_seq)}", "ts": at.isoformat(), "type": etype, **fields}
    raw = RawMessage(f"alarmhub/v1/{device}/events", orjson.dumps(payload), at)
    decoded = decode_all([raw], c)
    effects = process_batch([raw], decoded, [fingerprint(raw, decoded[0])], set(), view, c)
    view.apply(effects)
    return effects


def verdict(effects: BatchEffects) -> Verdict:
    return effects.messages[0].events[0].verdict


# --- item 3: a person alarm is closed by a person ---------------------------------------

# (device, raising event and fields, clearing event and fields, rules, verdict of the
#  clearing event, state after it, clearing event shown on the alarm)
CLEARING = [
    (
        "door-1",
        ("door.opened", {}),
        ("door.closed", {}),
        RULES_TEXT,
        Verdict.HELD,
        AlarmState.OPEN,
        "door.closed",
    ),
    (
        "gps-1",
        ("location", OUTSIDE),
        ("location", INSIDE),
        RULES_TEXT,
        Verdict.HELD,
        AlarmState.OPEN,
        "location",
    ),
    (
        "pend-1",
        ("button.pressed", {}),
        ("button.cancelled", {}),
        RULES_TEXT,
        Verdict.HELD,
        AlarmState.OPEN,
        "button.cancelled",
    ),
    (
        "plug-1",
        ("power.lost", {}),
        ("power.restored", {}),
        RULES_TEXT,
        Verdict.CLEARED,
        AlarmState.RESOLVED,
        None,
    ),
    (
        "door-1",
        ("door.opened", {}),
        ("door.closed", {}),
        opted_in(),
        Verdict.CLEARED,
        AlarmState.RESOLVED,
        None,
    ),
]


@pytest.mark.parametrize(
    ("device", "raise_", "clear", "rules", "expect", "state", "shown"), CLEARING
)
def test_a_device_event_closes_only_technical_and_follow_up_alarms(
    device: str,
    raise_: tuple[str, dict[str, object]],
    clear: tuple[str, dict[str, object]],
    rules: str,
    expect: Verdict,
    state: AlarmState,
    shown: str | None,
) -> None:
    view, c = View(), ctx(rules)
    raised = send(view, device, raise_[0], NIGHT, c, **raise_[1])
    [alarm_id] = raised.new_alarm_ids
    cleared = send(view, device, clear[0], NIGHT + timedelta(seconds=20), c, **clear[1])
    assert verdict(cleared) is expect
    after = cleared.alarms[alarm_id]
    assert after.state is state
    assert after.clearing_event == shown
    if shown is not None:
        # The operator sees what happened and when; the alarm stays theirs to close.
        assert after.clearing_at == NIGHT + timedelta(seconds=20)
        [entry] = cleared.timeline
        assert (entry.type, entry.detail["clearing"], entry.detail["waiting_for"]) == (
            TimelineType.EVENT,
            True,
            "operator",
        )


def test_a_chatty_clearing_sensor_is_recorded_once_and_a_new_trigger_clears_the_marker() -> None:
    view = View()
    [alarm_id] = send(view, "door-1", "door.opened", NIGHT).new_alarm_ids
    send(view, "door-1", "door.closed", NIGHT + timedelta(seconds=20))
    again = send(view, "door-1", "door.closed", NIGHT + timedelta(seconds=40))
    assert (verdict(again), again.timeline) == (Verdict.HELD, [])
    reopened = send(view, "door-1", "door.opened", NIGHT + timedelta(seconds=60))
    assert verdict(reopened) is Verdict.REPEAT
    assert reopened.alarms[alarm_id].clearing_event is None


def test_rules_check_warns_about_every_rule_that_lets_a_device_close_a_person_alarm() -> None:
    assert person_alarm_auto_resolvers(RULES) == []
    [warning] = person_alarm_auto_resolvers(parse_rules(opted_in()))
    assert "door closed" in warning
    assert "door_open_night" in warning


# --- item 4: new presses never disappear into old alarms -------------------------------

P1_OPEN = Alarm(
    "old",
    "pend-1",
    "0301",
    "button",
    Priority.CRITICAL,
    AlarmState.OPEN,
    NIGHT,
    NIGHT,
    policy="p1",
    resident="r-1",
)
SILENCE = Silence(
    "s1", "0301", NIGHT - timedelta(hours=1), NIGHT + timedelta(hours=1), device_id="pend-1"
)
WEEK = timedelta(days=7)

# (the active alarm of the pendant, silences in force, how long after NIGHT the press
#  comes, verdict, whether it joined the old alarm, the state of the alarm it is in)
MERGES = [
    (P1_OPEN, (), timedelta(minutes=1), Verdict.REPEAT, True, AlarmState.OPEN),
    (P1_OPEN, (), WEEK, Verdict.NEW, False, AlarmState.OPEN),
    (
        replace(P1_OPEN, suppressed_by="silence:s1"),
        (SILENCE,),
        timedelta(minutes=1),
        Verdict.REPEAT,
        True,
        AlarmState.OPEN,
    ),
    (
        replace(P1_OPEN, suppressed_by="silence:s1"),
        (),
        timedelta(minutes=1),
        Verdict.NEW,
        False,
        AlarmState.OPEN,
    ),
    (
        replace(P1_OPEN, suppressed_by="silence:s1"),
        (SILENCE,),
        timedelta(hours=2),
        Verdict.NEW,
        False,
        AlarmState.OPEN,
    ),
    (
        replace(P1_OPEN, suppressed_by="inhibited:gone"),
        (),
        timedelta(minutes=1),
        Verdict.NEW,
        False,
        AlarmState.OPEN,
    ),
    (
        replace(
            P1_OPEN, state=AlarmState.ACKNOWLEDGED, acknowledged_at=NIGHT, acknowledged_by="kari"
        ),
        (),
        timedelta(minutes=10),
        Verdict.REPEAT,
        True,
        AlarmState.OPEN,
    ),
    # Raised in the old municipality in the window before this instance learnt of a
    # move (the registry poll), or about the device's previous resident: the press is
    # the new owners' to see, never merged into an alarm they cannot see.
    (
        replace(P1_OPEN, municipality="4601"),
        (),
        timedelta(minutes=1),
        Verdict.NEW,
        False,
        AlarmState.OPEN,
    ),
    (
        replace(P1_OPEN, resident="r-9"),
        (),
        timedelta(minutes=1),
        Verdict.NEW,
        False,
        AlarmState.OPEN,
    ),
    (
        replace(P1_OPEN, resident=None),
        (),
        timedelta(minutes=1),
        Verdict.NEW,
        False,
        AlarmState.OPEN,
    ),
]


@pytest.mark.parametrize(("active", "silences", "after", "expect", "joined", "state"), MERGES)
def test_a_press_joins_only_a_live_recent_alarm(
    active: Alarm,
    silences: tuple[Silence, ...],
    after: timedelta,
    expect: Verdict,
    joined: bool,
    state: AlarmState,
) -> None:
    view = View()
    view.put(active)
    effects = send(view, "pend-1", "button.pressed", NIGHT + after, ctx(silences=silences))
    assert verdict(effects) is expect
    alarm_id = effects.messages[0].events[0].alarm_id
    assert (alarm_id == active.id) is joined
    assert alarm_id is not None
    alarm = effects.alarms[alarm_id]
    assert alarm.state is state
    if not joined:
        # Its own alarm: not suppressed by the ended cause, escalating under its policy.
        assert (alarm.suppressed_by, alarm.policy, alarm.raised_at) == (None, "p1", NIGHT + after)
        assert effects.timeline[0].detail["not_merged_into"] == active.id
        # The old one is set aside for it in the same batch, still active (issue 15: the
        # database keeps one active alarm per key that is not set aside).
        set_aside = effects.alarms[active.id]
        assert (set_aside.superseded_by, set_aside.state) == (alarm_id, active.state)
        assert set_aside.id not in effects.new_alarm_ids
        # The new alarm is the one the next press finds, and stays so once the set-aside
        # one is put after it (a restart loads them in any order).
        assert view.active(("pend-1", "button")) == alarm
        index = AlarmIndex()
        index.load([alarm, set_aside])
        assert index.active(("pend-1", "button")) == alarm
    else:
        assert active.id not in effects.alarms or effects.alarms[active.id].superseded_by is None


# (the active alarm as raised before the device changed hands, why the press did not
#  join it)
MOVED = [
    (replace(P1_OPEN, municipality="4601", resident="r-17"), "device_moved"),
    (replace(P1_OPEN, resident="r-9"), "resident_changed"),
    (replace(P1_OPEN, municipality="4601", resident="r-17", suppressed_by="x"), "device_moved"),
]


@pytest.mark.parametrize(("active", "why"), MOVED)
def test_a_press_after_a_move_raises_its_alarm_in_the_devices_municipality(
    active: Alarm, why: str
) -> None:
    """Promise 3: the old alarm stays in its owners' queue (set aside), the press goes to
    the queue of the municipality the device is in now, about its resident; and so does
    every later press, which joins the new alarm."""
    view = View()
    view.put(active)
    effects = send(view, "pend-1", "button.pressed", NIGHT + timedelta(minutes=1))
    [raised] = effects.new_alarm_ids
    alarm = effects.alarms[raised]
    assert (alarm.municipality, alarm.resident) == ("0301", "r-1")
    assert effects.timeline[0].detail["why"] == why
    assert effects.alarms[active.id].superseded_by == raised
    later = send(view, "pend-1", "button.pressed", NIGHT + timedelta(minutes=2))
    assert (verdict(later), later.messages[0].events[0].alarm_id) == (Verdict.REPEAT, raised)


def test_a_repeat_on_an_acknowledged_person_alarm_re_alerts_with_a_fresh_escalation() -> None:
    acked = replace(
        P1_OPEN, state=AlarmState.ACKNOWLEDGED, acknowledged_at=NIGHT, acknowledged_by="kari"
    )
    view = View()
    view.put(acked)
    at = NIGHT + timedelta(minutes=10)
    effects = send(view, "pend-1", "button.pressed", at)
    alarm = effects.alarms[acked.id]
    assert (alarm.state, alarm.raised_at, alarm.acknowledged_by) == (AlarmState.OPEN, NIGHT, "kari")
    assert (alarm.escalation_from, alarm.escalation_generation) == (at, 1)
    assert effects.timeline[0].detail["realert"] is True
    assert effects.timeline[0].detail["acknowledged_by"] == "kari"
    # The earlier rows are all decided; the fresh escalation's first step is due now.
    fired = {(r, s) for r in range(3) for s in range(3)}
    policy = RULES.policies["p1"]
    deadline = next_for_alarm(alarm, policy, fired)
    assert deadline is not None
    assert (deadline.due_at, deadline.target) == (at, "operator_queue")


def test_a_repeat_on_an_acknowledged_technical_alarm_stays_acknowledged() -> None:
    acked = Alarm(
        "b",
        "plug-1",
        "0301",
        "battery_low",
        Priority.TECHNICAL,
        AlarmState.ACKNOWLEDGED,
        NIGHT,
        NIGHT,
        acknowledged_at=NIGHT,
        acknowledged_by="kari",
        policy="p4",
    )
    view = View()
    view.put(acked)
    effects = send(view, "plug-1", "battery.low", NIGHT + timedelta(minutes=5), battery_pct=5)
    assert effects.alarms["b"].state is AlarmState.ACKNOWLEDGED
    assert effects.alarms["b"].escalation_generation == 0


def test_a_reopened_alarm_escalates_afresh_and_is_asked_about_suppression_again() -> None:
    c = ctx(opted_in())
    view = View()
    [alarm_id] = send(view, "door-1", "door.opened", NIGHT, c).new_alarm_ids
    assert (
        verdict(send(view, "door-1", "door.closed", NIGHT + timedelta(seconds=20), c))
        is Verdict.CLEARED
    )
    # A silence began since: the reopened alarm is suppressed by it, and says so.
    silence = Silence(
        "s2", "0301", NIGHT + timedelta(seconds=30), NIGHT + timedelta(hours=1), device_id="door-1"
    )
    at = NIGHT + timedelta(seconds=60)
    flap = send(view, "door-1", "door.opened", at, ctx(opted_in(), (silence,)))
    assert verdict(flap) is Verdict.REOPENED
    alarm = flap.alarms[alarm_id]
    assert (alarm.raised_at, alarm.escalation_from, alarm.escalation_generation) == (NIGHT, at, 1)
    assert alarm.suppressed_by == "silence:s2"
    # Without a silence, its escalation starts over at the reopening.
    view2 = View()
    [alarm2_id] = send(view2, "door-1", "door.opened", NIGHT, c).new_alarm_ids
    send(view2, "door-1", "door.closed", NIGHT + timedelta(seconds=20), c)
    alarm2 = send(view2, "door-1", "door.opened", at, c).alarms[alarm2_id]
    assert alarm2.suppressed_by is None
    every_first_run_row = {(r, s) for r in range(2) for s in range(2)}
    deadline = next_for_alarm(alarm2, RULES.policies["p2"], every_first_run_row)
    assert deadline is not None
    assert deadline.due_at == at
