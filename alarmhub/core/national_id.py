"""Norwegian national identity numbers (fødselsnummer, D-number) and organisation numbers.

The one mod-11 module of alarmhub (the resident register, the journal note, the
masking of what devices send). Pure: an 11-digit text in, a :class:`NationalId` or
an :class:`Invalid` with a named :class:`Problem` out. The reason never repeats the
number, so it may go into an error message, a log line, an API answer or a metric
label as it is. A :class:`NationalId` prints masked (``repr``, ``str``): a stray
``log.info(..., nid=nid)`` shows ``010190*****``, not the number.

A journal note names its patient by this number: a wrong one files the note in
someone else's record. The layout is DDMMYY III K1 K2: date of birth, an individual
number (whose range gives the century), and two mod-11 check digits. Variants:

- a D-number (for people without a fødselsnummer) has 4 added to the first digit
  of the day (41-71);
- a synthetic test number (NAV's and Skatteetaten's Tenor test data, the only kind
  NHN's test environment takes) has 8 added to the first digit of the month (81-92).
  Such a number is no real person's; it is accepted everywhere, and marked
  `synthetic` so that a production deployment can tell. A D-number can be synthetic;
- an H-number (a help number: 4 added to the first digit of the month) is refused:
  no patient record files by it.

The check digits are the classic ones; numbers issued from 2032 on may use others
(Skatteetaten's "ny fødselsnummer" change) and will need this module extended.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from enum import StrEnum

LENGTH = 11
SHOWN = 6  # the date of birth is shown; the individual number and check digits are not
MASK = "*" * (LENGTH - SHOWN)
D_NUMBER_DAY = 40
SYNTHETIC_MONTH = 80
H_NUMBER_MONTH = 40
_W1 = (3, 7, 6, 1, 8, 9, 4, 5, 2)
_W2 = (5, 4, 3, 2, 7, 6, 5, 4, 3, 2)
_ORG = (3, 2, 7, 6, 5, 4, 3, 2)


class IdKind(StrEnum):
    FODSELSNUMMER = "fodselsnummer"
    D_NUMBER = "d_number"


class Problem(StrEnum):
    """Why a text is not a national identity number. Bounded: safe as a metric label."""

    LENGTH = "length"  # not exactly eleven characters
    NOT_DIGITS = "not_digits"
    CHECK_DIGITS = "check_digits"
    DATE = "date"  # no such date of birth (after the D-number/synthetic offsets)
    CENTURY = "century"  # the individual number fits no century for this year
    H_NUMBER = "h_number"  # a help number: not a person's identity


_SAY = {
    Problem.LENGTH: "a national identity number is 11 digits",
    Problem.NOT_DIGITS: "a national identity number is 11 digits (0-9 only)",
    Problem.CHECK_DIGITS: "the check digits do not match: a digit is mistyped",
    Problem.DATE: "the first six digits are not a date of birth (DDMMYY)",
    Problem.CENTURY: "the individual number does not fit the year of birth",
    Problem.H_NUMBER: "an H-number (help number) is not a person's identity number",
}


@dataclass(frozen=True, slots=True)
class NationalId:
    """A checked number. Its text is `value`; everything else about it shows it masked."""

    value: str
    kind: IdKind
    synthetic: bool
    born: date

    @property
    def masked(self) -> str:
        return mask(self.value)

    def __repr__(self) -> str:
        return f"NationalId({self.masked}, {self.kind.value}, synthetic={self.synthetic})"

    __str__ = __repr__


@dataclass(frozen=True, slots=True)
class Invalid:
    """Why a text is not a national identity number; never contains the text."""

    problem: Problem

    @property
    def reason(self) -> str:
        return _SAY[self.problem]

    def __str__(self) -> str:
        return self.reason


def mask(value: str) -> str:
    """The first six digits (the date of birth) and five stars: `010190*****`."""
    return value[:SHOWN] + MASK


# Eleven digits standing alone: a national identity number, or a mistyped one (just as
# personal). Longer runs (epoch milliseconds, ids) are something else.
_ELEVEN = re.compile(r"(?<![0-9])[0-9]{11}(?![0-9])")


def redact(text: str) -> str:
    """`text` with every standalone run of 11 digits masked: for what a device sent.

    A dead letter's reason and a dropped field's detail quote the message; a device
    (or a person typing into one) may put a number where it does not belong.
    """
    return _ELEVEN.sub(lambda m: mask(m.group(0)), text) if len(text) >= LENGTH else text


# The same eleven digits as people write them: the date in pairs and the individual
# number, each group perhaps set off by one space, dot or hyphen (`018190 12365`,
# `01.81.90-12365`). Only for a text that may quote the patient back: the journal's.
_GROUPED = re.compile(
    r"(?<![0-9])([0-9]{2})[ .-]?([0-9]{2})[ .-]?([0-9]{2})[ .-]?[0-9]{5}(?![0-9])"
)


def redact_quoted(text: str) -> str:
    """`text` with every national identity number masked, however it is grouped.

    For the journal's refusal: the EPJ knows the patient's number and may quote it in
    its own format, which `redact` (a plain run of eleven digits) let through to the
    export row, the API, the page and the log.
    """
    return _GROUPED.sub(lambda m: "".join(m.groups()) + MASK, text)


def mod11(digits: str, weights: tuple[int, ...]) -> int | None:
    """The mod-11 check digit of `digits` under `weights`; None: no digit fits (remainder 1)."""
    rest = 11 - sum(int(d) * w for d, w in zip(digits, weights, strict=True)) % 11
    if rest == 11:
        return 0
    return None if rest == 10 else rest


def check_digits(first9: str) -> tuple[int, int] | None:
    """The two mod-11 check digits of nine digits; None when no number starts so."""
    k1 = mod11(first9, _W1)
    if k1 is None:
        return None
    k2 = mod11(first9 + str(k1), _W2)
    return None if k2 is None else (k1, k2)


def parse_national_id(text: str) -> NationalId | Invalid:
    """Check `text` (spaces around it ignored); a :class:`NationalId` or the reason not.

    The check digits are checked before the date: a mistyped digit is the likely
    mistake, and "a digit is mistyped" is the answer that helps.
    """
    value = text.strip()
    if len(value) != LENGTH:
        return Invalid(Problem.LENGTH)
    if not (value.isascii() and value.isdigit()):
        return Invalid(Problem.NOT_DIGITS)
    if check_digits(value[:9]) != (int(value[9]), int(value[10])):
        return Invalid(Problem.CHECK_DIGITS)
    day, month, yy, individual = (
        int(value[0:2]),
        int(value[2:4]),
        int(value[4:6]),
        int(value[6:9]),
    )
    kind = IdKind.FODSELSNUMMER
    if day > D_NUMBER_DAY:
        kind, day = IdKind.D_NUMBER, day - D_NUMBER_DAY
    synthetic = month > SYNTHETIC_MONTH
    if synthetic:
        month -= SYNTHETIC_MONTH
    elif month > H_NUMBER_MONTH:
        return Invalid(Problem.H_NUMBER)
    year = _year(yy, individual)
    if year is None:
        return Invalid(Problem.CENTURY)
    try:
        born = date(year, month, day)
    except ValueError:
        return Invalid(Problem.DATE)
    return NationalId(value, kind, synthetic, born)


def _year(yy: int, individual: int) -> int | None:
    """The year of birth from the two digits and the individual number's range
    (Folkeregisteret's rules)."""
    if individual <= 499:
        return 1900 + yy
    if individual <= 749 and yy >= 54:
        return 1800 + yy
    if yy <= 39:
        return 2000 + yy
    if individual >= 900:
        return 1900 + yy
    return None


def valid_organisation_number(value: str) -> bool:
    """Enhetsregisteret's organisation number: nine digits, the last a mod-11 check digit."""
    if len(value) != 9 or not (value.isascii() and value.isdigit()):
        return False
    return mod11(value[:8], _ORG) == int(value[8])
