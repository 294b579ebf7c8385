"""Missing-signal supervision: devices that went silent, and doses not taken in time.

A silent safety alarm is itself an alarm: the resident has no working button.
:class:`Supervisor` watches up to a million devices in one process with a single
timer structure, never a timer (or task) per device.

Why a heap with lazy re-arming, not a hashed timer wheel: heartbeat intervals
range from 1 minute to 24 hours, so a wheel needs several levels (or a slot per
second of a day) plus cascading, and its resolution becomes a tuning knob. A
binary heap keyed by deadline is exact for any interval and costs O(log n) per
push/pop. What would make a heap expensive is touching it on every heartbeat;
so a heartbeat only writes the device's last-heard time into an array (O(1)),
and the heap keeps the *old*, now too-early deadline. When that entry reaches
the top, :meth:`Supervisor.due` sees the device was heard since and re-pushes it
at its true deadline. A device therefore costs one heap operation per *silence
limit* (``misses * interval``), not per heartbeat.

Invariant: every watched, not-yet-reported device has exactly one *live* heap
entry, whose deadline is never later than its true deadline (last heard +
limit). Anything that could move a true deadline earlier (a shorter interval)
pushes a new live entry; everything else only moves it later, which the lazy
re-push handles. A per-device "queued deadline" marks which entry is live; the
others are garbage, dropped when popped, and the heap is rebuilt once garbage
outnumbers live entries, so its size stays O(devices).

Memory: per-device state lives in ``array('q')`` columns indexed by a slot
number, and heap entries are single ints ``deadline_us << 32 | slot``, because
a million small objects or tuples would cost several hundred MB.

Restart and grace: a device's silence is counted from when it was last heard,
wherever that was recorded: the shell seeds :meth:`Supervisor.watch` with the
last-heard time from the store, so a restart never starts anyone's count again
(with a daily restart and a 24 h heartbeat, a count that restarted each time
never reached its limit: issue 12 item 15). Grace is defined precisely:

- An *outage* is a time alarmhub could not hear devices: it was not running, or
  it was cut off from the broker. :meth:`Supervisor.restart` (``now``) says one
  ended at `now`, when alarmhub listens again.
- Its grace is ``G = min(grace, interval)`` per device: never more than one
  heartbeat interval, however long `grace` is set.
- A device whose deadline ``last heard + misses * interval`` fell while
  alarmhub was away, or within G of its return, is due at ``return + G``: long
  enough for the broker's backlog and reconnecting devices to be heard first,
  so a long outage is not followed by a storm of false "offline" alarms.
- Every other device keeps its own deadline: an outage postpones nothing that
  was not due during it. So the grace is granted once per real outage; a
  restart or reconnect every few minutes cannot keep pushing a dead device's
  deadline (only deadlines falling inside an outage move, and each only to
  ``return + G``). In total, grace delays a report by at most G (one interval
  at most) beyond the later of the device's own deadline and alarmhub's return.

A device already reported silent (its ``device_offline`` alarm still open) is
seeded as reported: it is not raised a second time, and recovers when heard.
An operator resolving that alarm while the device stays silent
(:meth:`Supervisor.resolved`) re-arms it one interval later.
"""

from __future__ import annotations

import heapq
from array import array
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from enum import StrEnum

# Dose schedules live in their own module; these names stay importable from here.
from alarmhub.core.doses import DoseOutcome, DoseSchedule, DoseTaken, DoseWatch
from alarmhub.core.overdue import Overdue, OverdueKind

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)
_SLOT_BITS = 32
_SLOT_MASK = (1 << _SLOT_BITS) - 1
_NO_FLOOR = -(1 << 62)

# Slot states, one byte each.
_FREE = 0
_WATCHING = 1
_REPORTED = 2  # declared silent; stays quiet until heard again


def _to_us(t: datetime) -> int:
    """Microseconds since the epoch; exact, unlike float timestamps. `t` must be aware."""
    return (t - _EPOCH) // _US


def _from_us(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)


class Heard(StrEnum):
    """What a sign of life meant to the supervisor."""

    UNWATCHED = "unwatched"  # not supervised: nothing to do
    ALIVE = "alive"  # supervised and fine
    RECOVERED = "recovered"  # ends a silence due() reported: resolve its technical alarm


class Supervisor:
    """Tracks last-heard times and reports devices silent for longer than their limit.

    Pure: every method takes `now`; nothing reads a clock or sleeps. The shell
    calls :meth:`heard` for every message from a device, :meth:`due` when
    :meth:`next_deadline` has passed (or on a coarse tick), and persists the
    :class:`Overdue` items as technical alarms.
    """

    __slots__ = (
        "_floor",
        "_free",
        "_grace_us",
        "_heap",
        "_ids",
        "_interval",
        "_last",
        "_limit",
        "_queued",
        "_rearm",
        "_slot",
        "_state",
    )

    def __init__(self, grace: timedelta = timedelta(0)) -> None:
        """`grace`: how long after :meth:`restart` a device that fell due meanwhile waits.

        Covers the broker re-delivering its backlog and devices reconnecting with
        back-off; capped per device at one heartbeat interval (module docstring).
        """
        if grace < timedelta(0):
            raise ValueError("grace must not be negative")
        self._grace_us = grace // _US
        self._slot: dict[str, int] = {}
        self._ids: list[str | None] = []  # slot -> device id
        self._last = array("q")  # slot -> last heard, µs since epoch
        self._limit = array("q")  # slot -> misses * interval, µs
        self._interval = array("q")  # slot -> interval, µs: caps the grace
        self._rearm = array("q")  # slot -> not due before this (resolved by hand), or _NO_FLOOR
        self._queued = array("q")  # slot -> deadline of its one live heap entry
        self._state = bytearray()  # slot -> _FREE / _WATCHING / _REPORTED
        self._free: list[int] = []
        self._heap: list[int] = []  # deadline_us << 32 | slot
        self._floor = _NO_FLOOR  # the last return from an outage (restart)

    def __len__(self) -> int:
        return len(self._slot)

    @property
    def heap_size(self) -> int:
        """Entries in the timer heap, live and garbage; stays O(watched devices)."""
        return len(self._heap)

    def watch(
        self,
        device_id: str,
        interval: timedelta,
        misses: int,
        now: datetime,
        *,
        last_heard: datetime | None = None,
        silent: bool = False,
    ) -> None:
        """Supervise a device: silent for longer than ``misses * interval`` is overdue.

        A new device's silence counts from `last_heard` (the store's record: its
        last message, or its registration), or from `now` without one; a
        last-heard time in the future (a clock stepped back) counts from `now`.
        `silent`: it was already reported and its alarm is still open, so it is
        not reported again until heard. Re-watching (a config reload) changes
        only the limit: it must not reset the silence of a device that is
        already quiet, or frequent reloads would hide a dead device forever.
        """
        if interval <= timedelta(0):
            raise ValueError("interval must be positive")
        if misses < 1:
            raise ValueError("misses must be at least 1")
        limit = (interval * misses) // _US
        slot = self._slot.get(device_id)
        if slot is None:
            slot = self._allocate(device_id)
            t = _to_us(now)
            self._last[slot] = t if last_heard is None else min(t, _to_us(last_heard))
            self._limit[slot] = limit
            self._interval[slot] = interval // _US
            self._rearm[slot] = _NO_FLOOR
            if silent:
                self._state[slot] = _REPORTED  # no live heap entry until heard again
            else:
                self._push(slot, self._deadline(slot))
            return
        self._limit[slot] = limit
        self._interval[slot] = interval // _US
        if self._state[slot] == _WATCHING:
            deadline = self._deadline(slot)
            if deadline < self._queued[slot]:  # moved earlier: the live entry is too late
                self._push(slot, deadline)
                self._maybe_compact()

    def watch_many(
        self,
        devices: Iterable[tuple[str, timedelta, datetime | None, bool]],
        misses: int,
        now: datetime,
    ) -> None:
        """:meth:`watch` for many devices, each `(device_id, interval, last_heard, silent)`.

        The start-up's registry (a million devices): the same state as a watch() per
        device, with the checks and the limit's arithmetic done once per distinct
        interval, `now` converted once, and the heap built once (heapify is O(n); a
        push per device is O(log n) each). A device already watched goes through
        watch(), which keeps its silence.
        """
        if misses < 1:
            raise ValueError("misses must be at least 1")
        t = _to_us(now)
        limits: dict[timedelta, tuple[int, int]] = {}  # per distinct interval, in µs
        entries: list[int] = []
        # The entries made go on the heap even if `devices` raises part-way (the caller's
        # generator does the rest of each device's watch): a slot without its heap entry
        # would never be reported silent.
        try:
            for device_id, interval, last_heard, silent in devices:
                if device_id in self._slot:
                    self.watch(
                        device_id, interval, misses, now, last_heard=last_heard, silent=silent
                    )
                    continue
                known = limits.get(interval)
                if known is None:
                    if interval <= timedelta(0):
                        raise ValueError("interval must be positive")
                    known = limits[interval] = ((interval * misses) // _US, interval // _US)
                limit, every = known
                slot = self._allocate(device_id)
                last = t if last_heard is None else min(t, _to_us(last_heard))
                self._last[slot], self._limit[slot], self._interval[slot] = last, limit, every
                self._rearm[slot] = _NO_FLOOR
                if silent:
                    self._state[slot] = _REPORTED  # no live heap entry until heard again
                    continue
                deadline = self._queued[slot] = self._deadline(slot)
                entries.append((deadline << _SLOT_BITS) | slot)
        finally:
            if entries:
                self._heap.extend(entries)
                heapq.heapify(self._heap)

    def heard(self, device_id: str, now: datetime) -> Heard:
        """Record a sign of life. O(1): an array write; the heap is touched only on recovery."""
        slot = self._slot.get(device_id)
        if slot is None:
            return Heard.UNWATCHED
        t = _to_us(now)
        # max(): a late, out-of-order message never moves it back.
        self._last[slot] = max(self._last[slot], t)
        self._rearm[slot] = _NO_FLOOR  # heard: its own count from now on
        if self._state[slot] == _REPORTED:
            self._state[slot] = _WATCHING
            self._push(slot, self._deadline(slot))  # its live entry was consumed by due()
            return Heard.RECOVERED
        return Heard.ALIVE

    def unwatch(self, device_id: str) -> None:
        """Stop supervising (device decommissioned). Its heap entry becomes garbage."""
        slot = self._slot.pop(device_id, None)
        if slot is None:
            return
        self._state[slot] = _FREE
        self._ids[slot] = None
        self._free.append(slot)
        self._maybe_compact()

    def restart(self, now: datetime) -> None:
        """alarmhub listens again at `now` after an outage (its start, a broker reconnect).

        Devices that fell due while it was away are due at `now` plus their grace
        (module docstring); nobody else's deadline moves, and nobody's silence
        starts again. O(1): one floor under all deadlines; live heap entries
        become too early, which the lazy re-push in :meth:`due` absorbs. Devices
        already reported silent stay reported (their alarm is open) until heard.
        """
        self._floor = max(self._floor, _to_us(now))

    def resolved(self, device_id: str, now: datetime) -> bool:
        """Its silence alarm was resolved by hand at `now`: report it again if still silent.

        Closing a "device offline" alarm does not make the device work. If it is
        not heard within one interval of `now` it is reported again (issue 12
        item 16). Returns whether it was re-armed (it was reported and not heard since).
        """
        slot = self._slot.get(device_id)
        if slot is None or self._state[slot] != _REPORTED:
            return False
        self._state[slot] = _WATCHING
        self._rearm[slot] = _to_us(now) + self._interval[slot]
        self._push(slot, self._deadline(slot))
        self._maybe_compact()
        return True

    def due(self, now: datetime) -> list[Overdue]:
        """Every device whose silence now exceeds its limit, in deadline order, each once.

        "Exceeds" is strict: with a 3-minute limit, a device last heard at 12:00
        is reported by ``due(t)`` for any ``t`` after 12:03:00.
        """
        t = _to_us(now)
        heap = self._heap
        out: list[Overdue] = []
        while heap:
            entry = heap[0]
            queued = entry >> _SLOT_BITS
            if queued >= t:
                break
            slot = entry & _SLOT_MASK
            if self._state[slot] != _WATCHING or self._queued[slot] != queued:
                heapq.heappop(heap)  # garbage: unwatched, superseded or already reported
                continue
            deadline = self._deadline(slot)
            if deadline < t:
                heapq.heappop(heap)
                self._state[slot] = _REPORTED
                device_id = self._ids[slot]
                assert device_id is not None  # a watched slot always has its id
                out.append(
                    Overdue(
                        device_id,
                        OverdueKind.DEVICE_SILENT,
                        _from_us(self._last[slot]),
                        _from_us(deadline),
                    )
                )
            else:
                # Heard since this entry was pushed: re-arm at the true deadline.
                self._queued[slot] = deadline
                heapq.heapreplace(heap, (deadline << _SLOT_BITS) | slot)
        return out

    def next_deadline(self) -> datetime | None:
        """No device can become overdue before this instant; the shell may sleep until it.

        May be early (a device heard since), never late.
        """
        if not self._heap:
            return None
        return _from_us(self._heap[0] >> _SLOT_BITS)

    def is_silent(self, device_id: str) -> bool:
        """Whether the device was reported by :meth:`due` and not heard since."""
        slot = self._slot.get(device_id)
        return slot is not None and self._state[slot] == _REPORTED

    def _deadline(self, slot: int) -> int:
        own = max(self._last[slot] + self._limit[slot], self._rearm[slot])
        back = self._floor + min(self._grace_us, self._interval[slot])
        # Fell due while alarmhub was away (or within its grace): one grace after it returned.
        return max(own, back)

    def _push(self, slot: int, deadline: int) -> None:
        self._queued[slot] = deadline
        heapq.heappush(self._heap, (deadline << _SLOT_BITS) | slot)

    def _allocate(self, device_id: str) -> int:
        if self._free:
            slot = self._free.pop()
            self._ids[slot] = device_id
            self._state[slot] = _WATCHING
        else:
            slot = len(self._ids)
            if slot > _SLOT_MASK:
                raise OverflowError("more devices than slot numbers")
            self._ids.append(device_id)
            self._last.append(0)
            self._limit.append(0)
            self._interval.append(0)
            self._rearm.append(_NO_FLOOR)
            self._queued.append(0)
            self._state.append(_WATCHING)
        self._slot[device_id] = slot
        return slot

    def _maybe_compact(self) -> None:
        """Rebuild the heap from live entries once garbage outnumbers them: amortised O(1)."""
        if len(self._heap) <= 2 * len(self._slot) + 1024:
            return
        self._heap = [
            (self._queued[slot] << _SLOT_BITS) | slot
            for slot in self._slot.values()
            if self._state[slot] == _WATCHING
        ]
        heapq.heapify(self._heap)


__all__ = [
    "DoseOutcome",
    "DoseSchedule",
    "DoseTaken",
    "DoseWatch",
    "Heard",
    "Overdue",
    "OverdueKind",
    "Supervisor",
]
