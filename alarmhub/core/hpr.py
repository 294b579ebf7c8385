"""HPR numbers: a health worker's number in Helsepersonellregisteret (issue 17).

The journal note names its author, the operator who resolved the alarm, by the HPR
number when the user record has one (HL7 Norway's identifier system
``urn:oid:2.16.578.1.12.4.1.4.4``, core/journal/codes.py ``HPR_SYSTEM``). The
Helsedirektoratet assigns it as a running number of up to nine digits; no check
digit is published that we could confirm (docs/journal.md), so this checks only the
shape: one to nine ASCII digits, not all zeros. A number is kept as HPR shows it,
without leading zeros: some systems pad it to nine (``007125186``), and the padded
and the plain spelling are the same person.

Pure: a text in, the number or an :class:`InvalidHpr` with a named problem out. An
HPR number is public (the register is searchable by anyone), so unlike a national
identity number it may be shown, audited and logged as it is.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

MAX_DIGITS = 9
_DIGITS = re.compile(r"[0-9]+")


class HprProblem(StrEnum):
    """Why a text is not an HPR number. Bounded: safe as a metric label."""

    NOT_DIGITS = "not_digits"
    LENGTH = "length"
    ZERO = "zero"


_REASONS = {
    HprProblem.NOT_DIGITS: "an HPR number has only the digits 0-9",
    HprProblem.LENGTH: f"an HPR number has 1 to {MAX_DIGITS} digits",
    HprProblem.ZERO: "an HPR number is not all zeros",
}


@dataclass(frozen=True, slots=True)
class InvalidHpr:
    problem: HprProblem

    @property
    def reason(self) -> str:
        return _REASONS[self.problem]


def parse_hpr(text: str) -> str | InvalidHpr:
    """The HPR number in `text` (spaces around it ignored), without leading zeros."""
    digits = text.strip()
    if not digits:
        return InvalidHpr(HprProblem.LENGTH)
    if not _DIGITS.fullmatch(digits):
        return InvalidHpr(HprProblem.NOT_DIGITS)
    if len(digits) > MAX_DIGITS:
        return InvalidHpr(HprProblem.LENGTH)
    number = digits.lstrip("0")
    return number or InvalidHpr(HprProblem.ZERO)
