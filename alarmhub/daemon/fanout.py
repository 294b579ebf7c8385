"""Fan-out of alarm changes to live listeners (the operator page's SSE stream).

Every change gets a sequence number and is kept in a bounded ring, so a client
that reconnects with `Last-Event-ID` receives what it missed. A listener that
stops reading is cut off when its bounded queue is full — it never slows ingest
or grows memory — and on reconnect is told to reload (`resync`) if the ring no
longer holds what it missed.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

RING_SIZE = 10_000
# As large as the ring: one batch of an outage can change hundreds of alarms at
# once, and a healthy listener must not be cut off for that. The queue holds
# references to the ring's changes, so a full one costs ~80 kB per listener.
QUEUE_SIZE = RING_SIZE
# How many cut-off listeners' names are remembered (`Broadcaster.cut_off`).
CUT_OFF_KEPT = 100


@dataclass(slots=True)
class Change:
    """One published change, shared by the ring and every listener's queue.

    `wire` is where the web layer keeps the change's bytes on the wire, made by the
    first stream that sends it: every other stream sends the same bytes instead of
    encoding the same dict again (issue 18). Nothing else is ever changed.
    """

    seq: int
    kind: str  # "alarm" or "resync"
    data: dict[str, Any]
    wire: bytes | None = field(default=None, repr=False, compare=False)


class Listener:
    """One stream's view of the fan-out: what it missed (`backlog`), then its queue."""

    def __init__(self, name: str = "", backlog: list[Change] | None = None) -> None:
        self.name = name
        self.queue: asyncio.Queue[Change] = asyncio.Queue(QUEUE_SIZE)
        self.overflowed = False
        self._closed = False
        self._backlog = deque(backlog or ())

    @property
    def ended(self) -> bool:
        """Ended by its owner, or cut off and everything given before that taken."""
        return self._closed or (self.overflowed and self.queue.empty() and not self._backlog)

    def end(self) -> None:
        """Ended by its owner (a page's newer stream took its slot): a waiting
        `next_batch` returns at once, empty, rather than at its next change or ping."""
        self._closed = True
        if self.queue.empty():  # a waiting getter is woken; a queue with changes wakes none
            self.queue.put_nowait(_WAKE)

    async def next_batch(self, wait_s: float | None, limit: int) -> list[Change]:
        """Up to `limit` changes in order, waiting up to `wait_s` for the first; [] if none.

        Everything already queued is taken at once, so a stream that fell behind, or a
        batch of ingest that changed many alarms, is sent in a few writes rather than
        one per change, and the wait (with its timer) happens once per wake-up, not
        once per change (issue 18).
        """
        backlog, queue = self._backlog, self.queue
        if backlog:
            return [backlog.popleft() for _ in range(min(limit, len(backlog)))]
        if queue.empty():
            if self.overflowed:
                return []
            try:
                async with asyncio.timeout(wait_s):
                    first = await queue.get()
            except TimeoutError:
                return []
        else:
            first = queue.get_nowait()
        if first is _WAKE:
            return []
        batch = [first]
        while len(batch) < limit and not queue.empty():
            change = queue.get_nowait()
            if change is not _WAKE:
                batch.append(change)
        return batch


# Put on an ended listener's empty queue to wake its reader; never sent.
_WAKE = Change(0, "wake", {})


def first_sequence(now: datetime) -> int:
    """Where a process's change numbers start: the wall clock in milliseconds x 1,000.

    A stream resumed with `Last-Event-ID` after a restart or on another instance
    names a number of another process. Each started at 0, so an id above the new
    count was answered with nothing, and one below it with changes it never saw:
    changes lost without a `resync`. Started here, a later process's numbers lie
    above an earlier one's (fewer than 1,000 changes per millisecond of its life)
    and another instance's elsewhere, so either is a gap the ring cannot fill:
    `resync`. Below 2**53 (JavaScript's exact integers) until the year 2255.
    """
    return int(now.timestamp() * 1000) * 1000


class Broadcaster:
    def __init__(self, ring_size: int = RING_SIZE, *, start: int = 0) -> None:
        self._ring: deque[Change] = deque(maxlen=ring_size)
        self._listeners: set[Listener] = set()
        self.seq = start
        self.dropped_listeners = 0
        # Who was cut off, newest last: a count cannot tell the listener that stopped
        # reading from a healthy one that merely fell behind, and that is the promise.
        self.cut_off: deque[str] = deque(maxlen=CUT_OFF_KEPT)

    def publish(self, kind: str, data: dict[str, Any]) -> Change:
        self.seq += 1
        change = Change(self.seq, kind, data)
        self._ring.append(change)
        for listener in list(self._listeners):
            try:
                listener.queue.put_nowait(change)
            except asyncio.QueueFull:
                listener.overflowed = True
                self._listeners.discard(listener)
                self.dropped_listeners += 1
                self.cut_off.append(listener.name)
        return change

    def missed_since(self, last_seq: int) -> list[Change] | None:
        """Changes after `last_seq`, or None when the ring no longer reaches back that far
        (or `last_seq` is not this process's: above its count, see first_sequence)."""
        if last_seq == self.seq:
            return []
        if last_seq > self.seq:
            return None
        if not self._ring or self._ring[0].seq > last_seq + 1:
            return None
        return [c for c in self._ring if c.seq > last_seq]

    @contextmanager
    def listening(self, last_seq: int | None = None, name: str = "") -> Iterator[Listener]:
        """A listener given the changes after `last_seq` (if given), then every change published.

        Registered and given its backlog in one step, with no await between: no change
        can fall between what it missed and what it is sent. `name` (the client's
        address) is what `cut_off` records if it stops reading and is cut off.
        """
        backlog: list[Change] = []
        if last_seq is not None:
            missed = self.missed_since(last_seq)
            backlog = [Change(self.seq, "resync", {})] if missed is None else missed
        listener = Listener(name, backlog)
        self._listeners.add(listener)
        try:
            yield listener
        finally:
            self._listeners.discard(listener)

    async def listen(self, last_seq: int | None = None, name: str = "") -> AsyncIterator[Change]:
        """`listening`'s changes one at a time, until the listener is cut off."""
        with self.listening(last_seq, name) as listener:
            while not listener.ended:
                for change in await listener.next_batch(None, QUEUE_SIZE):
                    yield change

    @property
    def listeners(self) -> int:
        return len(self._listeners)
