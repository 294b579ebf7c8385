"""Dose schedules: a scheduled dose not followed by dose.taken in time is missed.

Split from :mod:`alarmhub.core.supervision` (which re-exports these names); the
missed dose is reported as an :class:`~alarmhub.core.supervision.Overdue` like a
silent device.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING

from alarmhub.core.model import Event, EventType
from alarmhub.core.overdue import Overdue, OverdueKind
from alarmhub.core.rules import parse_hhmm
from alarmhub.core.timewindow import resolve_local

if TYPE_CHECKING:
    from zoneinfo import ZoneInfo


def dose_times(texts: Iterable[str]) -> tuple[time, ...]:
    """Stored "HH:MM" dose times as a DoseSchedule takes them: in order, each once.

    Settings stored before the API normalised them may be out of order or repeat a
    time ("8:00" beside "08:00"); DoseSchedule refuses those, and the refusal stopped
    supervision from starting.
    """
    return tuple(sorted({parse_hhmm(text) for text in texts}))


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


# The field of alarmhub's own dose events naming the dose (ISO 8601): the pipeline
# keys the dose_missed alarm on it, one alarm per scheduled dose (issue 12 item 17).
SCHEDULED_AT = "scheduled_at"


def dose_event(device_id: str, etype: EventType, scheduled_at: datetime, now: datetime) -> Event:
    """alarmhub's own `dose.overdue` (missed) or `dose.late` (taken late) for one dose.

    The message id names the dose, so each dose raises (and a restart finds) its own
    alarm: "dose:<scheduled>" / "late:<scheduled>" (store/sqlite/supervision_rows.py reads the
    first back).
    """
    iso = scheduled_at.isoformat()
    prefix = "dose" if etype is EventType.DOSE_OVERDUE else "late"
    fields = {"since": iso, SCHEDULED_AT: iso}
    return Event(device_id, f"{prefix}:{iso}", etype, now, now, fields)


class DoseOutcome(StrEnum):
    ON_TIME = "on_time"  # within [scheduled - early, scheduled + window]
    LATE = "late"  # after the window closed, for the latest dose reported missed and unsettled
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
    # A late take that settled a dose reported missed (`scheduled_at`): that dose's
    # own dose_missed alarm may close (the shell raises `dose.late` for it). A take
    # for another dose never closes it (issue 12 item 17: any dose.taken used to
    # resolve an older dose_missed); other doses still missed keep their alarms.
    settles_missed: bool = False


# Doses reported missed and kept for a late take to settle, newest last. A take is
# attributed to the newest, so older ones matter only after as many late takes: a
# dispenser nobody uses must not grow its list for ever.
_MISSED_KEPT = 16


class _DoseTrack:
    __slots__ = ("gen", "missed", "pending", "schedule", "settled")
    missed: list[datetime]

    def __init__(self, schedule: DoseSchedule, settled: datetime) -> None:
        self.schedule = schedule
        # Every dose scheduled at or before this is settled: taken, or reported missed.
        self.settled = settled
        self.pending = schedule.next_due(settled)  # next dose neither taken nor reported
        self.missed = []  # doses reported missed and not settled since, oldest first
        self.gen = 0  # bumped on every re-arm; older heap entries are garbage


class DoseWatch:
    """Says when a scheduled dose was not followed by dose.taken in time.

    Dispensers number in thousands, not millions, so this uses a plain heap of
    (window close, generation, device) tuples with the same lazy invalidation as
    :class:`Supervisor`. A late dose.taken settles the latest dose reported missed
    and not settled yet; each missed dose is an alarm of its own, so only that
    dose's alarm closes, and the others stay open for home care.
    """

    __slots__ = ("_heap", "_tracks")

    def __init__(self) -> None:
        self._tracks: dict[str, _DoseTrack] = {}
        self._heap: list[tuple[datetime, int, str]] = []

    def track(self, device_id: str, schedule: DoseSchedule, since: datetime) -> None:
        """Supervise every dose scheduled strictly after `since` (a new device).

        On start-up pass the last instant whose doses are known to be settled
        (the store says: core docstring of alarmhub.daemon.supervisor), so doses whose
        windows closed while alarmhub was down are reported, and a dose whose
        window is still open across a restart is neither lost nor reported twice.

        A device already tracked keeps its state (issue 12 item 17): the registry
        is re-read on every change of any device, and restarting the track from
        `since` (= now) dropped the dose whose window was open. A changed
        schedule continues from the last settled instant, not from `since`.
        """
        previous = self._tracks.get(device_id)
        if previous is not None and previous.schedule == schedule:
            return
        track = _DoseTrack(schedule, previous.settled if previous is not None else since)
        if previous is not None:
            track.gen = previous.gen + 1
            track.missed = previous.missed
        self._tracks[device_id] = track
        self._arm(device_id, track)

    def resolved(self, device_id: str, scheduled_at: datetime | None = None) -> None:
        """A dose_missed alarm was closed by hand.

        One about a single dose (`scheduled_at`) changes nothing here: a late take
        of that dose must still be attributed to it (and close nothing), not to an
        earlier dose whose own alarm is still open. One not about a single dose (a
        dispenser's own report, or one listing several doses, raised before each dose
        had its own alarm) means home care handled what was missed.
        """
        track = self._tracks.get(device_id)
        if track is not None and scheduled_at is None:
            track.missed.clear()

    def settled(self, device_id: str) -> datetime | None:
        """Every dose of this device scheduled at or before this instant is settled."""
        track = self._tracks.get(device_id)
        return track.settled if track is not None else None

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
            scheduled = track.settled = track.pending
            track.pending = schedule.next_due(scheduled)
            self._arm(device_id, track)
            return DoseTaken(device_id, DoseOutcome.ON_TIME, at, scheduled, missed)
        if track.missed and at >= track.missed[-1]:
            scheduled = track.missed.pop()
            return DoseTaken(
                device_id, DoseOutcome.LATE, at, scheduled, missed, settles_missed=True
            )
        return DoseTaken(device_id, DoseOutcome.UNSCHEDULED, at, None, missed)

    def _close_windows(self, device_id: str, track: _DoseTrack, now: datetime) -> list[Overdue]:
        window = track.schedule.window
        out: list[Overdue] = []
        while track.pending + window < now:
            out.append(
                Overdue(device_id, OverdueKind.DOSE_MISSED, track.pending, track.pending + window)
            )
            track.missed.append(track.pending)
            del track.missed[:-_MISSED_KEPT]
            track.settled = track.pending
            track.pending = track.schedule.next_due(track.pending)
        if out:
            self._arm(device_id, track)
        return out

    def _arm(self, device_id: str, track: _DoseTrack) -> None:
        track.gen += 1
        heapq.heappush(self._heap, (track.pending + track.schedule.window, track.gen, device_id))
