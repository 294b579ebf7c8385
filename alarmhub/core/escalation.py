"""Escalation policies as data, and the pure decisions the escalator makes on them.

An unanswered alarm must reach someone else in time: first the operator queue,
then a supervisor, then an external responder, and round again. The shell keeps
no sleeping coroutine per alarm. Deadlines are rows keyed by
``(alarm_id, round, step)``; the escalator wakes for the earliest row, asks
:func:`on_deadline` what it means and, in one transaction, records the decision
(as the row's "fired" mark) together with its effects (timeline entry, outbox
notification, new escalation level). Because the mark and the effects commit
together, a crash either loses both (the deadline is simply still due after
restart: :func:`next_deadline` returns it again) or keeps both (the key is in
`fired`: :data:`EscalationReason.ALREADY_FIRED`). Either way each due step fires
exactly once, also after downtime: overdue steps are replayed in order, each once.

Example, the default for priority 1 (critical)::

    P1 = Policy(
        "p1",
        (
            Step(timedelta(0), "operator_queue", 1),  # at once
            Step(timedelta(seconds=60), "supervisor", 2),  # unacknowledged after 60 s
            Step(timedelta(seconds=180), "external_responder", 3),  # after 180 s
        ),
        repeat=2,  # two more rounds: 300 s and 600 s after the alarm was raised
    )

Step offsets count from the start of the round (``from_previous=False``, as
above) or from the previous step (``from_previous=True``). Without an explicit
`round_interval` the next round starts one "last gap" after the last step
(180 s + (180 s - 60 s) = 300 s above), which reproduces the common call-list
pattern "primary at once, secondary after 90 s, primary again after 90 s more".

`ack_timeout` (as in PagerDuty and Grafana OnCall): an alarm acknowledged but
not resolved that long after the acknowledgement is not forgotten: a reminder
deadline fires every `ack_timeout` until it is resolved
(:data:`EscalationReason.REMIND_ACK_TIMEOUT`).

A fresh escalation (issue 12 item 4: an alarm reopened within its flap window, a
repeat on an acknowledged person alarm) runs the policy again from
`Alarm.escalation_from`. Its rows must not collide with the decided rows of the
earlier run, or every step would read as already fired: generation `g` numbers
its rounds from ``g * ROUND_STRIDE`` (a policy has at most 10 rounds; reminders
count their own rounds from the same base).

When the last step of the last round has passed and the alarm is still open,
escalation has nothing left to do. That is never silent (item 5):
:func:`exhaustion` marks the alarm and writes an ``escalation_exhausted`` entry in
the same transaction as that last step, and the shell counts it in a metric that
ops are alerted on.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING

from alarmhub.core.model import Alarm, AlarmState, TimelineEntry, TimelineType, amended
from alarmhub.core.quick import quick_init

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from collections.abc import Set as AbstractSet
    from datetime import datetime

ACK_TIMEOUT_STEP = -1  # step index of acknowledgement-timeout reminders in row keys
ROUND_STRIDE = 10_000  # generation g of an alarm's escalation keys its rounds from g * this
DeadlineKey = tuple[int, int]  # (round, step index): with the alarm id, the row's key


class DeadlineKind(StrEnum):
    STEP = "step"
    ACK_TIMEOUT = "ack_timeout"


class EscalationReason(StrEnum):
    """Why a deadline did or did not escalate. Bounded: timeline, log and metric label."""

    ESCALATE = "escalate"  # notify the step's target, raise the alarm's level
    SKIP_ACKNOWLEDGED = "skip_acknowledged"  # someone took it: no escalation
    SKIP_RESOLVED = "skip_resolved"  # over: nothing to do
    ALREADY_FIRED = "already_fired"  # the row says it was decided before (crash, second worker)
    REMIND_ACK_TIMEOUT = "remind_ack_timeout"  # acknowledged long ago, still not resolved
    SKIP_NOT_ACKNOWLEDGED = "skip_not_acknowledged"  # a reminder whose acknowledgement is gone


@dataclass(frozen=True, slots=True)
class Step:
    """Notify `target` at escalation `level` once `after` has passed (see Policy)."""

    after: timedelta
    target: str
    level: int

    def __post_init__(self) -> None:
        if self.after < timedelta(0):
            raise ValueError("a step's `after` must not be negative")
        if not self.target:
            raise ValueError("a step needs a target")
        if self.level < 1:
            raise ValueError("escalation levels start at 1")


@dataclass(frozen=True, slots=True)
class Policy:
    """An escalation policy: steps, how many extra rounds, and the acknowledgement timeout."""

    name: str
    steps: tuple[Step, ...]
    repeat: int = 0  # extra rounds after the first: 1 + repeat rounds in all
    from_previous: bool = False  # each step's `after` counts from the previous step
    ack_timeout: timedelta | None = None
    round_interval: timedelta | None = None  # round start to round start; see module doc
    # (offset from the start, round, step index) of every step, in plan()'s order: built
    # once with the policy, which never changes. It was an lru_cache keyed on the policy,
    # whose key (the hash of every field and step, computed anew each call) cost more
    # than the walk: next_deadline asks for it per new alarm (issue 18).
    schedule: tuple[tuple[timedelta, int, int], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.steps:
            raise ValueError(f"policy {self.name!r} has no steps")
        if self.repeat < 0:
            raise ValueError("repeat must not be negative")
        afters = [s.after for s in self.steps]
        if not self.from_previous and afters != sorted(afters):
            raise ValueError(f"policy {self.name!r}: step offsets must not decrease")
        if self.ack_timeout is not None and self.ack_timeout <= timedelta(0):
            raise ValueError("ack_timeout must be positive")
        if self.repeat > 0 and self.round_length() <= self.offsets()[-1]:
            raise ValueError(
                f"policy {self.name!r}: rounds would overlap; set a round_interval longer "
                "than the last step's offset"
            )
        object.__setattr__(self, "schedule", _schedule(self))

    def offsets(self) -> tuple[timedelta, ...]:
        """Each step's offset from the start of its round."""
        if not self.from_previous:
            return tuple(s.after for s in self.steps)
        total = timedelta(0)
        out = []
        for step in self.steps:
            total += step.after
            out.append(total)
        return tuple(out)

    def round_length(self) -> timedelta:
        if self.round_interval is not None:
            return self.round_interval
        offsets = self.offsets()
        previous = offsets[-2] if len(offsets) > 1 else timedelta(0)
        return offsets[-1] + (offsets[-1] - previous)


@quick_init
@dataclass(frozen=True, slots=True)
class Deadline:
    step_index: int  # ACK_TIMEOUT_STEP for reminders
    level: int
    target: str
    due_at: datetime  # UTC
    round: int  # for reminders: the reminder's number, from 0
    kind: DeadlineKind = DeadlineKind.STEP

    @property
    def key(self) -> DeadlineKey:
        return (self.round, self.step_index)


@quick_init
@dataclass(frozen=True, slots=True)
class EscalationDecision:
    reason: EscalationReason
    deadline: Deadline
    late_by: timedelta  # how long after due_at it was decided (downtime shows here)

    @property
    def notify(self) -> bool:
        """Whether the shell sends something to the deadline's target."""
        return self.reason in {EscalationReason.ESCALATE, EscalationReason.REMIND_ACK_TIMEOUT}

    @property
    def record(self) -> bool:
        """Whether the shell writes the row's fired mark (all but an already-fired row)."""
        return self.reason is not EscalationReason.ALREADY_FIRED


def plan(policy: Policy, raised_at: datetime, generation: int = 0) -> list[Deadline]:
    """Every step deadline of every round, in the order they fall due.

    `raised_at` is when this escalation started (a fresh one: `escalation_from`).
    """
    # Offsets are elapsed time: add them in UTC. Adding a timedelta to a local
    # datetime is wall-clock arithmetic and goes wrong across a DST change.
    start = raised_at.astimezone(UTC)
    offsets = policy.offsets()
    length = policy.round_length()
    base = generation * ROUND_STRIDE
    deadlines = [
        Deadline(index, step.level, step.target, start + rnd * length + offsets[index], base + rnd)
        for rnd in range(policy.repeat + 1)
        for index, step in enumerate(policy.steps)
    ]
    deadlines.sort(key=lambda d: (d.due_at, d.round, d.step_index))
    return deadlines


def next_deadline(
    policy: Policy, raised_at: datetime, fired: AbstractSet[DeadlineKey], generation: int = 0
) -> Deadline | None:
    """The earliest step deadline not yet decided; None when the policy is exhausted.

    `fired` holds the keys of rows already decided, whatever the decision. After
    a crash this returns overdue deadlines one by one, earliest first.
    """
    # The same order as plan()'s, without building and sorting every deadline of every
    # round each time an alarm is armed: a storm of new alarms asks this per alarm
    # (its first step, then arming the next), and plan() was ~10 % of the storm's profile.
    # The exhaustion check asks `undecided` instead, which builds no deadline.
    base = generation * ROUND_STRIDE
    for offset, rnd, index in policy.schedule:
        if (base + rnd, index) not in fired:
            step = policy.steps[index]
            due_at = raised_at.astimezone(UTC) + offset
            return Deadline(index, step.level, step.target, due_at, base + rnd)
    return None


def undecided(policy: Policy, fired: AbstractSet[DeadlineKey], generation: int = 0) -> bool:
    """Whether any step deadline is not yet decided: :func:`next_deadline` is not None.

    Without building the deadline: the exhaustion check asks it of every step decided,
    the first step of each new alarm in a storm too (issue 18).
    """
    schedule = policy.schedule
    # Fewer keys fired than the schedule has steps: one of its (distinct) keys is missing,
    # whatever else `fired` holds. A new alarm's first step, the storm's case, stops here.
    if len(fired) < len(schedule):
        return True
    base = generation * ROUND_STRIDE
    return any((base + rnd, index) not in fired for _, rnd, index in schedule)


def _schedule(policy: Policy) -> tuple[tuple[timedelta, int, int], ...]:
    """(offset from the start, round, step index) of every step, in plan()'s order.

    Sorting by offset is sorting by due time, since every deadline of one escalation
    has the same start.
    """
    offsets = policy.offsets()
    length = policy.round_length()
    return tuple(
        sorted(
            (rnd * length + offsets[index], rnd, index)
            for rnd in range(policy.repeat + 1)
            for index in range(len(policy.steps))
        )
    )


def ack_reminder(
    policy: Policy, acknowledged_at: datetime, fired: AbstractSet[DeadlineKey], generation: int = 0
) -> Deadline | None:
    """The next acknowledgement-timeout reminder not yet decided, or None without a timeout.

    It falls due one ``ack_timeout`` after the acknowledgement and goes to the first
    step's target (the operator queue that acknowledged it). A reminder puts the
    alarm back in the queue (apply_decision), so the reminders already decided all
    came before the acknowledgement in force: counting them into the delay, as
    ``(k + 1) * ack_timeout``, made the gap grow by one timeout with each round.
    """
    if policy.ack_timeout is None:
        return None
    first = policy.steps[0]
    base = generation * ROUND_STRIDE
    k = 0
    while (base + k, ACK_TIMEOUT_STEP) in fired:
        k += 1
    due_at = acknowledged_at.astimezone(UTC) + policy.ack_timeout
    return Deadline(
        ACK_TIMEOUT_STEP, first.level, first.target, due_at, base + k, DeadlineKind.ACK_TIMEOUT
    )


def on_deadline(
    alarm_state: AlarmState,
    acknowledged: bool,
    deadline: Deadline,
    now: datetime,
    fired: AbstractSet[DeadlineKey] = frozenset(),
) -> EscalationDecision:
    """Decide what a due deadline means for the alarm as it is *now*.

    Reads the alarm's current state, not the state when the deadline was
    planned: an acknowledgement that landed while alarmhub was down still
    prevents the escalation. Calling it before `due_at` is a bug in the caller.
    """
    if now < deadline.due_at:
        raise ValueError(f"deadline {deadline.key} is not due until {deadline.due_at}")
    acked = acknowledged or alarm_state is AlarmState.ACKNOWLEDGED
    if deadline.key in fired:
        reason = EscalationReason.ALREADY_FIRED
    elif alarm_state is AlarmState.RESOLVED:
        reason = EscalationReason.SKIP_RESOLVED
    elif deadline.kind is DeadlineKind.ACK_TIMEOUT:
        reason = (
            EscalationReason.REMIND_ACK_TIMEOUT if acked else EscalationReason.SKIP_NOT_ACKNOWLEDGED
        )
    else:
        reason = EscalationReason.SKIP_ACKNOWLEDGED if acked else EscalationReason.ESCALATE
    return EscalationDecision(reason, deadline, now - deadline.due_at)


DEFAULT_P1 = Policy(
    "p1",
    (
        Step(timedelta(0), "operator_queue", 1),
        Step(timedelta(seconds=60), "supervisor", 2),
        Step(timedelta(seconds=180), "external_responder", 3),
    ),
    repeat=2,
)


def next_for_alarm(
    alarm: Alarm, policy: Policy, fired: AbstractSet[DeadlineKey]
) -> Deadline | None:
    """The alarm's next undecided deadline: a step while it is open, a reminder once taken.

    Suppressed alarms (silenced, inhibited, part of an incident) are not escalated
    on their own, and an alarm with a responder on site needs no reminder.
    """
    if not alarm.is_active or alarm.suppressed_by is not None:
        return None
    generation = alarm.escalation_generation
    if alarm.state is AlarmState.OPEN:
        return next_deadline(policy, escalation_start(alarm), fired, generation)
    if alarm.acknowledged_at is None or alarm.on_site_at is not None:
        return None
    return ack_reminder(policy, alarm.acknowledged_at, fired, generation)


def escalation_start(alarm: Alarm) -> datetime:
    """When the alarm's current escalation started: raised, or its latest fresh start."""
    return alarm.escalation_from or alarm.raised_at


def fresh_escalation(alarm: Alarm, now: datetime) -> Alarm:
    """The alarm with its policy starting over at `now`, keyed apart from earlier rows.

    `raised_at` is untouched: response times are still measured from it.
    """
    return replace(
        alarm,
        escalation_from=now,
        escalation_generation=alarm.escalation_generation + 1,
        escalation_exhausted_at=None,
    )


def exhaustion(
    alarm: Alarm, policy: Policy, fired: AbstractSet[DeadlineKey], now: datetime
) -> tuple[Alarm, TimelineEntry] | None:
    """Whether escalation just ran out: the alarm marked, and the entry that says so.

    `fired` includes the deadline just decided. Only an alarm still open (nobody
    has taken it) and not suppressed can run out; an acknowledged one is covered by
    its acknowledgement-timeout reminders. Marked once per escalation run.
    """
    if alarm.state is not AlarmState.OPEN or alarm.suppressed_by is not None:
        return None
    if alarm.escalation_exhausted_at is not None:
        return None
    if undecided(policy, fired, alarm.escalation_generation):
        return None
    marked = amended(alarm, escalation_exhausted_at=now)
    detail: dict[str, object] = {
        "policy": policy.name,
        "level": alarm.escalation_level,
        "rounds": policy.repeat + 1,
    }
    return marked, TimelineEntry(alarm.id, now, TimelineType.ESCALATION_EXHAUSTED, None, detail)


def orphaned(
    alarms: Iterable[Alarm], policy_named: Callable[[str | None, str], Policy | None]
) -> list[Alarm]:
    """Active alarms whose escalation policy a rule set does not have (issue 12 item 6).

    A reload that renamed or removed a policy would silently stop their escalation:
    the shell refuses such a reload and keeps the rules in force.
    """
    return [
        a
        for a in alarms
        if a.is_active and a.policy is not None and policy_named(a.policy, a.municipality) is None
    ]


def apply_decision(
    alarm: Alarm, decision: EscalationDecision, now: datetime, rules_version: str = ""
) -> tuple[Alarm | None, tuple[TimelineEntry, ...]]:
    """The alarm after a decided deadline, and its timeline entry (None: unchanged).

    The entry names the rules version the step was decided under: rules can be
    reloaded between raising and escalating, and an audit must explain both.
    """
    if not decision.notify:
        return None, ()
    d = decision.deadline
    detail: dict[str, object] = {
        "level": d.level,
        "target": d.target,
        "round": d.round % ROUND_STRIDE,
        "late_by_s": round(decision.late_by.total_seconds(), 3),
        "rules_version": rules_version,
    }
    if d.round >= ROUND_STRIDE:
        detail["restart"] = d.round // ROUND_STRIDE  # a fresh escalation (reopened, re-alerted)
    changed = amended(alarm, escalation_level=max(alarm.escalation_level, d.level))
    if d.kind is DeadlineKind.ACK_TIMEOUT:
        # Acknowledged but left unresolved: back into the queue, and the remaining
        # escalation steps apply again.
        detail["reminder"] = True
        changed = replace(changed, state=AlarmState.OPEN)
    return changed, (TimelineEntry(alarm.id, now, TimelineType.ESCALATED, None, detail),)
