"""What a person does to an alarm: acknowledge, escalate, dispatch, on-site, resolve, note.

Pure: the current alarm, the action, who and when in; the changed alarm and its
timeline entries out, or a :class:`Conflict` that says why not. The shell runs
these under the same lock as the ingest batches, so two operators acknowledging
at once are decided one after the other: the second gets a Conflict naming the
first.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum

from alarmhub.core.model import (
    AUTO_OUTCOME,
    Alarm,
    AlarmState,
    ScaipVoice,
    TimelineEntry,
    TimelineType,
)
from alarmhub.core.resolution import MAX_FREE_TEXT, Resolution

MAX_NOTE = 2000
MAX_OUTCOME = 64


class Action(StrEnum):
    ACKNOWLEDGE = "acknowledge"
    ESCALATE = "escalate"
    DISPATCH = "dispatch"
    ON_SITE = "on-site"
    RESOLVE = "resolve"
    NOTE = "notes"


class ConflictCode(StrEnum):
    ALREADY_ACKNOWLEDGED = "already_acknowledged"
    ALREADY_RESOLVED = "already_resolved"
    INVALID = "invalid"


@dataclass(frozen=True, slots=True)
class Conflict:
    code: ConflictCode
    message: str
    holder: str | None = None  # who has the alarm, for "already acknowledged by …"


@dataclass(frozen=True, slots=True)
class Applied:
    alarm: Alarm
    timeline: tuple[TimelineEntry, ...]
    acknowledged_now: bool = False


def apply_action(
    alarm: Alarm,
    action: Action,
    actor: str,
    now: datetime,
    *,
    outcome: str | None = None,
    note: str | None = None,
    resolution: Resolution | None = None,
    voice: ScaipVoice | None = None,
) -> Applied | Conflict:
    """`resolution`: the cause and action taken, for RESOLVE only (already checked
    against the alarm kind's choices: core/resolution.py `choose`). `voice`: the SCAIP
    voice parameters the operator chose on taking the alarm, for ACKNOWLEDGE only
    (already checked against the standard's ranges); recorded on the timeline."""
    invalid = _invalid(action, note, resolution, voice)
    if invalid is not None:
        return invalid
    if action is Action.NOTE:
        if not note:
            return Conflict(ConflictCode.INVALID, "a note needs text")
        entry = TimelineEntry(alarm.id, now, TimelineType.NOTE, actor, {"note": note})
        return Applied(alarm, (entry,))
    if alarm.state is AlarmState.RESOLVED:
        return Conflict(
            ConflictCode.ALREADY_RESOLVED,
            f"the alarm was resolved by {alarm.resolved_by}",
            alarm.resolved_by,
        )
    if action is Action.ACKNOWLEDGE:
        if alarm.state is AlarmState.ACKNOWLEDGED:
            return Conflict(
                ConflictCode.ALREADY_ACKNOWLEDGED,
                f"the alarm is already acknowledged by {alarm.acknowledged_by}",
                alarm.acknowledged_by,
            )
        return _acknowledge(alarm, actor, now, note, voice)
    # Any other handling of an unacknowledged alarm acknowledges it first: the
    # time to acknowledge is then when a person first acted on it.
    entries: list[TimelineEntry] = []
    acknowledged_now = False
    if alarm.state is AlarmState.OPEN:
        acked = _acknowledge(alarm, actor, now, None)
        alarm, entries, acknowledged_now = acked.alarm, list(acked.timeline), True
    if action is Action.RESOLVE:
        return _resolve(alarm, actor, now, outcome, note, resolution, entries, acknowledged_now)
    return _handle(alarm, action, actor, now, note, entries, acknowledged_now)


def _invalid(
    action: Action, note: str | None, resolution: Resolution | None, voice: ScaipVoice | None
) -> Conflict | None:
    if voice is not None and action is not Action.ACKNOWLEDGE:
        return Conflict(ConflictCode.INVALID, "voice parameters are chosen on acknowledging")
    if note is not None and len(note) > MAX_NOTE:
        return Conflict(ConflictCode.INVALID, f"a note is at most {MAX_NOTE} characters")
    if resolution is not None and _too_long(resolution):
        return Conflict(ConflictCode.INVALID, f"a free text is at most {MAX_FREE_TEXT} characters")
    return None


def _too_long(r: Resolution) -> bool:
    return any(t is not None and len(t) > MAX_FREE_TEXT for t in (r.cause_text, r.action_text))


def _handle(
    alarm: Alarm,
    action: Action,
    actor: str,
    now: datetime,
    note: str | None,
    entries: list[TimelineEntry],
    acknowledged_now: bool,
) -> Applied:
    detail: dict[str, object] = {"note": note} if note else {}
    if action is Action.ESCALATE:
        level = alarm.escalation_level + 1
        alarm = replace(alarm, escalation_level=level)
        entries.append(
            TimelineEntry(alarm.id, now, TimelineType.ESCALATED, actor, {**detail, "level": level})
        )
    elif action is Action.DISPATCH:
        alarm = replace(alarm, dispatched_at=alarm.dispatched_at or now)
        entries.append(
            TimelineEntry(alarm.id, now, TimelineType.RESPONDER_DISPATCHED, actor, detail)
        )
    elif action is Action.ON_SITE:
        alarm = replace(alarm, on_site_at=alarm.on_site_at or now)
        entries.append(TimelineEntry(alarm.id, now, TimelineType.RESPONDER_ON_SITE, actor, detail))
    return Applied(alarm, tuple(entries), acknowledged_now)


def _resolve(
    alarm: Alarm,
    actor: str,
    now: datetime,
    outcome: str | None,
    note: str | None,
    resolution: Resolution | None,
    entries: list[TimelineEntry],
    acknowledged_now: bool,
) -> Applied | Conflict:
    if not outcome or len(outcome) > MAX_OUTCOME:
        return Conflict(ConflictCode.INVALID, f"resolve needs an outcome (1-{MAX_OUTCOME} chars)")
    if outcome == AUTO_OUTCOME:
        # alarmhub's own automatic resolution: an operator's answer recorded so could be
        # reopened by the next trigger, and its journal note given up (core/judge.py).
        return Conflict(ConflictCode.INVALID, f"the outcome {AUTO_OUTCOME!r} is alarmhub's own")
    r = resolution or Resolution()
    alarm = replace(
        alarm,
        state=AlarmState.RESOLVED,
        resolved_at=now,
        resolved_by=actor,
        outcome=outcome,
        cause=r.cause.code if r.cause else None,
        cause_text=r.cause_text,
        action_taken=r.action.code if r.action else None,
        action_text=r.action_text,
    )
    detail: dict[str, object] = {"note": note} if note else {}
    detail = {**detail, "outcome": outcome, **r.detail()}
    entries.append(TimelineEntry(alarm.id, now, TimelineType.RESOLVED, actor, detail))
    return Applied(alarm, tuple(entries), acknowledged_now)


def _acknowledge(
    alarm: Alarm, actor: str, now: datetime, note: str | None, voice: ScaipVoice | None = None
) -> Applied:
    acked = replace(
        alarm, state=AlarmState.ACKNOWLEDGED, acknowledged_at=now, acknowledged_by=actor
    )
    detail: dict[str, object] = {"after_s": round((now - alarm.raised_at).total_seconds(), 3)}
    if note:
        detail["note"] = note
    if voice is not None:
        chosen = {"mre": voice.mre, "cre": voice.cre, "tnu": voice.tnu}
        detail["voice"] = {k: v for k, v in chosen.items() if v is not None}
    entry = TimelineEntry(alarm.id, now, TimelineType.ACKNOWLEDGED, actor, detail)
    return Applied(acked, (entry,), acknowledged_now=True)
