"""The rules file's [journal.<kind>] sections and the check that every exported kind has one."""

from __future__ import annotations

import pytest

from alarmhub.config.journal import journal_problems, kinds_by_municipality
from alarmhub.config.rules import RulesError, parse_rules
from alarmhub.core.journal.mapping import Unmapped, parse_municipalities
from tests.support.helpers import REPO

SHIPPED = (REPO / "config" / "rules.toml").read_text()
BASE = """
[policies.p1]
steps = [{ after_s = 0, target = "operator_queue", level = 1 }]
[policies.p2]
steps = [{ after_s = 0, target = "operator_queue", level = 1 }]
[policies.p4]
steps = [{ after_s = 0, target = "operator_queue", level = 1 }]

[[rules]]
name = "press"
event = "button.pressed"
alarm = "button"
priority = 1

[[rules]]
name = "battery"
event = "battery.low"
alarm = "battery_low"
priority = 4

[municipalities."4601"]
[[municipalities."4601".rules]]
name = "fall in Bergen"
event = "fall.detected"
alarm = "fall"
priority = 1
"""
BUTTON = """
[journal.button]
alert = "3"
"""
TECHNICAL = """
[journal.battery_low]
export = false
[journal.unregistered_device]
export = false
"""


def test_the_shipped_rules_map_every_kind_for_every_municipality() -> None:
    rules = parse_rules(SHIPPED)
    assert journal_problems(rules, {"0301", "4601", "5001"}) == []
    button = rules.journal.kinds["button"]
    assert (button.alert, button.mode, button.reason) == ("3", "2", "2")
    # The cause and action choices are the one [resolution] list, not the journal's.
    assert not hasattr(button, "causes")
    assert not rules.journal.kinds["battery_low"].export


def test_a_kind_without_a_section_is_refused_only_where_export_is_on() -> None:
    rules = parse_rules(BASE + BUTTON + TECHNICAL)
    assert journal_problems(rules, set()) == []
    assert journal_problems(rules, {"0301"}) == []  # raises no fall: global rules only
    assert journal_problems(rules, {"0301", "4601"}) == [Unmapped("4601", "fall")]
    message = str(Unmapped("4601", "fall"))
    assert "[journal.fall]" in message
    assert "4601" in message
    assert "export = false" in message


def test_the_kinds_a_municipality_can_raise_include_alarmhub_s_own() -> None:
    kinds = kinds_by_municipality(parse_rules(BASE))
    assert kinds["*"] == {"button", "battery_low", "unregistered_device"}
    assert kinds["4601"] == kinds["*"] | {"fall"}


@pytest.mark.parametrize(
    ("section", "complaint"),
    [
        ('[journal.button]\nalert = "99"\n', "not a code of vkp-alert-code-v090"),
        ('[journal.button]\nmode = "2"\n', "needs `alert`"),
        ('[journal.button]\nalert = "3"\nmode = "7"\n', "not a vkp-encounter-mode-v090 code"),
        ('[journal.button]\nalert = "3"\nreason = "3"\n', "not a vkp-encounter-reason-v090"),
        ('[journal.button]\nexport = false\nalert = "3"\n', "export = false takes no alert"),
        # The choices are [resolution.<kind>]'s: one list, not a second one here.
        (
            '[journal.button]\nalert = "3"\ncauses = [{ code = "a", text = "A" }]\n',
            "journal.button.causes",
        ),
        ('[journal.button]\nalert = "3"\nalrt = "3"\n', "journal.button.alrt"),
        ('[journal.buton]\nalert = "3"\n', "journal.buton: no rule raises alarm kind 'buton'"),
    ],
)
def test_a_bad_journal_section_is_refused_naming_the_key(section: str, complaint: str) -> None:
    with pytest.raises(RulesError) as caught:
        parse_rules(BASE + section)
    assert complaint in str(caught.value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("", frozenset()), ("0301", {"0301"}), (" 0301, 4601 ,", {"0301", "4601"})],
)
def test_municipality_lists_parse(text: str, expected: frozenset[str]) -> None:
    assert parse_municipalities(text) == expected


@pytest.mark.parametrize("text", ["301", "0301,oslo", "03011"])
def test_a_bad_municipality_code_is_named(text: str) -> None:
    with pytest.raises(ValueError, match="four-digit municipality code"):
        parse_municipalities(text)
