"""Silences, inhibition and storms: why a new alarm is recorded but not queued on its own.

Suppression is always a recorded reason, never a silent drop: the alarm is
stored with `suppressed_by` set and a `suppressed` timeline entry, and it is not
escalated separately. The tags say what it is attached to:

- ``silence:<id>`` — the device or resident is under maintenance;
- ``inhibited:<alarm id>`` — a more urgent alarm of the same resident is open (a
  fall inhibits the low battery of the same person's pendant);
- ``incident:<alarm id>`` — one of many technical alarms of a municipality
  within minutes (an outage), folded into one incident row.

Suppression is temporary: it hides an alarm only while its cause lasts. When
the cause ends (the inhibiting alarm or the incident is resolved, the silence
reaches its end or is deleted) every still-active alarm it covered is released
(:func:`released_by`, :func:`on_resolved`, :func:`ended_silences`): a
``released`` timeline entry with the reason, ``suppressed_by`` cleared, and a
fresh escalation planned from the release instant. ``raised_at`` is never
touched: response times still count from when the person called. The shell
writes a release in the same transaction as the change that ended its cause.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum

from alarmhub.core.escalation import fresh_escalation
from alarmhub.core.model import (
    Alarm,
    AlarmState,
    Device,
    Priority,
    TimelineEntry,
    TimelineType,
)
from alarmhub.core.rules import StormPolicy
from alarmhub.core.strays import STRAY_KIND

# A silence of a whole municipality (no device, no resident) hides a great deal:
# it lasts at most this long unless the deployment says otherwise, and without an
# end it lasts exactly this long (issue 12 item 8).
MUNICIPALITY_SILENCE_MAX = timedelta(hours=24)


@dataclass(frozen=True, slots=True)
class Silence:
    """Maintenance: a device, a resident, or (neither given) a whole municipality.

    A silence never hides a priority 1 alarm (a press, a fall) unless it says so
    (`include_priority_1`): a pendant under repair may still be pressed by
    someone on the floor, and that press must escalate.
    """

    id: str
    municipality: str
    starts_at: datetime
    ends_at: datetime
    device_id: str | None = None  # None: by resident, or (no resident) the municipality
    resident: str | None = None
    reason: str = ""
    include_priority_1: bool = False
    # Who asked for it and when: shown to operators, never used in a decision.
    created_by: str = ""
    created_at: datetime | None = None

    @property
    def municipality_wide(self) -> bool:
        return self.device_id is None and self.resident is None

    def covers(self, device: Device, at: datetime) -> bool:
        if device.municipality != self.municipality or not self.starts_at <= at < self.ends_at:
            return False
        if self.device_id is not None:
            return self.device_id == device.id
        if self.resident is not None:
            return self.resident == device.resident
        return True  # the whole municipality

    def silences(self, alarm: Alarm, device: Device, at: datetime) -> bool:
        """Whether this silence hides `alarm`: it covers the device, and spares P1 unless told.

        A press from a decommissioned device (STRAY_KIND, raised at priority 2) is
        spared as P1 is: it stands for a call for help whatever its priority, and the
        pendant's own press, were it registered, would have been. It was hidden for
        the week a "pendant being replaced" silence ran, with the resident still
        wearing the old one.
        """
        spared = alarm.priority is Priority.CRITICAL or alarm.kind == STRAY_KIND
        if spared and not self.include_priority_1:
            return False
        return self.covers(device, at)


def silence_end(
    device_id: str | None,
    starts_at: datetime,
    ends_at: datetime | None,
    municipality_max: timedelta = MUNICIPALITY_SILENCE_MAX,
) -> datetime | str:
    """When a silence asked for this way ends, or why it is refused (a message).

    A municipality-wide silence without an end lasts `municipality_max`, and
    none lasts longer; a device's silence must name its end.
    """
    if device_id is None:
        if ends_at is None:
            return starts_at + municipality_max
        if ends_at - starts_at > municipality_max:
            hours = municipality_max.total_seconds() / 3600
            return f"a silence of a whole municipality lasts at most {hours:g} h"
        return ends_at
    if ends_at is None:
        return "a device's silence needs ends_at"
    return ends_at


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
        if silence.silences(alarm, device, now):
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


def incident_id(municipality: str, first_alarm_id: str, raised_at: datetime) -> str:
    """The same for the same decision (a batch decided again after a refused write).

    With the time it is raised: an incident an operator resolved by hand puts its
    alarms back in the queue, and one more within the window makes an incident of
    the same first alarm again. Keyed by that alarm alone, it took the resolved
    incident's id, which the store refused to write over, round after round, and
    nothing was committed or acknowledged meanwhile.
    """
    digest = hashlib.blake2b(
        f"incident\x00{municipality}\x00{first_alarm_id}\x00{raised_at.isoformat()}".encode(),
        digest_size=8,
    )
    return digest.hexdigest()


def _storm(alarm: Alarm, others: list[Alarm], storm: StormPolicy, now: datetime) -> Suppression:
    # Only an incident still growing absorbs: within the storm window of the last
    # alarm it took in. An open incident nobody resolved must not swallow a device
    # that goes offline weeks later (issue 12 item 7).
    incidents = [
        a
        for a in others
        if a.kind == storm.incident_kind and a.is_active and now - a.last_seen_at <= storm.window
    ]
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
        id=incident_id(alarm.municipality, first.id, now),
        device_id=f"municipality:{alarm.municipality}",
        municipality=alarm.municipality,
        kind=storm.incident_kind,
        priority=storm.priority,
        state=AlarmState.OPEN,
        raised_at=now,
        last_seen_at=now,
        repeat_count=len(recent),
        rules_version=alarm.rules_version,
        policy=storm.policy_name(),
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


# --- the end of a suppression -----------------------------------------------------------


class ReleaseReason(StrEnum):
    """Why a suppressed alarm came back to the queue. Bounded: timeline and log field."""

    INHIBITOR_RESOLVED = "inhibitor_resolved"  # the more urgent alarm was resolved
    INCIDENT_RESOLVED = "incident_resolved"  # the outage incident was resolved
    SILENCE_ENDED = "silence_ended"  # the silence reached its end time
    SILENCE_DELETED = "silence_deleted"  # someone ended the silence early


@dataclass(frozen=True, slots=True)
class Release:
    """One suppressed alarm let go: the alarm as it is now, and its timeline entry."""

    alarm: Alarm
    entry: TimelineEntry


def release(
    alarm: Alarm, reason: ReleaseReason, now: datetime, actor: str | None = None
) -> Release:
    """`alarm` as an ordinary active alarm again, escalating from `now`.

    A new escalation generation: any deadline rows decided before the alarm was
    suppressed (an alarm attached to an incident after its first step) do not
    stand in for the fresh escalation. `raised_at` stays: response times are
    measured from the call, not from the release.
    """
    detail = {"reason": reason.value, "was": alarm.suppressed_by}
    released = fresh_escalation(replace(alarm, suppressed_by=None), now)
    return Release(released, TimelineEntry(alarm.id, now, TimelineType.RELEASED, actor, detail))


def released_by(
    cause: str,
    reason: ReleaseReason,
    covered: Iterable[Alarm],
    now: datetime,
    actor: str | None = None,
) -> list[Release]:
    """Every still-active alarm of `covered` that `cause` (a tag) suppresses, released."""
    return [
        release(a, reason, now, actor)
        for a in sorted(covered, key=lambda a: (a.raised_at, a.id))
        if a.is_active and a.suppressed_by == cause
    ]


def causes_of(alarm: Alarm) -> tuple[tuple[str, ReleaseReason], ...]:
    """The suppression tags an alarm stands for, and the reason its resolution gives."""
    return (
        (f"inhibited:{alarm.id}", ReleaseReason.INHIBITOR_RESOLVED),
        (f"incident:{alarm.id}", ReleaseReason.INCIDENT_RESOLVED),
    )


def on_resolved(
    resolved: Alarm,
    attached: Callable[[str], Iterable[Alarm]],
    now: datetime,
    actor: str | None = None,
) -> list[Release]:
    """What a resolved alarm releases: what it inhibited, and what its incident folded in.

    `attached(tag)` gives the active alarms suppressed by `tag` (the index's
    :meth:`~alarmhub.core.index.AlarmIndex.attached`). Nothing while it is active.
    """
    if resolved.is_active:
        return []
    out: list[Release] = []
    for tag, reason in causes_of(resolved):
        out.extend(released_by(tag, reason, attached(tag), now, actor))
    return out


def ended_silences(
    silenced: Iterable[Alarm],
    silences: Iterable[Silence],
    now: datetime,
    deleted: frozenset[str] = frozenset(),
) -> list[Release]:
    """Alarms whose silence is no longer in force at `now`, released.

    `silenced`: active alarms tagged ``silence:<id>``; `silences`: those the
    store holds as not deleted and not yet ended. A silence missing from them,
    or whose `ends_at` has passed, is no longer in force.
    Idempotent: the shell may call it after every reload and at start-up, so a
    silence that ended while alarmhub was down lets go of its alarms then.
    """
    in_force = {f"silence:{s.id}": s for s in silences}
    out = []
    for alarm in sorted(silenced, key=lambda a: (a.raised_at, a.id)):
        tag = alarm.suppressed_by
        if not alarm.is_active or tag is None or not tag.startswith("silence:"):
            continue
        silence = in_force.get(tag)
        if silence is not None and now < silence.ends_at:
            continue
        # A silence that is simply gone may have ended or been deleted elsewhere:
        # only the caller that deleted it knows, and says so in `deleted`.
        sid = tag.removeprefix("silence:")
        reason = ReleaseReason.SILENCE_DELETED if sid in deleted else ReleaseReason.SILENCE_ENDED
        out.append(release(alarm, reason, now))
    return out


def orphaned(
    suppressed: Iterable[Alarm], lookup: Callable[[str], Alarm | None], now: datetime
) -> list[Release]:
    """Alarms inhibited by, or folded into, an alarm that is no longer active, released.

    Every path that resolves an alarm releases what it covered in the same
    transaction; this catches what none of them could: alarms stored by a version
    that never released (an upgrade), or a cause resolved by another process.
    `lookup` is the index's `get` (active alarms).
    """
    out = []
    for alarm in sorted(suppressed, key=lambda a: (a.raised_at, a.id)):
        tag = alarm.suppressed_by or ""
        kind, _, cause_id = tag.partition(":")
        reason = {
            "inhibited": ReleaseReason.INHIBITOR_RESOLVED,
            "incident": ReleaseReason.INCIDENT_RESOLVED,
        }.get(kind)
        if reason is None or not alarm.is_active:
            continue
        cause = lookup(cause_id)
        if cause is None or not cause.is_active:
            out.append(release(alarm, reason, now))
    return out


def next_silence_end(silences: Iterable[Silence], now: datetime) -> datetime | None:
    """The earliest end of a silence still in force: when the shell must wake to release."""
    return min((s.ends_at for s in silences if s.ends_at > now), default=None)
