"""A few weeks of past alarms for the demo, so the reports have something to report.

:func:`past_alarms` is pure: given the demo's devices, an end time, a number of
days and a seed, it returns resolved alarms with full timelines (raised,
escalated when the acknowledgement came late, acknowledged, dispatched, on site,
resolved or auto-resolved), acted on by the simulated operators of
:mod:`alarmhub.sim.operators` with the same policy they follow live. Each day
has its own load: weekends and nights are slower, and one short-staffed day
misses the P1 target often enough to show on the chart.

:func:`seed_history` writes them through the store's own writes
(`SqliteStore.save_alarm`, `accounts.audit`) before the daemon starts. Every
seeded alarm says so: the raising entry's detail has `"seeded": true` and its
message id starts with `seeded-`, and every action was taken by a
`simulated-operator-N`. Seeding the same database twice adds nothing the second time.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from alarmhub.core.actions import Applied, apply_action
from alarmhub.core.judge import alarm_id
from alarmhub.core.model import (
    Alarm,
    AlarmState,
    Device,
    DeviceKind,
    Priority,
    TimelineEntry,
    TimelineType,
)
from alarmhub.core.people import AuditEntry
from alarmhub.core.rules import RuleSet
from alarmhub.sim.model import seeded
from alarmhub.sim.operators import respond
from alarmhub.store.sqlite import accounts
from alarmhub.store.sqlite.store import SqliteStore

OSLO = ZoneInfo("Europe/Oslo")
SEEDED_MSG_PREFIX = "seeded-"


@dataclass(frozen=True, slots=True)
class Source:
    """A kind of alarm a device raises in the history: how often and when."""

    kind: str
    priority: Priority
    event: str
    rule: str
    per_day: float  # expected alarms per device per day
    hours: tuple[int, int]  # Oslo local hours it happens in, [from, to); wraps midnight
    auto_share: float = 0.0  # cleared by the device before an operator resolved it


ANY_HOUR = (0, 24)
TECHNICAL = (
    Source("battery_low", Priority.TECHNICAL, "battery.low", "battery low", 0.012, ANY_HOUR),
    Source(
        "device_offline", Priority.TECHNICAL, "device.silent", "device silent", 0.02, ANY_HOUR, 0.6
    ),
)
SOURCES: dict[DeviceKind, tuple[Source, ...]] = {
    DeviceKind.SAFETY_ALARM: (
        Source("button", Priority.CRITICAL, "button.pressed", "pendant pressed", 0.35, (6, 24)),
    ),
    DeviceKind.FALL_SENSOR: (
        Source("fall", Priority.CRITICAL, "fall.detected", "fall detected", 0.12, ANY_HOUR),
    ),
    DeviceKind.DOOR_SENSOR: (
        Source(
            "door_open_night",
            Priority.HIGH,
            "door.opened",
            "door opened at night",
            0.1,
            (22, 7),
        ),
    ),
    DeviceKind.GPS_TRACKER: (
        Source("left_safe_zone", Priority.HIGH, "location", "left safe zone", 0.2, (9, 21)),
    ),
    DeviceKind.MEDICATION_DISPENSER: (
        Source(
            "dose_missed",
            Priority.NORMAL,
            "dose.overdue",
            "dose not taken in time",
            0.25,
            (8, 21),
            0.4,
        ),
        Source(
            "dispenser_fault", Priority.NORMAL, "dispenser.fault", "dispenser fault", 0.03, ANY_HOUR
        ),
    ),
}
AUDIT_ACTIONS = {
    TimelineType.ACKNOWLEDGED: "alarm.acknowledge",
    TimelineType.RESPONDER_DISPATCHED: "alarm.dispatch",
    TimelineType.RESPONDER_ON_SITE: "alarm.on-site",
    TimelineType.RESOLVED: "alarm.resolve",
}


@dataclass(frozen=True, slots=True)
class PastAlarm:
    alarm: Alarm
    timeline: tuple[TimelineEntry, ...]


def day_load(day: date, rng: random.Random, short_staffed: date | None) -> float:
    """How slow the centre is that day: >= 1; weekends slower, one bad day much slower."""
    if day == short_staffed:
        return 2.4
    weekend = 1.3 if day.weekday() >= 5 else 1.0
    return weekend * rng.uniform(0.9, 1.15)


def past_alarms(
    devices: Sequence[Device],
    end: datetime,
    days: int,
    seed: int,
    operators: Sequence[str],
    rules: RuleSet | None = None,
) -> list[PastAlarm]:
    """Resolved alarms raised in the `days` before `end`, oldest first. Pure."""
    rng = seeded(f"{seed}:history")
    start = end - timedelta(days=days)
    first, last = start.astimezone(OSLO).date(), end.astimezone(OSLO).date()
    span = (last - first).days
    short_staffed = first + timedelta(days=rng.randrange(span)) if span > 2 else None
    out: list[PastAlarm] = []
    for n in range(span + 1):
        day = first + timedelta(days=n)
        load = day_load(day, rng, short_staffed)
        for device in devices:
            for source in (*SOURCES.get(device.kind, ()), *TECHNICAL):
                for _ in range(_poisson(rng, source.per_day)):
                    raised = _moment(day, source.hours, rng)
                    if not start <= raised < end:
                        continue
                    night = 1.3 if raised.astimezone(OSLO).hour in range(7) else 1.0
                    msg_id = f"{SEEDED_MSG_PREFIX}{len(out) + 1}"
                    past = _one(device, source, raised, msg_id, load * night, rng, operators)
                    out.append(_escalated(past, rules) if rules is not None else past)
    out.sort(key=lambda p: p.alarm.raised_at)
    return out


def _one(
    device: Device,
    source: Source,
    raised: datetime,
    msg_id: str,
    load: float,
    rng: random.Random,
    operators: Sequence[str],
) -> PastAlarm:
    alarm = Alarm(
        id=alarm_id(device.id, msg_id, source.kind),
        device_id=device.id,
        municipality=device.municipality,
        kind=source.kind,
        priority=source.priority,
        state=AlarmState.OPEN,
        raised_at=raised,
        last_seen_at=raised,
        resident=device.resident,
    )
    detail = {
        "event": source.event,
        "msg_id": msg_id,
        "rule": source.rule,
        "priority": int(source.priority),
        "seeded": True,
    }
    entries = [TimelineEntry(alarm.id, raised, TimelineType.RAISED, None, detail)]
    response = respond(source.kind, int(source.priority), rng, operators, load)
    auto_at: datetime | None = None
    if rng.random() < source.auto_share:
        auto_at = raised + timedelta(seconds=rng.uniform(120, 1800))
    for step in response.steps:
        at = raised + timedelta(seconds=step.after_s)
        if auto_at is not None and at >= auto_at:
            break
        done = apply_action(
            alarm, step.action, response.operator, at, outcome=step.outcome, note=step.note
        )
        assert isinstance(done, Applied), done  # a plan is always valid on its own alarm
        alarm = done.alarm
        entries.extend(done.timeline)
    if alarm.state is not AlarmState.RESOLVED:
        assert auto_at is not None
        alarm = replace(
            alarm,
            state=AlarmState.RESOLVED,
            resolved_at=auto_at,
            resolved_by="alarmhub",
            outcome="auto",
            last_seen_at=auto_at,
        )
        entries.append(
            TimelineEntry(alarm.id, auto_at, TimelineType.AUTO_RESOLVED, None, {"seeded": True})
        )
    return PastAlarm(alarm, tuple(entries))


def _escalated(past: PastAlarm, rules: RuleSet) -> PastAlarm:
    """Add the escalation steps that fell due before the alarm was acknowledged."""
    alarm = past.alarm
    policy = rules.policies.get(f"p{int(alarm.priority)}")
    acked = alarm.acknowledged_at or alarm.resolved_at
    if policy is None or acked is None:
        return past
    added: list[TimelineEntry] = []
    for offset, step in zip(policy.offsets(), policy.steps, strict=True):
        due = alarm.raised_at + offset
        if step.level > 1 and due < acked:
            detail = {"level": step.level, "target": step.target, "round": 0, "seeded": True}
            added.append(TimelineEntry(alarm.id, due, TimelineType.ESCALATED, None, detail))
            alarm = replace(alarm, escalation_level=max(alarm.escalation_level, step.level))
    if not added:
        return past
    timeline = sorted((*past.timeline, *added), key=lambda e: e.at)
    return PastAlarm(alarm, tuple(timeline))


def _poisson(rng: random.Random, mean: float) -> int:
    """Knuth's method: fine for the small means used here."""
    limit, k, p = math.exp(-mean), 0, 1.0
    while True:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1


def _moment(day: date, hours: tuple[int, int], rng: random.Random) -> datetime:
    """A random Oslo local time on `day` within `hours` (wrapping past midnight), in UTC."""
    lo, hi = hours
    length = (hi - lo) % 24 or 24
    minute = rng.uniform(0, length * 60)
    local = datetime.combine(day, time(lo), tzinfo=OSLO) + timedelta(minutes=minute)
    return local.astimezone(UTC)


async def seed_history(
    db: Path,
    past: Sequence[PastAlarm],
    rules_version: str = "",
) -> int:
    """Write the history through the store's own writes; returns how many alarms were added.

    Nothing is added when the first of them is already there: a second seeding of
    the same database must not double the history.
    """
    if not past:
        return 0
    # NORMAL: one fsync at the end, not one per alarm; a cut power loses demo data only.
    store = await SqliteStore.open(db, synchronous="NORMAL")
    try:
        if await store.get_alarm(past[0].alarm.id) is not None:
            return 0
        for p in past:
            await store.save_alarm(replace(p.alarm, rules_version=rules_version), p.timeline)
        await store.checkpoint(truncate=True)
    finally:
        await store.close()
    await accounts.run(db, accounts.audit_all, _audit_entries(past))
    return len(past)


def _audit_entries(past: Sequence[PastAlarm]) -> list[AuditEntry]:
    entries = [
        AuditEntry(
            actor=e.actor,
            action=AUDIT_ACTIONS[e.type],
            at=e.at,
            alarm_id=p.alarm.id,
            device_id=p.alarm.device_id,
            municipality=p.alarm.municipality,
            detail=_audit_detail(e.detail),
        )
        for p in past
        for e in p.timeline
        if e.actor is not None and e.type in AUDIT_ACTIONS
    ]
    entries.sort(key=lambda a: a.at)
    return entries


def _audit_detail(detail: Mapping[str, object]) -> dict[str, object]:
    out: dict[str, object] = {"seeded": True, "with_note": "note" in detail}
    if "outcome" in detail:
        out["outcome"] = detail["outcome"]
    return out
