"""core/scaip_record.py: the position read from `lge`, the answer recorded on taking."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest

from alarmhub.config.rules import load_rules
from alarmhub.core.model import (
    Alarm,
    AlarmState,
    Device,
    DeviceKind,
    Priority,
    ScaipVoice,
    TimelineType,
)
from alarmhub.core.scaip import AnswerMode, ScaipPolicy
from alarmhub.core.scaip_record import answer_of, answered_on_taking, operator_view, position_of
from tests.support.helpers import REPO

T0 = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("lge", "expected"),
    [
        ({"geo": "59.9139,10.7522"}, (59.9139, 10.7522)),
        ({"geo": "N59.9139 E10.7522"}, (59.9139, 10.7522)),
        ({"geo": "59.9139N;10.7522W"}, (59.9139, -10.7522)),
        ({"geo": "-33.8688, 151.2093"}, (-33.8688, 151.2093)),
        ({"gga": "$GPGGA,100000,5954.834,N,01045.132,E,1,08,0.9,20.0,M,,,,"}, (59.9139, 10.7522)),
        ({"geo": "somewhere", "gga": "$GPGGA,100000,5954.834,N,01045.132,E,1,08"}, (59.9139, 10.7522)),
        ({"gga": "$GPGGA,100000,5954.834,N,01045.132,E,0,00"}, None),  # no fix
        ({"geo": "95.0,10.0"}, None),  # not on Earth
        ({"geo": "the kitchen"}, None),
        ({}, None),
    ],
)  # fmt: skip
def test_position_of(lge: dict[str, str], expected: tuple[float, float] | None) -> None:
    found = position_of(lge)
    got = None if found is None else (round(found["lat"], 4), round(found["lon"], 4))
    assert got == expected


HOLD = ScaipPolicy(AnswerMode.HOLD_UNTIL_TAKEN, ScaipVoice(2, 61))
NOW = ScaipPolicy(AnswerMode.IMMEDIATE, ScaipVoice(1, 30))


@pytest.mark.parametrize(
    ("policy", "voice", "waiting", "expected"),
    [
        (HOLD, None, True, {"snu": 4}),
        (HOLD, None, False, {"snu": 0, "mre": 2, "cre": 61}),
        (HOLD, ScaipVoice(1, 62, "+4712345678"), False, {"snu": 0, "mre": 1, "cre": 62, "tnu": "+4712345678"}),
        (NOW, None, True, {"snu": 0, "mre": 1, "cre": 30}),
        (NOW, ScaipVoice(0), True, {"snu": 0, "mre": 0}),
    ],
)  # fmt: skip
def test_answer_of(
    policy: ScaipPolicy, voice: ScaipVoice | None, waiting: bool, expected: dict[str, object]
) -> None:
    assert answer_of(policy, voice, waiting=waiting) == expected


def alarm(kind: str, state: AlarmState) -> Alarm:
    return Alarm("a1", "479", "0301", kind, Priority.CRITICAL, state, T0, T0)


def test_taking_records_the_answer_only_for_a_held_device_alarm() -> None:
    rules = load_rules(REPO / "config" / "rules.toml")
    device = Device("479", DeviceKind.SAFETY_ALARM, "0301", profile="scaip")
    open_, acked = alarm("button", AlarmState.OPEN), alarm("button", AlarmState.ACKNOWLEDGED)
    # Immediate (the shipped rules): the device was answered when the alarm was stored.
    assert answered_on_taking(open_, acked, device, rules, None, T0) is None
    held = replace(rules, scaip=HOLD)
    chosen = ScaipVoice(1, 62, "+4712345678")
    entry = answered_on_taking(open_, acked, device, held, chosen, T0)
    assert entry is not None
    assert (entry.type, entry.detail) == (
        TimelineType.ANSWERED, {"snu": 0, "mre": 1, "cre": 62, "tnu": "+4712345678"}
    )  # fmt: skip
    # Nothing chosen: the device's own parameters, else the municipality's.
    entry = answered_on_taking(open_, acked, device, held, None, T0)
    assert entry is not None
    assert entry.detail == {"snu": 0, "mre": 2, "cre": 61}
    # Not a SCAIP device; already taken; an alarm alarmhub raised itself (a silent device).
    other = replace(device, profile="native")
    assert answered_on_taking(open_, acked, other, held, chosen, T0) is None
    assert answered_on_taking(acked, acked, device, held, chosen, T0) is None
    silent = alarm("device_offline", AlarmState.OPEN)
    taken = alarm("device_offline", AlarmState.ACKNOWLEDGED)
    assert answered_on_taking(silent, taken, device, held, chosen, T0) is None


def test_the_operator_view_takes_the_newest_value_of_this_alarms_events() -> None:
    messages: list[dict[str, Any]] = [  # newest first, as the store lists them
        {"events": [{"alarm_id": "a1", "fields": {"scaip": {"ref": "R2", "lte": "Bathroom"}}}]},
        {"events": [{"alarm_id": "a2", "fields": {"scaip": {"ref": "X", "stt": "other alarm"}}}]},
        {"events": [{"alarm_id": None, "fields": {"scaip": {"ref": "P", "mty": "PI"}}}]},
        {
            "events": [
                {
                    "alarm_id": "a1",
                    "fields": {
                        "scaip": {
                            "ref": "R1", "crd": ["gsm:+4791234567"], "lte": "Bedroom",
                            "lge": {"geo": "59.9139,10.7522"}, "stt": "Manual alarm",
                        }
                    },
                }
            ]
        },
    ]  # fmt: skip
    timeline = [
        {"type": "raised", "at": "t0", "detail": {}},
        {"type": "answered", "at": "t0", "detail": {"snu": 4, "ref": "R1"}},
        {"type": "answered", "at": "t1", "detail": {"snu": 0, "mre": 1, "cre": 61}},
    ]
    view = operator_view("a1", messages, timeline)
    assert view is not None
    assert (view["ref"], view["lte"], view["stt"]) == ("R2", "Bathroom", "Manual alarm")
    assert view["crd"] == ["gsm:+4791234567"]
    assert view["position"] == {"lat": 59.9139, "lon": 10.7522}
    assert view["voice"] == {"mre": 1, "cre": 61}
    assert [a["snu"] for a in view["answers"]] == [4, 0]
    assert operator_view("a3", messages, []) is None
