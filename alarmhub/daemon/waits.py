"""Waiting for an event with a time limit, without losing a cancellation.

Python 3.11's `asyncio.wait_for` returns the inner result when the task is cancelled
in the same loop iteration as the inner awaitable completes, and the cancellation is
gone (CPython gh-86296, fixed in 3.12 by rewriting wait_for over `asyncio.timeout`).
A service loop of the form `while True: ... wait_for(event.wait(), t)` then goes on
after the daemon cancelled it, and the stop waits for it for ever: seen as a test
hub that hung at `alarmhub.stopping` after a notifier lane woke the loop as it was
cancelled. `asyncio.timeout` keeps the cancellation on 3.11 too.
"""

from __future__ import annotations

import asyncio

__all__ = ["wait_set"]


async def wait_set(event: asyncio.Event, timeout_s: float) -> bool:
    """Wait until `event` is set or `timeout_s` passes: True if it was set."""
    try:
        async with asyncio.timeout(max(timeout_s, 0.0)):
            await event.wait()
    except TimeoutError:
        return False
    return True
