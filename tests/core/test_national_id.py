"""National identity numbers as tables of plain values (core/national_id.py)."""

from __future__ import annotations

import re
from datetime import date

import pytest

from alarmhub.core.national_id import IdKind, Invalid, NationalId, mask, parse_national_id
from tests.support.national_ids import KARI, OLA, synthetic


def _flip_last(value: str) -> str:
    return value[:-1] + str((int(value[-1]) + 1) % 10)


@pytest.mark.parametrize(
    ("text", "kind", "synthetic_", "born"),
    [
        (KARI, IdKind.FODSELSNUMMER, True, date(1990, 1, 1)),
        (OLA, IdKind.D_NUMBER, True, date(1958, 5, 15)),
        (f"  {KARI}\n", IdKind.FODSELSNUMMER, True, date(1990, 1, 1)),
        # Individual numbers 500-999 with a year <= 39: born in the 2000s.
        (synthetic("2902", "12", "612"), IdKind.FODSELSNUMMER, True, date(2012, 2, 29)),
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
    ("text", "reason"),
    [
        ("", "11 digits"),
        (KARI[:-1], "11 digits"),
        (KARI + "0", "11 digits"),
        (KARI[:5] + "x" + KARI[6:], "11 digits"),
        ("٠" * 11, "11 digits"),  # Arabic-Indic digits are digits to str.isdigit
        (_flip_last(KARI), "check digits"),
        (KARI[:2] + KARI[3] + KARI[2] + KARI[4:], "check digits"),  # two digits swapped
        (synthetic("3002", "90", "123"), "date of birth"),  # 30 February
        (synthetic("0113", "90", "123"), "date of birth"),  # month 13
        (synthetic("0101", "45", "800"), "individual number"),  # 800 with year 45: none
    ],
)
def test_invalid_numbers_say_why_without_the_number(text: str, reason: str) -> None:
    result = parse_national_id(text)
    assert isinstance(result, Invalid)
    assert reason in result.reason
    assert re.search(r"\d{3,}", result.reason) is None, result.reason  # no part of a number


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
