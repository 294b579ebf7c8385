"""What one event means for the alarms of its device: the single decision at the heart.

``judge`` is pure: it receives the event, the rule that matched it, the device's
active alarm of the same kind (if any), a recently auto-resolved one (for flap
detection) and `now`, and returns a :class:`Decision` that names its reason.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from datetime import datetime

from alarmhub.core.model import (
    Alarm,
    AlarmState,
    Device,
    Event,
    Priority,
    TimelineEntry,
    TimelineType,
    Verdict,
)
from alarmhub.core.rules import Rule


@dataclass(frozen=True, slots=True)
class Decision:
    verdict: Verdict
    alarm: Alarm | None = None  # the alarm as it is after this event
    timeline: tuple[TimelineEntry, ...] = ()


def alarm_id(device_id: str, msg_id: str, kind: str) -> str:
    """Derived from the triggering message, so a redelivery can never mint a second id."""
    digest = hashlib.blake2b(f"{device_id}\x00{msg_id}\x00{kind}".encode(), digest_size=8)
    return digest.hexdigest()


def judge(
    event: Event,
    device: Device,
    rule: Rule,
    active: Alarm | None,
    recently_resolved: Alarm | None,
    now: datetime,
    rules_version: str = "",
) -> Decision:
    if rule.alarm is None:
        return Decision(Verdict.LOGGED)
    detail = {"event": str(event.type), "msg_id": event.msg_id, "rule": rule.name}
    if active is not None:
        # Merge, keep the first start: response time is measured from raised_at.
        merged = replace(
            active,
            repeat_count=active.repeat_count + 1,
            last_seen_at=max(active.last_seen_at, now),
        )
        entry = TimelineEntry(active.id, now, TimelineType.REPEATED, None, detail)
        return Decision(Verdict.REPEAT, merged, (entry,))
    if (
        recently_resolved is not None
        and recently_resolved.outcome == "auto"
        and recently_resolved.resolved_at is not None
        and now - recently_resolved.resolved_at <= rule.flap_window
    ):
        # A door that closes and opens again within the flap window is one alarm,
        # not a queue row per swing: reopen it, keeping its original raised_at.
        reopened = replace(
            recently_resolved,
            state=AlarmState.OPEN,
            resolved_at=None,
            resolved_by=None,
            outcome=None,
            repeat_count=recently_resolved.repeat_count + 1,
            last_seen_at=now,
        )
        entry = TimelineEntry(reopened.id, now, TimelineType.REOPENED, None, detail)
        return Decision(Verdict.REOPENED, reopened, (entry,))
    priority = rule.priority if rule.priority is not None else Priority.NORMAL
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
    )
    entry = TimelineEntry(
        alarm.id, now, TimelineType.RAISED, None, {**detail, "priority": int(priority)}
    )
    return Decision(Verdict.NEW, alarm, (entry,))


def auto_resolve(alarm: Alarm, event: Event, rule: Rule, now: datetime) -> Decision:
    resolved = replace(
        alarm,
        state=AlarmState.RESOLVED,
        resolved_at=now,
        resolved_by="alarmhub",
        outcome="auto",
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
