"""Decode one raw MQTT message into alarmhub events, or say precisely why not.

Pure: the registry and the profile catalogue are passed in, the time of receipt
is on the message. Every failure is a :class:`Rejected` with a bounded reason,
never an exception, because a bad message from one device must not stop the
alarms of all the others.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import orjson

from alarmhub.core.model import (
    INTERNAL_EVENTS,
    Decoded,
    Device,
    DeviceKind,
    Event,
    EventType,
    RawMessage,
    Rejected,
    RejectReason,
)
from alarmhub.core.profile import Profile, TimestampUnit, lookup

if TYPE_CHECKING:
    from collections.abc import Mapping as MappingT

MAX_ID_LENGTH = 128
_FORBIDDEN_ID_CHARS = frozenset("+#\x00")


@dataclass(frozen=True, slots=True)
class DecodeLimits:
    max_payload_bytes: int = 64 * 1024
    max_future_skew: timedelta = timedelta(minutes=5)
    # Formats without a message id are deduplicated by content within this window.
    content_dedup_window: timedelta = timedelta(seconds=30)


class Catalog:
    """All loaded profiles, indexed for routing a topic to a device and its profile."""

    def __init__(self, profiles: list[Profile]) -> None:
        self.profiles = {p.name: p for p in profiles}
        # Topic patterns by level count: routing a topic costs one dict lookup plus a
        # comparison per pattern of that length (a handful).
        self._by_levels: dict[int, list[Profile]] = {}
        seen_patterns: set[tuple[str, ...]] = set()
        for p in profiles:
            if p.topic.levels in seen_patterns:
                continue
            seen_patterns.add(p.topic.levels)
            self._by_levels.setdefault(len(p.topic.levels), []).append(p)
        self._defaults: dict[tuple[str, DeviceKind], Profile] = {}
        for p in profiles:
            for kind in p.kinds:
                if p.default or (p.format, kind) not in self._defaults:
                    self._defaults[(p.format, kind)] = p

    def route(self, topic: str) -> tuple[str, str] | None:
        """Return (format, device id) for a topic, or None when no profile claims it."""
        levels = topic.split("/")
        for p in self._by_levels.get(len(levels), ()):
            device_id = p.topic.match(levels)
            if device_id is not None:
                return p.format, device_id
        return None

    def profile_for(self, fmt: str, device: Device) -> Profile | None:
        if device.profile is not None:
            chosen = self.profiles.get(device.profile)
            return chosen if chosen is not None and chosen.format == fmt else None
        return self._defaults.get((fmt, device.kind))

    def subscriptions(self) -> list[str]:
        return sorted({p.topic.subscription() for p in self.profiles.values()})


def decode(  # noqa: C901 - one early return per reject reason reads best
    raw: RawMessage,
    registry: MappingT[str, Device],
    catalog: Catalog,
    limits: DecodeLimits,
) -> Decoded | Rejected:
    routed = catalog.route(raw.topic)
    if routed is None:
        return Rejected(RejectReason.UNKNOWN_TOPIC, "no device profile claims this topic")
    fmt, device_id = routed
    if not valid_id(device_id):
        return Rejected(RejectReason.BAD_VALUE, "device id in the topic is not a valid id")
    # Size is checked once the topic names a device (routing is cheap and reads no
    # payload), so an oversized dead letter still says whose it was.
    if len(raw.payload) > limits.max_payload_bytes:
        return Rejected(
            RejectReason.OVERSIZED,
            f"payload is {len(raw.payload)} bytes; the limit is {limits.max_payload_bytes}",
            device_id,
        )
    device = registry.get(device_id)
    if device is None:
        return Rejected(RejectReason.UNKNOWN_DEVICE, "device is not registered", device_id)
    if not device.active:
        return Rejected(RejectReason.DECOMMISSIONED_DEVICE, "device is decommissioned", device_id)
    profile = catalog.profile_for(fmt, device)
    if profile is None:
        return Rejected(
            RejectReason.DEVICE_MISMATCH,
            f"a {device.kind} device has no profile for the {fmt} format",
            device_id,
        )
    try:
        # orjson validates UTF-8 itself: no str copy of every payload first.
        payload = orjson.loads(raw.payload)
    except orjson.JSONDecodeError as exc:
        try:
            raw.payload.decode("utf-8")
        except UnicodeDecodeError as bad:
            return Rejected(
                RejectReason.NOT_UTF8, f"payload is not UTF-8 at byte {bad.start}", device_id
            )
        return Rejected(RejectReason.MALFORMED_JSON, f"payload is not JSON: {exc}", device_id)
    if not isinstance(payload, dict):
        return Rejected(RejectReason.NOT_AN_OBJECT, "payload is not a JSON object", device_id)
    if profile.native:
        # Only the native protocol defines `device` and `municipality` in the payload;
        # a vendor may use the same key for something else (Zigbee2MQTT's
        # `include_device_information` puts an object under `device`).
        # The id, when readable, goes on the dead letter so the device's `rejected`
        # receipt can say which message was refused and why.
        readable = payload.get("id")
        msg_id = readable if isinstance(readable, str) and valid_id(readable) else None
        claimed = _claims(payload, device, msg_id)
        if claimed is not None:
            return claimed
        return _decode_native(payload, raw, device, limits)
    return _decode_mapped(payload, raw, device, profile, limits)


def valid_id(value: str) -> bool:
    return (
        0 < len(value) <= MAX_ID_LENGTH
        and value.isprintable()
        and _FORBIDDEN_ID_CHARS.isdisjoint(value)
    )


def _claims(payload: dict[str, Any], device: Device, msg_id: str | None) -> Rejected | None:
    """A payload that names another device or municipality is not believed."""
    claimed_device = payload.get("device")
    if claimed_device is not None and claimed_device != device.id:
        return Rejected(
            RejectReason.DEVICE_MISMATCH,
            "payload names a different device than its topic",
            device.id,
            msg_id,
        )
    claimed_m = payload.get("municipality")
    if claimed_m is not None and claimed_m != device.municipality:
        return Rejected(
            RejectReason.MUNICIPALITY_MISMATCH,
            "payload names a different municipality than the device is registered in",
            device.id,
            msg_id,
        )
    return None


def _decode_native(
    payload: dict[str, Any], raw: RawMessage, device: Device, limits: DecodeLimits
) -> Decoded | Rejected:
    for name in ("id", "ts", "type"):
        if name not in payload:
            return Rejected(RejectReason.MISSING_FIELD, f"missing field '{name}'", device.id)
    msg_id, ts_text, type_text = payload["id"], payload["ts"], payload["type"]
    for name, value in (("id", msg_id), ("ts", ts_text), ("type", type_text)):
        if not isinstance(value, str):
            return Rejected(RejectReason.WRONG_TYPE, f"field '{name}' must be a string", device.id)
    if not valid_id(msg_id):
        return Rejected(RejectReason.BAD_VALUE, "field 'id' is not a valid id", device.id)
    etype = _device_event_type(type_text)
    if etype is None:
        return Rejected(
            RejectReason.UNKNOWN_TYPE, f"unknown event type '{type_text[:64]}'", device.id, msg_id
        )
    ts = parse_rfc3339(ts_text)
    if ts is None:
        return Rejected(
            RejectReason.BAD_VALUE,
            "field 'ts' is not an RFC 3339 time with offset",
            device.id,
            msg_id,
        )
    too_new = _check_future(ts, raw, limits, device.id, msg_id)
    if too_new is not None:
        return too_new
    fields = _check_fields(etype, payload)
    if isinstance(fields, tuple):
        return Rejected(fields[0], fields[1], device.id, msg_id)
    event = Event(device.id, msg_id, etype, ts, raw.received_at, fields)
    return Decoded(device, msg_id, (event,))


def _decode_mapped(
    payload: dict[str, Any],
    raw: RawMessage,
    device: Device,
    profile: Profile,
    limits: DecodeLimits,
) -> Decoded | Rejected:
    ts = raw.received_at
    if profile.timestamp_path is not None:
        found, value = lookup(payload, profile.timestamp_path)
        if found:
            parsed = _parse_ts(value, profile.timestamp_unit)
            if parsed is None:
                return Rejected(
                    RejectReason.BAD_VALUE,
                    f"field '{profile.timestamp_path}' is not a valid {profile.timestamp_unit}",
                    device.id,
                )
            ts = parsed
    msg_id = _message_id(payload, raw, profile, limits)
    too_new = _check_future(ts, raw, limits, device.id, msg_id)
    if too_new is not None:
        return too_new
    events: list[Event] = []
    for mapping in profile.mappings:
        # The first matching mapping of each event type wins: one message yields at
        # most one event of a type (e.g. `battery_low: true` and `battery: 9` together
        # are one battery.low), because its events share the message id.
        if any(e.type is mapping.event for e in events) or not mapping.matches(payload):
            continue
        source = {name: lookup(payload, path)[1] for name, path in mapping.fields}
        fields = _check_fields(mapping.event, {k: v for k, v in source.items() if v is not None})
        if isinstance(fields, tuple):
            return Rejected(fields[0], fields[1], device.id, msg_id)
        events.append(Event(device.id, msg_id, mapping.event, ts, raw.received_at, fields))
    if not events:
        if profile.fallback is None:
            return Rejected(
                RejectReason.NO_MAPPING,
                f"no mapping of profile {profile.name} matched",
                device.id,
                msg_id,
            )
        events.append(Event(device.id, msg_id, profile.fallback, ts, raw.received_at, {}))
    return Decoded(device, msg_id, tuple(events))


def _message_id(
    payload: dict[str, Any], raw: RawMessage, profile: Profile, limits: DecodeLimits
) -> str:
    for path in profile.message_id:
        found, value = lookup(payload, path)
        if found and isinstance(value, str | int | float) and not isinstance(value, bool):
            text = str(value)
            if valid_id(text):
                return text
    # No id in the payload: identical content within one window is one message.
    # A QoS 1 redelivery carries identical bytes, so it lands on the same id.
    window = max(1, int(limits.content_dedup_window.total_seconds()))
    bucket = int(raw.received_at.timestamp()) // window
    digest = hashlib.blake2b(raw.payload, digest_size=8).hexdigest()
    return f"h:{digest}:{bucket}"


def _check_future(
    ts: datetime, raw: RawMessage, limits: DecodeLimits, device_id: str, msg_id: str
) -> Rejected | None:
    if ts - raw.received_at > limits.max_future_skew:
        return Rejected(
            RejectReason.FUTURE_TIMESTAMP,
            f"device time is {int((ts - raw.received_at).total_seconds())} s ahead of ours",
            device_id,
            msg_id,
        )
    return None


# Events alarmhub raises itself (a silent device, an overdue dose) are not
# something a device may claim: it could fake or mask its own supervision.
# A dict, not EventType(text): the enum's constructor is slow for a per-message call.
_DEVICE_EVENT_TYPES: dict[str, EventType] = {
    etype.value: etype for etype in EventType if etype not in INTERNAL_EVENTS
}


def _device_event_type(text: str) -> EventType | None:
    """The event type a device may send, or None."""
    return _DEVICE_EVENT_TYPES.get(text)


def parse_rfc3339(text: str) -> datetime | None:
    if len(text) > 40:
        return None
    try:
        ts = datetime.fromisoformat(text)
    except ValueError:
        return None
    if ts.tzinfo is None:
        return None
    try:
        return ts.astimezone(UTC)
    except OverflowError:  # e.g. 0001-01-01T00:00:00+01:00 falls before year 1 in UTC
        return None


def _parse_ts(value: Any, unit: TimestampUnit) -> datetime | None:
    if unit is TimestampUnit.RFC3339:
        return parse_rfc3339(value) if isinstance(value, str) else None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    seconds = value / 1000 if unit is TimestampUnit.EPOCH_MS else value
    if not math.isfinite(seconds) or not 0 <= seconds < 32503680000:  # before year 3000
        return None
    return datetime.fromtimestamp(seconds, UTC)


FieldProblem = tuple[RejectReason, str]


def _number(
    payload: dict[str, Any], name: str, lo: float, hi: float, *, required: bool
) -> float | FieldProblem | None:
    if name not in payload:
        return (RejectReason.MISSING_FIELD, f"missing field '{name}'") if required else None
    value = payload[name]
    if isinstance(value, bool) or not isinstance(value, int | float):
        return RejectReason.WRONG_TYPE, f"field '{name}' must be a number"
    if not math.isfinite(value) or not lo <= value <= hi:
        return RejectReason.BAD_VALUE, f"field '{name}' must be between {lo:g} and {hi:g}"
    return float(value)


def validate_fields(etype: EventType, payload: dict[str, Any]) -> dict[str, Any] | str:
    """Return the event's typed fields, or the sentence that says which one is wrong."""
    checked = _check_fields(etype, payload)
    return checked[1] if isinstance(checked, tuple) else checked


def _check_fields(etype: EventType, payload: dict[str, Any]) -> dict[str, Any] | FieldProblem:
    # Separate from validate_fields because the decoder must tell a missing field,
    # a wrong type and an out-of-range value apart: they are different reject reasons.
    out: dict[str, Any] = {}
    specs: tuple[tuple[str, float, float, bool], ...] = ()
    if etype is EventType.LOCATION:
        specs = (("lat", -90, 90, True), ("lon", -180, 180, True), ("accuracy_m", 0, 1e7, False))
    elif etype is EventType.BATTERY_LOW:
        specs = (("battery_pct", 0, 100, False),)
    for name, lo, hi, required in specs:
        value = _number(payload, name, lo, hi, required=required)
        if isinstance(value, tuple):
            return value
        if value is not None:
            out[name] = value
    if etype is EventType.LOCATION and "battery_pct" in payload:
        value = _number(payload, "battery_pct", 0, 100, required=False)
        if isinstance(value, tuple):
            return value
        out["battery_pct"] = value
    return _text_fields(payload, out)


def _text_fields(payload: dict[str, Any], out: dict[str, Any]) -> dict[str, Any] | FieldProblem:
    for name in ("dose_id", "code", "note"):
        if name in payload:
            value = payload[name]
            if not isinstance(value, str):
                return RejectReason.WRONG_TYPE, f"field '{name}' must be a string"
            if len(value) > 256:
                return RejectReason.BAD_VALUE, f"field '{name}' must be at most 256 characters"
            out[name] = value
    return out
