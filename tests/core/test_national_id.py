"""National identity and organisation numbers as tables of plain values (core/national_id.py)."""

from __future__ import annotations

import re
from datetime import date

import pytest
from hypothesis import given
from hypothesis import strategies as st

from alarmhub.core.national_id import (
    IdKind,
    Invalid,
    NationalId,
    Problem,
    check_digits,
    mask,
    parse_national_id,
    valid_organisation_number,
)
from tests.support.national_ids import (
    KARI,
    OLA,
    complete,
    synthetic,
    synthetic_nin,
    synthetic_nins,
)


def _flip_last(value: str) -> str:
    return value[:-1] + str((int(value[-1]) + 1) % 10)


def _completed(nine: str) -> str:
    number = complete(nine)
    assert number is not None, nine
    return number


@pytest.mark.parametrize(
    ("text", "kind", "synthetic_", "born"),
    [
        (KARI, IdKind.FODSELSNUMMER, True, date(1990, 1, 1)),
        (OLA, IdKind.D_NUMBER, True, date(1958, 5, 15)),
        (f"  {KARI}\n", IdKind.FODSELSNUMMER, True, date(1990, 1, 1)),
        # Individual numbers 500-999 with a year <= 39: born in the 2000s.
        (synthetic("2902", "12", "612"), IdKind.FODSELSNUMMER, True, date(2012, 2, 29)),
        # The check digits worked by hand: 018180123 -> k1 = 11 - 140 % 11 = 3, k2 = 7.
        ("01818012337", IdKind.FODSELSNUMMER, True, date(1980, 1, 1)),
        ("41818012320", IdKind.D_NUMBER, True, date(1980, 1, 1)),
        # The VKP guide's own example patient (not synthetic): 1935, individual 001.
        ("05073500186", IdKind.FODSELSNUMMER, False, date(1935, 7, 5)),
    ],
)
def test_valid_numbers_are_recognised(
    text: str, kind: IdKind, synthetic_: bool, born: date
) -> None:
    nid = parse_national_id(text)
    assert isinstance(nid, NationalId)
    assert (nid.kind, nid.synthetic, nid.born) == (kind, synthetic_, born)
    assert nid.value == text.strip()


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", Problem.LENGTH),
        (KARI[:-1], Problem.LENGTH),
        (KARI + "0", Problem.LENGTH),
        (KARI[:5] + "x" + KARI[6:], Problem.NOT_DIGITS),
        ("٠" * 11, Problem.NOT_DIGITS),  # Arabic-Indic digits are digits to str.isdigit
        ("０１８１８０１２３３７", Problem.NOT_DIGITS),  # fullwidth digits likewise
        (_flip_last(KARI), Problem.CHECK_DIGITS),
        (KARI[:2] + KARI[3] + KARI[2] + KARI[4:], Problem.CHECK_DIGITS),  # two swapped
        ("01818012347", Problem.CHECK_DIGITS),  # first check digit off by one
        (synthetic("3002", "90", "123"), Problem.DATE),  # 30 February
        (synthetic("0113", "90", "123"), Problem.DATE),  # month 13
        (_completed("328180123"), Problem.DATE),  # day 32
        (_completed("010080123"), Problem.DATE),  # month 0
        (synthetic("0101", "45", "800"), Problem.CENTURY),  # 800 with year 45: none
        (_completed("014180123"), Problem.H_NUMBER),  # month + 40: a help number
    ],
)
def test_invalid_numbers_say_why_without_the_number(text: str, problem: Problem) -> None:
    result = parse_national_id(text)
    assert result == Invalid(problem)
    assert re.search(r"\d{3,}", result.reason) is None, result.reason  # no part of a number
    assert str(result) == result.reason


def test_a_number_prints_masked() -> None:
    nid = parse_national_id(KARI)
    assert isinstance(nid, NationalId)
    assert nid.masked == KARI[:6] + "*****"
    assert mask(KARI) == nid.masked
    for shown in (repr(nid), str(nid), f"{nid}", f"{[nid]}"):
        assert KARI not in shown
        assert KARI[6:] not in shown
        assert nid.masked in shown


def test_the_check_digits_catch_every_single_digit_error() -> None:
    """Mod-11 with these weights detects any one mistyped digit."""
    for position in range(11):
        for digit in "0123456789":
            if digit == KARI[position]:
                continue
            typo = KARI[:position] + digit + KARI[position + 1 :]
            assert isinstance(parse_national_id(typo), Invalid), typo


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
    result = parse_national_id(nin)
    assert isinstance(result, NationalId)
    assert result.born == born


def test_nine_digits_without_a_first_check_digit_complete_to_no_number() -> None:
    """A remainder that asks for check digit 10 means no number starts so: all refused."""
    nine = next(f"0181801{i:02d}" for i in range(100) if check_digits(f"0181801{i:02d}") is None)
    assert {parse_national_id(f"{nine}{k:02d}") for k in range(100)} == {
        Invalid(Problem.CHECK_DIGITS)
    }


@given(st.integers(min_value=0, max_value=10_000))
def test_every_generated_synthetic_number_is_valid_and_synthetic(seed: int) -> None:
    for nin in synthetic_nins(2, seed=seed) + synthetic_nins(1, seed=seed, d_number=True):
        result = parse_national_id(nin)
        assert isinstance(result, NationalId)
        assert result.synthetic


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
