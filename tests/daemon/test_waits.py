"""A service loop cancelled in the same turn as its wake-up event is set still stops.

Python 3.11's `asyncio.wait_for` returned the wake-up's result then and dropped the
cancellation (CPython gh-86296), so the loop went on and the daemon's stop waited for
it for ever: a test hub hung at `alarmhub.stopping` when a notifier lane finished a
send, and woke the notifier, as the hub was stopping. Both tests are exact, with no
time in them: the event is set and the task cancelled before the loop runs again.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from alarmhub.clock import FakeClock
from alarmhub.daemon.notifier import Notifier
from alarmhub.daemon.waits import wait_set


async def _stops(task: asyncio.Task[Any], kick: Callable[[], None]) -> bool:
    """Set the wake-up and cancel `task` in one turn: True if the task then ended."""
    for _ in range(3):
        await asyncio.sleep(0)  # the loop is waiting on its event now
    kick()
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=5)  # ends at once, or never
    if not done:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    return bool(done) and task.cancelled()


@pytest.mark.parametrize("rounds", [1, 5])
async def test_wait_set_keeps_a_cancellation_that_meets_the_event(rounds: int) -> None:
    event = asyncio.Event()

    async def loop() -> None:
        while True:
            await wait_set(event, 60)
            event.clear()

    for _ in range(rounds):
        assert await _stops(asyncio.create_task(loop()), event.set)


async def test_wait_set_says_whether_the_event_came() -> None:
    event = asyncio.Event()
    assert await wait_set(event, 0) is False
    event.set()
    assert await wait_set(event, 0) is True


class _NoRows:
    """An empty outbox: the notifier only waits for its wake-up."""

    async def due_outbox(self, now: datetime, limit: int = 100, busy: Any = ()) -> list[Any]:
        return []

    async def outbox_sent(self, item_id: int, at: datetime) -> None:
        raise AssertionError("nothing to send")

    async def outbox_failed(self, item_id: int, next_at: datetime, error: str) -> None:
        raise AssertionError("nothing to send")


async def test_the_notifier_stops_when_woken_as_it_is_cancelled() -> None:
    rows = _NoRows()
    clock = FakeClock(datetime(2026, 12, 6, tzinfo=UTC))
    notifier = Notifier(rows, rows, asyncio.Lock(), clock, None)
    assert await _stops(asyncio.create_task(notifier.run()), notifier.wake)
