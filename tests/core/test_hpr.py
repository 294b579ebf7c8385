"""HPR numbers (core/hpr.py) and the journal note's author (core/journal/document.py)."""

from __future__ import annotations

import pytest

from alarmhub.core.hpr import HprProblem, InvalidHpr, parse_hpr
from alarmhub.core.journal import codes
from alarmhub.core.journal.document import Author, author_of


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1234567", "1234567"),
        ("7125186", "7125186"),
        ("9", "9"),
        ("123456789", "123456789"),
        ("007125186", "7125186"),  # padded to nine by some systems: the same person
        (" 1234567\n", "1234567"),
        ("", InvalidHpr(HprProblem.LENGTH)),
        ("   ", InvalidHpr(HprProblem.LENGTH)),
        ("1234567890", InvalidHpr(HprProblem.LENGTH)),
        ("000000000", InvalidHpr(HprProblem.ZERO)),
        ("0", InvalidHpr(HprProblem.ZERO)),
        ("12-34567", InvalidHpr(HprProblem.NOT_DIGITS)),
        ("HPR1234567", InvalidHpr(HprProblem.NOT_DIGITS)),
        ("123 4567", InvalidHpr(HprProblem.NOT_DIGITS)),
        ("١٢٣٤٥٦٧", InvalidHpr(HprProblem.NOT_DIGITS)),  # Arabic-Indic digits: not 0-9
        ("-1234567", InvalidHpr(HprProblem.NOT_DIGITS)),
    ],
)
def test_parse_hpr(text: str, expected: str | InvalidHpr) -> None:
    assert parse_hpr(text) == expected


def test_every_problem_has_a_reason_that_does_not_repeat_the_text() -> None:
    for problem in HprProblem:
        reason = InvalidHpr(problem).reason
        assert reason.startswith("an HPR number")
        assert "12-34567" not in reason


@pytest.mark.parametrize(
    ("user", "hpr", "expected"),
    [
        ("kari", "1234567", Author(codes.HPR_SYSTEM, "1234567", "kari")),
        ("kari", "007125186", Author(codes.HPR_SYSTEM, "7125186", "kari")),
        ("kari", None, Author(codes.USER_SYSTEM, "kari", "kari")),
        # A stored value that is not an HPR number (written past the checks) is not sent.
        ("kari", "not-a-number", Author(codes.USER_SYSTEM, "kari", "kari")),
        ("kari", "", Author(codes.USER_SYSTEM, "kari", "kari")),
    ],
)
def test_the_author_is_named_by_hpr_number_else_by_user_name(
    user: str, hpr: str | None, expected: Author
) -> None:
    assert author_of(user, hpr) == expected
    assert codes.HPR_SYSTEM == "urn:oid:2.16.578.1.12.4.1.4.4"
