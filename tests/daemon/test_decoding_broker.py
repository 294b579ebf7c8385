"""Issue 12 items 10, 11 and 13 through the shell: real Mosquitto, real SQLite, the hub in-process.

The decoder's tables (tests/core/test_decode_partial.py) prove the pure decisions;
these prove the daemon acts on them: the press becomes an alarm, the receipt
says `accepted`, the inbox row records what was dropped or clamped, and the
metrics count it.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from alarmhub.app import AlarmHub
from alarmhub.clock import FakeClock
from alarmhub.dev.mosquitto import LocalBroker
from tests.support.helpers import (
    Publisher,
    async_wait_until,
    db_count,
    db_rows,
    hub_settings,
    register,
)

pytestmark = pytest.mark.broker

# 14:00 in Oslo: no night window is involved in any of these.
T0 = datetime(2026, 11, 25, 13, 0, tzinfo=UTC)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "alarmhub.db"
    register(
        f"sqlite:///{path}",
        [
            ("pend-fast", "safety_alarm", "0301"),
            ("0xa4c1380000000105", "safety_alarm", "0301", "z2m-0301-a"),
            ("0x0015bc001e00a1b2", "safety_alarm", "0301", "z2m-0301-a"),  # a Heiman, no --profile
        ],
        tmp_path,
    )
    return path


def _alarms(db: Path, device: str) -> list[tuple[object, ...]]:
    return db_rows(db, "SELECT kind, priority, state FROM alarms WHERE device_id = ?", (device,))


async def test_a_press_from_a_clock_ten_minutes_fast_becomes_an_alarm(
    tmp_path: Path, broker: LocalBroker, client_id: str, db: Path
) -> None:
    """Item 11: it used to be dead-lettered `future_timestamp` and answered `rejected`."""
    clock = FakeClock(T0)
    pub = Publisher(broker.port)
    pub.subscribe("alarmhub/v1/+/receipts")
    settings = hub_settings(tmp_path, broker.url, client_id)
    try:
        async with AlarmHub(settings, clock=clock, serve_http=False) as hub:
            assert hub.ingest is not None
            assert await hub.ingest.wait_connected(5)
            fast = (T0 + timedelta(minutes=10)).isoformat()
            press = {"id": "p-1", "ts": fast, "type": "button.pressed"}
            pub.publish("alarmhub/v1/pend-fast/events", orjson.dumps(press))
            assert await async_wait_until(lambda: _alarms(db, "pend-fast") != [], 30)
            assert _alarms(db, "pend-fast") == [("button", 1, "open")]
            [(verdict, reason, events)] = db_rows(
                db, "SELECT verdict, reason, events FROM inbox WHERE device_id = 'pend-fast'"
            )
            assert (verdict, reason) == ("logged", None)
            [event] = orjson.loads(events)
            assert (event["ts_source"], event["clock_skew_s"]) == ("clamped", 600)
            assert event["ts"].startswith("2026-11-25T13:00:00")  # judged at receipt
            # The operator sees on the alarm that the device's clock was not believed.
            [(raised,)] = db_rows(db, "SELECT detail FROM timeline WHERE type = 'raised'")
            assert orjson.loads(raised)["clock_skew_s"] == 600
            assert await async_wait_until(lambda: len(pub.received) == 1, 30), pub.received
            assert orjson.loads(pub.received[0][1]) == {"ref": "p-1", "status": "accepted"}
            clamped = hub.metrics.clock_skew_clamped.labels("ahead", "safety_alarm")
            assert clamped._value.get() == 1
            assert (
                hub.metrics.messages_dead_lettered.labels(
                    "future_timestamp", "safety_alarm"
                )._value.get()
                == 0
            )
    finally:
        pub.close()


async def test_a_press_with_a_bad_battery_is_an_alarm_and_the_field_is_recorded(
    tmp_path: Path, broker: LocalBroker, client_id: str, db: Path
) -> None:
    """Item 10: `battery: 200` made the SOS press a dead letter on every report."""
    pub = Publisher(broker.port)
    settings = hub_settings(tmp_path, broker.url, client_id)
    try:
        async with AlarmHub(settings, clock=FakeClock(T0), serve_http=False) as hub:
            assert hub.ingest is not None
            assert await hub.ingest.wait_connected(5)
            report = {"action": "emergency", "battery": 200, "battery_low": True, "linkquality": 72}
            pub.publish("zigbee2mqtt/z2m-0301-a/0xa4c1380000000105", orjson.dumps(report))
            device = "0xa4c1380000000105"
            assert await async_wait_until(lambda: len(_alarms(db, device)) == 2, 30)
            assert sorted(_alarms(db, device)) == [
                ("battery_low", 4, "open"),
                ("button", 1, "open"),
            ]
            [(verdict, reason, detail)] = db_rows(
                db, "SELECT verdict, reason, detail FROM inbox WHERE device_id = ?", (device,)
            )
            assert (verdict, reason) == ("logged", "partial")
            assert "bad_value" in detail
            assert "'battery'" in detail
            assert db_count(db, "SELECT count(*) FROM inbox WHERE verdict = 'rejected'") == 0
            dropped = hub.metrics.fields_dropped.labels("bad_value", "safety_alarm")
            # Counted after the commit the rows above were read from.
            assert await async_wait_until(lambda: dropped._value.get() == 1, 30)
    finally:
        pub.close()


async def test_a_heiman_registered_without_its_profile_raises_an_alarm(
    tmp_path: Path, broker: LocalBroker, client_id: str, db: Path
) -> None:
    """Item 13: its `single` was stored as a heartbeat and the button looked healthy."""
    pub = Publisher(broker.port)
    settings = hub_settings(tmp_path, broker.url, client_id)
    try:
        async with AlarmHub(settings, clock=FakeClock(T0), serve_http=False) as hub:
            assert hub.ingest is not None
            assert await hub.ingest.wait_connected(5)
            pub.publish(
                "zigbee2mqtt/z2m-0301-a/0x0015bc001e00a1b2", orjson.dumps({"action": "single"})
            )
            device = "0x0015bc001e00a1b2"
            assert await async_wait_until(lambda: _alarms(db, device) != [], 30)
            assert _alarms(db, device) == [("button", 1, "open")]
            [(events,)] = db_rows(db, "SELECT events FROM inbox WHERE device_id = ?", (device,))
            [event] = orjson.loads(events)
            assert event["type"] == "button.pressed"
            assert event["fields"]["note"] == "unrecognised button action: single"
            [(raised,)] = db_rows(db, "SELECT detail FROM timeline WHERE type = 'raised'")
            assert orjson.loads(raised)["note"] == "unrecognised button action: single"
    finally:
        pub.close()
