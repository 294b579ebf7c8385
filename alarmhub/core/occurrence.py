"""A new alarm keyed to its own occurrence: a scheduled dose, a message id seen before.

An alarm's id and index key derive from what triggered it (core/judge.py
`alarm_id`, core/index.py `alarm_key`), so that a redelivery can never mint a
second alarm. Two triggers are new occurrences all the same and must not land on
an earlier alarm: a dose alarm is one per scheduled dose, and a message id seen
before but new again (reused, or past the dedup window) raises alarms of its own.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import datetime

from alarmhub.core.doses import SCHEDULED_AT
from alarmhub.core.judge import Decision, alarm_id
from alarmhub.core.model import INTERNAL_EVENTS, Event


def scheduled_at(event: Event) -> datetime | None:
    """The scheduled dose alarmhub's own dose event is about (core/doses.dose_event).

    Its alarm is keyed per dose (issue 12 item 17). Only alarmhub's own events carry
    it: a device cannot pick the key its alarms are found by.
    """
    if event.type not in INTERNAL_EVENTS:
        return None
    value = event.fields.get(SCHEDULED_AT)
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def for_occurrence(decision: Decision, scheduled: datetime) -> Decision:
    """A new alarm about one scheduled dose: it says which, on the alarm and its timeline."""
    alarm = decision.alarm
    assert alarm is not None
    iso = scheduled.isoformat()
    return Decision(
        decision.verdict,
        replace(alarm, scheduled_at=scheduled),
        tuple(replace(e, detail={**e.detail, SCHEDULED_AT: iso}) for e in decision.timeline),
    )


def rekeyed(decision: Decision, event: Event, occurrence: str) -> Decision:
    """Give the alarm of a message id seen before an id of its own.

    Alarm ids derive from (device, message id, kind), so that a redelivery can never
    mint a second alarm. A reused id (or the same id after the dedup window, or an
    identical content-identified press after its alarm was resolved) is a new
    message, and its alarm would otherwise take the earlier alarm's id and
    overwrite that alarm's record. `occurrence` (when this copy arrived) tells them
    apart; a redelivery of this copy never gets here (core/dedup.py).
    """
    alarm = decision.alarm
    assert alarm is not None
    new_id = alarm_id(event.device_id, f"{event.msg_id}\x00{occurrence}", alarm.kind)
    return Decision(
        decision.verdict,
        replace(alarm, id=new_id),
        tuple(replace(e, alarm_id=new_id) for e in decision.timeline),
    )


def keyed_apart(
    decision: Decision, event: Event, taken: Callable[[str], bool], occurrence: str | None
) -> Decision:
    """A new alarm, with an id no stored alarm has (:func:`rekeyed`). `occurrence` is
    given when dedup saw the message id used before. When the earlier message's inbox
    row is gone (pruned) but its alarm is stored, only the index knows the id is
    `taken` (AlarmIndex.taken); the arrival time keys it apart."""
    alarm = decision.alarm
    assert alarm is not None
    if occurrence is None and taken(alarm.id):
        occurrence = event.received_at.isoformat()
    return decision if occurrence is None else rekeyed(decision, event, occurrence)
