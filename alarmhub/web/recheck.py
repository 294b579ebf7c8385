"""An open live stream re-checks its caller, so a lock-out reaches it too (issue 13 #6).

Every other request is authenticated as it arrives; a server-sent-events
stream is one request that may stay open for a whole shift. :func:`rechecked`
passes a stream's items through and asks `still_allowed` again every
`every_s` seconds — whether or not items are flowing — and ends the stream the
first time the answer is no (user disabled, token revoked or expired, session
logged out). The browser's EventSource then reconnects and gets 401.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


async def rechecked(
    items: AsyncIterator[T],
    still_allowed: Callable[[], Awaitable[bool]],
    every_s: float,
    monotonic: Callable[[], float],
) -> AsyncIterator[T]:
    """`items`, until `still_allowed()` says no at one of the re-checks.

    A check is due when `every_s` seconds of `monotonic` (the hub's clock) have
    passed, and also whenever `every_s` real seconds pass with no item: a quiet
    stream is checked even under a fake clock that does not move. The next item
    is awaited in a task this generator owns; it is cancelled (which ends the
    underlying listener) when the stream ends for any reason.
    """
    next_check = monotonic() + every_s
    pending: asyncio.Future[T] | None = None
    try:
        while True:
            if pending is None:
                pending = asyncio.ensure_future(anext(items))
            done, _ = await asyncio.wait({pending}, timeout=max(0.0, next_check - monotonic()))
            if done:
                finished, pending = pending, None
                try:
                    item = finished.result()
                except StopAsyncIteration:
                    return
                yield item
            # Read the clock after the yield: the client may have taken a while over it.
            if not done or monotonic() >= next_check:
                if not await still_allowed():
                    return
                next_check = monotonic() + every_s
    finally:
        if pending is not None:
            pending.cancel()
            with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                await pending
        aclose = getattr(items, "aclose", None)
        if aclose is not None:
            await aclose()
