"""Issue 12 items 10, 11 and 13: decoding never throws a real press away.

Tables of plain values on the pure decoder, with a catalogue built in code (a
Zigbee2MQTT-like button and contact profile, the native protocol, an epoch
tracker), so these pin the decoder independently of the shipped profiles.

- item 10: a bad secondary field (battery 200, battery as text, `last_seen` in
  epoch milliseconds) is dropped and named; the press or door opening is kept.
- item 11: a device clock out of bounds is clamped to the time of receipt and
  flagged on the event; it never rejects the message.
- item 13: an action no mapping names raises a press ("unrecognised button
  action: …"), never a heartbeat; only status-only messages are heartbeats.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from alarmhub.core.decode import Catalog, DecodeLimits, decode
from alarmhub.core.judge import event_context
from alarmhub.core.model import (
    Decoded,
    Device,
    DeviceKind,
    EventType,
    Priority,
    RawMessage,
    Rejected,
    RejectReason,
    TsSource,
)
from alarmhub.core.profile import Condition, Mapping, Op, Profile, TimestampUnit, TopicPattern
from alarmhub.core.rules import Rule, RuleSet, TimeWindow
from alarmhub.core.timewindow import in_window_during

RECEIVED_AT = datetime(2025, 11, 23, 23, 30, 0, tzinfo=UTC)
LIMITS = DecodeLimits()

NATIVE = Profile(
    name="native",
    format="native",
    kinds=tuple(DeviceKind),
    topic=TopicPattern(("alarmhub", "v1", "{device_id}", "events"), "{device_id}"),
    default=True,
    native=True,
)
_BATTERY = (
    Mapping((Condition("battery_low", Op.EQ, value=True),), EventType.BATTERY_LOW,
            (("battery_pct", "battery"),)),
    Mapping((Condition("battery", Op.LT, 15),), EventType.BATTERY_LOW,
            (("battery_pct", "battery"),)),
)  # fmt: skip
# Like devices/zigbee2mqtt-sos-button: `emergency` is help, arm/disarm are not.
BUTTON = Profile(
    name="zb-button",
    format="zb",
    kinds=(DeviceKind.SAFETY_ALARM,),
    topic=TopicPattern(("zb", "{device_id}"), "{device_id}"),
    default=True,
    mappings=(
        Mapping((Condition("action", Op.EQ, "emergency"),), EventType.BUTTON_PRESSED,
                (("code", "action"),)),
        Mapping((Condition("action", Op.IN, ("arm", "disarm")),), EventType.HEARTBEAT),
        *_BATTERY,
    ),
    message_id=("last_seen",),
    timestamp_path="last_seen",
    fallback=EventType.HEARTBEAT,
    unrecognised_action="action",
)  # fmt: skip
# The same button without `unrecognised_action`: what every button profile was.
OLD_BUTTON = Profile(
    name="zb-old-button",
    format="zb",
    kinds=(DeviceKind.SAFETY_ALARM,),
    topic=BUTTON.topic,
    mappings=BUTTON.mappings,
    message_id=BUTTON.message_id,
    timestamp_path="last_seen",
    fallback=EventType.HEARTBEAT,
)
DOOR = Profile(
    name="zb-contact",
    format="zb",
    kinds=(DeviceKind.DOOR_SENSOR,),
    topic=BUTTON.topic,
    default=True,
    mappings=(
        Mapping((Condition("contact", Op.EQ, value=False),), EventType.DOOR_OPENED),
        Mapping((Condition("contact", Op.EQ, value=True),), EventType.DOOR_CLOSED),
        *_BATTERY,
    ),
    message_id=("last_seen",),
    timestamp_path="last_seen",
    fallback=EventType.HEARTBEAT,
)
TRACKER = Profile(
    name="trk",
    format="trk",
    kinds=(DeviceKind.GPS_TRACKER,),
    topic=TopicPattern(("trk", "{device_id}"), "{device_id}"),
    mappings=(
        Mapping((Condition("_type", Op.EQ, "location"),), EventType.LOCATION,
                (("lat", "lat"), ("lon", "lon"), ("battery_pct", "batt"))),
    ),
    message_id=("tst",),
    timestamp_path="tst",
    timestamp_unit=TimestampUnit.EPOCH_S,
)  # fmt: skip
CATALOG = Catalog([NATIVE, BUTTON, OLD_BUTTON, DOOR, TRACKER])
REGISTRY = {
    d.id: d
    for d in (
        Device("sos-1", DeviceKind.SAFETY_ALARM, "0301"),
        Device("old-1", DeviceKind.SAFETY_ALARM, "0301", profile="zb-old-button"),
        Device("door-1", DeviceKind.DOOR_SENSOR, "0301"),
        Device("trk-1", DeviceKind.GPS_TRACKER, "0301"),
        Device("pend-1", DeviceKind.SAFETY_ALARM, "0301"),
    )
}
ISO = "2025-11-23T23:29:58+00:00"  # a `last_seen` two seconds before receipt


def _decode(topic: str, payload: dict[str, Any], at: datetime = RECEIVED_AT) -> Decoded | Rejected:
    raw = RawMessage(topic, json.dumps(payload).encode(), at)
    return decode(raw, REGISTRY, CATALOG, LIMITS)


def _events(result: Decoded | Rejected) -> list[tuple[str, dict[str, Any]]]:
    assert isinstance(result, Decoded), result
    return [(e.type.value, e.fields) for e in result.events]


def _dropped(result: Decoded | Rejected) -> list[tuple[str, str]]:
    assert isinstance(result, Decoded), result
    return [(d.field, d.reason.value) for d in result.dropped]


# ---- item 10: one bad secondary field does not reject the message ------------------

PARTIAL = [
    # (case, topic, payload, events kept, (field, reason) dropped)
    ("press with battery 200", "zb/sos-1",
     {"action": "emergency", "battery": 200, "battery_low": True, "last_seen": ISO},
     [("button.pressed", {"code": "emergency"}), ("battery.low", {})],
     [("battery", "bad_value")]),
    ("press with battery as text", "zb/sos-1",
     {"action": "emergency", "battery": "low", "battery_low": True},
     [("button.pressed", {"code": "emergency"}), ("battery.low", {})],
     [("battery", "wrong_type")]),
    ("press with last_seen in epoch ms", "zb/sos-1",
     {"action": "emergency", "last_seen": 1763940598000},
     [("button.pressed", {"code": "emergency"})],
     [("last_seen", "bad_value")]),
    ("door opening with battery 200", "zb/door-1",
     {"contact": False, "battery": 200, "battery_low": True, "last_seen": ISO},
     [("door.opened", {}), ("battery.low", {})],
     [("battery", "bad_value")]),
    ("door opening with last_seen in epoch ms", "zb/door-1",
     {"contact": False, "last_seen": 1763940598000},
     [("door.opened", {})],
     [("last_seen", "bad_value")]),
    ("status report with a bad battery is still a sign of life", "zb/door-1",
     {"battery": "n/a", "battery_low": True, "linkquality": 80},
     [("battery.low", {})],
     [("battery", "wrong_type")]),
    ("position with a bad battery", "trk/trk-1",
     {"_type": "location", "lat": 59.9, "lon": 10.7, "batt": 101, "tst": 1763940598},
     [("location", {"lat": 59.9, "lon": 10.7})],
     [("batt", "bad_value")]),
    ("native press with a note that is a number", "alarmhub/v1/pend-1/events",
     {"id": "m-1", "ts": ISO, "type": "button.pressed", "note": 5},
     [("button.pressed", {})],
     [("note", "wrong_type")]),
    ("native battery.low out of range", "alarmhub/v1/pend-1/events",
     {"id": "m-1", "ts": ISO, "type": "battery.low", "battery_pct": -1},
     [("battery.low", {})],
     [("battery_pct", "bad_value")]),
    ("native press with an unreadable ts", "alarmhub/v1/pend-1/events",
     {"id": "m-1", "ts": "yesterday", "type": "button.pressed"},
     [("button.pressed", {})],
     [("ts", "bad_value")]),
    ("native press without ts", "alarmhub/v1/pend-1/events",
     {"id": "m-1", "type": "button.pressed"},
     [("button.pressed", {})],
     [("ts", "missing_field")]),
    ("native dose without a readable dose id", "alarmhub/v1/pend-1/events",
     {"id": "m-1", "ts": ISO, "type": "dose.taken", "dose_id": 8},
     [("dose.taken", {})],
     [("dose_id", "wrong_type")]),
]  # fmt: skip


@pytest.mark.parametrize(
    ("topic", "payload", "kept", "dropped"),
    [row[1:] for row in PARTIAL],
    ids=[row[0] for row in PARTIAL],
)
def test_a_bad_field_is_dropped_and_the_rest_kept(
    topic: str, payload: dict[str, Any], kept: list[Any], dropped: list[tuple[str, str]]
) -> None:
    result = _decode(topic, payload)
    assert _events(result) == kept
    assert _dropped(result) == dropped
    assert isinstance(result, Decoded)
    assert all(d.detail for d in result.dropped)


NOTHING_USABLE = [
    # (case, topic, payload, reason): rejected only when nothing usable is left.
    ("position without a valid lat", "trk/trk-1",
     {"_type": "location", "lat": 91, "lon": 10.7, "tst": 1763940598}, "bad_value"),
    ("native position without lon", "alarmhub/v1/pend-1/events",
     {"id": "m-1", "ts": ISO, "type": "location", "lat": 59.9}, "missing_field"),
    ("native without a type", "alarmhub/v1/pend-1/events",
     {"id": "m-1", "ts": ISO}, "missing_field"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("topic", "payload", "reason"),
    [row[1:] for row in NOTHING_USABLE],
    ids=[row[0] for row in NOTHING_USABLE],
)
def test_rejected_only_when_nothing_usable(
    topic: str, payload: dict[str, Any], reason: str
) -> None:
    result = _decode(topic, payload)
    assert isinstance(result, Rejected), result
    assert result.reason == reason


# ---- item 11: a device clock never rejects an event --------------------------------

CLOCKS = [
    # (case, device time minus receipt, time judged by, source, skew recorded)
    ("on time", timedelta(seconds=-2), timedelta(seconds=-2), "device", None),
    ("at the future limit", timedelta(minutes=5), timedelta(minutes=5), "device", None),
    ("10 minutes fast", timedelta(minutes=10), timedelta(0), "clamped", 600),
    ("a year fast", timedelta(days=365), timedelta(0), "clamped", 365 * 86400),
    ("buffered 23 h", timedelta(hours=-23), timedelta(hours=-23), "device", None),
    ("25 h behind", timedelta(hours=-25), timedelta(0), "clamped", -25 * 3600),
    ("reset to 2000-01-01", datetime(2000, 1, 1, tzinfo=UTC) - RECEIVED_AT, timedelta(0),
     "clamped", int((datetime(2000, 1, 1, tzinfo=UTC) - RECEIVED_AT).total_seconds())),
]  # fmt: skip


@pytest.mark.parametrize(
    ("offset", "judged", "source", "skew"), [r[1:] for r in CLOCKS], ids=[r[0] for r in CLOCKS]
)
@pytest.mark.parametrize("fmt", ["native", "zigbee2mqtt", "epoch"])
def test_device_clock_is_clamped_never_rejected(
    fmt: str, offset: timedelta, judged: timedelta, source: str, skew: int | None
) -> None:
    device_ts = RECEIVED_AT + offset
    if fmt == "native":
        topic = "alarmhub/v1/pend-1/events"
        payload: dict[str, Any] = {
            "id": "m-1",
            "ts": device_ts.isoformat(),
            "type": "button.pressed",
        }
    elif fmt == "zigbee2mqtt":
        topic, payload = "zb/sos-1", {"action": "emergency", "last_seen": device_ts.isoformat()}
    else:
        topic = "trk/trk-1"
        payload = {"_type": "location", "lat": 59.9, "lon": 10.7, "tst": device_ts.timestamp()}
    result = _decode(topic, payload)
    assert isinstance(result, Decoded), result
    (event,) = result.events
    assert event.ts == RECEIVED_AT + judged
    assert (event.ts_source, event.clock_skew_s) == (TsSource(source), skew)
    assert result.dropped == ()


def test_a_format_without_a_time_says_so() -> None:
    result = _decode("zb/door-1", {"contact": False})
    assert isinstance(result, Decoded)
    assert [(e.ts, e.ts_source) for e in result.events] == [(RECEIVED_AT, TsSource.RECEIPT)]


def test_the_bounds_are_settings() -> None:
    limits = DecodeLimits(max_future_skew=timedelta(0), max_past_skew=timedelta(seconds=1))
    raw = RawMessage("zb/sos-1", json.dumps({"action": "emergency", "last_seen": ISO}).encode(),
                     RECEIVED_AT)  # fmt: skip
    result = decode(raw, REGISTRY, CATALOG, limits)
    assert isinstance(result, Decoded)
    assert [(e.ts_source, e.clock_skew_s) for e in result.events] == [(TsSource.CLAMPED, -2)]


# ---- item 13: only status-only messages count as heartbeats -------------------------

ACTIONS = [
    # (case, device, payload, events)
    ("emergency is help", "sos-1", {"action": "emergency"},
     [("button.pressed", {"code": "emergency"})]),
    ("disarm is named: not help", "sos-1", {"action": "disarm"}, [("heartbeat", {})]),
    ("status only", "sos-1", {"battery": 90, "linkquality": 80}, [("heartbeat", {})]),
    ("action cleared with an empty string", "sos-1", {"action": ""}, [("heartbeat", {})]),
    ("action cleared with null", "sos-1", {"action": None}, [("heartbeat", {})]),
    ("a Heiman single on the default profile", "sos-1", {"action": "single", "battery": 90},
     [("button.pressed", {"code": "single", "note": "unrecognised button action: single"})]),
    ("another Tuya action word", "sos-1", {"action": "sos"},
     [("button.pressed", {"code": "sos", "note": "unrecognised button action: sos"})]),
    ("an action that is a number", "sos-1", {"action": 1},
     [("button.pressed", {"code": "1", "note": "unrecognised button action: 1"})]),
    ("unrecognised action with low battery", "sos-1", {"action": "hold", "battery": 9},
     [("battery.low", {"battery_pct": 9.0}),
      ("button.pressed", {"code": "hold", "note": "unrecognised button action: hold"})]),
    ("a door sensor's action is not a button", "door-1", {"action": "single"},
     [("heartbeat", {})]),
]  # fmt: skip


@pytest.mark.parametrize(
    ("device", "payload", "events"), [r[1:] for r in ACTIONS], ids=[r[0] for r in ACTIONS]
)
def test_unrecognised_action_is_a_press(
    device: str, payload: dict[str, Any], events: list[Any]
) -> None:
    assert _events(_decode(f"zb/{device}", payload)) == events


def test_without_the_profile_key_an_unknown_action_stays_a_heartbeat() -> None:
    # What every button profile did before item 13: the key is what changes it.
    assert _events(_decode("zb/old-1", {"action": "single"})) == [("heartbeat", {})]


def test_an_unrecognised_action_is_kept_printable_and_short() -> None:
    result = _decode("zb/sos-1", {"action": "x\x00" + "y" * 200})
    (event,) = result.events if isinstance(result, Decoded) else ()
    assert event.type is EventType.BUTTON_PRESSED
    assert event.fields["code"] == "x?" + "y" * 62
    assert event.fields["note"].startswith("unrecognised button action: x?")


def test_retired_reason_is_never_produced() -> None:
    far = (RECEIVED_AT + timedelta(days=3650)).isoformat()
    result = _decode("alarmhub/v1/pend-1/events", {"id": "m-1", "ts": far, "type": "fall.detected"})
    assert not (isinstance(result, Rejected) and result.reason is RejectReason.FUTURE_TIMESTAMP)


# ---- what the operator sees on the alarm's timeline ---------------------------------

TIMELINE = [
    # (case, device, payload, context on the timeline entry)
    ("a press alarmhub could not read", "zb/sos-1", {"action": "single", "last_seen": ISO},
     {"note": "unrecognised button action: single"}),
    ("a press from a clock 10 minutes fast", "zb/sos-1",
     {"action": "emergency", "last_seen": (RECEIVED_AT + timedelta(minutes=10)).isoformat()},
     {"ts_source": "clamped", "clock_skew_s": 600}),
    ("a press without a time of its own", "zb/sos-1", {"action": "emergency"},
     {"ts_source": "receipt"}),
    ("a press on time", "zb/sos-1", {"action": "emergency", "last_seen": ISO}, {}),
]  # fmt: skip


@pytest.mark.parametrize(
    ("topic", "payload", "context"), [r[1:] for r in TIMELINE], ids=[r[0] for r in TIMELINE]
)
def test_the_timeline_says_what_the_decoder_knew(
    topic: str, payload: dict[str, Any], context: dict[str, Any]
) -> None:
    result = _decode(topic, payload)
    assert isinstance(result, Decoded)
    (press,) = [e for e in result.events if e.type is EventType.BUTTON_PRESSED]
    assert event_context(press) == context


# ---- item 11: a backlog without device times keeps its queueing span honest ---------

OSLO = ZoneInfo("Europe/Oslo")
NIGHT = (time(22, 0), time(7, 0))


def _oslo(day: int, hh: int, mm: int) -> datetime:
    return datetime(2026, 11, day, hh, mm, tzinfo=OSLO)


SPANS = [
    # (case, earliest, latest, may lie in 22:00-07:00)
    ("all day", _oslo(20, 12, 0), _oslo(20, 21, 59), False),
    ("the evening into the night", _oslo(20, 21, 0), _oslo(20, 22, 0), True),
    ("an outage across the night", _oslo(20, 23, 20), _oslo(21, 7, 5), True),
    ("inside the night", _oslo(21, 2, 0), _oslo(21, 3, 0), True),
    ("the morning after", _oslo(21, 7, 0), _oslo(21, 11, 0), False),
    ("a single instant at night", _oslo(21, 6, 59), _oslo(21, 6, 59), True),
    ("longer than a day", _oslo(20, 8, 0), _oslo(21, 20, 0), True),
]


@pytest.mark.parametrize(
    ("earliest", "latest", "expected"), [r[1:] for r in SPANS], ids=[r[0] for r in SPANS]
)
def test_a_span_that_touches_the_window(
    earliest: datetime, latest: datetime, expected: bool
) -> None:
    assert in_window_during(*NIGHT, earliest, latest, OSLO) is expected


NIGHT_RULES = RuleSet(
    rules=(
        Rule("door opened at night", EventType.DOOR_OPENED, alarm="door_open_night",
             priority=Priority.HIGH, window=TimeWindow(*NIGHT)),
        Rule("door opened by day, logged", EventType.DOOR_OPENED, window=TimeWindow(time(7), time(22))),
    )
)  # fmt: skip
BACKLOG = [
    # (case, queued since, delivered at, device time in the payload, rule matched)
    ("23:30 opening delivered at 07:05 after an outage", _oslo(20, 23, 20), _oslo(21, 7, 5),
     None, "door opened at night"),
    ("delivered live at 07:05", None, _oslo(21, 7, 5), None, "door opened by day, logged"),
    ("a backlog whose bridge stamped the time: believed", _oslo(20, 23, 20), _oslo(21, 7, 5),
     _oslo(21, 7, 1), "door opened by day, logged"),
    ("a backlog of a day-time outage", _oslo(21, 9, 0), _oslo(21, 11, 0), None,
     "door opened by day, logged"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("queued_since", "delivered", "device_ts", "rule"),
    [r[1:] for r in BACKLOG],
    ids=[r[0] for r in BACKLOG],
)
def test_a_backlog_door_is_judged_on_the_span_it_may_have_happened_in(
    queued_since: datetime | None, delivered: datetime, device_ts: datetime | None, rule: str
) -> None:
    payload: dict[str, Any] = {"contact": False}
    if device_ts is not None:
        payload["last_seen"] = device_ts.isoformat()
    raw = RawMessage("zb/door-1", json.dumps(payload).encode(), delivered, queued_since)
    result = decode(raw, REGISTRY, CATALOG, LIMITS)
    assert isinstance(result, Decoded), result
    (event,) = result.events
    assert event.ts_earliest == (queued_since if device_ts is None else None)
    matched = NIGHT_RULES.match(event, REGISTRY["door-1"])
    assert matched is not None
    assert matched.name == rule
