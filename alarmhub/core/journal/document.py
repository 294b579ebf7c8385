"""Whether an answered alarm has a journal note to send, and what goes into it.

The inputs are plain values the shell gathers: the alarm and its timeline (the
store), the patient's national identity number (the resident register), the author
(the operator who resolved it, by the identifier the user record or the settings
give), the response centre, and the kind's mapping (the rules file). The answer is
the document, or :class:`NotApplicable` with a named reason, which is what the
alarm shows (`journal: not applicable (no national id)`).

Every time in the note comes from the timeline: the same alarm gives the same
bytes, so a retry after a crash sends the very same document (bundle.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from alarmhub.core.hpr import parse_hpr
from alarmhub.core.journal import codes
from alarmhub.core.journal.mapping import JournalMapping, KindMapping
from alarmhub.core.model import Alarm, AlarmState, TimelineEntry, TimelineType
from alarmhub.core.national_id import Invalid, parse_national_id
from alarmhub.core.resolution import Resolution, from_detail


@dataclass(frozen=True, slots=True)
class Patient:
    """The resident as the journal knows them. `national_id` None: not in the register."""

    national_id: str | None
    display: str | None = None  # a name, when the register has one


@dataclass(frozen=True, slots=True)
class Author:
    """The operator who resolved the alarm: an identifier system (HPR or alarmhub's
    user name) and value, and how to show them."""

    system: str
    value: str
    display: str


def author_of(user: str, hpr: str | None) -> Author:
    """The note's author: the resolving user by HPR number when the record has one.

    VKP's guide asks for the HPR number (JFT may require it: unconfirmed, see
    docs/journal.md); a user without one (or with a stored value that is not an HPR
    number) is named by alarmhub's user name under `urn:alarmhub:user`, which the
    response centre can trace in its own audit log. Either way the display is the
    user name: alarmhub keeps no person's full name.
    """
    number = parse_hpr(hpr) if hpr is not None else None
    if isinstance(number, str):
        return Author(codes.HPR_SYSTEM, number, user)
    return Author(codes.USER_SYSTEM, user, user)


@dataclass(frozen=True, slots=True)
class Organisation:
    """The response centre: its name and its nine-digit organisation number."""

    name: str
    number: str


@dataclass(frozen=True, slots=True)
class Steps:
    """When each step of the response happened, as the timeline recorded it first."""

    raised: datetime
    acknowledged: datetime | None
    dispatched: datetime | None
    on_site: datetime | None
    resolved: datetime


class Skip(StrEnum):
    """Why an alarm has no note to send. The values are what the alarm shows."""

    NOT_RESOLVED = "not resolved"
    NO_OPERATOR = "resolved without an operator"
    NO_MAPPING = "no journal mapping for its kind"
    NOT_EXPORTED = "its kind is not exported"
    NO_NATIONAL_ID = "no national id"
    INVALID_NATIONAL_ID = "invalid national id"


@dataclass(frozen=True, slots=True)
class NotApplicable:
    reason: Skip

    def __str__(self) -> str:
        return f"journal: not applicable ({self.reason.value})"


@dataclass(frozen=True, slots=True)
class Ready:
    """What the note needs besides the patient, once the alarm qualifies."""

    kind: KindMapping
    steps: Steps


def steps_of(alarm: Alarm, timeline: Iterable[TimelineEntry]) -> Steps | None:
    """The first time of each step; None when no operator resolved the alarm.

    The first acknowledgement counts (a re-alerted alarm is acknowledged again: the
    response began at the first), and the last resolution (a reopened alarm was
    resolved again: that is the answer the note reports).
    """
    first: dict[TimelineType, datetime] = {}
    resolved: TimelineEntry | None = None
    for entry in sorted(timeline, key=lambda e: e.at):
        first.setdefault(entry.type, entry.at)
        if entry.type is TimelineType.RESOLVED:
            resolved = entry
    if resolved is None or resolved.actor is None:
        return None
    return Steps(
        raised=min(first.get(TimelineType.RAISED, alarm.raised_at), alarm.raised_at),
        acknowledged=first.get(TimelineType.ACKNOWLEDGED),
        dispatched=first.get(TimelineType.RESPONDER_DISPATCHED),
        on_site=first.get(TimelineType.RESPONDER_ON_SITE),
        resolved=resolved.at,
    )


def qualify(
    alarm: Alarm, timeline: Iterable[TimelineEntry], mapping: JournalMapping
) -> Ready | NotApplicable:
    """Whether this alarm gets a note at all, whoever the patient is."""
    if alarm.state is not AlarmState.RESOLVED:
        return NotApplicable(Skip.NOT_RESOLVED)
    kind = mapping.get(alarm.kind)
    if kind is None:
        return NotApplicable(Skip.NO_MAPPING)
    if not kind.export:
        return NotApplicable(Skip.NOT_EXPORTED)
    steps = steps_of(alarm, timeline)
    if steps is None:
        return NotApplicable(Skip.NO_OPERATOR)
    return Ready(kind, steps)


def check_patient(patient: Patient) -> NotApplicable | None:
    if patient.national_id is None:
        return NotApplicable(Skip.NO_NATIONAL_ID)
    if isinstance(parse_national_id(patient.national_id), Invalid):
        return NotApplicable(Skip.INVALID_NATIONAL_ID)
    return None


def resolution_from_timeline(timeline: Iterable[TimelineEntry]) -> Resolution:
    """The cause and action the resolve step recorded on the timeline (the last resolve),
    under the keys it writes them (core/resolution.py `Resolution.detail`), with the
    choices' texts the operator saw."""
    resolved = [e for e in sorted(timeline, key=lambda e: e.at) if e.type is TimelineType.RESOLVED]
    return from_detail(resolved[-1].detail) if resolved else Resolution()


def timeline_entry(alarm_id: str, row: Mapping[str, Any]) -> TimelineEntry:
    """A stored timeline row (the store's `timeline(alarm_id)`) as the core's value."""
    at = row["at"]
    return TimelineEntry(
        alarm_id,
        at if isinstance(at, datetime) else datetime.fromisoformat(at),
        TimelineType(row["type"]),
        row.get("actor"),
        row.get("detail") or {},
    )
