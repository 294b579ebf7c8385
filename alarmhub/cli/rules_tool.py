"""`alarmhub rules explain` and `alarmhub rules test`: test the rules like code.

Both run the real pipeline and escalation decisions (the pure core) on a
virtual clock, with no broker, no database and no side effects, in the spirit
of `promtool test rules`. A rules test file scripts events and expectations:

    [[devices]]
    id = "pend-1"
    kind = "safety_alarm"
    municipality = "0301"

    [[cases]]
    name = "a press is a P1 alarm that escalates after 60 s"
    start = "2026-11-22T02:00:00+01:00"
    steps = [
      { at = 0, device = "pend-1", event = "button.pressed" },
      { at = 1, expect = [{ device = "pend-1", kind = "button", priority = 1, level = 1 }] },
      { at = 61, expect = [{ device = "pend-1", kind = "button", level = 2 }] },
      { at = 70, act = "acknowledge", device = "pend-1", kind = "button" },
    ]

`at` is seconds from `start`. `expect` lists every active alarm (open or
acknowledged), each with only the fields it wants checked; `expect = []`
means none. A case involves only the devices it names (in its steps, its
expectations, or a `devices = [...]` list).
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from alarmhub.core.actions import Action, Conflict, apply_action
from alarmhub.core.decode import Catalog, DecodeLimits
from alarmhub.core.device_settings import parse_settings
from alarmhub.core.doses import dose_event, dose_times
from alarmhub.core.escalation import (
    DeadlineKey,
    apply_decision,
    exhaustion,
    next_for_alarm,
    on_deadline,
    plan,
)
from alarmhub.core.index import AlarmIndex
from alarmhub.core.model import (
    Alarm,
    Device,
    DeviceKind,
    Event,
    EventType,
    Priority,
    RawMessage,
    Verdict,
)
from alarmhub.core.pipeline import (
    BatchEffects,
    Context,
    decode_all,
    fingerprint,
    process_batch,
    process_internal,
)
from alarmhub.core.rules import Rule, RuleSet, current_fix, geofence_of, zone_of
from alarmhub.core.supervision import DoseSchedule, DoseWatch, Heard, OverdueKind, Supervisor
from alarmhub.core.suppress import Silence, on_resolved
from alarmhub.core.suppress_explain import suppressions


class CasesError(Exception):
    """A rules test file that cannot be run; the message names the place."""


# --- explain -------------------------------------------------------------------------


def explain(
    rules: RuleSet,
    device: Device,
    event_type: EventType,
    at: datetime,
    fields: dict[str, Any],
    *,
    silences: Iterable[Silence] = (),
    alarms: Iterable[Alarm] = (),
) -> dict[str, Any]:
    """What would happen to this event from this device at this time, without doing it.

    `silences` and `alarms` (the active ones) are the store's: with them,
    `suppressions` names every silence, inhibiting alarm and outage incident that
    could hide the alarm, whether it would at `at`, and when it would end.
    """
    event = Event(device.id, "explain", event_type, at, at, fields)
    rule = rules.match(event, device)
    out: dict[str, Any] = {
        "device": device.id,
        "municipality": device.municipality,
        "event": event_type.value,
        "at": at.isoformat(),
        "local_time": at.astimezone(rules.timezone).strftime("%Y-%m-%d %H:%M %Z"),
        "rules_version": rules.version,
        "rule": rule.name if rule else None,
    }
    if event_type is EventType.LOCATION and geofence_of(device) is not None:
        zone = zone_of(event, device)
        out["zone"] = zone.value if zone else None
    if rule is None:
        out["outcome"] = "stored and logged; no alarm"
        return out
    if rule.resolves:
        out["resolves"] = list(rule.resolves)
        # Issue 12 item 3: a device event closes a person alarm only on the rule's say-so.
        out["auto_resolve_person_alarm"] = rule.auto_resolve_person_alarm
    if rule.alarm is None:
        out["outcome"] = _resolves_outcome(rule) if rule.resolves else "logged"
        return out
    priority = rule.priority or Priority.NORMAL
    out["alarm"] = {"kind": rule.alarm, "priority": int(priority)}
    target = rules.sla_ack.get(priority)
    if target is not None:
        out["sla_ack_s"] = target.total_seconds()
    policy = rules.policy_for(rule, priority, device.municipality)
    if policy is not None:
        out["policy"] = policy.name
        out["escalation"] = [
            {
                "round": d.round,
                "level": d.level,
                "target": d.target,
                "at": d.due_at.astimezone(rules.timezone).strftime("%H:%M:%S"),
                "after_s": (d.due_at - at).total_seconds(),
            }
            for d in plan(policy, at)
        ]
        if policy.ack_timeout is not None:
            out["ack_timeout_s"] = policy.ack_timeout.total_seconds()
    out["would_be_suppressed_by"] = _suppressors(rules, device)
    out["suppressions"] = suppressions(
        rule.alarm, priority, device, at, silences, alarms, rules.storm
    )
    out["outcome"] = f"raises a priority {int(priority)} {rule.alarm} alarm"
    return out


def _resolves_outcome(rule: Rule) -> str:
    if rule.auto_resolve_person_alarm:
        return (
            "resolves open alarms of the listed kinds, person alarms (priority 1-2) too: "
            "auto_resolve_person_alarm is set"
        )
    return (
        "resolves open technical and follow-up alarms (priority 3-4) of the listed kinds; "
        "a person alarm (priority 1-2) stays open with this event shown, for an operator"
    )


def _suppressors(rules: RuleSet, device: Device) -> list[str]:
    out = ["a silence of this device, its resident or its municipality (`suppressions`)"]
    if device.resident:
        out.append(f"a more urgent open alarm of resident {device.resident} (inhibition)")
    storm = rules.storm
    if storm is not None:
        out.append(
            f"an outage incident if {storm.threshold}+ of {sorted(storm.kinds)} alarms in "
            f"{device.municipality} within {storm.window.total_seconds():g} s"
        )
    return out


# --- test ----------------------------------------------------------------------------


_OVERDUE_EVENTS = {
    OverdueKind.DEVICE_SILENT: EventType.DEVICE_SILENT,
    OverdueKind.DOSE_MISSED: EventType.DOSE_OVERDUE,
    OverdueKind.NO_USABLE_FIX: EventType.NO_USABLE_FIX,
}


@dataclass
class Replay:
    """The daemon in miniature on a virtual clock: pipeline, supervision, escalation."""

    rules: RuleSet
    catalog: Catalog
    devices: dict[str, Device]
    now: datetime
    index: AlarmIndex = field(default_factory=AlarmIndex)
    fired: dict[str, set[DeadlineKey]] = field(default_factory=dict)
    heartbeats: Supervisor = field(default_factory=Supervisor)
    doses: DoseWatch = field(default_factory=DoseWatch)
    fixes: Supervisor = field(default_factory=Supervisor)  # geofenced trackers (item 18)
    seq: int = 0
    matched: set[str] = field(default_factory=set)  # rule names that decided an event

    def __post_init__(self) -> None:
        for d in self.devices.values():
            interval = self.rules.heartbeat_interval(d)  # its own, or its kind's default
            if interval is not None:
                self.heartbeats.watch(d.id, interval, self.rules.offline_after_misses, self.now)
            no_fix = self.rules.no_fix_after
            if no_fix and d.kind is DeviceKind.GPS_TRACKER and geofence_of(d) is not None:
                self.fixes.watch(d.id, no_fix, 1, self.now)
            if d.settings.dose_times:
                times = dose_times(d.settings.dose_times)
                window = timedelta(minutes=d.settings.dose_window_min)
                self.doses.track(d.id, DoseSchedule(times, self.rules.timezone, window), self.now)

    def ctx(self) -> Context:
        return Context(self.devices, self.catalog, self.rules, DecodeLimits())

    def advance(self, to: datetime) -> None:
        """Let time pass: supervision and escalation deadlines fire in order, each once."""
        while True:
            nxt = self._next_due(to)
            if nxt is None:
                break
            self.now = nxt
            self._tick()
        self.now = to
        self._tick()

    def _next_due(self, limit: datetime) -> datetime | None:
        candidates = []
        for alarm in self.index.by_id.values():
            deadline = self._deadline(alarm)
            if deadline is not None and self.now < deadline.due_at <= limit:
                candidates.append(deadline.due_at)
        timers = (self.heartbeats.next_deadline(), self.fixes.next_deadline())
        candidates.extend(t for t in timers if t is not None and self.now < t <= limit)
        return min(candidates, default=None)

    def _deadline(self, alarm: Alarm) -> Any:
        policy = self.rules.policy_named(alarm.policy, alarm.municipality)
        if policy is None:
            return None
        return next_for_alarm(alarm, policy, self.fired.setdefault(alarm.id, set()))

    def _tick(self) -> None:
        overdue = self.heartbeats.due(self.now) + self.doses.due(self.now)
        overdue += [replace(o, kind=OverdueKind.NO_USABLE_FIX) for o in self.fixes.due(self.now)]
        events = []
        for item in overdue:
            etype = _OVERDUE_EVENTS[item.kind]
            device = self.devices[item.device_id]
            if etype is EventType.DOSE_OVERDUE:  # one alarm per dose, as the daemon
                events.append((dose_event(device.id, etype, item.since, self.now), device))
                continue
            msg_id = f"{etype.value}:{item.since.isoformat()}"
            events.append((Event(device.id, msg_id, etype, self.now, self.now), device))
        if events:
            self._note_rules(events)
            self._apply(process_internal(events, self.index, self.ctx()))
        for alarm in list(self.index.by_id.values()):
            self._escalate(alarm)

    def _escalate(self, alarm: Alarm) -> None:
        """Decide every deadline of this alarm that is due by now, in order."""
        current = alarm
        while True:
            deadline = self._deadline(current)
            if deadline is None or deadline.due_at > self.now:
                return
            fired = self.fired[current.id]
            acked = current.acknowledged_at is not None and current.state.value != "open"
            decision = on_deadline(current.state, acked, deadline, self.now, fired)
            fired.add(deadline.key)
            changed, _ = apply_decision(current, decision, self.now, self.rules.version)
            # As the escalator does: the policy's last step with the alarm still open.
            policy = self.rules.policy_named(current.policy, current.municipality)
            if policy is not None:
                ran_out = exhaustion(changed or current, policy, fired, self.now)
                changed = ran_out[0] if ran_out is not None else changed
            if changed is not None:
                self.index.put(changed)
                current = changed

    def send(self, device_id: str, event: str, fields: dict[str, Any]) -> None:
        self.seq += 1
        topic = f"alarmhub/v1/{device_id}/events"
        payload = {"id": f"t{self.seq}", "ts": self.now.isoformat(), "type": event, **fields}
        raw = RawMessage(topic, orjson.dumps(payload), self.now)
        decoded = decode_all([raw], self.ctx())
        effects = process_batch(
            [raw], decoded, [fingerprint(raw, decoded[0])], set(), self.index, self.ctx()
        )
        rejected = effects.messages[0].rejected
        if rejected is not None:
            raise CasesError(f"the event was rejected: {rejected.reason}: {rejected.detail}")
        self.matched.update(o.rule for o in effects.messages[0].events if o.rule)
        for device in effects.device_seen:
            self.heartbeats.heard(device, self.now)
        for outcome in effects.messages[0].events:
            if outcome.event.type is EventType.DOSE_TAKEN:
                self._dose_taken(device_id)
            if outcome.event.type is EventType.LOCATION:
                self._fix(outcome.event)
            if outcome.verdict is Verdict.REJECTED:
                raise CasesError("rejected")
        self._apply(effects)
        self._tick()

    def _dose_taken(self, device_id: str) -> None:
        """As the daemon's supervision: raise doses found missed; a settling late take closes."""
        result = self.doses.taken(device_id, self.now)
        device = self.devices[device_id]
        events = [
            (dose_event(device_id, EventType.DOSE_OVERDUE, m.since, self.now), device)
            for m in result.missed
        ]
        if result.settles_missed and result.scheduled_at is not None:
            late = dose_event(device_id, EventType.DOSE_LATE, result.scheduled_at, self.now)
            events.append((late, device))
        if events:
            self._note_rules(events)
            self._apply(process_internal(events, self.index, self.ctx()))

    def _fix(self, event: Event) -> None:
        """As the daemon's supervision: a usable fix after `location.no_fix` resolves it."""
        device = self.devices[event.device_id]
        limit = self.rules.no_fix_after
        usable = limit is not None and current_fix(event, device, limit)
        if usable and self.fixes.heard(device.id, self.now) is Heard.RECOVERED:
            msg_id = f"fix:{self.now.isoformat()}"
            events = [(Event(device.id, msg_id, EventType.USABLE_FIX, self.now, self.now), device)]
            self._note_rules(events)
            self._apply(process_internal(events, self.index, self.ctx()))

    def _note_rules(self, events: list[tuple[Event, Device]]) -> None:
        for event, device in events:
            rule = self.rules.match(event, device)
            if rule is not None:
                self.matched.add(rule.name)

    def act(self, device_id: str, kind: str, action: Action, outcome: str | None) -> None:
        # The newest active one: a dose_missed alarm is keyed per dose (item 17).
        found = [a for a in self.index.by_id.values() if (a.device_id, a.kind) == (device_id, kind)]
        alarm = max(found, key=lambda a: a.raised_at, default=None)
        if alarm is None:
            raise CasesError(f"no active {kind} alarm of {device_id} to {action.value}")
        result = apply_action(alarm, action, "rules-test", self.now, outcome=outcome)
        if isinstance(result, Conflict):
            raise CasesError(f"{action.value} refused: {result.message}")
        self.index.put(result.alarm)
        # As the daemon does: resolving an inhibitor or an incident releases what it hid.
        for released in on_resolved(result.alarm, self.index.attached, self.now, "rules-test"):
            self.index.put(released.alarm)

    def _apply(self, effects: BatchEffects) -> None:
        for alarm in effects.alarms.values():
            self.index.put(alarm)

    def snapshot(self) -> list[dict[str, Any]]:
        return sorted(
            (
                {
                    "device": a.device_id,
                    "kind": a.kind,
                    "priority": int(a.priority),
                    "state": a.state.value,
                    "level": a.escalation_level,
                    "repeats": a.repeat_count,
                    "suppressed": a.suppressed_by is not None,
                    # The device event that would have cleared it (it waits for an operator).
                    "clearing": a.clearing_event or "",
                    "exhausted": a.escalation_exhausted_at is not None,
                }
                for a in self.index.by_id.values()
            ),
            key=lambda a: (a["device"], a["kind"]),
        )


@dataclass(frozen=True)
class CaseResult:
    name: str
    failures: list[str]
    rules_matched: frozenset[str] = frozenset()


def run_cases(rules: RuleSet, catalog: Catalog, path: Path) -> list[CaseResult]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise CasesError(f"{path}: {exc}") from exc
    devices = {
        d.id: d for d in (_device(path, i, d) for i, d in enumerate(data.get("devices", [])))
    }
    results = []
    for i, case in enumerate(data.get("cases", [])):
        name = case.get("name", f"cases[{i}]")
        results.append(_run_case(rules, catalog, devices, case, f"{path}: {name}"))
    return results


def _device(path: Path, i: int, d: dict[str, Any]) -> Device:
    try:
        return Device(
            id=d["id"],
            kind=DeviceKind(d["kind"]),
            municipality=d.get("municipality", "0301"),
            heartbeat_interval_s=d.get("heartbeat_interval_s"),
            resident=d.get("resident"),
            settings=parse_settings(d.get("settings")),
        )
    except (KeyError, ValueError) as exc:
        raise CasesError(f"{path}: devices[{i}]: {exc}") from exc


def _run_case(
    rules: RuleSet, catalog: Catalog, devices: dict[str, Device], case: dict[str, Any], where: str
) -> CaseResult:
    try:
        start = datetime.fromisoformat(case["start"])
    except (KeyError, ValueError) as exc:
        raise CasesError(f"{where}: start must be an RFC 3339 time: {exc}") from exc
    replay = Replay(rules, catalog, _involved(devices, case, where), start)
    failures: list[str] = []
    for j, step in enumerate(case.get("steps", [])):
        at = start + timedelta(seconds=float(step.get("at", 0)))
        if at < replay.now:
            raise CasesError(f"{where}: steps[{j}]: `at` goes back in time")
        replay.advance(at)
        failure = _step(replay, step)
        if failure:
            failures.append(f"steps[{j}] at {step.get('at', 0)} s: {failure}")
    return CaseResult(case.get("name", where), failures, frozenset(replay.matched))


def _involved(devices: dict[str, Device], case: dict[str, Any], where: str) -> dict[str, Device]:
    """A case involves the devices it names (in steps, expectations or `devices`), so
    another case's silent heartbeat device does not raise alarms in this one."""
    named = set(case.get("devices", []))
    for step in case.get("steps", []):
        named.add(step.get("device"))
        named.update(e.get("device") for e in step.get("expect", []))
    named.discard(None)
    unknown = sorted(n for n in named if n not in devices)
    if unknown:
        raise CasesError(f"{where}: no [[devices]] entry for {', '.join(unknown)}")
    return {d: devices[d] for d in named}


def _step(replay: Replay, step: dict[str, Any]) -> str | None:
    try:
        if "event" in step:
            replay.send(step["device"], step["event"], step.get("fields", {}))
        if "act" in step:
            replay.act(step["device"], step["kind"], Action(step["act"]), step.get("outcome"))
    except (CasesError, ValueError, KeyError) as exc:
        return str(exc)
    if "expect" in step:
        diff = _diff(step["expect"], replay.snapshot())
        if diff:
            return "\n" + diff
    return None


def _diff(expected: list[dict[str, Any]], actual: list[dict[str, Any]]) -> str:
    lines = []
    unmatched = list(actual)
    for want in expected:
        match = next((a for a in unmatched if all(a.get(k) == v for k, v in want.items())), None)
        if match is None:
            lines.append(f"  - expected {want}")
        else:
            unmatched.remove(match)
    lines.extend(f"  + unexpected {a}" for a in unmatched)
    if lines:
        lines.append("    active alarms were: " + (", ".join(map(str, actual)) or "none"))
    return "\n".join(lines)
