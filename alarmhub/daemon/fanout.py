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
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

RING_SIZE = 10_000
# As large as the ring: one batch of an outage can change hundreds of alarms at
# once, and a healthy listener must not be cut off for that. The queue holds
# references to the ring's changes, so a full one costs ~80 kB per listener.
QUEUE_SIZE = RING_SIZE
# How many cut-off listeners' names are remembered (`Broadcaster.cut_off`).
CUT_OFF_KEPT = 100


@dataclass(frozen=True, slots=True)
class Change:
    seq: int
    kind: str  # "alarm" or "resync"
    data: dict[str, Any]


class Listener:
    def __init__(self, name: str = "") -> None:
        self.name = name
        self.queue: asyncio.Queue[Change] = asyncio.Queue(QUEUE_SIZE)
        self.overflowed = False


class Broadcaster:
    def __init__(self, ring_size: int = RING_SIZE) -> None:
        self._ring: deque[Change] = deque(maxlen=ring_size)
        self._listeners: set[Listener] = set()
        self.seq = 0
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
        """Changes after `last_seq`, or None when the ring no longer reaches back that far."""
        if last_seq >= self.seq:
            return []
        if not self._ring or self._ring[0].seq > last_seq + 1:
            return None
        return [c for c in self._ring if c.seq > last_seq]

    async def listen(self, last_seq: int | None = None, name: str = "") -> AsyncIterator[Change]:
        """Changes after `last_seq` (if given), then every change as it is published.

        `name` (the client's address) is what `cut_off` records if this listener
        stops reading and is cut off.
        """
        listener = Listener(name)
        self._listeners.add(listener)
        try:
            if last_seq is not None:
                missed = self.missed_since(last_seq)
                if missed is None:
                    yield Change(self.seq, "resync", {})
                else:
                    for change in missed:
                        yield change
            while not listener.overflowed or not listener.queue.empty():
                yield await listener.queue.get()
        finally:
            self._listeners.discard(listener)

    @property
    def listeners(self) -> int:
        return len(self._listeners)
