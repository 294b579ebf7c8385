"""Issue 12 items 5 and 6 as tables of plain values on the pure core.

5: escalation never ends without anyone knowing: the last step passing with the
   alarm still open is recorded; every default policy has an acknowledgement timeout.
6: a missing policy means no escalation: a rules file must have a policy for every
   priority it can raise, and a reload may not strand an open alarm's policy.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from alarmhub.config.rules import RulesError, parse_rules
from alarmhub.core.escalation import (
    Policy,
    Step,
    apply_decision,
    exhaustion,
    next_for_alarm,
    on_deadline,
    orphaned,
)
from alarmhub.core.model import Alarm, AlarmState, Priority, TimelineType
from tests.support.helpers import REPO

NIGHT = datetime(2026, 11, 22, 1, 0, tzinfo=UTC)  # 02:00 in Oslo
RULES_TEXT = (REPO / "config" / "rules.toml").read_text()
RULES = parse_rules(RULES_TEXT)
P1_OPEN = Alarm(
    "old", "pend-1", "0301", "button", Priority.CRITICAL, AlarmState.OPEN, NIGHT, NIGHT, policy="p1"
)


# --- item 5: escalation never ends without anyone knowing ------------------------------

TWO_STEPS = Policy(
    "p3", (Step(timedelta(0), "operator_queue", 1), Step(timedelta(seconds=900), "supervisor", 2))
)
RAISED = Alarm(
    "a",
    "disp-1",
    "0301",
    "dose_missed",
    Priority.NORMAL,
    AlarmState.OPEN,
    NIGHT,
    NIGHT,
    policy="p3",
)

# (the alarm when the policy runs out, exhausted?)
EXHAUSTION = [
    (RAISED, True),
    (replace(RAISED, state=AlarmState.ACKNOWLEDGED, acknowledged_at=NIGHT), False),
    (replace(RAISED, suppressed_by="silence:s1"), False),
    (replace(RAISED, escalation_exhausted_at=NIGHT), False),  # marked once per run
]


@pytest.mark.parametrize(("alarm", "exhausted"), EXHAUSTION)
def test_the_last_step_with_the_alarm_still_open_is_recorded(alarm: Alarm, exhausted: bool) -> None:
    fired: set[tuple[int, int]] = set()
    current = RAISED
    # Walk the policy as the escalator does, up to and including the last step.
    while (deadline := next_for_alarm(current, TWO_STEPS, fired)) is not None:
        decision = on_deadline(current.state, False, deadline, deadline.due_at, fired)
        fired.add(deadline.key)
        changed, _ = apply_decision(current, decision, deadline.due_at)
        current = changed or current
    at = NIGHT + timedelta(seconds=900)
    result = exhaustion(
        replace(alarm, escalation_level=current.escalation_level), TWO_STEPS, fired, at
    )
    assert (result is not None) is exhausted
    if result is not None:
        marked, entry = result
        assert marked.escalation_exhausted_at == at
        assert (entry.type, entry.detail["policy"], entry.detail["level"]) == (
            TimelineType.ESCALATION_EXHAUSTED,
            "p3",
            2,
        )


def test_a_step_still_to_come_is_not_exhaustion() -> None:
    assert exhaustion(RAISED, TWO_STEPS, {(0, 0)}, NIGHT) is None


@pytest.mark.parametrize("name", ["p1", "p2", "p3", "p4"])
def test_every_default_policy_has_an_acknowledgement_timeout(name: str) -> None:
    # An acknowledged alarm is never forgotten: a reminder comes after the timeout.
    assert RULES.policies[name].ack_timeout is not None


# --- item 6: a missing policy means no escalation: refused ------------------------------

# (what to do to the default rules, error expected in the message or None: loads)
POLICY_FILES: list[tuple[Callable[[str], str], str | None]] = [
    (lambda t: t.replace("[policies.p1]", "[policies.p1_renamed]"), "no policy 'p1'"),
    (lambda t: t.replace("[policies.p4]", "[policies.unused]"), "no policy 'p4'"),
    (lambda t: t, None),
    # No rule raises priority 2 under p2, but a stray device's press does (core/strays.py).
    (
        lambda t: t.replace("[policies.p2]", "[policies.person]").replace(
            "priority = 2\n", 'priority = 2\npolicy = "person"\n'
        ),
        "no policy 'p2': a press from an unregistered",
    ),
    (
        lambda t: (
            t.replace("[policies.p1]", "[policies.urgent]")
            .replace(
                'alarm = "button"\npriority = 1',
                'alarm = "button"\npriority = 1\npolicy = "urgent"',
            )
            .replace(
                'alarm = "fall"\npriority = 1', 'alarm = "fall"\npriority = 1\npolicy = "urgent"'
            )
        ),
        None,
    ),
    (
        lambda t: (
            t
            + '\n[municipalities."0301"]\nrules = [{ name = "m", event = "tamper", alarm = "m_tamper", priority = 2 }]\n'
            '[municipalities."0301".policies.p2]\nsteps = [{ after_s = 0, target = "operator_queue", level = 1 }]\n'
        ),
        None,
    ),
]


@pytest.mark.parametrize(("edit", "error"), POLICY_FILES)
def test_a_rules_file_needs_a_policy_for_every_priority_it_raises(
    edit: Callable[[str], str], error: str | None
) -> None:
    text = edit(RULES_TEXT)
    if error is None:
        parse_rules(text)
        return
    with pytest.raises(RulesError, match=error):
        parse_rules(text)


# (the policy an open alarm was raised under, municipality, the new rules' policies, stranded?)
RELOADS = [
    ("p1", "0301", RULES_TEXT, False),
    (
        "p1",
        "0301",
        RULES_TEXT.replace("[policies.p1]", "[policies.p1x]").replace(
            "priority = 1\n", 'priority = 1\npolicy = "p1x"\n'
        ),
        True,
    ),
    ("local", "4601", RULES_TEXT, True),
    (None, "0301", RULES_TEXT, False),  # raised with no policy: nothing to strand
]


@pytest.mark.parametrize(("policy", "municipality", "new_rules", "stranded"), RELOADS)
def test_a_reload_that_would_strand_an_open_alarms_policy_is_found(
    policy: str | None, municipality: str, new_rules: str, stranded: bool
) -> None:
    alarm = replace(P1_OPEN, policy=policy, municipality=municipality)
    resolved = replace(alarm, id="r", state=AlarmState.RESOLVED)
    rules = parse_rules(new_rules)
    assert [a.id for a in orphaned([alarm, resolved], rules.policy_named)] == (
        ["old"] if stranded else []
    )
