"""National identity numbers and organisation numbers (core/journal/nin.py) as tables."""

from __future__ import annotations

from datetime import date

import pytest
from hypothesis import given
from hypothesis import strategies as st

from alarmhub.core.journal.nin import (
    InvalidNin,
    NinKind,
    NinProblem,
    ValidNin,
    check_digits,
    check_nin,
    valid_organisation_number,
)
from tests.support.nin import synthetic_nin, synthetic_nins

# (number, what it is). The check digits of the first were worked by hand:
# 018180123 -> k1 = 11 - 140 % 11 = 3, k2 = 11 - 114 % 11 = 7.
VALID = [
    ("01818012337", ValidNin(NinKind.FODSELSNUMMER, True, date(1980, 1, 1))),
    ("41818012320", ValidNin(NinKind.D_NUMMER, True, date(1980, 1, 1))),
    # The VKP guide's own example patient (not synthetic): 1935, individual 001.
    ("05073500186", ValidNin(NinKind.FODSELSNUMMER, False, date(1935, 7, 5))),
]


@pytest.mark.parametrize(("value", "expected"), VALID)
def test_valid_numbers_are_recognised_with_their_kind_and_birth_date(
    value: str, expected: ValidNin
) -> None:
    assert check_nin(value) == expected


# (number, problem). None of these names anyone: each is refused.
INVALID = [
    ("0181801233", NinProblem.LENGTH),
    ("018180123370", NinProblem.LENGTH),
    ("", NinProblem.LENGTH),
    ("0181801233a", NinProblem.NOT_DIGITS),
    ("018180 1233", NinProblem.NOT_DIGITS),
    ("０１８１８０１２３３７", NinProblem.NOT_DIGITS),  # fullwidth digits: isdigit() says yes
    ("01818012338", NinProblem.CHECK_DIGITS),  # last digit off by one
    ("01818012347", NinProblem.CHECK_DIGITS),  # first check digit off by one
    ("10818012337", NinProblem.CHECK_DIGITS),  # two digits swapped
    ("32818012300", NinProblem.DATE),  # day 32
    ("30828012300", NinProblem.DATE),  # 30 February (synthetic month 82)
    ("01938012300", NinProblem.DATE),  # synthetic month 13
    ("01008012300", NinProblem.DATE),  # month 0
    ("01817580000", NinProblem.DATE),  # individual 800 in year 75: no century has it
    ("01418012300", NinProblem.H_NUMBER),  # month + 40: a help number
]


@pytest.mark.parametrize(("value", "problem"), INVALID)
def test_invalid_numbers_are_refused_with_a_named_reason(value: str, problem: NinProblem) -> None:
    result = check_nin(value)
    assert result == InvalidNin(problem)
    assert value not in str(result) or not value  # the reason never repeats the number


# (individual number, two-digit year, birth year): Folkeregisteret's century ranges.
CENTURIES = [
    (0, 80, 1980),
    (499, 99, 1999),
    (500, 60, 1860),
    (749, 54, 1854),
    (500, 39, 2039),
    (999, 0, 2000),
    (900, 40, 1940),
]


@pytest.mark.parametrize(("individual", "year2", "year"), CENTURIES)
def test_the_individual_number_gives_the_century(individual: int, year2: int, year: int) -> None:
    born = date(year, 3, 14)
    nin = synthetic_nin(born, individual)
    if nin is None:  # this individual number has no check digit for this date: the next
        nin = synthetic_nin(born, individual - 1 if individual % 100 else individual + 1)
    assert nin is not None
    result = check_nin(nin)
    assert isinstance(result, ValidNin)
    assert result.born == born


def test_nine_digits_without_a_first_check_digit_complete_to_no_number() -> None:
    """A remainder that asks for check digit 10 means no number starts so: all refused."""
    nine = next(f"0181801{i:02d}" for i in range(100) if check_digits(f"0181801{i:02d}") is None)
    assert {check_nin(f"{nine}{k:02d}") for k in range(100)} == {
        InvalidNin(NinProblem.CHECK_DIGITS)
    }


@given(st.integers(min_value=0, max_value=10_000))
def test_every_generated_synthetic_number_is_valid_and_synthetic(seed: int) -> None:
    for nin in synthetic_nins(2, seed=seed) + synthetic_nins(1, seed=seed, d_number=True):
        result = check_nin(nin)
        assert isinstance(result, ValidNin)
        assert result.synthetic


@given(st.integers(min_value=0, max_value=10), st.integers(min_value=1, max_value=9))
def test_any_single_digit_changed_is_refused(position: int, delta: int) -> None:
    """Mod-11 with two check digits catches every single-digit error."""
    valid = "01818012337"
    changed = valid[:position] + str((int(valid[position]) + delta) % 10) + valid[position + 1 :]
    assert isinstance(check_nin(changed), InvalidNin)


@pytest.mark.parametrize(
    ("number", "valid"),
    [
        ("974778807", True),
        ("974760673", True),
        ("974778808", False),
        ("97477880", False),
        ("97477880x", False),
        ("123456789", False),
    ],
)
def test_organisation_numbers_are_checked_mod_11(number: str, valid: bool) -> None:
    assert valid_organisation_number(number) is valid
