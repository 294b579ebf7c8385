"""Decode one raw MQTT message into alarmhub events, or say precisely why not.

Pure: the registry and the profile catalogue are passed in, the time of receipt
is on the message. Every failure is a :class:`Rejected` with a bounded reason,
never an exception, because a bad message from one device must not stop the
alarms of all the others.

Validation is per field and per event, not per message (issue 12 item 10): a
battery reading out of range, a battery sent as text or a timestamp in the wrong
unit is left out and recorded as :class:`Dropped`, and the press or door opening
in the same message is kept. Zigbee2MQTT repeats a device's whole cached state in
every report, so rejecting the message for one bad secondary field would throw
away every press that device ever sends. A message is rejected only when nothing
usable is left.

The device's clock is never a reason to reject (item 11): a time too far ahead
or too far behind the time of receipt is replaced by the time of receipt and the
event says so (`ts_source`, `clock_skew_s`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, NamedTuple

import orjson

from alarmhub.core.bridges import check_bridge
from alarmhub.core.device_time import event_time, parse_rfc3339, parse_ts
from alarmhub.core.fields import EVENT_PREFIX, event_fields, validate_fields
from alarmhub.core.model import (
    INTERNAL_EVENTS,
    Decoded,
    Device,
    DeviceKind,
    Dropped,
    Event,
    EventType,
    RawMessage,
    Rejected,
    RejectReason,
    TsSource,
)
from alarmhub.core.profile import Profile, lookup
from alarmhub.core.scaip import DETAILS, SCAIP_FORMAT
from alarmhub.core.scaip_decode import scaip_payload

if TYPE_CHECKING:
    from collections.abc import Mapping as MappingT

__all__ = [
    "Catalog", "DecodeLimits", "Route", "decode", "parse_rfc3339", "valid_id", "validate_fields",
]  # fmt: skip

MAX_ID_LENGTH, _FORBIDDEN_ID_CHARS = 128, frozenset("+#\x00")


@dataclass(frozen=True, slots=True)
class DecodeLimits:
    max_payload_bytes: int = 64 * 1024
    # A device time further from the time of receipt than these is clamped to it.
    max_future_skew: timedelta = timedelta(minutes=5)
    # A device that buffered while offline reports late with its honest time; a clock
    # reset to 2000-01-01 (or 1970) is years behind and would make a night-time door
    # "daytime" forever. A day separates the two.
    max_past_skew: timedelta = timedelta(hours=24)
    # Formats without a message id are deduplicated by content within this window.
    content_dedup_window: timedelta = timedelta(seconds=30)


class Route(NamedTuple):
    """What a topic says: the wire format, the device, and the bridge it came through."""

    format: str
    device_id: str
    bridge: str | None  # None when the format's topic names no bridge


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

    def route(self, topic: str) -> Route | None:
        """Return (format, device id, bridge) for a topic, or None when no profile claims it."""
        levels = topic.split("/")
        for p in self._by_levels.get(len(levels), ()):
            device_id = p.topic.match(levels)
            if device_id is not None:
                return Route(p.format, device_id, p.topic.bridge(levels))
        return None

    def profile_for(self, fmt: str, device: Device) -> Profile | None:
        if device.profile is not None:
            chosen = self.profiles.get(device.profile)
            return chosen if chosen is not None and chosen.format == fmt else None
        return self._defaults.get((fmt, device.kind))

    def subscriptions(self) -> list[str]:
        """The MQTT filters; SCAIP arrives over SIP (`scaip/<cid>` names its sender only)."""
        profiles = self.profiles.values()
        return sorted({p.topic.subscription() for p in profiles if p.format != SCAIP_FORMAT})


def decode(
    raw: RawMessage,
    registry: MappingT[str, Device],
    catalog: Catalog,
    limits: DecodeLimits,
) -> Decoded | Rejected:
    """The events in one message, or the first reason it cannot be used.

    The checks run from cheapest to dearest: the topic, the device it names, then
    the payload. Each step returns a value or a Rejected, so this reads as the
    order a message is judged in.
    """
    routed = _route(raw, catalog, limits)
    if isinstance(routed, Rejected):
        return routed
    target = _device_and_profile(routed, registry, catalog)
    if isinstance(target, Rejected):
        return target
    device, profile = target
    if profile.format == SCAIP_FORMAT:
        return _decode_scaip(raw, device, profile, limits)
    payload = _json_object(raw.payload, device.id)
    if isinstance(payload, Rejected):
        return payload
    decoded = _decode_payload(payload, raw, device, profile, limits)
    if raw.queued_since is not None and isinstance(decoded, Decoded):
        return _backlog(decoded, raw.queued_since)
    return decoded


def _route(raw: RawMessage, catalog: Catalog, limits: DecodeLimits) -> Route | Rejected:
    """The format, device id and bridge the topic names, if a profile claims it."""
    routed = catalog.route(raw.topic)
    if routed is None:
        return Rejected(RejectReason.UNKNOWN_TOPIC, "no device profile claims this topic")
    if not valid_id(routed.device_id):
        return Rejected(RejectReason.BAD_VALUE, "device id in the topic is not a valid id")
    # Size is checked once the topic names a device (routing is cheap and reads no
    # payload), so an oversized dead letter still says whose it was.
    if raw.size > limits.max_payload_bytes:
        return Rejected(
            RejectReason.OVERSIZED,
            f"payload is {raw.size} bytes; the limit is {limits.max_payload_bytes}",
            routed.device_id,
        )
    return routed


def _device_and_profile(
    routed: Route, registry: MappingT[str, Device], catalog: Catalog
) -> tuple[Device, Profile] | Rejected:
    """The active registered device, arriving by its own bridge, and the profile that reads it."""
    fmt, device_id, via = routed
    device = registry.get(device_id)
    if device is None:
        return Rejected(RejectReason.UNKNOWN_DEVICE, "device is not registered", device_id)
    if not device.active:
        return Rejected(RejectReason.DECOMMISSIONED_DEVICE, "device is decommissioned", device_id)
    wrong_bridge = check_bridge(device, via)
    if wrong_bridge is not None:
        return wrong_bridge
    profile = catalog.profile_for(fmt, device)
    if profile is None:
        return Rejected(
            RejectReason.DEVICE_MISMATCH,
            f"a {device.kind} device has no profile for the {fmt} format",
            device_id,
        )
    return device, profile


def _json_object(payload: bytes, device_id: str) -> dict[str, Any] | Rejected:
    """The payload as a JSON object; a payload that is not one says which way it fails."""
    try:  # orjson validates UTF-8 itself: no str copy of every payload first.
        parsed = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        try:
            payload.decode("utf-8")
        except UnicodeDecodeError as bad:
            return Rejected(
                RejectReason.NOT_UTF8, f"payload is not UTF-8 at byte {bad.start}", device_id
            )
        return Rejected(RejectReason.MALFORMED_JSON, f"payload is not JSON: {exc}", device_id)
    if not isinstance(parsed, dict):
        return Rejected(RejectReason.NOT_AN_OBJECT, "payload is not a JSON object", device_id)
    return parsed


def _decode_scaip(
    raw: RawMessage, device: Device, profile: Profile, limits: DecodeLimits
) -> Decoded | Rejected:
    """A SCAIP request (core/scaip.py) through the profile's mappings; its details on each event."""
    read = scaip_payload(raw.payload, device.id, limits.max_payload_bytes, raw.content_type)
    if isinstance(read, Rejected):
        return read
    payload, details, dropped = read
    decoded = _decode_mapped(payload, raw, device, profile, limits)
    if isinstance(decoded, Rejected):
        return decoded
    events = tuple(replace(e, fields={**e.fields, DETAILS: details}) for e in decoded.events)
    dropped = (*dropped, *decoded.dropped)
    return replace(decoded, events=events, dropped=dropped, ids_restart=True)


def _backlog(decoded: Decoded, queued_since: datetime) -> Decoded:
    """Events of a backlog without a device time happened some time since `queued_since`.

    MQTT carries no broker timestamp: a message queued while alarmhub was away
    is received when it reconnects, so its time of receipt is only the latest it
    can have happened. The span is kept on the event for the rules to judge.
    """
    events = tuple(
        replace(e, ts_earliest=min(queued_since, e.ts)) if e.ts_source is not TsSource.DEVICE else e
        for e in decoded.events
    )
    return replace(decoded, events=events)


def _decode_payload(
    payload: dict[str, Any], raw: RawMessage, device: Device, profile: Profile, limits: DecodeLimits
) -> Decoded | Rejected:
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
    ok = 0 < len(value) <= MAX_ID_LENGTH and value.isprintable()
    return ok and _FORBIDDEN_ID_CHARS.isdisjoint(value)


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
    # `id` and `type` say what the message is: without them nothing in it is usable.
    for name in ("id", "type"):
        if name not in payload:
            return Rejected(RejectReason.MISSING_FIELD, f"missing field '{name}'", device.id)
    msg_id, type_text = payload["id"], payload["type"]
    for name, value in (("id", msg_id), ("type", type_text)):
        if not isinstance(value, str):
            return Rejected(RejectReason.WRONG_TYPE, f"field '{name}' must be a string", device.id)
    if not valid_id(msg_id):
        return Rejected(RejectReason.BAD_VALUE, "field 'id' is not a valid id", device.id)
    etype = _device_event_type(type_text)
    if etype is None:
        return Rejected(
            RejectReason.UNKNOWN_TYPE, f"unknown event type '{type_text[:64]}'", device.id, msg_id
        )
    dropped: list[Dropped] = []
    device_ts = _native_ts(payload, dropped)
    ts, source, skew = event_time(
        device_ts, raw.received_at, limits.max_future_skew, limits.max_past_skew
    )
    fields = event_fields(etype, payload)
    if isinstance(fields, Dropped):
        # The one event of the message cannot be used: nothing is left.
        return Rejected(fields.reason, fields.detail, device.id, msg_id)
    kept, bad = fields
    event = Event(device.id, msg_id, etype, ts, raw.received_at, kept, source, skew)
    return Decoded(device, msg_id, (event,), (*dropped, *bad))


def _native_ts(payload: dict[str, Any], dropped: list[Dropped]) -> datetime | None:
    """The native `ts`, or None (recorded as dropped) when it is missing or unreadable."""
    if "ts" not in payload:
        dropped.append(
            Dropped("ts", RejectReason.MISSING_FIELD, "missing field 'ts'" + _AT_RECEIPT)
        )
        return None
    value = payload["ts"]
    if not isinstance(value, str):
        dropped.append(
            Dropped("ts", RejectReason.WRONG_TYPE, "field 'ts' must be a string" + _AT_RECEIPT)
        )
        return None
    ts = parse_rfc3339(value)
    if ts is None:
        dropped.append(
            Dropped(
                "ts",
                RejectReason.BAD_VALUE,
                "field 'ts' is not an RFC 3339 time with offset" + _AT_RECEIPT,
            )
        )
    return ts


_AT_RECEIPT = "; the time of receipt is used"


def _mapped_ts(
    payload: dict[str, Any], profile: Profile, dropped: list[Dropped]
) -> datetime | None:
    """The profile's timestamp, or None (recorded as dropped when present but unreadable)."""
    if profile.timestamp_path is None:
        return None
    found, value = lookup(payload, profile.timestamp_path)
    if not found:
        return None
    device_ts = parse_ts(value, profile.timestamp_unit)
    if device_ts is None:
        # e.g. Zigbee2MQTT's `last_seen: epoch` (milliseconds) where the profile
        # expects ISO 8601: the events are still good.
        dropped.append(
            Dropped(
                profile.timestamp_path,
                RejectReason.BAD_VALUE,
                f"field '{profile.timestamp_path}' is not a valid {profile.timestamp_unit}"
                + _AT_RECEIPT,
            )
        )
    return device_ts


def _decode_mapped(
    payload: dict[str, Any],
    raw: RawMessage,
    device: Device,
    profile: Profile,
    limits: DecodeLimits,
) -> Decoded | Rejected:
    dropped: list[Dropped] = []
    device_ts = _mapped_ts(payload, profile, dropped)
    ts, source, skew = event_time(
        device_ts, raw.received_at, limits.max_future_skew, limits.max_past_skew
    )
    msg_id = _message_id(payload, raw, profile, limits)
    found = _mapped_events(payload, profile, dropped)
    if not found:
        fallback = _fallback(profile, dropped, device.id, msg_id)
        if isinstance(fallback, Rejected):
            return fallback
        found = {fallback: {}}
    events = tuple(
        Event(device.id, msg_id, etype, ts, raw.received_at, fields, source, skew)
        for etype, fields in found.items()
    )
    return Decoded(device, msg_id, events, tuple(dropped))


def _mapped_events(
    payload: dict[str, Any], profile: Profile, dropped: list[Dropped]
) -> dict[EventType, dict[str, Any]]:
    """The fields of each event the profile's mappings find, in mapping order.

    The first matching mapping of each event type wins: one message yields at
    most one event of a type (e.g. `battery_low: true` and `battery: 9` together
    are one battery.low), because its events share the message id. A mapping
    whose event cannot be used is recorded in `dropped` and leaves its type free.
    """
    matched = [mapping for mapping in profile.mappings if mapping.matches(payload)]
    if profile.first_match:  # one event per message: the first mapping that matches (SCAIP)
        matched = matched[:1]
    found: dict[EventType, dict[str, Any]] = {}
    for mapping in matched:
        if mapping.event in found:
            continue
        values = {name: lookup(payload, path)[1] for name, path in mapping.fields}
        fields = event_fields(
            mapping.event,
            {k: v for k, v in values.items() if v is not None},
            dict(mapping.fields),
        )
        if isinstance(fields, Dropped):
            dropped.append(fields)
            continue
        kept, bad = fields
        dropped.extend(bad)
        found[mapping.event] = kept
    action = profile.unrecognised_action
    if action is not None and EventType.BUTTON_PRESSED not in found:
        # An action no matched mapping reads is a press alarmhub was not told about.
        unread = not any(c.path == action for m in matched for c in m.conditions)
        unread = unread and not (profile.first_match and matched)
        press = _unrecognised_press(payload, action) if unread else None
        if press is not None:
            found[EventType.BUTTON_PRESSED] = press
    return found


def _fallback(
    profile: Profile, dropped: list[Dropped], device_id: str, msg_id: str
) -> EventType | Rejected:
    """The event of a message no mapping made an event of: the profile's fallback, or none."""
    lost = next((d for d in dropped if d.field.startswith(EVENT_PREFIX)), None)
    if lost is not None:
        # A mapping matched but its event could not be used: this message is not
        # a plain status report, so it must not pass for a heartbeat either.
        return Rejected(lost.reason, lost.detail, device_id, msg_id)
    if profile.fallback is None:
        return Rejected(
            RejectReason.NO_MAPPING,
            f"no mapping of profile {profile.name} matched",
            device_id,
            msg_id,
        )
    return profile.fallback


UNRECOGNISED_ACTION = "unrecognised button action"


def _unrecognised_press(payload: dict[str, Any], path: str) -> dict[str, Any] | None:
    """The fields of the button alarm for an action no mapping recognised, or None.

    Zigbee2MQTT clears a button's action with `""` or `null` in the next state
    report: that is no action at all. Anything else is somebody pressing a button
    whose meaning alarmhub was not told (a Heiman button registered without its
    profile, a Tuya variant with another action word): better a spurious alarm
    than a resident's presses stored as heartbeats.
    """
    found, value = lookup(payload, path)
    if not found or value is None or value == "":
        return None
    text = value if isinstance(value, str) else orjson.dumps(value).decode()
    code = "".join(c if c.isprintable() else "?" for c in text[:64])
    return {"code": code, "note": f"{UNRECOGNISED_ACTION}: {code}"}


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


# Events alarmhub raises itself (a silent device, an overdue dose) are not
# something a device may claim: it could fake or mask its own supervision.
# A dict, not EventType(text): the enum's constructor is slow for a per-message call.
_DEVICE_EVENT_TYPES: dict[str, EventType] = {
    etype.value: etype for etype in EventType if etype not in INTERNAL_EVENTS
}


def _device_event_type(text: str) -> EventType | None:
    """The event type a device may send, or None."""
    return _DEVICE_EVENT_TYPES.get(text)
