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

Restart: after alarmhub's own start or a broker reconnect nobody has heard
anything for a while, through no fault of the devices. :meth:`Supervisor.restart`
counts every device's silence from that moment (plus an optional short grace),
in O(1), as a floor under all last-heard times. A device with a 1-minute interval
is still declared silent a few minutes later; nothing is declared silent merely
because alarmhub itself was away.
"""

from __future__ import annotations

import heapq
from array import array
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING

from alarmhub.core.timewindow import resolve_local

if TYPE_CHECKING:
    from zoneinfo import ZoneInfo

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


class OverdueKind(StrEnum):
    """What went missing. Bounded: a metric label and the technical alarm's kind."""

    DEVICE_SILENT = "device_silent"
    DOSE_MISSED = "dose_missed"


@dataclass(frozen=True, slots=True)
class Overdue:
    """Something expected did not arrive in time. Reported once per occurrence."""

    device_id: str
    kind: OverdueKind
    since: datetime  # silent: last heard (or when watching began); dose: scheduled time
    deadline: datetime  # the instant it became overdue (since + limit, or + dose window)


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
        "_last",
        "_limit",
        "_queued",
        "_slot",
        "_state",
    )

    def __init__(self, grace: timedelta = timedelta(0)) -> None:
        """`grace`: added after :meth:`restart` before silence starts counting.

        Covers the broker re-delivering its backlog and devices reconnecting with
        back-off. Keep it short (seconds to a minute): it is not the protection
        against mass false alarms, counting silence from the restart is.
        """
        if grace < timedelta(0):
            raise ValueError("grace must not be negative")
        self._grace_us = grace // _US
        self._slot: dict[str, int] = {}
        self._ids: list[str | None] = []  # slot -> device id
        self._last = array("q")  # slot -> last heard, µs since epoch
        self._limit = array("q")  # slot -> misses * interval, µs
        self._queued = array("q")  # slot -> deadline of its one live heap entry
        self._state = bytearray()  # slot -> _FREE / _WATCHING / _REPORTED
        self._free: list[int] = []
        self._heap: list[int] = []  # deadline_us << 32 | slot
        self._floor = _NO_FLOOR  # silence is never counted from before this

    def __len__(self) -> int:
        return len(self._slot)

    @property
    def heap_size(self) -> int:
        """Entries in the timer heap, live and garbage; stays O(watched devices)."""
        return len(self._heap)

    def watch(self, device_id: str, interval: timedelta, misses: int, now: datetime) -> None:
        """Supervise a device: silent for longer than ``misses * interval`` is overdue.

        A new device's silence counts from `now`. Re-watching (a config reload)
        changes only the limit: it must not reset the silence of a device that
        is already quiet, or frequent reloads would hide a dead device forever.
        """
        if interval <= timedelta(0):
            raise ValueError("interval must be positive")
        if misses < 1:
            raise ValueError("misses must be at least 1")
        limit = (interval * misses) // _US
        slot = self._slot.get(device_id)
        if slot is None:
            slot = self._allocate(device_id)
            self._last[slot] = _to_us(now)
            self._limit[slot] = limit
            self._push(slot, self._deadline(slot))
            return
        self._limit[slot] = limit
        if self._state[slot] == _WATCHING:
            deadline = self._deadline(slot)
            if deadline < self._queued[slot]:  # moved earlier: the live entry is too late
                self._push(slot, deadline)
                self._maybe_compact()

    def heard(self, device_id: str, now: datetime) -> Heard:
        """Record a sign of life. O(1): an array write; the heap is touched only on recovery."""
        slot = self._slot.get(device_id)
        if slot is None:
            return Heard.UNWATCHED
        t = _to_us(now)
        # max(): a late, out-of-order message never moves it back.
        self._last[slot] = max(self._last[slot], t)
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
        """Count every device's silence from `now` (+ grace): alarmhub or the broker was away.

        O(1): a floor under all last-heard times. Live heap entries become too
        early, which the lazy re-push in :meth:`due` absorbs. Devices already
        reported silent stay reported (their technical alarm is open) until heard.
        """
        self._floor = max(self._floor, _to_us(now) + self._grace_us)

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
        return max(self._last[slot], self._floor) + self._limit[slot]

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


# --- Dose schedules ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DoseSchedule:
    """Daily dose times in local wall-clock time, and how long after each a dose counts.

    `window`: a dose.taken up to this long after the scheduled time is on time;
    after that the dose is missed. `early`: a dose.taken this long before the
    scheduled time still counts for it (dispensers allow it; device clocks drift).
    DST: each time names one instant a day (see :mod:`alarmhub.core.timewindow`),
    so a 02:30 dose is due at 03:00 on the spring day and once, at the first
    02:30, on the autumn day.
    """

    times: tuple[time, ...]
    tz: ZoneInfo
    window: timedelta
    early: timedelta = timedelta(0)

    def __post_init__(self) -> None:
        if not self.times:
            raise ValueError("a dose schedule needs at least one time")
        if any(t.tzinfo is not None for t in self.times):
            raise ValueError("dose times are naive local times; the zone is `tz`")
        if list(self.times) != sorted(set(self.times)):
            raise ValueError("dose times must be sorted and distinct")
        if self.window <= timedelta(0):
            raise ValueError("window must be positive")
        if self.early < timedelta(0):
            raise ValueError("early must not be negative")

    def next_due(self, after: datetime) -> datetime:
        """The first scheduled instant strictly after `after` (aware), in UTC.

        Two times that both fall into the spring gap name the same instant and
        so become one dose that day.
        """
        day = after.astimezone(self.tz).date() - timedelta(days=1)
        while True:  # ends within three days: every day holds at least one dose
            for at in self.times:
                instant = resolve_local(day, at, self.tz)
                if instant > after:
                    return instant
            day += timedelta(days=1)


class DoseOutcome(StrEnum):
    ON_TIME = "on_time"  # within [scheduled - early, scheduled + window]
    LATE = "late"  # after the window closed: resolves the dose_missed alarm
    UNSCHEDULED = "unscheduled"  # no dose to attribute it to (extra or untracked)


@dataclass(frozen=True, slots=True)
class DoseTaken:
    """What one dose.taken event meant."""

    device_id: str
    outcome: DoseOutcome
    taken_at: datetime
    scheduled_at: datetime | None  # the dose it was attributed to
    # Doses of this device whose window closed before `taken_at` and that due()
    # had not reported yet. The shell raises them exactly as if due() had, so the
    # result does not depend on whether its timer or the event came first.
    missed: tuple[Overdue, ...] = ()


class _DoseTrack:
    __slots__ = ("gen", "missed", "pending", "schedule")

    def __init__(self, schedule: DoseSchedule, pending: datetime) -> None:
        self.schedule = schedule
        self.pending = pending  # next dose neither taken nor reported missed
        self.missed: datetime | None = None  # latest reported-missed dose, unresolved
        self.gen = 0  # bumped on every re-arm; older heap entries are garbage


class DoseWatch:
    """Says when a scheduled dose was not followed by dose.taken in time.

    Dispensers number in thousands, not millions, so this uses a plain heap of
    (window close, generation, device) tuples with the same lazy invalidation as
    :class:`Supervisor`. Only the latest missed dose can be resolved by a late
    dose.taken; an earlier one stays open for home care to close by hand.
    """

    __slots__ = ("_heap", "_tracks")

    def __init__(self) -> None:
        self._tracks: dict[str, _DoseTrack] = {}
        self._heap: list[tuple[datetime, int, str]] = []

    def track(self, device_id: str, schedule: DoseSchedule, since: datetime) -> None:
        """Supervise every dose scheduled strictly after `since`.

        On start-up pass the last instant whose doses are known to be settled
        (e.g. the last processed event), so a dose whose window is still open
        across a restart is neither lost nor reported twice.
        """
        previous = self._tracks.get(device_id)
        track = _DoseTrack(schedule, schedule.next_due(since))
        if previous is not None:
            track.gen = previous.gen + 1
        self._tracks[device_id] = track
        self._arm(device_id, track)

    def untrack(self, device_id: str) -> None:
        self._tracks.pop(device_id, None)  # its heap entries become garbage

    def next_deadline(self) -> datetime | None:
        """No dose can be reported missed before this instant (may be early, never late)."""
        return self._heap[0][0] if self._heap else None

    def due(self, now: datetime) -> list[Overdue]:
        """Doses whose window closed before `now` without a dose.taken, each once."""
        out: list[Overdue] = []
        while self._heap and self._heap[0][0] < now:
            _, gen, device_id = heapq.heappop(self._heap)
            track = self._tracks.get(device_id)
            if track is None or track.gen != gen:
                continue
            out.extend(self._close_windows(device_id, track, now))
        return out

    def taken(self, device_id: str, at: datetime) -> DoseTaken:
        """Attribute a dose.taken at `at` to the pending dose, or late to the missed one."""
        track = self._tracks.get(device_id)
        if track is None:
            return DoseTaken(device_id, DoseOutcome.UNSCHEDULED, at, None)
        missed = tuple(self._close_windows(device_id, track, at))
        schedule = track.schedule
        if at >= track.pending - schedule.early:  # and <= pending + window, after closing
            scheduled = track.pending
            track.pending = schedule.next_due(scheduled)
            self._arm(device_id, track)
            return DoseTaken(device_id, DoseOutcome.ON_TIME, at, scheduled, missed)
        if track.missed is not None and at >= track.missed:
            scheduled, track.missed = track.missed, None
            return DoseTaken(device_id, DoseOutcome.LATE, at, scheduled, missed)
        return DoseTaken(device_id, DoseOutcome.UNSCHEDULED, at, None, missed)

    def _close_windows(self, device_id: str, track: _DoseTrack, now: datetime) -> list[Overdue]:
        window = track.schedule.window
        out: list[Overdue] = []
        while track.pending + window < now:
            out.append(
                Overdue(device_id, OverdueKind.DOSE_MISSED, track.pending, track.pending + window)
            )
            track.missed = track.pending
            track.pending = track.schedule.next_due(track.pending)
        if out:
            self._arm(device_id, track)
        return out

    def _arm(self, device_id: str, track: _DoseTrack) -> None:
        track.gen += 1
        heapq.heappush(self._heap, (track.pending + track.schedule.window, track.gen, device_id))
