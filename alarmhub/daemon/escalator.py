"""Escalation deadlines, one heap for all active alarms, on the monotonic clock.

No coroutine sleeps per alarm. Deadlines are computed from the alarm's policy
and the set of (round, step) rows already decided, so after a restart overdue
steps fire once each, in order, and future ones are re-armed. Each heap entry
carries the monotonic instant it is due: a wall clock stepped by NTP or by hand
(an hour forward, say) neither fires a burst of escalations nor delays them.
The decision itself is :func:`alarmhub.core.escalation.on_deadline`; the
decided row commits in one transaction with its effects.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import structlog

from alarmhub.clock import Clock
from alarmhub.core.escalation import (
    Deadline,
    DeadlineKey,
    DeadlineKind,
    EscalationDecision,
    Policy,
    apply_decision,
    exhaustion,
    next_for_alarm,
    on_deadline,
)
from alarmhub.core.model import Alarm, AlarmState, TimelineEntry, TimelineType
from alarmhub.daemon.gate import WriteGate
from alarmhub.daemon.state import HubState
from alarmhub.daemon.waits import wait_set
from alarmhub.observability.metrics import Metrics
from alarmhub.store.ports import DecidedRow, EscalationStore, Notification

log = structlog.get_logger("alarmhub.escalator")
NOTIFY_TOPIC = "alarmhub/v1/notify/{target}"
MAX_PER_COMMIT = 500
# A batch escalating more first steps than this logs one `alarms.escalated` line with
# counts instead of an info line each (a storm; as ingest's RAISED_LINES_PER_BATCH).
ESCALATED_LINES_PER_BATCH = 10
_NONE_FIRED: frozenset[DeadlineKey] = frozenset()


class Escalator:
    """Fires escalation steps as they fall due; `on_escalated(alarm, notify)` announces one."""

    def __init__(
        self,
        state: HubState,
        store: EscalationStore,
        gate: WriteGate,
        clock: Clock,
        metrics: Metrics,
        on_escalated: Callable[[Alarm, bool], None],
    ) -> None:
        self._state = state
        self._store = store
        self._gate = gate
        self._clock = clock
        self._metrics = metrics
        self._on_escalated = on_escalated
        self._heap: list[tuple[float, int, str, Deadline]] = []
        self._seq = itertools.count()
        self._armed: dict[str, DeadlineKey] = {}
        self.fired: dict[str, set[DeadlineKey]] = {}
        self._wake = asyncio.Event()
        self.fired_count = 0
        # Whether an owner's term runs this escalator now (the composition root says);
        # see arm_in_term.
        self.in_term: Callable[[], bool] = lambda: True

    async def load(self) -> None:
        """Re-arm every active alarm from the decided rows: overdue steps fire next.

        Called at each owner's term's start (daemon/owner.py): what was armed before
        is dropped, since another instance may have decided steps meanwhile.
        """
        self._heap.clear()
        self._armed.clear()
        alarms = list(self._state.alarms.by_id.values())
        self.fired = await self._store.fired_keys(a.id for a in alarms)
        for alarm in alarms:
            self.arm(alarm)

    def arm_in_term(self, alarm: Alarm) -> None:
        """:meth:`arm` for the services that outlive terms (actions, follower, registry, silences).

        Outside a term nothing takes deadlines off the heap (:meth:`run` is the term's
        task), and the next term's :meth:`load` arms every active alarm afresh. A
        standby armed each alarm its follower, its API and its registry touched, for as
        long as it stayed a standby: its heap grew by an entry or more per alarm and
        never emptied.
        """
        if self.in_term():
            self.arm(alarm)

    def arm(self, alarm: Alarm, anchor: tuple[datetime, float] | None = None) -> None:
        """Schedule the alarm's next undecided deadline, if it has one.

        The deadline is a wall-clock instant; it is placed on the monotonic clock
        through `anchor`, a (wall, monotonic) pair that name the same moment: by
        default the clocks read now. After a decided step the escalator passes the
        decision's own pair. Reading the wall clock again after the commit would let
        a wall-clock step (NTP) that lands during the commit move every later step
        of the alarm by that much: an hour forward, and the whole policy fired at
        once (seen in test_a_wall_clock_jump_fires_no_escalation_...).
        """
        if not alarm.is_active:
            # Resolved: nothing more is decided for it, and a reopening starts a fresh
            # generation keyed apart (core/escalation.py), as after a restart, which
            # loads the keys of active alarms only. Kept, every alarm the process ever
            # handled stayed here.
            self.fired.pop(alarm.id, None)
            self._armed.pop(alarm.id, None)
            return
        deadline = self._next(alarm)
        if deadline is None:
            self._armed.pop(alarm.id, None)
            return
        if self._armed.get(alarm.id) == deadline.key:
            return
        self._armed[alarm.id] = deadline.key
        clock = self._clock
        wall, mono = anchor if anchor is not None else (clock.now(), clock.monotonic())
        mono_due = mono + (deadline.due_at - wall).total_seconds()
        heapq.heappush(self._heap, (mono_due, next(self._seq), alarm.id, deadline))
        self._wake.set()

    def _next(self, alarm: Alarm) -> Deadline | None:
        policy = self._state.rules.policy_named(alarm.policy, alarm.municipality)
        if policy is None:
            return None
        return next_for_alarm(alarm, policy, self.fired.setdefault(alarm.id, set()))

    def first_steps(self, alarms: Iterable[Alarm], now: datetime) -> list[DecidedRow]:
        """The first step of each new alarm whose step is due at once, decided for the
        ingest batch's own transaction (pure: nothing here changes until it committed).

        In a storm each batch of new alarms otherwise cost one more fsync'd transaction of
        the escalator's right after it (issue 18). A step not due by `now` (a policy that
        waits, a device clock ahead) is left to the heap as before.
        """
        rows: list[DecidedRow] = []
        policy_named = self._state.rules.policy_named
        for alarm in alarms:
            policy = policy_named(alarm.policy, alarm.municipality)
            if policy is None:
                continue
            fired = self.fired.get(alarm.id, _NONE_FIRED)
            deadline = next_for_alarm(alarm, policy, fired)
            if deadline is None or deadline.due_at > now:
                continue
            acked = alarm.acknowledged_at is not None and alarm.state is not AlarmState.OPEN
            decision = on_deadline(alarm.state, acked, deadline, now, fired)
            if decision.record:
                changed, entries, notes = self._effects(alarm, decision, now, policy, fired)
                rows.append(DecidedRow(decision, alarm.id, changed, entries, notes))
        return rows

    def first_steps_committed(
        self, rows: Sequence[DecidedRow], recorded: Sequence[bool], stored: Mapping[str, Alarm]
    ) -> set[str]:
        """Learn the first steps the ingest batch committed; the ids of the alarms announced.

        `stored`: the batch's alarms as committed (the escalated ones at their new level).
        The caller arms the alarms afterwards, for their next step. A storm logs one
        `alarms.escalated` line per batch with counts, each `alarm.escalated` at debug,
        as ingest does with `alarms.raised`.
        """
        fired = self.fired
        done: list[DecidedRow] = []
        for row, now in zip(rows, recorded, strict=True):
            fired.setdefault(row.alarm_id, set()).add(row.decision.deadline.key)
            if now:
                done.append(row)
        return self._announce_all(done, stored)

    def _announce_all(
        self, done: Sequence[DecidedRow], stored: Mapping[str, Alarm] | None = None
    ) -> set[str]:
        """Announce decisions recorded now; the ids announced.

        Each row's alarm is shown as stored: `stored[alarm_id]` where given (ingest's
        batch, after the commit), else the row's own. Counted per level once per call,
        and in a storm each `alarm.escalated` line (at debug) is built only when debug
        is on: a `labels().inc()`, a contextvars binding and a `dataclasses.replace` per
        row were most of a storm's announcing (issue 18).
        """
        notifying = [row for row in done if row.decision.notify]
        storm = len(notifying) > ESCALATED_LINES_PER_BATCH
        each: Callable[..., Any] | None = log.info
        if storm:
            each = log.debug if log.is_enabled_for(logging.DEBUG) else None
        levels: Counter[int] = Counter()
        announced: set[str] = set()
        shown = {row.alarm_id: _as_stored(row, stored) for row in done}
        for row in notifying:
            levels[row.decision.deadline.level] += 1
            alarm = shown[row.alarm_id]
            if alarm is not None:
                announced.add(row.alarm_id)
                self._announce(row, alarm, each)
        self.fired_count += len(notifying)
        for level, n in levels.items():
            self._metrics.escalations.labels(str(level)).inc(n)
        for row in done:
            alarm = shown[row.alarm_id]
            if alarm is not None and alarm.escalation_exhausted_at:
                self._exhausted(alarm, row.timeline)
        if storm:
            log.info(
                "alarms.escalated",
                count=len(notifying),
                by_level={str(level): n for level, n in sorted(levels.items())},
            )
        return announced

    async def run(self) -> None:
        while True:
            if not self._heap:
                self._wake.clear()
                await self._wake.wait()
                continue
            mono_due = self._heap[0][0]
            delay = mono_due - self._clock.monotonic()
            if delay > 0:
                self._wake.clear()
                await wait_set(self._wake, min(delay, 1.0))
                continue
            await self._fire_due()

    async def fire_due(self) -> None:
        """Decide every deadline due by now, including steps that deciding made due.

        :meth:`run` does this as deadlines come; the scenario suite
        (tests/scenarios/scenario.py) calls it itself at each instant of virtual time.
        """
        while self._heap and self._heap[0][0] <= self._clock.monotonic():
            await self._fire_due()

    def next_due(self) -> datetime | None:
        """The wall-clock instant of the earliest armed deadline (maybe one superseded)."""
        if not self._heap:
            return None
        clock = self._clock
        return clock.now() + timedelta(seconds=self._heap[0][0] - clock.monotonic())

    async def _fire_due(self) -> None:
        """Decide every deadline due now, in one transaction (a burst of alarms raises
        hundreds of first steps at once: one fsync for all, not one each)."""
        now_mono = self._clock.monotonic()
        due: list[tuple[str, Deadline, datetime, float]] = []
        while self._heap and self._heap[0][0] <= now_mono and len(due) < MAX_PER_COMMIT:
            mono_due, _, alarm_id, deadline = heapq.heappop(self._heap)
            if self._armed.get(alarm_id) != deadline.key:
                continue  # superseded: the alarm was re-armed for another deadline
            del self._armed[alarm_id]
            # `now` is the deadline it woke for plus how late it woke, on the monotonic clock.
            due.append(
                (
                    alarm_id,
                    deadline,
                    deadline.due_at + timedelta(seconds=now_mono - mono_due),
                    now_mono,
                )
            )
        if due:
            await self._decide(due)

    def _decisions(
        self, due: list[tuple[str, Deadline, datetime, float]], touched: dict[str, Alarm]
    ) -> list[DecidedRow]:
        """What each due deadline decides on the alarm as known now (pure, under the lock)."""
        rows: list[DecidedRow] = []
        for alarm_id, deadline, now, _mono in due:
            alarm = self._state.alarms.get(alarm_id)
            if alarm is None or alarm.suppressed_by is not None:
                continue
            fired = self.fired.setdefault(alarm_id, set())
            acked = alarm.acknowledged_at is not None and alarm.state is not AlarmState.OPEN
            decision = on_deadline(alarm.state, acked, deadline, now, fired)
            touched[alarm_id] = alarm
            if decision.record:
                policy = self._state.rules.policy_named(alarm.policy, alarm.municipality)
                changed, entries, notes = self._effects(alarm, decision, now, policy, fired)
                rows.append(DecidedRow(decision, alarm_id, changed, entries, notes))
        return rows

    async def _decide(self, due: list[tuple[str, Deadline, datetime, float]]) -> None:
        touched: dict[str, Alarm] = {}
        anchors = {alarm_id: (now, mono) for alarm_id, _, now, mono in due}
        async with self._gate.lock:

            async def attempt() -> tuple[list[DecidedRow], list[bool]]:
                # Decided again on reloaded alarms if one changed elsewhere meanwhile.
                touched.clear()
                rows = self._decisions(due, touched)
                if not rows:
                    return rows, []
                wall = self._clock.now()
                recorded = await self._gate.until_committed(
                    lambda: self._store.commit_decisions(rows, wall)
                )
                return rows, recorded

            rows, recorded = await self._gate.deciding(attempt)
            done: list[DecidedRow] = []
            for row, now in zip(rows, recorded, strict=True):
                self.fired.setdefault(row.alarm_id, set()).add(row.decision.deadline.key)
                if row.alarm is not None and now:
                    stored = self._state.alarms.committed(row.alarm)
                    row = replace(row, alarm=stored)  # noqa: PLW2901 - as stored
                    touched[row.alarm_id] = stored
                if now:
                    done.append(row)
            self._announce_all(done)
        for alarm in touched.values():
            self.arm(alarm, anchors.get(alarm.id))

    def _announce(self, row: DecidedRow, alarm: Alarm, each: Callable[..., Any] | None) -> None:
        """Log (unless `each` is None: a storm's line at debug, debug off) and show one."""
        if each is not None:
            d = row.decision.deadline
            each(
                "alarm.escalated",
                alarm_id=row.alarm_id,
                municipality=alarm.municipality,
                level=d.level,
                target=d.target,
                reason=row.decision.reason.value,
                late_by_s=round(row.decision.late_by.total_seconds(), 3),
            )
        self._on_escalated(alarm, bool(row.notifications))

    def _exhausted(self, alarm: Alarm, entries: Sequence[TimelineEntry]) -> None:
        if not any(e.type is TimelineType.ESCALATION_EXHAUSTED for e in entries):
            return
        self._metrics.escalations_exhausted.labels(str(int(alarm.priority))).inc()
        with structlog.contextvars.bound_contextvars(alarm_id=alarm.id):
            log.warning(
                "alarm.escalation_exhausted",
                municipality=alarm.municipality,
                priority=int(alarm.priority),
                policy=alarm.policy,
                level=alarm.escalation_level,
            )

    def _effects(
        self,
        alarm: Alarm,
        decision: EscalationDecision,
        now: datetime,
        policy: Policy | None,
        fired: AbstractSet[DeadlineKey],
    ) -> tuple[Alarm | None, Sequence[TimelineEntry], Sequence[Notification]]:
        """`policy`, `fired`: the alarm's, as the caller decided the step on them."""
        changed, entries = apply_decision(alarm, decision, now, self._state.rules.version)
        notes = self._notifications(changed, decision.deadline) if changed is not None else ()
        # The last step of the policy: if the alarm is still open, say so in the same
        # transaction (item 5), never just stop.
        ran_out = (
            exhaustion(changed or alarm, policy, fired | {decision.deadline.key}, now)
            if policy is not None
            else None
        )
        if ran_out is not None:
            changed, entry = ran_out
            entries = (*entries, entry)
        return changed, entries, notes

    def _notifications(self, alarm: Alarm, d: Deadline) -> list[Notification]:
        target = self._state.rules.targets.get(d.target)
        if target is None:
            return []
        payload = {
            # Stable across retries and failover (the deadline's key fires once): a
            # receiver that gets it twice (sent, then the sender died before marking
            # it) recognises the second by this id (docs/operations.md).
            "notification_id": f"{alarm.id}/{d.round}/{d.step_index}",
            "alarm": alarm.id,
            "municipality": alarm.municipality,
            "kind": alarm.kind,
            "priority": int(alarm.priority),
            "level": d.level,
            "raised_at": alarm.raised_at.isoformat(),
            "reminder": d.kind is DeadlineKind.ACK_TIMEOUT,
        }
        out = []
        if target.mqtt:
            out.append(
                Notification(d.target, "mqtt", NOTIFY_TOPIC.format(target=d.target), payload)
            )
        if target.webhook:
            out.append(Notification(d.target, "webhook", target.webhook, payload))
        return out

    @property
    def pending(self) -> int:
        return len(self._armed)


def _as_stored(row: DecidedRow, stored: Mapping[str, Alarm] | None) -> Alarm | None:
    """The row's alarm as committed: `stored`'s where given, else the row's own."""
    return row.alarm if stored is None else stored.get(row.alarm_id, row.alarm)
