"""The pipeline's order, written down once: decode → dedup → classify → judge.

:func:`process_batch` turns a batch of raw messages into the complete set of
effects to commit in one transaction. It reads the current alarms through a
:class:`AlarmView` and never changes them: the shell applies the returned
:class:`BatchEffects` to its own state only after the commit succeeded, so a
failed commit leaves nothing half-applied in memory either.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from alarmhub.core.decode import Catalog, DecodeLimits, decode
from alarmhub.core.judge import Decision, auto_resolve, judge
from alarmhub.core.model import (
    Alarm,
    Decoded,
    Device,
    Event,
    RawMessage,
    Rejected,
    TimelineEntry,
    Verdict,
)
from alarmhub.core.rules import RuleSet

AlarmKey = tuple[str, str]  # (device id, alarm kind)


class AlarmView(Protocol):
    def active(self, key: AlarmKey) -> Alarm | None: ...
    def recently_resolved(self, key: AlarmKey) -> Alarm | None: ...


@dataclass(slots=True)
class EventOutcome:
    event: Event
    verdict: Verdict
    alarm_id: str | None = None
    rule: str | None = None


@dataclass(slots=True)
class MessageOutcome:
    raw: RawMessage
    fingerprint: str
    verdict: Verdict  # REJECTED, REDELIVERY, or LOGGED when its events were judged
    device: Device | None = None
    msg_id: str | None = None
    rejected: Rejected | None = None
    events: list[EventOutcome] = field(default_factory=list)


@dataclass(slots=True)
class BatchEffects:
    messages: list[MessageOutcome] = field(default_factory=list)
    alarms: dict[str, Alarm] = field(default_factory=dict)  # final state per alarm id
    new_alarm_ids: list[str] = field(default_factory=list)
    timeline: list[TimelineEntry] = field(default_factory=list)
    device_seen: dict[str, datetime] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Context:
    """What the pipeline needs to know besides the messages: the world as data."""

    registry: Mapping[str, Device]
    catalog: Catalog
    rules: RuleSet
    limits: DecodeLimits


def decode_all(raws: Iterable[RawMessage], ctx: Context) -> list[Decoded | Rejected]:
    return [decode(raw, ctx.registry, ctx.catalog, ctx.limits) for raw in raws]


def fingerprint(raw: RawMessage, result: Decoded | Rejected) -> str:
    """The identity a message is deduplicated by.

    A decoded message is its device's own message id. A rejected one has no
    trustworthy id, so it is its exact bytes on its topic: a QoS 1 redelivery of a
    dead letter after a crash then lands on the same dead letter, not a second one.
    """
    if isinstance(result, Decoded):
        return f"m:{result.device.id}\x00{result.msg_id}"
    digest = hashlib.blake2b(raw.topic.encode() + b"\x00" + raw.payload, digest_size=12)
    return f"r:{digest.hexdigest()}"


def process_batch(
    raws: list[RawMessage],
    decoded: list[Decoded | Rejected],
    fingerprints: list[str],
    already_seen: set[str],
    view: AlarmView,
    ctx: Context,
) -> BatchEffects:
    """Judge a decoded batch in arrival order.

    `already_seen` holds the fingerprints the store has committed before;
    repeats within this same batch are caught here too.
    """
    effects = BatchEffects()
    # Alarms touched by this batch shadow the view, so a second press in the same
    # batch joins the alarm the first one opened.
    overlay: dict[AlarmKey, Alarm] = {}
    seen = set(already_seen)
    for raw, result, fp in zip(raws, decoded, fingerprints, strict=True):
        if isinstance(result, Rejected):
            verdict = Verdict.REDELIVERY if fp in seen else Verdict.REJECTED
            seen.add(fp)
            effects.messages.append(MessageOutcome(raw, fp, verdict, None, result.msg_id, result))
            continue
        outcome = MessageOutcome(raw, fp, Verdict.LOGGED, result.device, result.msg_id)
        effects.messages.append(outcome)
        if fp in seen:
            outcome.verdict = Verdict.REDELIVERY
            continue
        seen.add(fp)
        effects.device_seen[result.device.id] = raw.received_at
        for event in result.events:
            outcome.events.append(_judge_event(event, result.device, view, overlay, ctx, effects))
    return effects


def _judge_event(
    event: Event,
    device: Device,
    view: AlarmView,
    overlay: dict[AlarmKey, Alarm],
    ctx: Context,
    effects: BatchEffects,
) -> EventOutcome:
    rule = ctx.rules.match(event, device)
    if rule is None:
        return EventOutcome(event, Verdict.LOGGED)
    now = event.received_at
    cleared: str | None = None
    for kind in rule.resolves:
        current = _current(view, overlay, (device.id, kind))
        if current is not None and current.is_active:
            decision = auto_resolve(current, event, rule, now)
            _record(decision, effects, overlay)
            cleared = current.id
    if rule.alarm is None:
        verdict = Verdict.CLEARED if cleared else Verdict.LOGGED
        return EventOutcome(event, verdict, cleared, rule.name)
    key = (device.id, rule.alarm)
    current = _current(view, overlay, key)
    active = current if current is not None and current.is_active else None
    recent = current if current is not None and not current.is_active else None
    if recent is None and active is None:
        recent = view.recently_resolved(key)
    decision = judge(event, device, rule, active, recent, now, ctx.rules.version)
    _record(decision, effects, overlay)
    return EventOutcome(
        event, decision.verdict, decision.alarm.id if decision.alarm else None, rule.name
    )


def _current(view: AlarmView, overlay: dict[AlarmKey, Alarm], key: AlarmKey) -> Alarm | None:
    if key in overlay:
        return overlay[key]
    return view.active(key)


def _record(decision: Decision, effects: BatchEffects, overlay: dict[AlarmKey, Alarm]) -> None:
    alarm = decision.alarm
    if alarm is None:
        return
    overlay[(alarm.device_id, alarm.kind)] = alarm
    if decision.verdict is Verdict.NEW:
        effects.new_alarm_ids.append(alarm.id)
    effects.alarms[alarm.id] = alarm
    effects.timeline.extend(decision.timeline)
