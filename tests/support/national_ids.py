"""Synthetic national identity numbers for tests: valid check digits, no real person's.

Synthetic (Tenor-style) numbers have 80 added to the month, so no real fødselsnummer
or D-number can equal one (core/national_id.py). `synthetic("0101", "90", "123")`
is someone born 1 January 1990 with individual number 123, month written as 81.
"""

from __future__ import annotations

from alarmhub.core.national_id import check_digits


def synthetic(ddmm: str, yy: str, individual: str, *, d_number: bool = False) -> str:
    """The first nine digits with 80 added to the month, and their check digits.

    The individual number is moved up by one until the check digits exist (a
    remainder of 1 has none).
    """
    day, month = int(ddmm[:2]) + (40 if d_number else 0), int(ddmm[2:]) + 80
    n = int(individual)
    while True:
        nine = f"{day:02d}{month:02d}{yy}{n:03d}"
        digits = check_digits(nine)
        if digits is not None:
            return nine + f"{digits[0]}{digits[1]}"
        n += 1


# Canaries for privacy tests: each must never appear whole (nor its hidden part) anywhere.
KARI = synthetic("0101", "90", "123")  # 018190…
OLA = synthetic("1505", "58", "220", d_number=True)  # a D-number: 558558…
