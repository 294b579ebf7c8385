"""Norwegian national identity numbers (fødselsnummer, D-number): checked, masked, never shown.

Pure: an 11-digit text in, a :class:`NationalId` or an :class:`Invalid` reason out.
The reason never repeats the number, so it may go into an error message, a log line
or an API answer as it is. A :class:`NationalId` prints masked (``repr``, ``str``):
a stray ``log.info(..., nid=nid)`` shows ``010190*****``, not the number.

The layout is DDMMYY III K1 K2: date of birth, an individual number (whose range
gives the century), and two mod-11 check digits. Variants accepted:

- a D-number (for people without a fødselsnummer) has 4 added to the first digit
  of the day (41-71);
- a synthetic test number (NAV's and Skatteetaten's Tenor test data, the only kind
  NHN's test environment takes) has 8 added to the first digit of the month (81-92).
  Such a number is no real person's; it is accepted everywhere, and marked
  `synthetic` so that a production deployment can tell.

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
_W1 = (3, 7, 6, 1, 8, 9, 4, 5, 2)
_W2 = (5, 4, 3, 2, 7, 6, 5, 4, 3, 2)


class IdKind(StrEnum):
    FODSELSNUMMER = "fodselsnummer"
    D_NUMBER = "d_number"


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

    reason: str


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


def check_digits(first9: str) -> tuple[int, int] | None:
    """The two mod-11 check digits of nine digits; None when no digit fits (remainder 1)."""
    digits = [int(c) for c in first9]
    k1 = _digit(sum(w * d for w, d in zip(_W1, digits, strict=True)))
    if k1 is None:
        return None
    k2 = _digit(sum(w * d for w, d in zip(_W2, [*digits, k1], strict=True)))
    if k2 is None:
        return None
    return k1, k2


def _digit(total: int) -> int | None:
    rest = 11 - total % 11
    if rest == 11:
        return 0
    return None if rest == 10 else rest


def parse_national_id(text: str) -> NationalId | Invalid:
    """Check `text` (spaces around it ignored); a :class:`NationalId` or the reason not."""
    value = text.strip()
    if len(value) != LENGTH or not value.isascii() or not value.isdigit():
        return Invalid("a national identity number is 11 digits")
    if check_digits(value[:9]) != (int(value[9]), int(value[10])):
        return Invalid("the check digits do not match: a digit is mistyped")
    day, month, yy, individual = (
        int(value[0:2]),
        int(value[2:4]),
        int(value[4:6]),
        int(value[6:9]),
    )
    kind = IdKind.FODSELSNUMMER
    if day > 40:
        kind, day = IdKind.D_NUMBER, day - 40
    synthetic = month > 80
    if synthetic:
        month -= 80
    year = _year(yy, individual)
    if year is None:
        return Invalid("the individual number does not fit the year of birth")
    try:
        born = date(year, month, day)
    except ValueError:
        return Invalid("the first six digits are not a date of birth (DDMMYY)")
    return NationalId(value, kind, synthetic, born)


def _year(yy: int, individual: int) -> int | None:
    """The year of birth from the two digits and the individual number's range."""
    if individual <= 499:
        return 1900 + yy
    if individual <= 749 and yy >= 54:
        return 1800 + yy
    if yy <= 39:
        return 2000 + yy
    if individual >= 900:
        return 1900 + yy
    return None
