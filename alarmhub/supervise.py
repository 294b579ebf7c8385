"""Missing signals: silent devices and doses not taken, for the whole registry.

One :class:`~alarmhub.core.supervision.Supervisor` (one heap) and one
:class:`~alarmhub.core.supervision.DoseWatch` serve every device; this task
only feeds them and turns what is overdue into alarmhub's own events
(`device.silent`, `dose.overdue`), judged by the same pipeline as any event.

Time here is monotonic, expressed as a datetime: `start_wall + (mono - start_mono)`.
A wall clock stepped an hour forward must not make every device look silent at
once. Dose schedules are wall-clock times of day, so they use the wall clock.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import structlog

from alarmhub.core.model import Device, Event, EventType
from alarmhub.core.rules import parse_hhmm
from alarmhub.core.supervision import DoseSchedule, DoseWatch, Overdue, OverdueKind, Supervisor

if TYPE_CHECKING:
    from alarmhub.app import AlarmHub

log = structlog.get_logger("alarmhub.supervise")
STEP_S = 1.0


class Supervision:
    def __init__(self, hub: AlarmHub) -> None:
        self._hub = hub
        self.heartbeats = Supervisor()
        self.doses = DoseWatch()
        self._start_wall = hub.clock.now()
        self._start_mono = hub.clock.monotonic()
        self.declared_silent = 0

    def now(self) -> datetime:
        return self._start_wall + timedelta(seconds=self._hub.clock.monotonic() - self._start_mono)

    def watch_all(self, devices: Iterable[Device]) -> None:
        now = self.now()
        wall = self._hub.clock.now()
        misses = self._hub.rules.offline_after_misses
        for d in devices:
            self.watch(d, now, wall, misses)

    def watch(self, d: Device, now: datetime, wall: datetime, misses: int) -> None:
        if d.active and d.heartbeat_interval_s:
            self.heartbeats.watch(d.id, timedelta(seconds=d.heartbeat_interval_s), misses, now)
        else:
            self.heartbeats.unwatch(d.id)
        if d.active and d.settings.dose_times:
            schedule = DoseSchedule(
                tuple(parse_hhmm(t) for t in d.settings.dose_times),
                self._hub.rules.timezone,
                timedelta(minutes=d.settings.dose_window_min),
            )
            self.doses.track(d.id, schedule, wall)
        else:
            self.doses.untrack(d.id)

    def heard(self, device_ids: Iterable[str]) -> None:
        now = self.now()
        for device_id in device_ids:
            self.heartbeats.heard(device_id, now)

    def dose_taken(self, device_id: str, at: datetime) -> None:
        self.doses.taken(device_id, at)

    def restart(self) -> None:
        """After a broker reconnect, count silence from now: devices could not reach us."""
        self.heartbeats.restart(self.now())

    async def run(self) -> None:
        while True:
            await asyncio.sleep(STEP_S)
            await self.step()

    async def step(self) -> int:
        """Raise what is overdue now; returns how many. One tick of :meth:`run`.

        The scenario suite (tests/scenario.py) calls it itself at each instant of
        virtual time, so a night of supervision runs in milliseconds.
        """
        metrics = self._hub.metrics
        started = time.perf_counter()
        overdue = self.heartbeats.due(self.now()) + self.doses.due(self._hub.clock.now())
        metrics.supervision_step_seconds.observe(time.perf_counter() - started)
        metrics.devices_watched.set(len(self.heartbeats))
        if overdue:
            await self._raise(overdue)
        return len(overdue)

    def next_due(self) -> datetime | None:
        """The earliest wall-clock instant a step may find something overdue (maybe early).

        A step reports a silence only strictly after its deadline; :meth:`run`
        notices within STEP_S.
        """
        times = []
        heard = self.heartbeats.next_deadline()
        if heard is not None:
            # Supervision time is monotonic: map it onto the wall clock as it reads now.
            times.append(self._hub.clock.now() + (heard - self.now()))
        dose = self.doses.next_deadline()
        if dose is not None:
            times.append(dose)
        return min(times, default=None)

    async def _raise(self, overdue: list[Overdue]) -> None:
        hub = self._hub
        wall = hub.clock.now()
        events: list[tuple[Event, Device]] = []
        for item in overdue:
            device = hub.state.devices.get(item.device_id)
            if device is None or not device.active:
                continue
            if item.kind is OverdueKind.DEVICE_SILENT:
                etype, msg_id = EventType.DEVICE_SILENT, f"silent:{item.since.isoformat()}"
                self.declared_silent += 1
            else:
                etype, msg_id = EventType.DOSE_OVERDUE, f"dose:{item.since.isoformat()}"
            fields = {"since": item.since.isoformat()}
            events.append((Event(device.id, msg_id, etype, wall, wall, fields), device))
        if events:
            await hub.process_internal(events)
            log.info("supervision.overdue", count=len(events))
