"""Turn one device's intents into the messages that make of device sends.

Device clocks have a resolution (Zigbee2MQTT's `last_seen` milliseconds,
OwnTracks' whole seconds) and both formats use that time as the message id,
so two reports in the same tick would be one message to alarmhub. The
renderer moves a report to the next free tick, as a device's own clock would.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta

from alarmhub.core.model import DeviceKind, EventType
from alarmhub.sim import wire
from alarmhub.sim.homes import Wire
from alarmhub.sim.model import DevState, Intent, Planned

BATTERY_LOW_REPEAT = timedelta(hours=6)
NATIVE_EVENTS = {
    "heartbeat": EventType.HEARTBEAT,
    "press": EventType.BUTTON_PRESSED,
    "fall": EventType.FALL_DETECTED,
    "tamper": EventType.TAMPER,
    "fault": EventType.DISPENSER_FAULT,
    "dose-taken": EventType.DOSE_TAKEN,
    "dose-missed": EventType.DOSE_MISSED,
}
HEIMAN_ACTIONS = ("single", "double", "hold")


def render(d: DevState, intent: Intent) -> Iterator[Planned]:
    w = d.dev.wire
    if w is Wire.NATIVE:
        yield from _native(d, intent)
        return
    if w is Wire.OWNTRACKS:
        ts = _tick(d, intent.t, timedelta(seconds=1))
        assert intent.position is not None
        lat, lon, acc = intent.position
        out = wire.owntracks(d.dev.id, ts, lat=lat, lon=lon, acc=acc, batt=d.battery(ts))
        yield _planned(d, ts, out, intent.tag)
        return
    ts = _tick(d, intent.t, timedelta(milliseconds=1))
    battery = d.battery(ts)
    tamper = intent.what == "tamper"
    bridge = d.home.bridge
    if w is Wire.Z2M_CONTACT:
        if intent.what in ("door-open", "door-close"):
            d.door_open = intent.what == "door-open"
        out = wire.z2m_contact(
            d.dev.id, ts, bridge=bridge, door_open=d.door_open, battery=battery, tamper=tamper
        )
    elif w is Wire.Z2M_SOS:
        pressed = intent.what == "press"
        out = wire.z2m_sos(
            d.dev.id, ts, bridge=bridge, pressed=pressed, battery=battery, tamper=tamper
        )
    else:  # the Heiman button has no tamper switch: that report is a plain one
        action = None
        if intent.what == "press":
            action = HEIMAN_ACTIONS[d.presses % len(HEIMAN_ACTIONS)]
            d.presses += 1
        out = wire.z2m_heiman(d.dev.id, ts, bridge=bridge, action=action, battery=battery)
    yield _planned(d, ts, out, intent.tag)


def _native(d: DevState, intent: Intent) -> Iterator[Planned]:
    etype = NATIVE_EVENTS[intent.what]
    fields: dict[str, str] = {}
    if intent.dose_id is not None:
        fields["dose_id"] = intent.dose_id
    if etype is EventType.DISPENSER_FAULT:
        fields["code"] = "jam" if d.sent % 2 else "empty"
    ts = intent.t
    yield _planned(d, ts, wire.native(d.dev.id, d.msg_id(), ts, etype, **fields), intent.tag)
    # A worn device reports a low battery with its heartbeat, again every few hours.
    worn = d.dev.kind in (DeviceKind.SAFETY_ALARM, DeviceKind.FALL_SENSOR)
    battery = d.battery(ts)
    if (
        worn
        and etype is EventType.HEARTBEAT
        and battery < wire.LOW_BATTERY_PCT
        and (d.last_low is None or ts - d.last_low >= BATTERY_LOW_REPEAT)
    ):
        d.last_low = ts
        low = wire.native(d.dev.id, d.msg_id(), ts, EventType.BATTERY_LOW, battery_pct=battery)
        yield _planned(d, ts, low, "battery-low")


def power_messages(d: DevState) -> Iterator[Planned]:
    """A mains device in a power cut reports it within minutes, and its return."""
    cut = d.world.power_cut
    if cut is None or d.home.number not in cut.homes:
        return
    rng = d.rng("power")
    run = d.world.run
    lost = cut.start + timedelta(seconds=rng.uniform(0, 180))
    restored = cut.end + timedelta(seconds=rng.uniform(0, 120))
    out = wire.native(d.dev.id, f"{run}-pl", lost, EventType.POWER_LOST)
    yield _planned(d, lost, out, "power-lost")
    out = wire.native(d.dev.id, f"{run}-pr", restored, EventType.POWER_RESTORED)
    yield _planned(d, restored, out, "power-restored")


def _tick(d: DevState, t: datetime, resolution: timedelta) -> datetime:
    """The device's time at its clock's resolution, strictly after its previous report."""
    if resolution >= timedelta(seconds=1):
        ts = t.replace(microsecond=0)
    else:
        ts = t.replace(microsecond=t.microsecond // 1000 * 1000)
    if d.last_ts is not None and ts <= d.last_ts:
        ts = d.last_ts + resolution
    d.last_ts = ts
    return ts


def _planned(d: DevState, ts: datetime, out: wire.Rendered, tag: str) -> Planned:
    topic, payload, events = out
    return Planned(ts, ts, topic, payload, d.dev.id, events, tag)
