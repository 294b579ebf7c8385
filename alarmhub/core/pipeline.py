"""The pipeline's order, written down once: decode → dedup → classify → judge.

:func:`process_batch` turns a batch of raw messages into the complete set of
effects to commit in one transaction. It reads the current alarms through an
:class:`AlarmIndex` and never changes them: the shell applies the returned
:class:`BatchEffects` to its own state only after the commit succeeded, so a
failed commit leaves nothing half-applied in memory either.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime

from alarmhub.core import suppress
from alarmhub.core.decode import Catalog, DecodeLimits, decode
from alarmhub.core.index import AlarmIndex, Working
from alarmhub.core.judge import Decision, auto_resolve, clear, judge, suppression_ended
from alarmhub.core.model import (
    Alarm,
    Decoded,
    Device,
    Event,
    EventType,
    RawMessage,
    Rejected,
    TimelineEntry,
    Verdict,
)
from alarmhub.core.rules import Rule, RuleSet


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
    silences: tuple[suppress.Silence, ...] = ()


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
    index: AlarmIndex,
    ctx: Context,
) -> BatchEffects:
    """Judge a decoded batch in arrival order.

    `already_seen` holds the fingerprints the store has committed before;
    repeats within this same batch are caught here too.
    """
    effects = BatchEffects()
    # Alarms touched by this batch shadow the index, so a second press in the same
    # batch joins the alarm the first one opened.
    working = Working(index)
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
            outcome.events.append(_judge_event(event, result.device, working, ctx, effects))
        _heard(result.events[0], result.device, working, ctx, effects)
    return effects


def process_internal(
    events: list[tuple[Event, Device]], index: AlarmIndex, ctx: Context
) -> BatchEffects:
    """Judge events alarmhub raised itself (a silent device, an overdue dose)."""
    effects = BatchEffects()
    working = Working(index)
    for event, device in events:
        _judge_event(event, device, working, ctx, effects)
    return effects


def _judge_event(
    event: Event, device: Device, working: Working, ctx: Context, effects: BatchEffects
) -> EventOutcome:
    rule = ctx.rules.match(event, device)
    if rule is None:
        return EventOutcome(event, Verdict.LOGGED)
    now = event.received_at
    cleared: str | None = None
    held: str | None = None
    for kind in rule.resolves:
        current = working.current((device.id, kind))
        if current is not None and current.is_active:
            if _clear(current, event, rule, now, working, effects):
                cleared = current.id
            else:
                held = current.id
    if rule.alarm is None:
        verdict = Verdict.CLEARED if cleared else Verdict.HELD if held else Verdict.LOGGED
        return EventOutcome(event, verdict, cleared or held, rule.name)
    key = (device.id, rule.alarm)
    current = working.current(key)
    active = current if current is not None and current.is_active else None
    recent = current if current is not None and not current.is_active else None
    if recent is None and active is None:
        recent = working.recently_resolved(key)
    decision = judge(
        event,
        device,
        rule,
        active,
        recent,
        now,
        ctx.rules.version,
        merge_max_age=ctx.rules.merge_max_age,
        cause_ended=active is not None
        and suppression_ended(active, ctx.silences, working.get, now),
    )
    # A reopened alarm is asked again too: its old suppression may be long over,
    # or a new cause (a silence since) may hold.
    if decision.verdict in _FRESH and decision.alarm is not None:
        decision = _new_alarm(decision, device, rule, working, ctx, effects, now)
    _record(decision, effects, working)
    return EventOutcome(
        event, decision.verdict, decision.alarm.id if decision.alarm else None, rule.name
    )


def _new_alarm(
    decision: Decision,
    device: Device,
    rule: Rule,
    working: Working,
    ctx: Context,
    effects: BatchEffects,
    now: datetime,
) -> Decision:
    """Give a new (or reopened) alarm its resident and policy, then ask whether it is
    suppressed."""
    assert decision.alarm is not None
    policy = ctx.rules.policy_for(rule, decision.alarm.priority, device.municipality)
    alarm = replace(
        decision.alarm,
        resident=device.resident,
        policy=policy.name if policy is not None else None,
    )
    storm = ctx.rules.storm
    outage_kinds = (*storm.kinds, storm.incident_kind) if storm is not None else ()
    verdict = suppress.decide(
        alarm,
        device,
        ctx.silences,
        working.for_resident(device.municipality, device.resident) if device.resident else (),
        # Only a technical alarm can be part of an outage: person alarms never look.
        working.for_municipality(device.municipality, outage_kinds)
        if storm is not None and alarm.kind in storm.kinds
        else (),
        storm,
        now,
    )
    if verdict.tag is None:
        return replace(decision, alarm=alarm)
    alarm = replace(alarm, suppressed_by=verdict.tag)
    if verdict.incident is not None:
        is_new = working.get(verdict.incident.id) is None
        working.put(verdict.incident)
        effects.alarms[verdict.incident.id] = verdict.incident
        if is_new:
            effects.new_alarm_ids.append(verdict.incident.id)
    for attached in verdict.attach:
        working.put(attached)
        effects.alarms[attached.id] = attached
    return Decision(decision.verdict, alarm, decision.timeline + verdict.timeline)


def _heard(
    event: Event, device: Device, working: Working, ctx: Context, effects: BatchEffects
) -> None:
    """Any message from a device proves it works again: resolve its "offline" alarm."""
    for kind in ctx.rules.heard_resolves:
        current = working.current((device.id, kind))
        if current is not None and current.is_active:
            _clear(current, event, _HEARD_AGAIN, event.received_at, working, effects)


_HEARD_AGAIN = Rule("device heard again", EventType.HEARTBEAT)
_ALL_RECOVERED = Rule("every attached device recovered", EventType.HEARTBEAT)


_FRESH = frozenset({Verdict.NEW, Verdict.REOPENED})


def _clear(
    alarm: Alarm, event: Event, rule: Rule, now: datetime, working: Working, effects: BatchEffects
) -> bool:
    """A clearing device event: resolve the alarm (True) or, for a person alarm, record
    the event on it and leave it to an operator (False; judge.clear says which)."""
    decision = clear(alarm, event, rule, now)
    if decision.verdict is Verdict.CLEARED:
        _resolve(alarm, event, rule, now, working, effects)
        return True
    _record(decision, effects, working)
    return False


def _resolve(
    alarm: Alarm, event: Event, rule: Rule, now: datetime, working: Working, effects: BatchEffects
) -> None:
    _record(auto_resolve(alarm, event, rule, now), effects, working)
    tag = alarm.suppressed_by
    if tag is None or not tag.startswith("incident:"):
        return
    # The last attached alarm of an incident resolved: the outage is over.
    incident = working.get(tag.removeprefix("incident:"))
    if incident is not None and incident.is_active and not working.attached(tag):
        _record(auto_resolve(incident, event, _ALL_RECOVERED, now), effects, working)


def _record(decision: Decision, effects: BatchEffects, working: Working) -> None:
    alarm = decision.alarm
    if alarm is None:
        return
    working.put(alarm)
    if decision.verdict is Verdict.NEW:
        effects.new_alarm_ids.append(alarm.id)
    effects.alarms[alarm.id] = alarm
    effects.timeline.extend(decision.timeline)
