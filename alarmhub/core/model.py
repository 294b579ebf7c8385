"""Plain data that flows through the pipeline.

Everything here is immutable and free of I/O so that the decisions made on it
can be tested as tables of values. Enum values are the public spelling: they
appear in JSON, in the database, in logs and as bounded metric labels.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from enum import IntEnum, StrEnum
from typing import Any

from alarmhub.core.national_id import redact
from alarmhub.core.quick import quick_init


class DeviceKind(StrEnum):
    SAFETY_ALARM = "safety_alarm"
    DOOR_SENSOR = "door_sensor"
    FALL_SENSOR = "fall_sensor"
    GPS_TRACKER = "gps_tracker"
    MEDICATION_DISPENSER = "medication_dispenser"


class EventType(StrEnum):
    BUTTON_PRESSED = "button.pressed"
    # The device's own cancel (a pendant's cancel button, a SCAIP reset): a person
    # alarm still waits for an operator (issue 12 item 3, core/judge.py `clear`).
    BUTTON_CANCELLED = "button.cancelled"
    FALL_DETECTED = "fall.detected"
    DOOR_OPENED = "door.opened"
    DOOR_CLOSED = "door.closed"
    LOCATION = "location"
    DOSE_TAKEN = "dose.taken"
    DOSE_MISSED = "dose.missed"
    DISPENSER_FAULT = "dispenser.fault"
    HEARTBEAT = "heartbeat"
    BATTERY_LOW = "battery.low"
    TAMPER = "tamper"
    POWER_LOST = "power.lost"
    POWER_RESTORED = "power.restored"
    # Raised by alarmhub itself, never accepted from a device:
    DEVICE_SILENT = "device.silent"  # no message for N x its heartbeat interval
    DOSE_OVERDUE = "dose.overdue"  # a scheduled dose not taken within its window
    NO_USABLE_FIX = "location.no_fix"  # a geofenced tracker sent no usable fix for a while
    USABLE_FIX = "location.fix"  # ... and now has: resolves that alarm
    DOSE_LATE = "dose.late"  # a late dose.taken settled the last dose reported missed


INTERNAL_EVENTS = frozenset(
    {
        EventType.DEVICE_SILENT,
        EventType.DOSE_OVERDUE,
        EventType.NO_USABLE_FIX,
        EventType.USABLE_FIX,
        EventType.DOSE_LATE,
    }
)


class RejectReason(StrEnum):
    """Why a message went to the dead-letter store. Bounded: used as a metric label."""

    OVERSIZED = "oversized"
    NOT_UTF8 = "not_utf8"
    MALFORMED_JSON = "malformed_json"
    # A SCAIP body that is not XML, not an <mrq>, or declares a DTD or entities.
    MALFORMED_XML = "malformed_xml"
    NOT_AN_OBJECT = "not_an_object"
    MISSING_FIELD = "missing_field"
    WRONG_TYPE = "wrong_type"
    BAD_VALUE = "bad_value"
    UNKNOWN_TYPE = "unknown_type"
    UNKNOWN_TOPIC = "unknown_topic"
    UNKNOWN_DEVICE = "unknown_device"
    DECOMMISSIONED_DEVICE = "decommissioned_device"
    # Retired (issue 12 item 11): a device clock out of bounds is clamped to the time
    # of receipt and flagged on the event (TsSource.CLAMPED), never a reason to
    # reject. Kept so that dashboards and stored rows naming it stay valid.
    FUTURE_TIMESTAMP = "future_timestamp"
    DEVICE_MISMATCH = "device_mismatch"
    MUNICIPALITY_MISMATCH = "municipality_mismatch"
    NO_MAPPING = "no_mapping"
    # A Zigbee device's message came through a bridge it is not registered to (or it
    # has no bridge recorded): another municipality's bridge cannot speak for it.
    WRONG_BRIDGE = "wrong_bridge"
    # A SCAIP device's SIP MESSAGE labelled with a Content-Type that is no SCAIP body
    # (not application/scaip+xml, application/xml or text/xml): answered 415, and kept.
    UNSUPPORTED_CONTENT_TYPE = "unsupported_content_type"


class TsSource(StrEnum):
    """Where an event's time came from; stored with the event (`ts_source`).

    Rules judge an event by its time (night windows), so a time that is not the
    device's own must say so rather than pass for it.
    """

    DEVICE = "device"  # the device's (or its bridge's) own clock, within the limits
    RECEIPT = "receipt"  # the message carries no usable time: when alarmhub received it
    CLAMPED = "clamped"  # the device clock was out of bounds: replaced by the receipt time


@dataclass(frozen=True, slots=True)
class Dropped:
    """A field or event of a message that failed validation and was left out.

    The rest of the message is used (a press is never thrown away for a bad
    battery reading); what was dropped is recorded on its inbox row and counted.
    `field` is the alarmhub field name, the payload path, or `event <type>`.
    """

    field: str
    reason: RejectReason
    detail: str

    def __post_init__(self) -> None:
        # Quotes the message: never a national identity number in it (issue 17).
        object.__setattr__(self, "detail", redact(self.detail))


class Priority(IntEnum):
    CRITICAL = 1
    HIGH = 2
    NORMAL = 3
    TECHNICAL = 4


# An automatic resolution (a clearing event, core/judge.py auto_resolve) is recorded with
# this outcome and actor. Only such an alarm may be reopened by a flap; the outcome is
# reserved, so an operator's answer never looks like one (core/actions.py).
AUTO_OUTCOME = "auto"
AUTO_RESOLVER = "alarmhub"


class AlarmState(StrEnum):
    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"


class Verdict(StrEnum):
    """What the pipeline decided for one message or event; recorded with it."""

    NEW = "new"  # opened a new alarm
    REPEAT = "repeat"  # joined the open alarm of the same device and kind
    REOPENED = "reopened"  # came back within the flap window of an auto-resolved alarm
    HELD = "held"  # would clear a person alarm: recorded on it, which waits for an operator
    # Would clear an alarm, but happened (device time) before the event that raised or
    # last re-triggered it: a buffered fix delivered late. Stored; the alarm is untouched.
    STALE = "stale"
    REDELIVERY = "redelivery"  # same device message id seen before: no second event
    CLEARED = "cleared"  # auto-resolved an open alarm
    LOGGED = "logged"  # stored as an event; no alarm (e.g. a heartbeat, a daytime door)
    REJECTED = "rejected"  # dead-lettered


class TimelineType(StrEnum):
    RAISED = "raised"
    REPEATED = "repeated"
    REOPENED = "reopened"
    ESCALATED = "escalated"
    ACKNOWLEDGED = "acknowledged"
    RESPONDER_DISPATCHED = "responder_dispatched"
    RESPONDER_ON_SITE = "responder_on_site"
    RESOLVED = "resolved"
    AUTO_RESOLVED = "auto_resolved"
    SUPPRESSED = "suppressed"
    NOTE = "note"
    EVENT = "event"  # a related, non-triggering event (door closed while door alarm open)
    # Its suppression's cause ended (the inhibiting alarm resolved, the silence ended or
    # was deleted, the outage incident resolved): back in the queue as an ordinary alarm.
    RELEASED = "released"
    ESCALATION_EXHAUSTED = "escalation_exhausted"  # the policy's last step passed, still open
    # What a SCAIP device is answered about its alarm (snu, and mre/cre/tnu with snu 0):
    # one entry per distinct answer, in the commit that makes it (core/scaip_record.py).
    ANSWERED = "answered"


@dataclass(frozen=True, slots=True)
class ScaipVoice:
    """What a SCAIP answer `snu=0` tells the device about the call (docs/scaip.md).

    `mre` voice mode (0 none, 1 duplex, 2/3 simplex); `cre` callback (1-60: a window of
    minutes to call back in, 61: call the predefined receiver, 62: call `tnu`).
    """

    mre: int | None = None
    cre: int | None = None
    tnu: str | None = None


@dataclass(frozen=True, slots=True)
class DeviceSettings:
    """Per-device settings made at registration; they override municipality defaults.

    Geofences are (lat, lon, radius_m) circles or lists of (lat, lon) polygon
    vertices; kept as plain tuples here so this module stays free of geometry.
    """

    windows: tuple[tuple[str, str, str], ...] = ()  # (name, "HH:MM", "HH:MM"), e.g. night
    geofence_circle: tuple[float, float, float] | None = None
    geofence_polygon: tuple[tuple[float, float], ...] | None = None
    max_accuracy_m: float = 150.0
    dose_times: tuple[str, ...] = ()  # "HH:MM" local times of scheduled doses
    dose_window_min: int = 60
    # SCAIP devices: the voice parameters of their answers (overriding the municipality's),
    # and whether the answer goes in the SIP 200 OK instead of a new MESSAGE.
    scaip_voice: ScaipVoice | None = None
    scaip_inline: bool = False


@quick_init
@dataclass(frozen=True, slots=True)
class Device:
    id: str
    kind: DeviceKind
    municipality: str
    profile: str | None = None
    heartbeat_interval_s: int | None = None
    label: str | None = None
    active: bool = True
    # A pseudonymous reference to the person the device serves (never a name):
    # alarms of one resident inhibit each other.
    resident: str | None = None
    settings: DeviceSettings = field(default_factory=DeviceSettings)
    # The Zigbee2MQTT bridge (its MQTT account and base topic) the device is paired
    # with: its messages are believed only through that bridge (issue 13 item 9).
    bridge: str | None = None


@dataclass(frozen=True, slots=True)
class PayloadCut:
    """What is known of a payload the shell kept only the first bytes of (issue 13 item 1).

    A payload over max_payload_bytes can only be a dead letter, stored as its
    first bytes, size and hash: ingest cuts it on arrival, so a burst of 1 MiB
    messages is not held whole in memory until its batch commits.
    """

    size: int  # bytes of the whole payload
    sha256: str  # hex digest of the whole payload (core/dedup.py, payload_digest)
    fingerprint: str  # the dead-letter identity of the whole message (pipeline.fingerprint)


@quick_init
@dataclass(frozen=True, slots=True)
class RawMessage:
    """One MQTT message as it came off the wire, before any interpretation."""

    topic: str
    payload: bytes
    received_at: datetime
    # Set by the shell for a message delivered in the backlog after alarmhub
    # (re)connected: it was published no earlier than this, but MQTT carries no
    # broker time, so when exactly is unknown (issue 12 item 11, docs/protocol.md).
    queued_since: datetime | None = None
    # Set when `payload` holds only the first bytes of an oversized payload.
    cut: PayloadCut | None = None
    # MQTT's retain flag: the broker's kept copy of a topic's last message, sent at
    # each (re)subscription however old it is (core/dedup.py: identify).
    retained: bool = False
    # The media type the transport labelled the payload with, lower-case: SIP's
    # Content-Type ("" when the request had none, or none readable); None for MQTT,
    # which labels nothing. It travels with the bytes because the decoder refuses a
    # SCAIP body under another label unread (core/scaip_decode.py).
    content_type: str | None = None
    # Set by the SCAIP intake (daemon/scaip.py) for a request it answered HOLD moments
    # ago: the device is still resending this very request, whose session only an
    # answer of 0, 5 or 6 ends, so the same bytes are that request again even once its
    # alarm was resolved between two resends (core/dedup.py: identify).
    resending: bool = False

    @property
    def size(self) -> int:
        """Bytes of the whole payload, as sent."""
        return self.cut.size if self.cut is not None else len(self.payload)


@quick_init
@dataclass(frozen=True, slots=True)
class Event:
    """A decoded, validated device event in alarmhub's own vocabulary."""

    device_id: str
    msg_id: str
    type: EventType
    ts: datetime
    received_at: datetime
    fields: dict[str, Any] = field(default_factory=dict)
    ts_source: TsSource = TsSource.DEVICE
    # Device time minus receipt time, in whole seconds, when the device's clock was
    # out of bounds and `ts` was clamped (positive: the device runs fast).
    clock_skew_s: int | None = None
    # The event happened between this and `ts`, when exactly is unknown: a backlog
    # delivered after an outage, without a device time (RawMessage.queued_since).
    ts_earliest: datetime | None = None

    def key(self) -> tuple[str, str]:
        """The deduplication key: a device's own message id, unique per device."""
        return (self.device_id, self.msg_id)


@dataclass(frozen=True, slots=True)
class Rejected:
    """A message that cannot become an event. A value, never an exception."""

    reason: RejectReason
    detail: str
    device_id: str | None = None
    msg_id: str | None = None

    def __post_init__(self) -> None:
        # Quotes the message: never a national identity number in it (issue 17).
        object.__setattr__(self, "detail", redact(self.detail))


@quick_init
@dataclass(frozen=True, slots=True)
class Decoded:
    """The result of decoding one message: its events (one message may carry several)."""

    device: Device
    msg_id: str
    events: tuple[Event, ...]
    # Fields or events left out because they failed validation: the message is
    # "partial", stored and judged with the rest (issue 12 item 10).
    dropped: tuple[Dropped, ...] = ()
    # The device's ids restart (a SCAIP `ref` counter after a battery change) and its
    # bodies carry no time: identical bytes are the same message only while what the
    # first copy raised is still active (core/dedup.py).
    ids_restart: bool = False


@quick_init
@dataclass(frozen=True, slots=True)
class Alarm:
    id: str
    device_id: str
    municipality: str
    kind: str
    priority: Priority
    state: AlarmState
    raised_at: datetime
    last_seen_at: datetime
    repeat_count: int = 0
    escalation_level: int = 0
    acknowledged_at: datetime | None = None
    acknowledged_by: str | None = None
    dispatched_at: datetime | None = None
    on_site_at: datetime | None = None
    resolved_at: datetime | None = None
    resolved_by: str | None = None
    outcome: str | None = None
    rules_version: str = ""
    suppressed_by: str | None = None  # "silence:<id>", "inhibited:<alarm>", "incident:<alarm>"
    resident: str | None = None
    policy: str | None = None  # the escalation policy it was raised under
    # Escalation runs from `escalation_from` (None: raised_at). A reopened or
    # re-alerted alarm starts a fresh escalation: a new generation, whose deadline
    # rows are keyed apart from the earlier ones (core/escalation.py).
    escalation_from: datetime | None = None
    escalation_generation: int = 0
    escalation_exhausted_at: datetime | None = None  # the policy's last step passed, still open
    # A device event that would have cleared this person alarm (door closed, back in
    # the zone): shown to the operator; the alarm waits for them (core/judge.py).
    clearing_event: str | None = None
    clearing_at: datetime | None = None
    # The scheduled instant this alarm is about, for kinds raised once per scheduled
    # occurrence (a missed dose, issue 12 item 17): the index keys it on (device,
    # kind, this), so each dose is an alarm of its own. None: keyed on (device, kind).
    scheduled_at: datetime | None = None
    # The newer alarm of the same device and kind raised beside this one, when a
    # trigger could not join it (core/judge.py MergeRefused): this one stays in the
    # queue, but the key now finds the newer (core/index.py). The database holds at
    # most one active alarm per key that is not set aside (issue 15).
    superseded_by: str | None = None
    # How many times the stored row was written (0: never stored). A write names
    # the revision it was decided on, and the store refuses it if the row moved on
    # meanwhile (StaleAlarmError): another instance, or another process, changed the
    # alarm, and the decision must be taken again on what the database holds now.
    rev: int = 0
    # What the operator recorded on resolving it (core/resolution.py, issue 17): the
    # cause (årsak) and the action taken (tiltak), each a code of the alarm kind's
    # list in the rules file, and free text. None when not given (or auto-resolved).
    cause: str | None = None
    cause_text: str | None = None
    action_taken: str | None = None
    action_text: str | None = None
    # The device time (Event.ts) of the newest event that raised or re-triggered it. A
    # clearing event from before it (a buffered "inside" fix delivered after a newer
    # "outside" one) says nothing about now: it neither resolves the alarm nor sets its
    # clearing hint (core/judge.py clear). None: stored before it was kept (no check).
    # Not raised_at, which stays the receipt time of the first trigger.
    trigger_ts: datetime | None = None

    @property
    def is_active(self) -> bool:
        return self.state is not AlarmState.RESOLVED


_ALARM_FIELDS: tuple[str, ...] = Alarm.__slots__
# Each slot's own descriptor setter: it writes the slot without the frozen class's
# `__setattr__` (which refuses) and without looking the name up on the class each time.
_ALARM_SETTERS: dict[str, Callable[[Alarm, Any], None]] = {
    name: Alarm.__dict__[name].__set__ for name in _ALARM_FIELDS
}


def _alarm_copier() -> Callable[[Alarm], Alarm]:
    """A function that copies an Alarm slot by slot, written out one line per slot.

    What `dataclasses` does for `__init__`, for the copy: a loop over the slots (a
    zip, a tuple of every value, a setattr by name each) cost 5.5-5.9 us per alarm,
    the unrolled copy through each slot's descriptor 2.0-2.6 (issue 18). Generated
    from `__slots__`, so a field added to Alarm is copied without anyone editing this.
    """
    setters = {f"_set_{name}": _ALARM_SETTERS[name] for name in _ALARM_FIELDS}
    lines = [f"    _set_{name}(new, alarm.{name})" for name in _ALARM_FIELDS]
    source = "def copy(alarm):\n    new = _new(Alarm)\n" + "\n".join(lines) + "\n    return new\n"
    namespace: dict[str, Any] = {"_new": object.__new__, "Alarm": Alarm, **setters}
    exec(source, namespace)  # noqa: S102 - our own text, built from Alarm's slot names
    copy: Callable[[Alarm], Alarm] = namespace["copy"]
    return copy


_copy_alarm = _alarm_copier()


def amended(alarm: Alarm, **changes: Any) -> Alarm:
    """`dataclasses.replace` for an Alarm, at a third of the cost: copied slot by slot.

    `replace` runs the frozen `__init__` (a keyword per field, each set through
    `object.__setattr__`): 7.7 against 2.0-2.6 us per alarm, paid per new alarm more
    than once in a storm (issue 18, docs/performance.md). Alarm has no
    `__post_init__` to skip.
    """
    new = _copy_alarm(alarm)
    for name, value in changes.items():
        setter = _ALARM_SETTERS.get(name)
        if setter is None:
            raise TypeError(f"Alarm has no field {name!r}")
        setter(new, value)
    return new


@quick_init
@dataclass(frozen=True, slots=True)
class TimelineEntry:
    alarm_id: str
    at: datetime
    type: TimelineType
    actor: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)
