"""The one place that reads the wall clock.

Decisions take `now` as an argument (fresh clock reads inside a decision make
flaky tests and unexplainable timelines). The shell asks a :class:`Clock` once
per batch or timer step and passes that instant down. Deadlines that must not
jump with the wall clock are measured on the monotonic clock.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime: ...
    def monotonic(self) -> float: ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()


class FakeClock:
    """A clock tests move by hand; `monotonic` moves with it unless `jump` is used."""

    def __init__(self, start: datetime) -> None:
        self._now = start
        self._mono = 1000.0

    def now(self) -> datetime:
        return self._now

    def monotonic(self) -> float:
        return self._mono

    def advance(self, delta: timedelta) -> None:
        self._now += delta
        self._mono += delta.total_seconds()

    def jump(self, delta: timedelta) -> None:
        """Move the wall clock only, as an NTP step or an operator's `date -s` does."""
        self._now += delta
