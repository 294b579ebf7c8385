"""Silences, inhibition and storms: why a new alarm is recorded but not queued on its own.

Suppression is always a recorded reason, never a silent drop: the alarm is
stored with `suppressed_by` set and a `suppressed` timeline entry, and it is not
escalated separately. The tags say what it is attached to:

- ``silence:<id>`` — the device or resident is under maintenance;
- ``inhibited:<alarm id>`` — a more urgent alarm of the same resident is open (a
  fall inhibits the low battery of the same person's pendant);
- ``incident:<alarm id>`` — one of many technical alarms of a municipality
  within minutes (an outage), folded into one incident row.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime

from alarmhub.core.model import Alarm, AlarmState, Device, TimelineEntry, TimelineType
from alarmhub.core.rules import StormPolicy


@dataclass(frozen=True, slots=True)
class Silence:
    id: str
    municipality: str
    starts_at: datetime
    ends_at: datetime
    device_id: str | None = None  # None: by resident
    resident: str | None = None
    reason: str = ""

    def covers(self, device: Device, at: datetime) -> bool:
        if device.municipality != self.municipality or not self.starts_at <= at < self.ends_at:
            return False
        if self.device_id is not None:
            return self.device_id == device.id
        return self.resident is not None and self.resident == device.resident


@dataclass(frozen=True, slots=True)
class Suppression:
    tag: str | None  # None: queue it as usual
    reason: str = ""
    incident: Alarm | None = None  # a new or grown incident to write
    attach: tuple[Alarm, ...] = ()  # earlier alarms now attached to the incident
    timeline: tuple[TimelineEntry, ...] = ()


NOT_SUPPRESSED = Suppression(None)


def decide(
    alarm: Alarm,
    device: Device,
    silences: Iterable[Silence],
    resident_alarms: Iterable[Alarm],
    municipality_alarms: Iterable[Alarm],
    storm: StormPolicy | None,
    now: datetime,
) -> Suppression:
    """Whether a newly raised alarm is suppressed, and what else changes with it."""
    for silence in silences:
        if silence.covers(device, now):
            return _tagged(alarm, f"silence:{silence.id}", f"silenced: {silence.reason}", now)
    if alarm.resident is not None:
        # The same reference in another municipality is another person: never theirs.
        inhibitors = [
            a
            for a in resident_alarms
            if a.id != alarm.id
            and a.municipality == alarm.municipality
            and a.resident == alarm.resident
            and a.suppressed_by is None
            and a.is_active
            and a.priority < alarm.priority
        ]
        if inhibitors:
            top = min(inhibitors, key=lambda a: (a.priority, a.raised_at))
            return _tagged(alarm, f"inhibited:{top.id}", f"inhibited by {top.kind} alarm", now)
    if storm is not None and alarm.kind in storm.kinds:
        return _storm(alarm, list(municipality_alarms), storm, now)
    return NOT_SUPPRESSED


def _tagged(alarm: Alarm, tag: str, reason: str, now: datetime) -> Suppression:
    entry = TimelineEntry(
        alarm.id, now, TimelineType.SUPPRESSED, None, {"by": tag, "reason": reason}
    )
    return Suppression(tag, reason, timeline=(entry,))


def incident_id(municipality: str, first_alarm_id: str) -> str:
    digest = hashlib.blake2b(
        f"incident\x00{municipality}\x00{first_alarm_id}".encode(), digest_size=8
    )
    return digest.hexdigest()


def _storm(alarm: Alarm, others: list[Alarm], storm: StormPolicy, now: datetime) -> Suppression:
    incidents = [a for a in others if a.kind == storm.incident_kind and a.is_active]
    if incidents:
        incident = min(incidents, key=lambda a: a.raised_at)
        tag = f"incident:{incident.id}"
        grown = replace(incident, repeat_count=incident.repeat_count + 1, last_seen_at=now)
        entries = (
            TimelineEntry(
                alarm.id,
                now,
                TimelineType.SUPPRESSED,
                None,
                {"by": tag, "reason": "part of an incident"},
            ),
            TimelineEntry(
                incident.id,
                now,
                TimelineType.EVENT,
                None,
                {"attached": alarm.id, "device_id": alarm.device_id},
            ),
        )
        return Suppression(tag, "part of an incident", grown, (), entries)
    cutoff = now - storm.window
    recent = sorted(
        (
            a
            for a in others
            if a.kind in storm.kinds
            and a.suppressed_by is None
            and a.is_active
            and a.raised_at >= cutoff
        ),
        key=lambda a: a.raised_at,
    )
    if len(recent) + 1 < storm.threshold:
        return NOT_SUPPRESSED
    first = recent[0]
    incident = Alarm(
        id=incident_id(alarm.municipality, first.id),
        device_id=f"municipality:{alarm.municipality}",
        municipality=alarm.municipality,
        kind=storm.incident_kind,
        priority=storm.priority,
        state=AlarmState.OPEN,
        raised_at=now,
        last_seen_at=now,
        repeat_count=len(recent),
        rules_version=alarm.rules_version,
    )
    tag = f"incident:{incident.id}"
    attach = tuple(replace(a, suppressed_by=tag) for a in recent)
    reason = f"{len(recent) + 1} technical alarms within {storm.window.total_seconds():g} s"
    raised = [
        TimelineEntry(
            incident.id,
            now,
            TimelineType.RAISED,
            None,
            {"reason": reason, "priority": int(storm.priority)},
        )
    ]
    raised.extend(_attached_entry(a.id, tag, now) for a in (*recent, alarm))
    return Suppression(tag, "part of an incident", incident, attach, tuple(raised))


def _attached_entry(alarm_id: str, tag: str, now: datetime) -> TimelineEntry:
    return TimelineEntry(
        alarm_id, now, TimelineType.SUPPRESSED, None, {"by": tag, "reason": "part of an incident"}
    )
