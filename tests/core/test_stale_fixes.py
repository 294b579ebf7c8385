"""A fix delivered late, out of order, must not clear a newer alarm (promises 1 and 4).

A GPS tracker or an OwnTracks phone buffers fixes while out of coverage and
delivers them late, sometimes out of order. Each message carries its device time
(`ts`); alarmhub receives them at `received_at`. An "inside" fix older than the
"outside" fix that raised `left_safe_zone` says nothing about where the person is
now: it must neither resolve the alarm nor set its clearing hint.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson
import pytest

from alarmhub.config.rules import parse_rules
from alarmhub.core.decode import DecodeLimits
from alarmhub.core.index import AlarmIndex
from alarmhub.core.judge import clear
from alarmhub.core.model import (
    Alarm,
    AlarmState,
    DeviceKind,
    DeviceSettings,
    Event,
    EventType,
    Priority,
    RawMessage,
    TsSource,
    Verdict,
)
from alarmhub.core.pipeline import BatchEffects, Context, decode_all, fingerprint, process_batch
from alarmhub.core.rules import Rule, RuleSet, current_fix
from tests.core.test_rule_engine import CATALOG, OSLO_CENTRE, dev
from tests.support.helpers import REPO

T0 = datetime(2026, 11, 22, 1, 0, tzinfo=UTC)
INSIDE = {"lat": OSLO_CENTRE[0], "lon": OSLO_CENTRE[1], "accuracy_m": 10}
OUTSIDE = {"lat": 59.9300, "lon": OSLO_CENTRE[1], "accuracy_m": 20}  # ~1.8 km north
RULES_TEXT = (REPO / "config" / "rules.toml").read_text()
BACK_INSIDE = 'name = "back inside safe zone"\nevent = "location"\nzone = "inside"\n'
LEFT_ZONE = 'alarm = "left_safe_zone"\npriority = 2\n'


def rules(variant: str) -> RuleSet:
    """The shipped rules, or a variant: `auto` lets "back inside" close the person
    alarm; `p3` makes left_safe_zone a follow-up alarm (auto-resolved by default)."""
    text = RULES_TEXT
    if variant == "auto":
        assert BACK_INSIDE in text
        text = text.replace(BACK_INSIDE, BACK_INSIDE + "auto_resolve_person_alarm = true\n")
    elif variant == "p3":
        assert LEFT_ZONE in text
        text = text.replace(LEFT_ZONE, 'alarm = "left_safe_zone"\npriority = 3\n')
        # A priority 3 alarm needs its policy; the shipped file has p3 already.
    return parse_rules(text)


class Tracker:
    """One geofenced tracker and the shell's bookkeeping: the index after each commit."""

    def __init__(self, ruleset: RuleSet) -> None:
        fence = DeviceSettings(geofence_circle=(*OSLO_CENTRE, 500.0))
        device = dev("gps-1", DeviceKind.GPS_TRACKER, settings=fence)
        self.index = AlarmIndex()
        self.ctx = Context({device.id: device}, CATALOG, ruleset, DecodeLimits())
        self.alarms: dict[str, Alarm] = {}  # every alarm as last written, resolved too

    def fix(self, taken_s: int, received_s: int, where: dict[str, float]) -> Verdict:
        """A fix taken `taken_s` after T0 (device time), received `received_s` after T0."""
        taken, received = T0 + timedelta(seconds=taken_s), T0 + timedelta(seconds=received_s)
        payload = {"id": f"fix-{taken_s}", "ts": taken.isoformat(), "type": "location", **where}
        raws = [RawMessage("alarmhub/v1/gps-1/events", orjson.dumps(payload), received)]
        decoded = decode_all(raws, self.ctx)
        effects: BatchEffects = process_batch(
            raws, decoded, [fingerprint(raws[0], decoded[0])], set(), self.index, self.ctx
        )
        for alarm in effects.alarms.values():
            self.index.put(alarm)
            self.alarms[alarm.id] = alarm
        return effects.messages[0].events[0].verdict

    def alarm(self) -> Alarm:
        [alarm] = self.alarms.values()
        return alarm


# (rules variant, what a newer "inside" fix does, the alarm's state after it)
VARIANTS = [
    ("shipped", Verdict.HELD, AlarmState.OPEN),
    ("auto", Verdict.CLEARED, AlarmState.RESOLVED),
    ("p3", Verdict.CLEARED, AlarmState.RESOLVED),
]


@pytest.mark.parametrize(("variant", "_newer", "_state"), VARIANTS)
def test_an_older_inside_fix_delivered_late_neither_clears_nor_hints(
    variant: str, _newer: Verdict, _state: AlarmState
) -> None:
    """Out at 01:10 (device time), then a fix from 01:05 inside arrives at 01:12.

    It used to be HELD with the hint "back in the zone" (shipped rules) or to
    resolve the alarm (auto_resolve_person_alarm, or a priority 3 left_safe_zone).
    """
    t = Tracker(rules(variant))
    assert t.fix(600, 600, OUTSIDE) is Verdict.NEW
    raised = t.alarm()
    assert t.fix(300, 720, INSIDE) is Verdict.STALE
    after = t.alarm()
    assert after.state is AlarmState.OPEN
    assert (after.clearing_event, after.clearing_at) == (None, None)
    assert after.raised_at == raised.raised_at == T0 + timedelta(seconds=600)


@pytest.mark.parametrize(("variant", "newer", "state"), VARIANTS)
def test_a_newer_inside_fix_still_does_what_it_did(
    variant: str, newer: Verdict, state: AlarmState
) -> None:
    """Taken after the outside fix, however late it arrives: unchanged behaviour."""
    t = Tracker(rules(variant))
    assert t.fix(600, 600, OUTSIDE) is Verdict.NEW
    assert t.fix(660, 900, INSIDE) is newer
    assert t.alarm().state is state


def test_the_newest_trigger_counts_and_raised_at_keeps_the_first_start() -> None:
    """Out at 01:10 and again at 01:20: an inside fix from 01:15 is older than the
    last trigger, so it is stale although it is newer than the first."""
    t = Tracker(rules("shipped"))
    assert t.fix(600, 600, OUTSIDE) is Verdict.NEW
    assert t.fix(1200, 1210, OUTSIDE) is Verdict.REPEAT
    # An older outside fix delivered late joins it but does not move its time back.
    assert t.fix(800, 1220, OUTSIDE) is Verdict.REPEAT
    alarm = t.alarm()
    assert alarm.trigger_ts == T0 + timedelta(seconds=1200)
    assert alarm.raised_at == T0 + timedelta(seconds=600)
    assert t.fix(900, 1230, INSIDE) is Verdict.STALE
    assert t.alarm().clearing_event is None
    assert t.fix(1200, 1240, INSIDE) is Verdict.HELD  # the same instant is not older
    assert t.alarm().clearing_event == "location"


def _alarm(priority: Priority, trigger_ts: datetime | None) -> Alarm:
    return Alarm(
        "a1", "gps-1", "0301", "left_safe_zone", priority, AlarmState.OPEN, T0, T0,
        trigger_ts=trigger_ts,
    )  # fmt: skip


def _event(ts: datetime, etype: EventType, source: TsSource) -> Event:
    return Event("gps-1", "m", etype, ts, T0 + timedelta(hours=1), ts_source=source)


BACK = Rule("back inside safe zone", EventType.LOCATION, resolves=("left_safe_zone",))
AUTO = Rule(
    "back", EventType.LOCATION, resolves=("left_safe_zone",), auto_resolve_person_alarm=True
)
EARLIER, LATER = T0 - timedelta(minutes=5), T0 + timedelta(minutes=5)


LOC, FIX, DEV, RCPT = EventType.LOCATION, EventType.USABLE_FIX, TsSource.DEVICE, TsSource.RECEIPT


CLEAR_TABLE: list[tuple[object, ...]] = [
    (Priority.HIGH, BACK, T0, EARLIER, Verdict.STALE),
    (Priority.HIGH, AUTO, T0, EARLIER, Verdict.STALE),
    (Priority.TECHNICAL, BACK, T0, EARLIER, Verdict.STALE),
    (Priority.HIGH, BACK, T0, T0, Verdict.HELD),
    (Priority.HIGH, BACK, T0, LATER, Verdict.HELD),
    (Priority.HIGH, AUTO, T0, LATER, Verdict.CLEARED),
    (Priority.TECHNICAL, BACK, T0, LATER, Verdict.CLEARED),
    # Stored before the alarm knew its trigger's device time: judged as before.
    (Priority.HIGH, BACK, None, EARLIER, Verdict.HELD),
    (Priority.TECHNICAL, BACK, None, EARLIER, Verdict.CLEARED),
    # Times on alarmhub's clock are not compared with the device's: a time of
    # receipt or a clamped clock, and alarmhub's own events (location.fix).
    (Priority.HIGH, BACK, T0, EARLIER, Verdict.HELD, LOC, RCPT),
    (Priority.HIGH, BACK, T0, EARLIER, Verdict.HELD, LOC, TsSource.CLAMPED),
    (Priority.TECHNICAL, BACK, T0, EARLIER, Verdict.CLEARED, FIX, DEV),
    # Not ordered: its receipt is the news (a device heard again, pipeline._heard).
    (Priority.TECHNICAL, BACK, T0, EARLIER, Verdict.CLEARED, LOC, DEV, False),
]
DEFAULTS = (LOC, DEV, True)  # a device's location event, on its clock, ordered


@pytest.mark.parametrize(
    ("priority", "rule", "trigger_ts", "event_ts", "verdict", "etype", "source", "ordered"),
    [(*row, *DEFAULTS[len(row) - 5 :]) for row in CLEAR_TABLE],
)
def test_clear_table(
    priority: Priority,
    rule: Rule,
    trigger_ts: datetime | None,
    event_ts: datetime,
    verdict: Verdict,
    etype: EventType,
    source: TsSource,
    ordered: bool,
) -> None:
    alarm = _alarm(priority, trigger_ts)
    event = _event(event_ts, etype, source)
    decision = clear(alarm, event, rule, T0 + timedelta(hours=1), ordered=ordered)
    assert decision.verdict is verdict
    if verdict is Verdict.STALE:
        # Nothing to write on the alarm: the event itself is stored with its verdict.
        assert decision.alarm is None
        assert decision.timeline == ()


# --- B: no_usable_fix is resolved only by a fix that shows where the tracker is now ---

NO_FIX_AFTER = timedelta(seconds=1800)  # config/rules.toml no_fix_alarm_after_s
RECEIVED = T0 + timedelta(hours=3)


def _fix(age: timedelta, accuracy_m: float, source: TsSource = DEV) -> Event:
    fields = {**INSIDE, "accuracy_m": accuracy_m}
    return Event("gps-1", "m", LOC, RECEIVED - age, RECEIVED, fields, ts_source=source)


@pytest.mark.parametrize(
    ("event", "counts"),
    [
        (_fix(timedelta(0), 10), True),
        (_fix(NO_FIX_AFTER, 10), True),  # exactly as old as the limit: still counts
        (_fix(NO_FIX_AFTER + timedelta(seconds=1), 10), False),
        (_fix(timedelta(hours=2), 10), False),  # buffered out of coverage, delivered late
        (_fix(timedelta(0), 400), False),  # poor, however fresh
        # No device time, or one not believed: as old as its receipt (core/device_time.py).
        (_fix(timedelta(0), 10, RCPT), True),
        (_fix(timedelta(0), 10, TsSource.CLAMPED), True),
        (Event("gps-1", "m", LOC, RECEIVED, RECEIVED, {"lat": "x", "lon": 1}), False),
        (Event("gps-1", "m", LOC, RECEIVED, RECEIVED, {}), False),
    ],
)
def test_current_fix_table(event: Event, counts: bool) -> None:
    fence = DeviceSettings(geofence_circle=(*OSLO_CENTRE, 500.0))
    device = dev("gps-1", DeviceKind.GPS_TRACKER, settings=fence)
    assert current_fix(event, device, NO_FIX_AFTER) is counts
