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
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from alarmhub.core import suppress
from alarmhub.core.decode import Catalog, DecodeLimits, decode
from alarmhub.core.dedup import CONTENT_ID_PREFIX, Identity, Prior, identify
from alarmhub.core.device_time import claimed_time
from alarmhub.core.index import AlarmIndex, Working, alarm_key
from alarmhub.core.judge import (
    Decision,
    auto_resolve,
    clear,
    judge,
    moved_on,
    new_priority,
    suppression_ended,
)
from alarmhub.core.model import (
    Alarm,
    Decoded,
    Device,
    Dropped,
    Event,
    EventType,
    Priority,
    RawMessage,
    Rejected,
    TimelineEntry,
    Verdict,
    amended,
)
from alarmhub.core.occurrence import for_occurrence, keyed_apart, scheduled_at
from alarmhub.core.rules import Rule, RuleSet
from alarmhub.core.strays import stray_events


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
    # Fields the decoder left out (issue 12 item 10): a "partial" message, recorded
    # on its inbox row and counted; the rest of it was judged.
    dropped: tuple[Dropped, ...] = ()
    # What dedup decided (core/dedup.py): stored on the inbox row when not NEW, so a
    # reused id or an identical press after a resolved alarm stays visible.
    identity: Identity = Identity.NEW
    # The municipality a dead letter's stray alarm went to (core/strays.py): its
    # inbox row is that municipality's, so its operators see the message.
    municipality: str | None = None
    # A redelivery's: the alarms its stored copy raised or joined (core/dedup.py Prior),
    # so a SCAIP resend is answered about its alarm after a HOLD or a restart too.
    earlier_alarm_ids: tuple[str, ...] = ()


@dataclass(slots=True)
class BatchEffects:
    messages: list[MessageOutcome] = field(default_factory=list)
    alarms: dict[str, Alarm] = field(default_factory=dict)  # final state per alarm id
    new_alarm_ids: list[str] = field(default_factory=list)
    timeline: list[TimelineEntry] = field(default_factory=list)
    device_seen: dict[str, datetime] = field(default_factory=dict)
    # The registry entries the batch was decided with, by device id: its municipality
    # and resident decided where its alarms and messages went. The commit refuses a
    # batch whose device another process moved meanwhile (DeviceMovedError), and the
    # shell decides it again on the device as stored.
    decided_with: dict[str, Device] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Context:
    """What the pipeline needs to know besides the messages: the world as data."""

    registry: Mapping[str, Device]
    catalog: Catalog
    rules: RuleSet
    limits: DecodeLimits
    silences: tuple[suppress.Silence, ...] = ()
    # How long a device's own message id stays the same message (core/dedup.py);
    # ids made from content use `limits.content_dedup_window`.
    message_id_window: timedelta = timedelta(hours=24)
    # Where a press from an unregistered device is shown (core/strays.py); None: nowhere.
    unknown_device_municipality: str | None = None
    # The inbox's retention: a retained message older is a stale copy (core/dedup.py).
    retained_max_age: timedelta | None = None


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
    if raw.cut is not None:  # taken of the whole payload before ingest cut it
        return raw.cut.fingerprint
    return rejected_fingerprint(raw.topic, raw.payload)


def rejected_fingerprint(topic: str, payload: bytes) -> str:
    """A dead letter's identity: its exact bytes on its topic."""
    # Fed in parts, not concatenated: `topic + payload` copied every rejected payload
    # whole (issue 13 item 1: up to max_packet_size). Same bytes, same digest.
    digest = hashlib.blake2b(topic.encode(), digest_size=12)
    digest.update(b"\x00")
    digest.update(payload)
    return f"r:{digest.hexdigest()}"


def process_batch(
    raws: list[RawMessage],
    decoded: list[Decoded | Rejected],
    fingerprints: list[str],
    already_seen: Mapping[str, Prior] | AbstractSet[str],
    index: AlarmIndex,
    ctx: Context,
) -> BatchEffects:
    """Judge a decoded batch in arrival order.

    `already_seen` holds, per fingerprint, the latest message the store has
    committed under it (:class:`Prior`): dedup compares age, content and the
    alarms it raised (core/dedup.py). A bare set of fingerprints means "stored,
    nothing more known": those are redeliveries. Repeats within this same batch
    are caught here too.
    """
    effects = BatchEffects()
    # Alarms touched by this batch shadow the index, so a second press in the same
    # batch joins the alarm the first one opened.
    working = Working(index)
    stored: Mapping[str, Prior | None] = (
        already_seen if isinstance(already_seen, Mapping) else dict.fromkeys(already_seen)
    )
    # This batch's own messages by fingerprint, the latest copy's: a later copy is
    # compared with it. Its Prior is built only then, since most never come again.
    earlier: dict[str, tuple[RawMessage, MessageOutcome]] = {}
    for raw, result, fp in zip(raws, decoded, fingerprints, strict=True):
        before = earlier.get(fp)
        prior = _prior(*before) if before is not None else stored.get(fp, _UNSEEN)
        identity = _identify(raw, result, prior, working, ctx)
        if isinstance(result, Rejected):
            verdict = Verdict.REJECTED if identity.is_new else Verdict.REDELIVERY
            outcome = MessageOutcome(raw, fp, verdict, None, result.msg_id, result)
            outcome.identity = identity
            effects.messages.append(outcome)
            if identity.is_new:
                _strays(raw, result, outcome, identity, working, ctx, effects)
                earlier[fp] = (raw, outcome)
            continue
        outcome = MessageOutcome(raw, fp, Verdict.LOGGED, result.device, result.msg_id)
        outcome.dropped = result.dropped
        outcome.identity = identity
        effects.messages.append(outcome)
        if not identity.is_new:
            outcome.verdict = Verdict.REDELIVERY
            outcome.earlier_alarm_ids = prior.alarm_ids if prior is not None else ()
            continue
        effects.device_seen[result.device.id] = raw.received_at
        effects.decided_with[result.device.id] = result.device
        # A message id seen before but new again (reused, past the window) raises
        # alarms of its own: keyed apart from the earlier message's (occurrence.rekeyed).
        again = None if identity is Identity.NEW else raw.received_at.isoformat()
        for event in result.events:
            outcome.events.append(
                _judge_event(event, result.device, working, ctx, effects, occurrence=again)
            )
        _heard(result.events[0], result.device, working, ctx, effects)
        earlier[fp] = (raw, outcome)
    return effects


# Marks a fingerprint nothing is stored under (None marks one known only by name).
_UNSEEN = Prior(datetime.min.replace(tzinfo=UTC), b"")


def _identify(
    raw: RawMessage,
    result: Decoded | Rejected,
    prior: Prior | None,
    working: Working,
    ctx: Context,
) -> Identity:
    """The dedup step: is this message one already stored (core/dedup.py)?"""
    if prior is _UNSEEN and not raw.retained:  # most messages: nothing stored, nothing to date
        return Identity.NEW
    if prior is None:
        return Identity.REDELIVERY
    content_id = isinstance(result, Decoded) and result.msg_id.startswith(CONTENT_ID_PREFIX)
    window = ctx.limits.content_dedup_window if content_id else ctx.message_id_window

    def alarm_active(alarm_id: str) -> bool:
        alarm = working.get(alarm_id)
        return alarm is not None and alarm.is_active

    return identify(
        None if prior is _UNSEEN else prior,
        raw.payload,
        raw.received_at,
        window,
        # A dead letter has no trustworthy id either, nor a restarting SCAIP ref.
        by_content=content_id or not isinstance(result, Decoded) or result.ids_restart,
        alarm_active=alarm_active,
        digest=raw.cut.sha256 if raw.cut is not None else None,
        retained=raw.retained,
        device_time=claimed_time(result.events) if isinstance(result, Decoded) else None,
        retained_max_age=ctx.retained_max_age,
        resending=raw.resending,
    )


def _prior(raw: RawMessage, outcome: MessageOutcome) -> Prior:
    """What a later copy in the same batch is compared with."""
    alarm_ids = tuple(e.alarm_id for e in outcome.events if e.alarm_id is not None)
    return Prior(raw.received_at, raw.payload, alarm_ids, raw.cut.sha256 if raw.cut else None)


def process_internal(
    events: list[tuple[Event, Device]], index: AlarmIndex, ctx: Context
) -> BatchEffects:
    """Judge events alarmhub raised itself (a silent device, an overdue dose)."""
    effects = BatchEffects()
    working = Working(index)
    for event, device in events:
        effects.decided_with[device.id] = device
        _judge_event(event, device, working, ctx, effects)
    return effects


def _judge_event(
    event: Event,
    device: Device,
    working: Working,
    ctx: Context,
    effects: BatchEffects,
    *,
    occurrence: str | None = None,
    rule: Rule | None = None,
) -> EventOutcome:
    """`rule`: the rule to judge by instead of the rule set's match (strays)."""
    rule = rule or ctx.rules.match(event, device)
    if rule is None:
        return EventOutcome(event, Verdict.LOGGED)
    now = event.received_at
    scheduled = scheduled_at(event)
    verdict, alarm_id = _clear_all(event, device, rule, scheduled, working, effects)
    if rule.alarm is None:
        return EventOutcome(event, verdict, alarm_id, rule.name)
    key = alarm_key(device.id, rule.alarm, scheduled)
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
        policy=_policy_name(ctx, rule, new_priority(rule), device),
    )
    if decision.verdict is Verdict.NEW:
        decision = keyed_apart(decision, event, working.taken, occurrence)
        if scheduled is not None:
            decision = for_occurrence(decision, scheduled)
    # A reopened alarm is asked again too: its old suppression may be long over,
    # or a new cause (a silence since) may hold.
    if decision.verdict in _FRESH and decision.alarm is not None:
        decision = _new_alarm(decision, device, rule, working, ctx, effects, now)
    _set_aside(active, decision, effects, working)
    _record(decision, effects, working)
    alarm_id = decision.alarm.id if decision.alarm else None
    return EventOutcome(event, decision.verdict, alarm_id, rule.name)


def _strays(
    raw: RawMessage,
    rejected: Rejected,
    outcome: MessageOutcome,
    identity: Identity,
    working: Working,
    ctx: Context,
    effects: BatchEffects,
) -> None:
    """A press from an unknown or decommissioned device: a dead letter that an
    operator sees too, as an `unregistered_device` alarm (core/strays.py)."""
    # A registered device's dead letter and stray alarm go to where the registry says.
    if (registered := ctx.registry.get(rejected.device_id or "")) is not None:
        effects.decided_with[registered.id] = registered
    found = stray_events(
        raw,
        rejected,
        ctx.registry,
        ctx.catalog,
        ctx.limits,
        ctx.rules,
        ctx.unknown_device_municipality,
    )
    again = None if identity is Identity.NEW else raw.received_at.isoformat()
    for event, device, rule in found:
        judged = _judge_event(event, device, working, ctx, effects, occurrence=again, rule=rule)
        outcome.events.append(judged)
        if judged.alarm_id is not None:
            outcome.municipality = device.municipality


def _new_alarm(
    decision: Decision,
    device: Device,
    rule: Rule,
    working: Working,
    ctx: Context,
    effects: BatchEffects,
    now: datetime,
) -> Decision:
    """Give a reopened alarm its resident and policy (judge built a new one with
    them), then ask whether it is suppressed."""
    alarm = decision.alarm
    assert alarm is not None
    if decision.verdict is not Verdict.NEW:
        policy = _policy_name(ctx, rule, alarm.priority, device)
        alarm = amended(alarm, resident=device.resident, policy=policy)
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
        same = alarm is decision.alarm
        return decision if same else Decision(decision.verdict, alarm, decision.timeline)
    alarm = amended(alarm, suppressed_by=verdict.tag)
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


def _policy_name(ctx: Context, rule: Rule, priority: Priority, device: Device) -> str | None:
    """The escalation policy an alarm of `priority` raised by `rule` on `device` runs."""
    policy = ctx.rules.policy_for(rule, priority, device.municipality)
    return policy.name if policy is not None else None


def _heard(
    event: Event, device: Device, working: Working, ctx: Context, effects: BatchEffects
) -> None:
    """Any message from a device proves it works again: resolve its "offline" alarm."""
    for kind in ctx.rules.heard_resolves:
        current = working.current((device.id, kind))
        if current is not None and current.is_active:
            _clear(current, event, _HEARD_AGAIN, working, effects)


_HEARD_AGAIN = Rule("device heard again", EventType.HEARTBEAT)
_ALL_RECOVERED = Rule("every attached device recovered", EventType.HEARTBEAT)


_FRESH = frozenset({Verdict.NEW, Verdict.REOPENED})


# The verdict of a clearing event that raises nothing itself: the strongest it had.
_CLEARING_ORDER = (Verdict.CLEARED, Verdict.HELD, Verdict.STALE)


def _clear_all(
    event: Event,
    device: Device,
    rule: Rule,
    scheduled: datetime | None,
    working: Working,
    effects: BatchEffects,
) -> tuple[Verdict, str | None]:
    """Apply the event to each active alarm its rule `resolves`: (verdict, alarm id)."""
    found: dict[Verdict, str] = {}
    for kind in rule.resolves:
        current = working.current(alarm_key(device.id, kind, scheduled))
        if current is not None and current.is_active and moved_on(current, device) is None:
            found[_clear(current, event, rule, working, effects)] = current.id
    verdict = next((v for v in _CLEARING_ORDER if v in found), Verdict.LOGGED)
    return verdict, found.get(verdict)


def _clear(
    alarm: Alarm, event: Event, rule: Rule, working: Working, effects: BatchEffects
) -> Verdict:
    """A clearing device event: resolve the alarm (CLEARED); for a person alarm, record
    the event on it and leave it to an operator (HELD); or, older than the alarm's
    trigger, leave it alone (STALE). judge.clear says which. A device heard again is
    news by its receipt, whatever its backlog's times: its time is not compared."""
    now = event.received_at
    decision = clear(alarm, event, rule, now, ordered=rule is not _HEARD_AGAIN)
    if decision.verdict is Verdict.CLEARED:
        _resolve(alarm, event, rule, now, working, effects)
    else:
        _record(decision, effects, working)
    return decision.verdict


def _resolve(
    alarm: Alarm, event: Event, rule: Rule, now: datetime, working: Working, effects: BatchEffects
) -> None:
    decision = auto_resolve(alarm, event, rule, now)
    _record(decision, effects, working)
    _release_covered(decision.alarm, now, working, effects)
    tag = alarm.suppressed_by
    if tag is None or not tag.startswith("incident:"):
        return
    # The last attached alarm of an incident resolved: the outage is over.
    incident = working.get(tag.removeprefix("incident:"))
    if incident is not None and incident.is_active and not working.attached(tag):
        _record(auto_resolve(incident, event, _ALL_RECOVERED, now), effects, working)


def _release_covered(
    alarm: Alarm | None, now: datetime, working: Working, effects: BatchEffects
) -> None:
    """A resolved alarm's suppression ends with it: what it inhibited comes back."""
    if alarm is None:
        return
    for released in suppress.on_resolved(alarm, working.attached, now):
        working.put(released.alarm)
        effects.alarms[released.alarm.id] = released.alarm
        effects.timeline.append(released.entry)


def _set_aside(
    active: Alarm | None, decision: Decision, effects: BatchEffects, working: Working
) -> None:
    """An active alarm a new one was raised beside (it could not join it) is set aside,
    in the same write, so the database holds at most one active alarm per key not set
    aside (issue 15); it stays in the queue."""
    new = decision.alarm
    if active is None or new is None or new.id == active.id:
        return
    _record(Decision(Verdict.LOGGED, amended(active, superseded_by=new.id)), effects, working)


def _record(decision: Decision, effects: BatchEffects, working: Working) -> None:
    alarm = decision.alarm
    if alarm is None:
        return
    working.put(alarm)
    if decision.verdict is Verdict.NEW:
        effects.new_alarm_ids.append(alarm.id)
    effects.alarms[alarm.id] = alarm
    effects.timeline.extend(decision.timeline)
