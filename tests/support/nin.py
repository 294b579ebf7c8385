"""Synthetic Norwegian national identity numbers for tests: valid, and nobody's.

Written apart from alarmhub/core/journal/nin.py on purpose (its own mod-11), so the
tests check the core against an independent reckoning. Synthetic numbers have 80
added to the month (Skatteetaten's Tenor test data; NHN's test environment accepts
only such numbers): production never issues one, so a leaked test number names no one.
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
