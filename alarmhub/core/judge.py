"""What one event means for the alarms of its device: the single decision at the heart.

``judge`` is pure: it receives the event, the rule that matched it, the device's
active alarm of the same kind (if any), a recently auto-resolved one (for flap
detection) and `now`, and returns a :class:`Decision` that names its reason.

Two ways a genuine call for help used to be lost here (issue 12):

- *Joining the wrong alarm* (item 4). A press joins the device's active alarm of
  its kind, but never one that is too old (a test press left unresolved a week ago
  would swallow tonight's real press: no escalation, no sound) and never a
  suppressed one whose cause has ended (it would inherit the ended silence).
  Such a press raises a new alarm of its own, which goes through suppression and
  escalation afresh. A repeat on an *acknowledged* person alarm (priority 1-2) puts
  it back in the queue with a fresh escalation: the resident pressing again while
  help is on the way may mean it is worse. A reopened alarm (flap window) escalates
  afresh too, and the pipeline asks suppression again.
- *A sensor closing a person alarm* (item 3). A door closing or a tracker back in
  its zone cannot say the resident is safe: it may close behind someone who walked
  out. :func:`clear` auto-resolves only technical and follow-up alarms (priority
  3-4) unless the rule opts in (``auto_resolve_person_alarm``); for priority 1-2
  the clearing event is recorded on the alarm and its timeline, and the alarm waits
  for an operator.

And one way a newer alarm was quietly cleared: *a clearing event from before the
trigger*. Trackers buffer fixes out of coverage and deliver them late, out of
order; an "inside" fix taken before the "outside" fix that raised
``left_safe_zone`` resolved it, or told the operator the person was back. Each
alarm keeps its newest trigger's device time (``Alarm.trigger_ts``), and
:func:`clear` leaves the alarm alone for an event older than that (``STALE``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum

from alarmhub.core.device_time import device_clock
from alarmhub.core.escalation import fresh_escalation
from alarmhub.core.model import (
    AUTO_OUTCOME,
    AUTO_RESOLVER,
    Alarm,
    AlarmState,
    Device,
    Event,
    Priority,
    TimelineEntry,
    TimelineType,
    TsSource,
    Verdict,
)
from alarmhub.core.quick import quick_init
from alarmhub.core.rules import Rule
from alarmhub.core.suppress import Silence

# The highest priority a device event may auto-resolve by default: technical (4) and
# follow-up (3) alarms. Person alarms (1 critical, 2 high) are closed by a person.
AUTO_RESOLVE_FROM = Priority.NORMAL


class MergeRefused(StrEnum):
    """Why an event did not join the device's active alarm of its kind. Bounded."""

    TOO_OLD = "too_old"  # raised longer ago than the rules' merge_max_age
    SUPPRESSION_ENDED = "suppression_ended"  # it is suppressed by a cause that has ended
    DEVICE_MOVED = "device_moved"  # the device is in another municipality now
    RESIDENT_CHANGED = "resident_changed"  # the device is someone else's now


@quick_init
@dataclass(frozen=True, slots=True)
class Decision:
    verdict: Verdict
    alarm: Alarm | None = None  # the alarm as it is after this event
    timeline: tuple[TimelineEntry, ...] = ()


def _flapped(resolved: Alarm, device: Device, rule: Rule, now: datetime) -> bool:
    """Does a new trigger reopen this alarm rather than raise one of its own?

    Only an automatic resolution (alarmhub's own, never an operator's answer, whose
    journal note may be on its way: issue 17) within the rule's flap window, and only
    while the device is where it was: moved to another municipality or given to another
    resident meanwhile, the old alarm stays with its owners, and the new one goes to
    the device's queue, about its resident (promise 3).
    """
    return (
        resolved.outcome == AUTO_OUTCOME
        and resolved.resolved_by == AUTO_RESOLVER
        and resolved.resolved_at is not None
        and now - resolved.resolved_at <= rule.flap_window
        and resolved.municipality == device.municipality
        and resolved.resident == device.resident
    )


def alarm_id(device_id: str, msg_id: str, kind: str) -> str:
    """Derived from the triggering message, so a redelivery can never mint a second id."""
    digest = hashlib.blake2b(f"{device_id}\x00{msg_id}\x00{kind}".encode(), digest_size=8)
    return digest.hexdigest()


def suppression_ended(
    alarm: Alarm,
    silences: Iterable[Silence],
    get: Callable[[str], Alarm | None],
    now: datetime,
) -> bool:
    """Whether `alarm` is suppressed by a cause that no longer holds at `now`.

    `silences` are those in force (not deleted); `get` finds an alarm by id (the
    inhibiting alarm, the incident). An unknown tag counts as ended: hiding a
    press behind a cause nobody can name is the silent path this closes.
    """
    tag = alarm.suppressed_by
    if tag is None:
        return False
    kind, _, ref = tag.partition(":")
    if kind == "silence":
        return not any(s.id == ref and s.starts_at <= now < s.ends_at for s in silences)
    if kind in {"inhibited", "incident"}:
        cause = get(ref)
        return cause is None or not cause.is_active
    return True


def merge_refused(
    active: Alarm,
    device: Device,
    now: datetime,
    merge_max_age: timedelta | None,
    cause_ended: bool,
) -> MergeRefused | None:
    """Why a new trigger must not join `active` (None: it joins).

    Like :func:`_flapped`, only while the device is where it was: a move is refused
    while the device has open alarms, but only inside the move's own transaction,
    and an instance ingesting learns of a move by another process at its next
    registry poll. A press in that window raises an alarm in the old municipality;
    joining every later press to it would hide the resident's presses from the
    municipality the device is in now (promise 3). Such a press raises its own
    alarm, in the device's queue, about its resident; the old one stays with its
    owners.
    """
    moved = moved_on(active, device)
    if moved is not None:
        return moved
    if cause_ended:
        return MergeRefused.SUPPRESSION_ENDED
    if merge_max_age is not None and now - active.raised_at > merge_max_age:
        return MergeRefused.TOO_OLD
    return None


def moved_on(alarm: Alarm, device: Device) -> MergeRefused | None:
    """Whether the device now belongs to another municipality or resident than `alarm`.

    Then its events are about them, not about this alarm: they neither join it
    (:func:`merge_refused`) nor clear it, nor mark it cleared (core/pipeline.py), so
    one municipality's device never changes how another's alarm is handled.
    """
    if alarm.municipality != device.municipality:
        return MergeRefused.DEVICE_MOVED
    if alarm.resident != device.resident:
        return MergeRefused.RESIDENT_CHANGED
    return None


def event_context(event: Event) -> dict[str, object]:
    """What the operator must see about the event itself, for the timeline entry.

    The note of a press alarmhub could not read ("unrecognised button action: …",
    issue 12 item 13), and a time that is not the device's own (item 11: a clock
    out of bounds, clamped to the time of receipt).
    """
    context: dict[str, object] = {}
    if "note" in event.fields:
        context["note"] = event.fields["note"]
    if event.ts_source is not TsSource.DEVICE:
        context["ts_source"] = str(event.ts_source)
    if event.clock_skew_s is not None:
        context["clock_skew_s"] = event.clock_skew_s
    if event.ts_earliest is not None:
        # Delivered in a backlog after an outage: it happened some time in between.
        context["ts_earliest"] = event.ts_earliest.isoformat()
    return context


def judge(
    event: Event,
    device: Device,
    rule: Rule,
    active: Alarm | None,
    recently_resolved: Alarm | None,
    now: datetime,
    rules_version: str = "",
    *,
    merge_max_age: timedelta | None = None,
    cause_ended: bool = False,
    policy: str | None = None,
) -> Decision:
    """`cause_ended`: `active` is suppressed by a cause that has ended (see
    :func:`suppression_ended`). `policy`: the escalation policy a new alarm is raised
    under (the rule set's, for :func:`new_priority` in the device's municipality).

    A new alarm is built once, with its resident and policy: a storm of new alarms
    paid a second copy of each for them (issue 18).
    """
    if rule.alarm is None:
        return Decision(Verdict.LOGGED)
    detail: dict[str, object] = {
        "event": str(event.type),
        "msg_id": event.msg_id,
        "rule": rule.name,
    }
    detail.update(event_context(event))
    if active is not None:
        refused = merge_refused(active, device, now, merge_max_age, cause_ended)
        if refused is None:
            return _merge(active, event, now, detail)
        # A new alarm of its own, beside the old one (which stays in the queue).
        detail = {**detail, "not_merged_into": active.id, "why": refused.value}
        recently_resolved = None
    if recently_resolved is not None and _flapped(recently_resolved, device, rule, now):
        # A door that closes and opens again within the flap window is one alarm,
        # not a queue row per swing: reopen it, keeping its original raised_at.
        # A fresh escalation (the first one may be long exhausted), and no stale
        # suppression: the pipeline asks suppression again.
        reopened = replace(
            fresh_escalation(recently_resolved, now),
            state=AlarmState.OPEN,
            resolved_at=None,
            resolved_by=None,
            outcome=None,
            repeat_count=recently_resolved.repeat_count + 1,
            last_seen_at=now,
            suppressed_by=None,
            clearing_event=None,
            clearing_at=None,
            trigger_ts=device_clock(event),
        )
        entry = TimelineEntry(reopened.id, now, TimelineType.REOPENED, None, detail)
        return Decision(Verdict.REOPENED, reopened, (entry,))
    priority = new_priority(rule)
    alarm = Alarm(
        id=alarm_id(device.id, event.msg_id, rule.alarm),
        device_id=device.id,
        municipality=device.municipality,
        kind=rule.alarm,
        priority=priority,
        state=AlarmState.OPEN,
        raised_at=now,
        last_seen_at=now,
        rules_version=rules_version,
        resident=device.resident,
        policy=policy,
        trigger_ts=device_clock(event),
    )
    detail["priority"] = int(priority)  # `detail` is this call's own dict
    entry = TimelineEntry(alarm.id, now, TimelineType.RAISED, None, detail)
    return Decision(Verdict.NEW, alarm, (entry,))


def new_priority(rule: Rule) -> Priority:
    """The priority of a new alarm the rule raises."""
    return rule.priority if rule.priority is not None else Priority.NORMAL


def _merge(active: Alarm, event: Event, now: datetime, detail: dict[str, object]) -> Decision:
    """Join the active alarm, keeping the first start: response time counts from raised_at.

    Its trigger's device time moves only forward: a trigger delivered late, out of
    order, must not make an older clearing event look newer than the alarm.
    A trigger after a clearing event means the condition is back: the marker goes.
    On an acknowledged person alarm the repeat re-alerts: back in the queue as
    open (still naming who acknowledged it, to tell them) with a fresh escalation.
    """
    merged = replace(
        active,
        repeat_count=active.repeat_count + 1,
        last_seen_at=max(active.last_seen_at, now),
        clearing_event=None,
        clearing_at=None,
        trigger_ts=_newest(active.trigger_ts, device_clock(event)),
    )
    if active.state is AlarmState.ACKNOWLEDGED and active.priority < AUTO_RESOLVE_FROM:
        merged = replace(fresh_escalation(merged, now), state=AlarmState.OPEN)
        detail = {**detail, "realert": True, "acknowledged_by": active.acknowledged_by}
    entry = TimelineEntry(active.id, now, TimelineType.REPEATED, None, detail)
    return Decision(Verdict.REPEAT, merged, (entry,))


def _newest(kept: datetime | None, new: datetime | None) -> datetime | None:
    if kept is None or new is None:
        return new or kept
    return max(kept, new)


def is_stale(alarm: Alarm, event: Event) -> bool:
    """Did the event happen, on the device's clock, before the alarm's newest trigger?"""
    when = device_clock(event)
    return when is not None and alarm.trigger_ts is not None and when < alarm.trigger_ts


def clear(
    alarm: Alarm, event: Event, rule: Rule, now: datetime, *, ordered: bool = True
) -> Decision:
    """What a clearing device event (door closed, back in the zone, cancel) does.

    Technical and follow-up alarms resolve; a person alarm waits for an operator
    unless the rule says ``auto_resolve_person_alarm``: the event is recorded on it
    (``clearing_event``/``clearing_at``, an ``event`` timeline entry), once per
    kind of clearing event, so a chatty sensor does not flood the timeline.

    An event whose device time is before the alarm's trigger's (``trigger_ts``) is
    ``STALE``: it happened before the condition the alarm reports, so it cannot say
    the condition is over. Nothing is written on the alarm (a tracker's backlog may
    hold hundreds of such fixes); the event is stored with its verdict and the
    alarm's id. The same instant is not older: it clears as before. `ordered`
    False: the event's receipt alone is the news (a device heard again is alive
    now, whatever its backlog's times), so its time is not compared.
    """
    if ordered and is_stale(alarm, event):
        return Decision(Verdict.STALE)
    if alarm.priority >= AUTO_RESOLVE_FROM or rule.auto_resolve_person_alarm:
        return auto_resolve(alarm, event, rule, now)
    if alarm.clearing_event == str(event.type):
        return Decision(Verdict.HELD)
    held = replace(
        alarm,
        clearing_event=str(event.type),
        clearing_at=now,
        last_seen_at=max(alarm.last_seen_at, now),
    )
    detail = {
        "event": str(event.type),
        "msg_id": event.msg_id,
        "rule": rule.name,
        "clearing": True,
        "waiting_for": "operator",
    }
    entry = TimelineEntry(alarm.id, now, TimelineType.EVENT, None, detail)
    return Decision(Verdict.HELD, held, (entry,))


def auto_resolve(alarm: Alarm, event: Event, rule: Rule, now: datetime) -> Decision:
    resolved = replace(
        alarm,
        state=AlarmState.RESOLVED,
        resolved_at=now,
        resolved_by=AUTO_RESOLVER,
        outcome=AUTO_OUTCOME,
        last_seen_at=max(alarm.last_seen_at, now),
    )
    entry = TimelineEntry(
        alarm.id,
        now,
        TimelineType.AUTO_RESOLVED,
        None,
        {"reason": rule.name, "event": str(event.type), "msg_id": event.msg_id},
    )
    return Decision(Verdict.CLEARED, resolved, (entry,))
