"""The pipeline's decisions as tables of plain values: no broker, no database, no clock."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, time, timedelta

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alarmhub.config.profiles import load_catalog
from alarmhub.config.rules import load_rules, parse_rules
from alarmhub.core.decode import DecodeLimits
from alarmhub.core.index import AlarmIndex, AlarmKey
from alarmhub.core.judge import alarm_id, auto_resolve, judge
from alarmhub.core.model import (
    Alarm,
    AlarmState,
    Device,
    DeviceKind,
    Event,
    EventType,
    Priority,
    RawMessage,
    Verdict,
)
from alarmhub.core.pipeline import BatchEffects, Context, decode_all, fingerprint, process_batch
from alarmhub.core.rules import Rule, RuleSet, TimeWindow
from tests.support.helpers import REPO

T0 = datetime(2026, 11, 22, 1, 0, tzinfo=UTC)  # 02:00 in Oslo: night
DAY = datetime(2026, 11, 22, 11, 0, tzinfo=UTC)  # 12:00 in Oslo
PENDANT = Device("pend-1", DeviceKind.SAFETY_ALARM, "0301")
DOOR = Device("door-1", DeviceKind.DOOR_SENSOR, "0301")
OTHER = Device("pend-9", DeviceKind.SAFETY_ALARM, "4601")
RULES = load_rules(REPO / "config" / "rules.toml")
CTX = Context(
    registry={d.id: d for d in (PENDANT, DOOR, OTHER)},
    catalog=load_catalog(REPO / "devices"),
    rules=RULES,
    limits=DecodeLimits(),
)


class View(AlarmIndex):
    """The daemon's index, with the shell's apply-after-commit step."""

    def __init__(self, alarms: list[Alarm] | None = None) -> None:
        super().__init__()
        self.load(alarms or [])

    @property
    def alarms(self) -> dict[AlarmKey, Alarm]:
        return {(a.device_id, a.kind): a for a in [*self.by_id.values(), *self._resolved.values()]}

    def apply(self, effects: BatchEffects) -> None:
        for a in effects.alarms.values():
            self.put(a)


def msg(device: str, msg_id: str, etype: str, at: datetime, **fields: object) -> RawMessage:
    payload = {"id": msg_id, "ts": at.isoformat(), "type": etype, **fields}
    return RawMessage(f"alarmhub/v1/{device}/events", orjson.dumps(payload), at)


def run(
    raws: list[RawMessage], view: View, seen: set[str] | None = None, ctx: Context = CTX
) -> BatchEffects:
    decoded = decode_all(raws, ctx)
    fps = [fingerprint(r, d) for r, d in zip(raws, decoded, strict=True)]
    effects = process_batch(raws, decoded, fps, seen or set(), view, ctx)
    view.apply(effects)
    return effects


def test_first_press_raises_priority_1_button_alarm_in_the_devices_municipality() -> None:
    effects = run([msg("pend-1", "a", "button.pressed", T0)], View())
    [alarm] = effects.alarms.values()
    assert (alarm.kind, alarm.priority, alarm.state, alarm.municipality) == (
        "button",
        Priority.CRITICAL,
        AlarmState.OPEN,
        "0301",
    )
    assert alarm.raised_at == T0
    assert alarm.id == alarm_id("pend-1", "a", "button")
    assert effects.new_alarm_ids == [alarm.id]
    assert [e.type.value for e in effects.timeline] == ["raised"]
    assert effects.messages[0].events[0].verdict is Verdict.NEW


def test_repeats_join_the_open_alarm_and_keep_the_first_raised_at() -> None:
    view = View()
    run([msg("pend-1", "a", "button.pressed", T0)], view)
    effects = run(
        [
            msg("pend-1", "b", "button.pressed", T0 + timedelta(seconds=5)),
            msg("pend-1", "c", "button.pressed", T0 + timedelta(seconds=9)),
        ],
        view,
    )
    [alarm] = effects.alarms.values()
    assert alarm.repeat_count == 2
    assert alarm.raised_at == T0
    assert alarm.last_seen_at == T0 + timedelta(seconds=9)
    assert [o.events[0].verdict for o in effects.messages] == [Verdict.REPEAT, Verdict.REPEAT]
    assert effects.new_alarm_ids == []


def test_same_message_id_twice_is_one_event_within_a_batch_and_across_batches() -> None:
    view = View()
    first = run(
        [msg("pend-1", "a", "button.pressed", T0), msg("pend-1", "a", "button.pressed", T0)], view
    )
    assert [m.verdict for m in first.messages] == [Verdict.LOGGED, Verdict.REDELIVERY]
    fp = first.messages[0].fingerprint
    again = run([msg("pend-1", "a", "button.pressed", T0)], view, seen={fp})
    assert again.messages[0].verdict is Verdict.REDELIVERY
    assert again.alarms == {}
    assert again.timeline == []


def test_a_dead_letter_redelivered_is_not_a_second_dead_letter() -> None:
    bad = RawMessage("alarmhub/v1/pend-1/events", b"{oops", T0)
    first = run([bad, bad], View())
    assert [m.verdict for m in first.messages] == [Verdict.REJECTED, Verdict.REDELIVERY]


def test_same_message_id_from_two_devices_is_two_events() -> None:
    effects = run(
        [msg("pend-1", "a", "button.pressed", T0), msg("pend-9", "a", "button.pressed", T0)], View()
    )
    assert len(effects.alarms) == 2
    assert {a.municipality for a in effects.alarms.values()} == {"0301", "4601"}


@pytest.mark.parametrize(
    ("at", "verdict"),
    [
        (datetime(2026, 11, 22, 21, 0, tzinfo=UTC), Verdict.NEW),  # 22:00 Oslo: window opens
        (datetime(2026, 11, 22, 20, 59, tzinfo=UTC), Verdict.LOGGED),  # 21:59
        (datetime(2026, 11, 23, 5, 59, tzinfo=UTC), Verdict.NEW),  # 06:59
        (datetime(2026, 11, 23, 6, 0, tzinfo=UTC), Verdict.LOGGED),  # 07:00: window closed
        (datetime(2026, 7, 1, 20, 30, tzinfo=UTC), Verdict.NEW),  # 22:30 summer time (UTC+2)
        (datetime(2026, 7, 1, 19, 30, tzinfo=UTC), Verdict.LOGGED),  # 21:30 summer time
    ],
)
def test_door_opening_is_an_alarm_only_at_night_local_time(at: datetime, verdict: Verdict) -> None:
    effects = run([msg("door-1", "d", "door.opened", at)], View())
    assert effects.messages[0].events[0].verdict is verdict


def test_door_closed_is_shown_on_the_night_door_alarm_which_waits_for_an_operator() -> None:
    # Issue 12 item 3 changed this default: a door closing behind a resident who
    # walked out says nothing about their safety (tests/core/test_resolution.py).
    view = View()
    [first_id] = run([msg("door-1", "o1", "door.opened", T0)], view).new_alarm_ids
    closed = run([msg("door-1", "c1", "door.closed", T0 + timedelta(seconds=20))], view)
    assert closed.messages[0].events[0].verdict is Verdict.HELD
    held = closed.alarms[first_id]
    assert (held.state, held.clearing_event) == (AlarmState.OPEN, "door.closed")


OPT_IN_CTX = replace(
    CTX,
    rules=parse_rules(
        (REPO / "config" / "rules.toml")
        .read_text()
        .replace(
            'resolves = ["door_open_night"]',
            'resolves = ["door_open_night"]\nauto_resolve_person_alarm = true',
        )
    ),
)


def test_door_closed_resolves_when_the_rule_opts_in_and_a_quick_reopen_is_the_same_alarm() -> None:
    view = View()
    opened = run([msg("door-1", "o1", "door.opened", T0)], view, ctx=OPT_IN_CTX)
    [first_id] = opened.new_alarm_ids
    closed = run(
        [msg("door-1", "c1", "door.closed", T0 + timedelta(seconds=20))], view, ctx=OPT_IN_CTX
    )
    assert closed.messages[0].events[0].verdict is Verdict.CLEARED
    resolved = closed.alarms[first_id]
    assert (resolved.state, resolved.outcome, resolved.resolved_by) == (
        AlarmState.RESOLVED,
        "auto",
        "alarmhub",
    )
    assert [e.type.value for e in closed.timeline] == ["auto_resolved"]
    flap = run(
        [msg("door-1", "o2", "door.opened", T0 + timedelta(seconds=60))], view, ctx=OPT_IN_CTX
    )
    assert flap.messages[0].events[0].verdict is Verdict.REOPENED
    reopened = flap.alarms[first_id]
    assert (reopened.state, reopened.raised_at, reopened.repeat_count) == (AlarmState.OPEN, T0, 1)
    # Past the flap window, a new opening is a new alarm.
    run([msg("door-1", "c2", "door.closed", T0 + timedelta(seconds=70))], view, ctx=OPT_IN_CTX)
    later = run(
        [msg("door-1", "o3", "door.opened", T0 + timedelta(seconds=70 + 301))], view, ctx=OPT_IN_CTX
    )
    assert later.messages[0].events[0].verdict is Verdict.NEW
    assert later.new_alarm_ids != [first_id]


@pytest.mark.parametrize(
    "moved",
    [replace(DOOR, municipality="4601", resident="r-17"), replace(DOOR, resident="r-18")],
    ids=["to-another-municipality", "to-another-resident"],
)
def test_a_flap_after_the_device_moved_is_a_new_alarm_where_the_device_now_is(
    moved: Device,
) -> None:
    """Reopening the auto-resolved alarm would put the new owner's alarm in the old
    municipality's queue (promise 3), under the new resident's name."""
    view = View()
    [first_id] = run([msg("door-1", "o1", "door.opened", T0)], view, ctx=OPT_IN_CTX).new_alarm_ids
    run([msg("door-1", "c1", "door.closed", T0 + timedelta(seconds=20))], view, ctx=OPT_IN_CTX)
    # The alarm is resolved (none open), so the move is allowed; then, within the window:
    ctx = replace(OPT_IN_CTX, registry={**OPT_IN_CTX.registry, "door-1": moved})
    flap = run([msg("door-1", "o2", "door.opened", T0 + timedelta(seconds=60))], view, ctx=ctx)
    assert flap.messages[0].events[0].verdict is Verdict.NEW
    [new_id] = flap.new_alarm_ids
    assert new_id != first_id
    alarm = flap.alarms[new_id]
    assert (alarm.municipality, alarm.resident) == (moved.municipality, moved.resident)
    # The old alarm is not touched: it stays resolved, in 0301, about nobody new.
    assert first_id not in flap.alarms
    assert {e.alarm_id for e in flap.timeline} == {new_id}


@pytest.mark.parametrize("ctx", [CTX, OPT_IN_CTX], ids=["held-by-default", "auto-resolve"])
@pytest.mark.parametrize(
    "moved",
    [replace(DOOR, municipality="4601", resident="r-17"), replace(DOOR, resident="r-18")],
    ids=["to-another-municipality", "to-another-resident"],
)
def test_a_clearing_event_after_the_device_moved_leaves_the_old_alarm_alone(
    moved: Device, ctx: Context
) -> None:
    """The door of the device's new home closing says nothing about the old alarm: it
    must neither resolve it nor tell the old municipality's operator the door is shut
    (promise 3: another municipality's device does not change how an alarm is handled).
    The alarm's own operators close it. A move is refused while alarms are open, but
    an instance learns of a move by another process only at its next registry poll."""
    view = View()
    [first_id] = run([msg("door-1", "o1", "door.opened", T0)], view, ctx=ctx).new_alarm_ids
    moved_ctx = replace(ctx, registry={**ctx.registry, "door-1": moved})
    closed = run(
        [msg("door-1", "c1", "door.closed", T0 + timedelta(seconds=20))], view, ctx=moved_ctx
    )
    assert closed.messages[0].events[0].verdict is Verdict.LOGGED
    assert first_id not in closed.alarms
    assert closed.timeline == []


@pytest.mark.parametrize("outcome", ["false_alarm", "auto"])
def test_operator_resolved_alarm_is_never_reopened_by_flap(outcome: str) -> None:
    """Even one stored with the outcome `auto` (which an operator's resolve through the
    API could send before it was reserved): reopened, its journal note was given up as
    `not resolved`, and the second resolve wrote no export (issue 17)."""
    resolved = Alarm(
        "x",
        "door-1",
        "0301",
        "door_open_night",
        Priority.HIGH,
        AlarmState.RESOLVED,
        T0,
        T0,
        resolved_at=T0 + timedelta(seconds=10),
        outcome=outcome,
        resolved_by="op",
    )
    effects = run(
        [msg("door-1", "o9", "door.opened", T0 + timedelta(seconds=30))], View([resolved])
    )
    assert effects.messages[0].events[0].verdict is Verdict.NEW


def test_heartbeat_and_location_are_logged_and_mark_the_device_seen() -> None:
    effects = run([msg("pend-1", "h", "heartbeat", T0)], View())
    assert effects.messages[0].events[0].verdict is Verdict.LOGGED
    assert effects.alarms == {}
    assert effects.device_seen == {"pend-1": T0}


def test_rejected_message_changes_no_alarm_and_marks_no_device_seen() -> None:
    effects = run([msg("pend-1", "a", "teleport", T0)], View())
    assert effects.messages[0].verdict is Verdict.REJECTED
    assert effects.alarms == {}
    assert effects.device_seen == {}


def test_judge_logged_when_rule_raises_nothing() -> None:
    event = Event("pend-1", "a", EventType.DOOR_CLOSED, T0, T0)
    rule = Rule("closed", EventType.DOOR_CLOSED, resolves=("door_open_night",))
    assert judge(event, PENDANT, rule, None, None, T0).verdict is Verdict.LOGGED


def test_auto_resolve_keeps_raised_at_and_records_reason() -> None:
    alarm = Alarm("x", "door-1", "0301", "door_open_night", Priority.HIGH, AlarmState.OPEN, T0, T0)
    event = Event("door-1", "c", EventType.DOOR_CLOSED, DAY, DAY)
    decision = auto_resolve(alarm, event, Rule("door closed", EventType.DOOR_CLOSED), DAY)
    assert decision.alarm is not None
    assert decision.alarm.raised_at == T0
    assert decision.timeline[0].detail["reason"] == "door closed"


def test_time_window_wraps_midnight() -> None:
    w = TimeWindow(time(22), time(7))
    assert w.contains(time(23, 59))
    assert w.contains(time(0))
    assert w.contains(time(6, 59))
    assert not w.contains(time(7))
    assert not w.contains(time(12))
    assert not w.contains(time(21, 59))


# --- invariants --------------------------------------------------------------------

EVENT_TYPES = [
    "button.pressed",
    "fall.detected",
    "door.opened",
    "door.closed",
    "heartbeat",
    "battery.low",
    "tamper",
]
DEVICES = ["pend-1", "door-1", "pend-9"]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(DEVICES),
            st.integers(0, 30),
            st.sampled_from(EVENT_TYPES),
            st.integers(0, 3600 * 30),
        ),
        min_size=1,
        max_size=40,
    ),
    st.integers(1, 8),
)
def test_at_most_one_active_alarm_per_device_and_kind_and_redelivery_changes_nothing(
    steps: list[tuple[str, int, str, int]], batch_size: int
) -> None:
    """Whatever arrives, in whatever batches: one active alarm per (device, kind);
    raised_at never moves; replaying every message again changes no alarm."""
    view = View()
    raws = [
        msg(d, f"m{i}", t, T0 + timedelta(seconds=s))
        for d, i, t, s in sorted(steps, key=lambda x: x[3])
    ]
    seen: set[str] = set()
    all_alarms: dict[str, Alarm] = {}
    for start in range(0, len(raws), batch_size):
        effects = run(raws[start : start + batch_size], view, seen)
        seen.update(m.fingerprint for m in effects.messages)
        for a in effects.alarms.values():
            if a.id in all_alarms:
                assert a.raised_at == all_alarms[a.id].raised_at
            all_alarms[a.id] = a
        active = [a for a in view.alarms.values() if a.is_active]
        assert len({(a.device_id, a.kind) for a in active}) == len(active)
    before = dict(view.alarms)
    replay = run(raws, view, seen)
    assert replay.alarms == {}
    assert all(m.verdict is Verdict.REDELIVERY for m in replay.messages)
    assert view.alarms == before


def test_alarm_id_is_stable_and_distinct() -> None:
    assert alarm_id("a", "1", "button") == alarm_id("a", "1", "button")
    assert (
        len(
            {
                alarm_id("a", "1", "button"),
                alarm_id("a", "2", "button"),
                alarm_id("b", "1", "button"),
                alarm_id("a", "1", "fall"),
            }
        )
        == 4
    )


def test_rule_version_is_recorded_on_new_alarms() -> None:
    rules = replace(RULES, version="abc123")
    ctx = replace(CTX, rules=rules)
    raws = [msg("pend-1", "a", "button.pressed", T0)]
    decoded = decode_all(raws, ctx)
    effects = process_batch(raws, decoded, [fingerprint(raws[0], decoded[0])], set(), View(), ctx)
    assert next(iter(effects.alarms.values())).rules_version == "abc123"


def test_rules_set_has_every_default_alarm_kind_of_the_pipeline() -> None:
    kinds = {r.alarm for r in RULES.rules if r.alarm}
    assert {
        "button",
        "fall",
        "door_open_night",
        "dose_missed",
        "dispenser_fault",
        "battery_low",
        "tamper",
    } <= kinds
    assert isinstance(RULES, RuleSet)
