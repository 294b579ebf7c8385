"""Escalation policies: plans, decisions, and exactly-once firing across simulated crashes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alarmhub.config.rules import load_rules
from alarmhub.core.actions import Action, Applied, apply_action
from alarmhub.core.escalation import (
    ACK_TIMEOUT_STEP,
    DEFAULT_P1,
    Deadline,
    DeadlineKind,
    EscalationReason,
    Policy,
    Step,
    ack_reminder,
    apply_decision,
    next_deadline,
    next_for_alarm,
    on_deadline,
    plan,
    undecided,
)
from alarmhub.core.model import Alarm, AlarmState, Priority
from tests.support.helpers import REPO

RULES = load_rules(REPO / "config" / "rules.toml")

T0 = datetime(2026, 5, 4, 12, 0, tzinfo=UTC)
S = timedelta(seconds=1)


def secs(deadlines: list[Deadline]) -> list[tuple[int, int, float]]:
    return [(d.round, d.step_index, (d.due_at - T0).total_seconds()) for d in deadlines]


# --- plans ----------------------------------------------------------------------------


def test_default_p1_plan():
    assert secs(plan(DEFAULT_P1, T0)) == [
        (0, 0, 0), (0, 1, 60), (0, 2, 180),
        (1, 0, 300), (1, 1, 360), (1, 2, 480),
        (2, 0, 600), (2, 1, 660), (2, 2, 780),
    ]  # fmt: skip
    first = plan(DEFAULT_P1, T0)[0]
    assert (first.level, first.target, first.kind) == (1, "operator_queue", DeadlineKind.STEP)


def test_call_list_pattern_primary_secondary_primary_again():
    """Notify the primary at once, secondaries after 90 s, the primary again 90 s later."""
    policy = Policy(
        "call-list",
        (Step(0 * S, "primary", 1), Step(90 * S, "secondary", 2)),
        repeat=3,
    )
    assert [(d.target, (d.due_at - T0).total_seconds()) for d in plan(policy, T0)] == [
        ("primary", 0), ("secondary", 90),
        ("primary", 180), ("secondary", 270),
        ("primary", 360), ("secondary", 450),
        ("primary", 540), ("secondary", 630),
    ]  # fmt: skip


def test_from_previous_offsets_accumulate():
    policy = Policy(
        "chain",
        (Step(0 * S, "a", 1), Step(60 * S, "b", 2), Step(120 * S, "c", 3)),
        from_previous=True,
        repeat=1,
        round_interval=600 * S,
    )
    assert secs(plan(policy, T0)) == [
        (0, 0, 0), (0, 1, 60), (0, 2, 180), (1, 0, 600), (1, 1, 660), (1, 2, 780),
    ]  # fmt: skip


def test_plan_is_in_elapsed_time_across_dst():
    """Raised 01:59:30 CET on the spring day: +60 s is 03:00:30 CEST, not a missing 02:00:30."""
    oslo = ZoneInfo("Europe/Oslo")
    raised = datetime(2026, 3, 29, 1, 59, 30, tzinfo=oslo)
    step = plan(DEFAULT_P1, raised)[1]
    assert step.due_at - raised == 60 * S
    assert step.due_at.astimezone(oslo).hour == 3


@pytest.mark.parametrize(
    "kwargs",
    [
        {"steps": ()},
        {"steps": (Step(60 * S, "a", 1), Step(0 * S, "b", 2))},  # offsets decrease
        {"steps": (Step(0 * S, "a", 1),), "repeat": 2},  # rounds would overlap
        {"steps": (Step(0 * S, "a", 1),), "repeat": -1},
        {"steps": (Step(0 * S, "a", 1),), "ack_timeout": 0 * S},
        {"steps": (Step(100 * S, "a", 1),), "repeat": 1, "round_interval": 50 * S},
    ],
)
def test_policy_validation(kwargs):
    with pytest.raises(ValueError):
        Policy("bad", **kwargs)


@pytest.mark.parametrize(
    "args", [(-S, "a", 1), (S, "", 1), (S, "a", 0)], ids=["negative", "no-target", "level0"]
)
def test_step_validation(args):
    with pytest.raises(ValueError):
        Step(*args)


def test_single_step_repeat_needs_no_round_interval_when_it_has_a_delay():
    policy = Policy("one", (Step(60 * S, "a", 1),), repeat=2)
    assert secs(plan(policy, T0)) == [(0, 0, 60), (1, 0, 180), (2, 0, 300)]


# --- next_deadline and on_deadline -----------------------------------------------------------


def test_next_deadline_skips_fired_rows_in_order():
    assert next_deadline(DEFAULT_P1, T0, set()).key == (0, 0)  # type: ignore[union-attr]
    assert next_deadline(DEFAULT_P1, T0, {(0, 0)}).key == (0, 1)  # type: ignore[union-attr]
    assert next_deadline(DEFAULT_P1, T0, {(0, 0), (0, 2)}).key == (0, 1)  # type: ignore[union-attr]
    everything = {d.key for d in plan(DEFAULT_P1, T0)}
    assert next_deadline(DEFAULT_P1, T0, everything) is None


_STEP = plan(DEFAULT_P1, T0)[1]  # supervisor, due at 60 s


@pytest.mark.parametrize(
    ("state", "acknowledged", "fired", "expected", "notify", "record"),
    [
        (AlarmState.OPEN, False, set(), EscalationReason.ESCALATE, True, True),
        (AlarmState.ACKNOWLEDGED, True, set(), EscalationReason.SKIP_ACKNOWLEDGED, False, True),
        (AlarmState.OPEN, True, set(), EscalationReason.SKIP_ACKNOWLEDGED, False, True),
        (AlarmState.ACKNOWLEDGED, False, set(), EscalationReason.SKIP_ACKNOWLEDGED, False, True),
        (AlarmState.RESOLVED, False, set(), EscalationReason.SKIP_RESOLVED, False, True),
        (AlarmState.RESOLVED, True, set(), EscalationReason.SKIP_RESOLVED, False, True),
        (AlarmState.OPEN, False, {(0, 1)}, EscalationReason.ALREADY_FIRED, False, False),
    ],
)
def test_on_deadline_table(state, acknowledged, fired, expected, notify, record):
    decision = on_deadline(state, acknowledged, _STEP, T0 + 75 * S, fired)
    assert decision.reason is expected
    assert (decision.notify, decision.record) == (notify, record)
    assert decision.late_by == 15 * S


def test_on_deadline_before_due_is_a_caller_bug():
    with pytest.raises(ValueError):
        on_deadline(AlarmState.OPEN, False, _STEP, T0 + 59 * S)


def test_ack_timeout_reminders():
    policy = Policy("p", DEFAULT_P1.steps, ack_timeout=timedelta(minutes=10))
    acked = T0 + 30 * S
    first = ack_reminder(policy, acked, set())
    assert first is not None
    assert (first.kind, first.key, first.due_at) == (
        DeadlineKind.ACK_TIMEOUT,
        (0, ACK_TIMEOUT_STEP),
        acked + timedelta(minutes=10),
    )
    assert (first.target, first.level) == ("operator_queue", 1)
    # The reminder put it back in the queue; taken again two minutes later, the next
    # one is due one timeout after that acknowledgement, under a key of its own.
    reacked = first.due_at + timedelta(minutes=2)
    second = ack_reminder(policy, reacked, {first.key})
    assert second is not None
    assert (second.key, second.due_at) == (
        (1, ACK_TIMEOUT_STEP),
        reacked + timedelta(minutes=10),
    )
    now = first.due_at
    assert on_deadline(AlarmState.ACKNOWLEDGED, True, first, now).reason is (
        EscalationReason.REMIND_ACK_TIMEOUT
    )
    assert on_deadline(AlarmState.RESOLVED, True, first, now).reason is (
        EscalationReason.SKIP_RESOLVED
    )
    assert on_deadline(AlarmState.OPEN, False, first, now).reason is (
        EscalationReason.SKIP_NOT_ACKNOWLEDGED
    )
    assert ack_reminder(DEFAULT_P1, acked, set()) is None


# --- a simulated escalator, with crashes -------------------------------------------------------

_policies = st.builds(
    lambda gaps, repeat, from_previous, extra: Policy(
        "gen",
        tuple(
            Step(timedelta(seconds=g), f"t{i}", i + 1)
            for i, g in enumerate(gaps if from_previous else _cumulative(gaps))
        ),
        repeat=repeat,
        from_previous=from_previous,
        round_interval=timedelta(seconds=sum(gaps) + extra),
    ),
    st.lists(st.integers(0, 300), min_size=1, max_size=4),
    st.integers(0, 3),
    st.booleans(),
    st.integers(1, 300),
)


def _cumulative(gaps: list[int]) -> list[int]:
    out, total = [], 0
    for g in gaps:
        total += g
        out.append(total)
    return out


@settings(max_examples=300, deadline=None)
@given(
    policy=_policies,
    ack_after=st.one_of(st.none(), st.integers(0, 1500)),
    resolve_after=st.one_of(st.none(), st.integers(0, 1500)),
    ticks=st.lists(
        st.tuples(st.integers(0, 200), st.booleans(), st.booleans()), min_size=1, max_size=40
    ),
)
def test_escalator_fires_each_due_step_exactly_once_across_crashes(
    policy, ack_after, resolve_after, ticks
):
    """The shell: wake, decide every due deadline, commit the row and its effect together.

    Each tick may crash before committing (the decision and its notification are
    lost together), and may lose all in-memory state (the cursor into the plan),
    keeping only the committed rows. Time advances in random steps.
    """
    if ack_after is not None and resolve_after is not None:
        resolve_after = max(resolve_after, ack_after)
    rows: dict[tuple[int, int], tuple[EscalationReason, datetime]] = {}  # committed
    cursor = 0  # in-memory: how far into plan() this process got
    planned = plan(policy, T0)
    now = T0

    def state_at(t: datetime) -> tuple[AlarmState, bool]:
        acked = ack_after is not None and t >= T0 + ack_after * S
        if resolve_after is not None and t >= T0 + resolve_after * S:
            return AlarmState.RESOLVED, acked
        return (AlarmState.ACKNOWLEDGED if acked else AlarmState.OPEN), acked

    for advance, crash_before_commit, lose_memory in ticks:
        now += advance * S
        if lose_memory:
            cursor = 0  # a restarted process starts from the rows alone
        state, acked = state_at(now)
        batch: dict[tuple[int, int], tuple[EscalationReason, datetime]] = {}
        # Two ways a shell finds work: walking its in-memory plan, and asking the rows.
        while cursor < len(planned) and planned[cursor].due_at <= now:
            decision = on_deadline(state, acked, planned[cursor], now, rows.keys() | batch.keys())
            if decision.record:
                batch[decision.deadline.key] = (decision.reason, now)
            else:
                assert decision.reason is EscalationReason.ALREADY_FIRED
            cursor += 1
        while (d := next_deadline(policy, T0, rows.keys() | batch.keys())) and d.due_at <= now:
            decision = on_deadline(state, acked, d, now, rows.keys() | batch.keys())
            assert decision.reason is not EscalationReason.ALREADY_FIRED
            batch[d.key] = (decision.reason, now)
        if not crash_before_commit:
            # One transaction: marks and notifications together; keys are never rewritten.
            assert not (batch.keys() & rows.keys())
            rows.update(batch)
    # Finish: a last clean pass at the end time.
    state, acked = state_at(now)
    while (d := next_deadline(policy, T0, rows.keys())) and d.due_at <= now:
        rows[d.key] = (on_deadline(state, acked, d, now, rows.keys()).reason, now)

    due = [d for d in planned if d.due_at <= now]
    # Every due step was decided and committed exactly once (no key committed twice, above).
    assert set(rows) == {d.key for d in due}
    for key, (reason, decided_at) in rows.items():
        state, acked = state_at(decided_at)
        if reason is EscalationReason.ESCALATE:
            # An acknowledged (or resolved) alarm never escalates.
            assert state is AlarmState.OPEN
            assert not acked
        if state is AlarmState.OPEN and not acked:
            assert reason is EscalationReason.ESCALATE, key
    if ack_after is None and resolve_after is None:
        assert all(reason is EscalationReason.ESCALATE for reason, _ in rows.values())


@settings(max_examples=200, deadline=None)
@given(
    afters=st.lists(st.integers(0, 600), min_size=1, max_size=4),
    from_previous=st.booleans(),
    repeat=st.integers(0, 3),
    generation=st.integers(0, 2),
    fired_bits=st.integers(0, 2**16 - 1),
    other_bits=st.integers(0, 2**16 - 1),
)
def test_next_deadline_is_the_first_undecided_deadline_of_the_plan(
    afters: list[int],
    from_previous: bool,
    repeat: int,
    generation: int,
    fired_bits: int,
    other_bits: int,
) -> None:
    """next_deadline walks a cached schedule (issue 18): it must agree with plan() exactly,
    and `undecided` with it, whatever another generation's keys add to `fired`."""
    steps = tuple(
        Step(a * S, f"t{i}", i + 1)
        for i, a in enumerate(afters if from_previous else sorted(afters))
    )
    interval = (sum(afters) + 1) * S if repeat else None
    policy = Policy("p", steps, repeat=repeat, from_previous=from_previous, round_interval=interval)
    start = datetime(2026, 10, 25, 0, 30, tzinfo=ZoneInfo("Europe/Oslo"))  # across a DST change
    deadlines = plan(policy, start, generation)
    fired = {d.key for i, d in enumerate(deadlines) if fired_bits >> i & 1}
    expected = next((d for d in deadlines if d.key not in fired), None)
    assert next_deadline(policy, start, fired, generation) == expected
    others = plan(policy, start, generation + 1)
    fired |= {d.key for i, d in enumerate(others) if other_bits >> i & 1}
    assert next_deadline(policy, start, fired, generation) == expected
    assert undecided(policy, fired, generation) is (expected is not None)


def test_each_acknowledgement_gets_its_reminder_one_timeout_later_round_after_round():
    """The gap grew by one timeout a round: 1, 2, 3 x ack_timeout after each new
    acknowledgement, against "again every ack_timeout_s" (found in review, 2026-12-06)."""
    policy = RULES.policies["p1"]
    timeout = policy.ack_timeout
    assert timeout is not None
    alarm = Alarm(
        "a1", "pend", "0301", "button", Priority.CRITICAL, AlarmState.OPEN, T0, T0, policy="p1"
    )
    step = next_for_alarm(alarm, policy, set())
    assert step is not None
    fired = {step.key}  # the first step, decided at raise
    taken = apply_action(alarm, Action.ACKNOWLEDGE, "kari", T0 + S)
    assert isinstance(taken, Applied)
    alarm = taken.alarm
    gaps = []
    for _ in range(3):
        reminder = next_for_alarm(alarm, policy, fired)
        assert reminder is not None
        assert reminder.kind is DeadlineKind.ACK_TIMEOUT
        assert alarm.acknowledged_at is not None
        gaps.append(reminder.due_at - alarm.acknowledged_at)
        decision = on_deadline(alarm.state, True, reminder, reminder.due_at, fired)
        fired.add(reminder.key)
        reminded, _ = apply_decision(alarm, decision, reminder.due_at)
        assert reminded is not None
        assert reminded.state is AlarmState.OPEN  # back in the queue
        alarm = reminded
        while (later := next_for_alarm(alarm, policy, fired)) is not None:
            fired.add(later.key)  # the policy's other steps, overdue by now
        again = apply_action(
            alarm, Action.ACKNOWLEDGE, "kari", reminder.due_at + timedelta(minutes=1)
        )
        assert isinstance(again, Applied)
        alarm = again.alarm
    assert gaps == [timeout, timeout, timeout]
