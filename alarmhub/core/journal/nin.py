"""Norwegian national identity numbers (fødselsnummer, D-nummer) and organisation numbers.

A journal note names its patient by national identity number; a wrong one files the
note in someone else's record. So a number is checked before it is stored or sent:
eleven digits, a real birth date, and both mod-11 check digits.

The shape is DDMMYY III K1 K2: birth date, individual number (which also gives the
century), two check digits. Variants, all validated alike:

- D-nummer (for people without a fødselsnummer): 4 added to the first day digit (41-71);
- synthetic test numbers (Skatteetaten's Tenor test data, which NHN's test environment
  accepts and production never issues): 80 added to the month (81-92). A D-nummer can be
  synthetic too;
- H-nummer (help numbers, 40 added to the month) are not accepted: no EPJ files by them.

Numbers issued from 2032 may have a first check digit that does not follow this
formula (the Tax Administration's announced change); they are refused until then.

The result is a value with a named reason, never an exception, and the number itself is
never part of a reason: reasons end up in logs and error messages.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from enum import StrEnum

_K1 = (3, 7, 6, 1, 8, 9, 4, 5, 2)
_K2 = (5, 4, 3, 2, 7, 6, 5, 4, 3, 2)
_ORG = (3, 2, 7, 6, 5, 4, 3, 2)
D_NUMBER_DAY = 40
SYNTHETIC_MONTH = 80
H_NUMBER_MONTH = 40


class NinKind(StrEnum):
    FODSELSNUMMER = "fodselsnummer"
    D_NUMMER = "d_nummer"


class NinProblem(StrEnum):
    """Why a national identity number was refused. Bounded: safe as a metric label."""

    LENGTH = "length"  # not exactly eleven characters
    NOT_DIGITS = "not_digits"
    DATE = "date"  # no such birth date (after the D-nummer/synthetic offsets)
    CHECK_DIGITS = "check_digits"
    H_NUMBER = "h_number"  # a help number: not a person's identity


@dataclass(frozen=True, slots=True)
class ValidNin:
    kind: NinKind
    synthetic: bool
    born: date


@dataclass(frozen=True, slots=True)
class InvalidNin:
    problem: NinProblem

    def __str__(self) -> str:
        return _SAY[self.problem]


_SAY = {
    NinProblem.LENGTH: "a national identity number has 11 digits",
    NinProblem.NOT_DIGITS: "a national identity number is digits only",
    NinProblem.DATE: "the first six digits are not a birth date",
    NinProblem.CHECK_DIGITS: "the check digits are wrong (mod-11): a typing error?",
    NinProblem.H_NUMBER: "an H-number (help number) is not a person's identity number",
}


def mod11(digits: str, weights: tuple[int, ...]) -> int | None:
    """The mod-11 check digit of `digits` under `weights`; None: no valid digit exists."""
    check = 11 - sum(int(d) * w for d, w in zip(digits, weights, strict=True)) % 11
    if check == 11:
        return 0
    return None if check == 10 else check


def check_digits(first_nine: str) -> str | None:
    """The two check digits that complete nine digits; None when no number can."""
    k1 = mod11(first_nine, _K1)
    if k1 is None:
        return None
    k2 = mod11(first_nine + str(k1), _K2)
    return None if k2 is None else f"{k1}{k2}"


def check_nin(value: str) -> ValidNin | InvalidNin:
    if len(value) != 11:
        return InvalidNin(NinProblem.LENGTH)
    if not (value.isascii() and value.isdigit()):
        return InvalidNin(NinProblem.NOT_DIGITS)
    day, month, year2, individual = (
        int(value[0:2]),
        int(value[2:4]),
        int(value[4:6]),
        int(value[6:9]),
    )
    kind = NinKind.FODSELSNUMMER
    if day > D_NUMBER_DAY:
        kind, day = NinKind.D_NUMMER, day - D_NUMBER_DAY
    synthetic = month > SYNTHETIC_MONTH
    if synthetic:
        month -= SYNTHETIC_MONTH
    elif month > H_NUMBER_MONTH:
        return InvalidNin(NinProblem.H_NUMBER)
    year = _century(individual, year2)
    if year is None:
        return InvalidNin(NinProblem.DATE)
    try:
        born = date(year, month, day)
    except ValueError:
        return InvalidNin(NinProblem.DATE)
    if check_digits(value[:9]) != value[9:]:
        return InvalidNin(NinProblem.CHECK_DIGITS)
    return ValidNin(kind, synthetic, born)


def _century(individual: int, year2: int) -> int | None:
    """The birth year from the individual number's range (Folkeregisteret's rules)."""
    if individual < 500:
        return 1900 + year2
    if individual < 750 and year2 >= 54:
        return 1800 + year2
    if year2 < 40:
        return 2000 + year2
    if individual >= 900:
        return 1900 + year2
    return None


def valid_organisation_number(value: str) -> bool:
    """Enhetsregisteret's organisation number: nine digits, the last a mod-11 check digit."""
    if len(value) != 9 or not (value.isascii() and value.isdigit()):
        return False
    return mod11(value[:8], _ORG) == int(value[8])
