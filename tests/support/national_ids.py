"""Synthetic national identity numbers for tests: valid check digits, no real person's.

Written apart from alarmhub/core/national_id.py on purpose (its own mod-11), so the
tests check the core against an independent reckoning. Synthetic (Tenor-style)
numbers have 80 added to the month (NHN's test environment accepts only such
numbers): production never issues one, so a leaked test number names no one.
`synthetic("0101", "90", "123")` is someone born 1 January 1990 with individual
number 123, month written as 81.
"""

from __future__ import annotations

import random
from datetime import date, timedelta

W1 = (3, 7, 6, 1, 8, 9, 4, 5, 2)
W2 = (5, 4, 3, 2, 7, 6, 5, 4, 3, 2)


def _digit(digits: str, weights: tuple[int, ...]) -> int | None:
    rest = sum(int(d) * w for d, w in zip(digits, weights, strict=True)) % 11
    return 0 if rest == 0 else (None if rest == 1 else 11 - rest)


def complete(nine: str) -> str | None:
    """Nine digits and their two check digits, or None when no check digit exists."""
    k1 = _digit(nine, W1)
    k2 = None if k1 is None else _digit(nine + str(k1), W2)
    return None if k1 is None or k2 is None else f"{nine}{k1}{k2}"


def synthetic(ddmm: str, yy: str, individual: str, *, d_number: bool = False) -> str:
    """The first nine digits with 80 added to the month, and their check digits.

    The individual number is moved up by one until the check digits exist (a
    remainder of 1 has none).
    """
    day, month = int(ddmm[:2]) + (40 if d_number else 0), int(ddmm[2:]) + 80
    n = int(individual)
    while True:
        number = complete(f"{day:02d}{month:02d}{yy}{n:03d}")
        if number is not None:
            return number
        n += 1


def synthetic_nin(born: date, individual: int, *, d_number: bool = False) -> str | None:
    day = born.day + (40 if d_number else 0)
    return complete(f"{day:02d}{born.month + 80:02d}{born.year % 100:02d}{individual:03d}")


def synthetic_nins(count: int, *, seed: int = 17, d_number: bool = False) -> list[str]:
    """`count` distinct valid synthetic numbers, the same for the same seed."""
    rng = random.Random(seed)
    found: list[str] = []
    while len(found) < count:
        born = date(1930, 1, 1) + timedelta(days=rng.randrange(80 * 365))
        individual = rng.randrange(500) if born.year < 2000 else rng.randrange(500, 1000)
        nin = synthetic_nin(born, individual, d_number=d_number)
        if nin is not None and nin not in found:
            found.append(nin)
    return found


# Canaries for privacy tests: each must never appear whole (nor its hidden part) anywhere.
KARI = synthetic("0101", "90", "123")  # 018190…
OLA = synthetic("1505", "58", "220", d_number=True)  # a D-number: 558558…
