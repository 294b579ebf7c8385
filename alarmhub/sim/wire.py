"""Render a simulated device's report the way that make of device puts it on the wire.

Each function returns the topic, the payload bytes and the events alarmhub's
decoder should make of them. The expected events are spelled out here from the
same facts the payload is built from (the door's state, the battery level), so
a test can decode every planned message with the real decoder and compare:
a simulated healthy device must never produce a dead letter.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import orjson

from alarmhub.core.model import EventType

OSLO = ZoneInfo("Europe/Oslo")
LOW_BATTERY_PCT = 15  # the Zigbee2MQTT and OwnTracks profiles' threshold
Rendered = tuple[str, bytes, tuple[EventType, ...]]


def native(device_id: str, msg_id: str, ts: datetime, etype: EventType, **fields: Any) -> Rendered:
    """alarmhub's own protocol; devices in Norway stamp local time with its offset."""
    body = {
        "id": msg_id,
        "ts": ts.astimezone(OSLO).isoformat(timespec="seconds"),
        "type": etype.value,
        **fields,
    }
    return f"alarmhub/v1/{device_id}/events", orjson.dumps(body), (etype,)


# Zigbee2MQTT topics are `zigbee2mqtt/<bridge>/<device>`: each home's coordinator is
# its own bridge with base_topic `zigbee2mqtt/<bridge>` (issue 13 item 9).


def last_seen(ts: datetime) -> str:
    """Zigbee2MQTT's `last_seen: ISO_8601`: UTC with milliseconds; it is also the message id."""
    return ts.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def z2m_contact(
    device_id: str,
    ts: datetime,
    *,
    bridge: str,
    door_open: bool,
    battery: int,
    tamper: bool = False,
) -> Rendered:
    """Aqara MCCGQ11LM: every report repeats the whole state; contact false = door open."""
    body: dict[str, Any] = {
        "battery": battery,
        "contact": not door_open,
        "device_temperature": 21,
        "linkquality": 120,
        "voltage": 2800 + battery * 4,
        "last_seen": last_seen(ts),
    }
    events = [EventType.DOOR_OPENED if door_open else EventType.DOOR_CLOSED]
    if battery < LOW_BATTERY_PCT:
        events.append(EventType.BATTERY_LOW)
    if tamper:
        body["tamper"] = True
        events.append(EventType.TAMPER)
    return f"zigbee2mqtt/{bridge}/{device_id}", orjson.dumps(body), tuple(events)


def z2m_sos(
    device_id: str, ts: datetime, *, bridge: str, pressed: bool, battery: int, tamper: bool = False
) -> Rendered:
    """Tuya TS0215A: `action: emergency` is the press; a plain report is a heartbeat."""
    body: dict[str, Any] = {
        "battery": battery,
        "battery_low": battery < LOW_BATTERY_PCT,
        "linkquality": 87,
        "tamper": tamper,
        "last_seen": last_seen(ts),
    }
    events: list[EventType] = []
    if pressed:
        body["action"] = "emergency"
        events.append(EventType.BUTTON_PRESSED)
    if battery < LOW_BATTERY_PCT:
        events.append(EventType.BATTERY_LOW)
    if tamper:
        events.append(EventType.TAMPER)
    return (
        f"zigbee2mqtt/{bridge}/{device_id}",
        orjson.dumps(body),
        tuple(events or [EventType.HEARTBEAT]),
    )


def z2m_heiman(
    device_id: str, ts: datetime, *, bridge: str, action: str | None, battery: int
) -> Rendered:
    """Heiman HS1EB: single, double and hold are all presses; no action is a heartbeat."""
    body: dict[str, Any] = {"battery": battery, "linkquality": 102, "last_seen": last_seen(ts)}
    events: list[EventType] = []
    if action is not None:
        body["action"] = action
        events.append(EventType.BUTTON_PRESSED)
    if battery < LOW_BATTERY_PCT:
        events.append(EventType.BATTERY_LOW)
    return (
        f"zigbee2mqtt/{bridge}/{device_id}",
        orjson.dumps(body),
        tuple(events or [EventType.HEARTBEAT]),
    )


def owntracks(
    device_id: str, ts: datetime, *, lat: float, lon: float, acc: int, batt: int
) -> Rendered:
    """OwnTracks in MQTT mode; `tst` (whole seconds) is both the time and the message id."""
    body = {
        "_type": "location",
        "lat": lat,
        "lon": lon,
        "acc": acc,
        "tst": int(ts.timestamp()),
        "batt": batt,
        "tid": "tr",
    }
    events = [EventType.LOCATION]
    if batt < LOW_BATTERY_PCT:
        events.append(EventType.BATTERY_LOW)
    return f"owntracks/{device_id}", orjson.dumps(body), tuple(events)
