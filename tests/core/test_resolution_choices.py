"""Resolve with a cause and an action taken (issue 17): the rules file's lists and the core."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from alarmhub.config.rules import RulesError, load_rules, parse_rules
from alarmhub.core.actions import Action, Applied, Conflict, apply_action
from alarmhub.core.model import Alarm, AlarmState, Priority, TimelineType
from alarmhub.core.resolution import BUILTIN_DEFAULT, Choice, Choices, Resolution, Unknown, choose
from tests.support.helpers import REPO

NOW = datetime(2026, 3, 1, 2, 0, tzinfo=UTC)
BASE = """
[policies.p1]
steps = [{ after_s = 0, target = "operator_queue", level = 1 }]

[policies.p2]
steps = [{ after_s = 0, target = "operator_queue", level = 1 }]

[[rules]]
name = "press"
event = "button.pressed"
alarm = "button"
priority = 1
"""
LISTS = """
[resolution.default]
causes = [{ code = "unknown", text = "Ukjent" }]
actions = [{ code = "none", text = "Ingen" }]

[resolution.button]
causes = [{ code = "fall", text = "Fall" }, { code = "pressed_by_mistake", text = "Uhell" }]
actions = [{ code = "talked", text = "Samtale" }]
"""


def test_the_shipped_rules_have_lists_for_fall_and_a_default() -> None:
    rules = load_rules(REPO / "config" / "rules.toml")
    fall = rules.resolutions.for_kind("fall")
    assert fall.cause("fall") == Choice("fall", "Fall")
    # A kind without its own list gets the file's default.
    assert rules.resolutions.for_kind("button") is rules.resolutions.default
    assert rules.resolutions.default.action("talked") is not None


def test_lists_per_kind_and_default() -> None:
    rules = parse_rules(LISTS + BASE)
    assert [c.code for c in rules.resolutions.for_kind("button").causes] == [
        "fall",
        "pressed_by_mistake",
    ]
    assert rules.resolutions.for_kind("tamper").causes == (Choice("unknown", "Ukjent"),)


def test_without_a_default_the_builtin_list_applies() -> None:
    assert parse_rules(BASE).resolutions.for_kind("button") == BUILTIN_DEFAULT


@pytest.mark.parametrize(
    ("lists", "message"),
    [
        (
            '[resolution.buton]\ncauses = [{code="a", text="A"}]\nactions = [{code="b", text="B"}]\n',
            "resolution.buton: no rule raises alarm kind 'buton'",
        ),
        ('[resolution.button]\ncauses = []\nactions = [{code="b", text="B"}]\n', "causes"),
        (
            (
                '[resolution.button]\ncauses = [{code="a", text="A"}, {code="a", text="B"}]\n'
                'actions = [{code="b", text="B"}]\n'
            ),
            "unique",
        ),
        (
            '[resolution.button]\ncauses = [{code="A b", text="A"}]\nactions = [{code="b", text="B"}]\n',
            "code",
        ),
        (
            (
                '[resolution.button]\ncauses = [{code="a", text="A", colour="red"}]\n'
                'actions = [{code="b", text="B"}]\n'
            ),
            "colour",
        ),
        ('[resolution.button]\ncauses = [{code="a", text="A"}]\n', "actions"),
    ],
)
def test_a_bad_list_is_refused_naming_where(lists: str, message: str) -> None:
    with pytest.raises(RulesError, match="resolution") as caught:
        parse_rules(lists + BASE, "rules.toml")
    assert message in str(caught.value)


CHOICES = Choices(
    causes=(Choice("fall", "Fall"), Choice("unknown", "Ukjent")),
    actions=(Choice("talked", "Samtale"),),
)


@pytest.mark.parametrize(
    ("cause", "action", "expected"),
    [
        (None, None, Resolution()),
        ("fall", None, Resolution(Choice("fall", "Fall"))),
        ("fall", "talked", Resolution(Choice("fall", "Fall"), None, Choice("talked", "Samtale"))),
        ("slipped", "talked", Unknown("cause", "slipped", ("fall", "unknown"))),
        ("fall", "sang", Unknown("action_taken", "sang", ("talked",))),
    ],
)
def test_choose_looks_codes_up_in_the_kinds_list(
    cause: str | None, action: str | None, expected: Resolution | Unknown
) -> None:
    assert choose(CHOICES, cause, action) == expected


def test_an_unknown_code_names_the_allowed_ones() -> None:
    picked = choose(CHOICES, "slipped", None)
    assert isinstance(picked, Unknown)
    assert (
        picked.message
        == "cause 'slipped' is not a choice for this alarm kind; allowed: fall, unknown"
    )


def _alarm() -> Alarm:
    raised = NOW - timedelta(minutes=3)
    return Alarm(
        "a1", "pend-1", "0301", "button", Priority.CRITICAL, AlarmState.OPEN, raised, raised
    )


def test_resolving_stores_the_cause_and_action_on_the_alarm_and_its_timeline() -> None:
    r = Resolution(Choice("fall", "Fall"), "lå på badet", Choice("talked", "Samtale"), None)
    result = apply_action(_alarm(), Action.RESOLVE, "kari", NOW, outcome="helped", resolution=r)
    assert isinstance(result, Applied)
    a = result.alarm
    assert (a.state, a.outcome, a.cause, a.cause_text, a.action_taken, a.action_text) == (
        AlarmState.RESOLVED,
        "helped",
        "fall",
        "lå på badet",
        "talked",
        None,
    )
    resolved = [e for e in result.timeline if e.type is TimelineType.RESOLVED]
    assert resolved[0].detail == {
        "outcome": "helped",
        "cause": "fall",
        "cause_label": "Fall",
        "cause_text": "lå på badet",
        "action_taken": "talked",
        "action_label": "Samtale",
    }


def test_resolving_without_them_is_as_before() -> None:
    result = apply_action(_alarm(), Action.RESOLVE, "kari", NOW, outcome="false_alarm")
    assert isinstance(result, Applied)
    assert (result.alarm.cause, result.alarm.action_taken) == (None, None)
    assert result.timeline[-1].detail == {"outcome": "false_alarm"}


def test_a_free_text_too_long_is_refused() -> None:
    r = Resolution(None, "x" * 501)
    result = apply_action(_alarm(), Action.RESOLVE, "kari", NOW, outcome="helped", resolution=r)
    assert isinstance(result, Conflict)
    assert "500" in result.message


def test_the_automatic_outcome_is_refused_to_an_operator() -> None:
    """`auto` is alarmhub's own resolution, the one a flap reopens (core/judge.py): an
    operator's answer stored with it came back open on the door's next opening, and its
    journal note, on its way, was given up as `not resolved` (issue 17)."""
    result = apply_action(_alarm(), Action.RESOLVE, "kari", NOW, outcome="auto")
    assert isinstance(result, Conflict)
    assert "auto" in result.message
