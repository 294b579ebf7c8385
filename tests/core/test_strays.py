"""Issue 12 item 14: a call for help from an unknown or decommissioned device is
still a dead letter, and also an alarm an operator sees, in the right queue."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from alarmhub.app import AlarmHub
from alarmhub.config.profiles import load_catalog
from alarmhub.config.rules import load_rules
from alarmhub.core.decode import DecodeLimits
from alarmhub.core.index import AlarmIndex
from alarmhub.core.model import (
    AlarmState,
    Device,
    DeviceKind,
    Priority,
    RawMessage,
    RejectReason,
    Verdict,
)
from alarmhub.core.pipeline import BatchEffects, Context, decode_all, fingerprint, process_batch
from alarmhub.dev.mosquitto import LocalBroker
from tests.support.helpers import (
    REPO,
    Publisher,
    async_wait_until,
    db_rows,
    hub_settings,
    register,
    sqlite_at,
)
from tests.support.helpers import native as support_native

T0 = datetime(2026, 11, 22, 1, 0, tzinfo=UTC)  # 02:00 in Oslo: night
DAY = datetime(2026, 11, 22, 11, 0, tzinfo=UTC)
RETURNED = Device("pend-old", DeviceKind.SAFETY_ALARM, "4601", active=False, resident="r-17")
CTX = Context(
    registry={RETURNED.id: RETURNED},
    catalog=load_catalog(REPO / "devices"),
    rules=load_rules(REPO / "config" / "rules.toml"),
    limits=DecodeLimits(),
)


def native(device: str, etype: str, at: datetime, msg_id: str = "m1") -> RawMessage:
    payload = {"id": msg_id, "ts": at.isoformat(), "type": etype}
    return RawMessage(f"alarmhub/v1/{device}/events", orjson.dumps(payload), at)


def zigbee(name: str, payload: dict[str, object], at: datetime) -> RawMessage:
    return RawMessage(f"zigbee2mqtt/z2m-4601-a/{name}", orjson.dumps(payload), at)


def run(raws: list[RawMessage], ctx: Context, index: AlarmIndex | None = None) -> BatchEffects:
    index = index if index is not None else AlarmIndex()
    decoded = decode_all(raws, ctx)
    fps = [fingerprint(r, d) for r, d in zip(raws, decoded, strict=True)]
    effects = process_batch(raws, decoded, fps, {}, index, ctx)
    for a in effects.alarms.values():
        index.put(a)
    return effects


ROWS = [
    # (case, message, fallback municipality, dead-letter reason, alarm's municipality or None)
    ("a decommissioned pendant pressed", native("pend-old", "button.pressed", T0), None,
     RejectReason.DECOMMISSIONED_DEVICE, "4601"),
    ("a decommissioned pendant pressed, a fallback set: still its own municipality",
     native("pend-old", "button.pressed", T0), "0301", RejectReason.DECOMMISSIONED_DEVICE, "4601"),
    ("a decommissioned pendant's heartbeat", native("pend-old", "heartbeat", T0), "0301",
     RejectReason.DECOMMISSIONED_DEVICE, None),
    ("an unknown pendant pressed, a fallback set", native("ghost", "button.pressed", T0), "0301",
     RejectReason.UNKNOWN_DEVICE, "0301"),
    ("an unknown pendant pressed, no fallback", native("ghost", "button.pressed", T0), None,
     RejectReason.UNKNOWN_DEVICE, None),
    ("an unknown fall sensor", native("ghost", "fall.detected", T0), "5001",
     RejectReason.UNKNOWN_DEVICE, "5001"),
    ("a renamed Zigbee SOS button pressed", zigbee("0xabc", {"action": "emergency"}, T0), "5001",
     RejectReason.UNKNOWN_DEVICE, "5001"),
    ("a renamed Zigbee door sensor opened at night", zigbee("0xdef", {"contact": False}, T0),
     "5001", RejectReason.UNKNOWN_DEVICE, "5001"),
    ("a renamed Zigbee door sensor opened in the day", zigbee("0xdef", {"contact": False}, DAY),
     "5001", RejectReason.UNKNOWN_DEVICE, None),
    ("a renamed Zigbee sensor's battery report", zigbee("0xdef", {"battery": 80}, T0), "5001",
     RejectReason.UNKNOWN_DEVICE, None),
]  # fmt: skip


@pytest.mark.parametrize(
    ("case", "raw", "fallback", "reason", "municipality"), ROWS, ids=[r[0] for r in ROWS]
)
def test_a_call_for_help_from_a_device_nobody_registered_reaches_a_queue(
    case: str,
    raw: RawMessage,
    fallback: str | None,
    reason: RejectReason,
    municipality: str | None,
) -> None:
    del case
    effects = run([raw], replace(CTX, unknown_device_municipality=fallback))
    [message] = effects.messages
    # Still a dead letter: counted, alerted, no receipt, as before.
    assert message.verdict is Verdict.REJECTED
    assert message.rejected is not None
    assert message.rejected.reason is reason
    if municipality is None:
        assert effects.alarms == {}
        return
    [alarm] = effects.alarms.values()
    assert (alarm.kind, alarm.municipality, alarm.priority) == (
        "unregistered_device",
        municipality,
        Priority.HIGH,
    )
    # Never the former resident's: the device may serve someone else now.
    assert alarm.resident is None
    assert alarm.policy == "p2"
    assert message.municipality == municipality
    assert [e.alarm_id for e in message.events] == [alarm.id]


def test_presses_join_the_open_alarm_and_a_press_after_it_is_resolved_raises_another() -> None:
    """Like any alarm: repeats merge; once an operator resolved it, a press is new."""
    ctx = replace(CTX, unknown_device_municipality="0301")
    index = AlarmIndex()
    first = run([native("ghost", "button.pressed", T0, "m1")], ctx, index)
    [alarm] = first.alarms.values()
    again = run([native("ghost", "button.pressed", T0 + timedelta(seconds=20), "m2")], ctx, index)
    assert [e.verdict for e in again.messages[0].events] == [Verdict.REPEAT]
    assert again.new_alarm_ids == []
    assert again.alarms[alarm.id].repeat_count == 1
    resolved = replace(again.alarms[alarm.id], state=AlarmState.RESOLVED, resolved_at=T0)
    index.put(resolved)
    later = run([native("ghost", "button.pressed", T0 + timedelta(minutes=9), "m3")], ctx, index)
    [new_id] = later.new_alarm_ids
    assert new_id != alarm.id
    assert later.alarms[new_id].kind == "unregistered_device"


@pytest.mark.broker
async def test_a_press_from_an_unknown_pendant_is_in_the_fallback_queue_over_the_broker(
    tmp_path: Path, broker: LocalBroker, client_id: str
) -> None:
    db = tmp_path / "alarmhub.db"
    register(f"sqlite:///{db}", [("pend-old", "safety_alarm", "4601")], tmp_path)
    # Decommissioned: its registration (and so its municipality) is kept.
    with sqlite_at(db) as conn:
        conn.execute("UPDATE devices SET active = 0 WHERE id = 'pend-old'")
    settings = hub_settings(tmp_path, broker.url, client_id, unknown_device_municipality="0301")
    pub = Publisher(broker.port)
    try:
        async with AlarmHub(settings, serve_http=False) as hub:
            assert hub.ingest is not None
            assert await hub.ingest.wait_connected(5)
            pub.publish(*support_native("ghost", "g1", "button.pressed"))
            pub.publish(*support_native("pend-old", "p1", "button.pressed"))
            sql = "SELECT device_id, municipality, kind, priority, state FROM alarms"
            assert await async_wait_until(lambda: len(db_rows(db, sql)) == 2, 10)
            assert sorted(db_rows(db, sql)) == [
                ("ghost", "0301", "unregistered_device", 2, "open"),
                ("pend-old", "4601", "unregistered_device", 2, "open"),
            ]
            # Each message is a dead letter of the municipality whose queue has its
            # alarm, so that municipality's operators can read it, and only they.
            inbox = "SELECT device_id, municipality, verdict, reason FROM inbox ORDER BY seq"
            assert db_rows(db, inbox) == [
                ("ghost", "0301", "rejected", "unknown_device"),
                ("pend-old", "4601", "rejected", "decommissioned_device"),
            ]
    finally:
        pub.close()
