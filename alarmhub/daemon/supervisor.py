"""Missing signals: silent devices and doses not taken, for the whole registry.

One :class:`~alarmhub.core.supervision.Supervisor` (one heap) and one
:class:`~alarmhub.core.supervision.DoseWatch` serve every device; this task
only feeds them and turns what is overdue into alarmhub's own events
(`device.silent`, `dose.overdue`), judged by the same pipeline as any event.

Time here is monotonic, expressed as a datetime: `start_wall + (mono - start_mono)`.
A wall clock stepped an hour forward must not make every device look silent at
once. Dose schedules are wall-clock times of day, so they use the wall clock.

Restarts forget nothing (issue 12 item 15): every device is seeded with the
last-heard time the store keeps, and a device whose offline alarm is still open
starts out as reported. Start-up and each broker reconnect end an *outage*
(:meth:`Supervisor.restart`), and nothing is declared silent or missed while
the broker is unreachable: devices cannot reach alarmhub then either.

Every device is supervised (item 16): one registered without a heartbeat
interval gets its kind's default from the rules file
(`default_heartbeat_interval_s`); one with neither is logged at start, never
silently left out. An offline alarm resolved by hand while the device stays
silent is raised again one interval later.

A tracker whose safe zone is watched needs usable fixes (item 18): a second
Supervisor, fed only fixes good enough to say "inside" (core.geo.fix_usable),
raises `location.no_fix` after `no_fix_alarm_after_s`, and the next usable fix
raises `location.fix`, which resolves it. A tracker that keeps sending poor
fixes is alive (no device_offline) but its zone is not being watched. A usable
fix taken longer than `no_fix_alarm_after_s` before it arrived (buffered out of
coverage) counts for neither: it shows where the person was, not where they are.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import replace
from datetime import datetime, timedelta

import structlog

from alarmhub.clock import Clock
from alarmhub.core.doses import dose_event, dose_times
from alarmhub.core.model import Alarm, AlarmState, Device, DeviceKind, Event, EventType
from alarmhub.core.rules import current_fix, geofence_of
from alarmhub.core.supervision import (
    DoseSchedule,
    DoseWatch,
    Heard,
    Overdue,
    OverdueKind,
    Supervisor,
)
from alarmhub.daemon.state import HubState
from alarmhub.observability.metrics import Metrics
from alarmhub.store.ports import DoseHistory, SupervisionHistory

log = structlog.get_logger("alarmhub.supervise")
STEP_S = 1.0
# How far back a restart looks for doses missed while alarmhub was down: older
# ones are stale for home care, and a dispenser given a schedule long after its
# registration must not report the days before it.
DOSE_LOOKBACK = timedelta(hours=24)


RaiseEvents = Callable[[list[tuple[Event, Device]]], Awaitable[None]]


class Supervision:
    """Watches the registry in `state`; what is overdue goes to `raise_events` (the pipeline).

    `broker_connected` says whether devices can reach alarmhub at all: while they
    cannot, their silence is not theirs.
    """

    def __init__(
        self,
        state: HubState,
        clock: Clock,
        metrics: Metrics,
        raise_events: RaiseEvents,
        broker_connected: Callable[[], bool] = lambda: True,
    ) -> None:
        self._state = state
        self._clock = clock
        self._metrics = metrics
        self._raise_events = raise_events
        self._broker_connected = broker_connected
        self.heartbeats = Supervisor(grace=state.rules.restart_grace)
        self.doses = DoseWatch()
        # Geofenced trackers: time since the last usable fix (item 18).
        self.fixes = Supervisor(grace=state.rules.restart_grace)
        self._fixed_again: list[str] = []  # usable fix after no_fix was raised
        self._missed: list[Overdue] = []  # doses taken() or the start-up replay found missed
        self._late: list[tuple[str, datetime]] = []  # late takes that settle dose_missed
        self._kind_cache: dict[tuple[str, EventType], frozenset[str]] = {}
        self._dose_history: Mapping[str, DoseHistory] = {}  # only while loading
        self._start_wall = clock.now()
        self._start_mono = clock.monotonic()
        self.declared_silent = 0

    def now(self) -> datetime:
        return self._start_wall + timedelta(seconds=self._clock.monotonic() - self._start_mono)

    async def load(self, history: SupervisionHistory) -> None:
        """At start: watch the registry as the store left it (items 15 and 17).

        At the start of each owner's term (daemon/owner.py), so whatever this
        instance watched before is dropped: the store says what was heard since,
        by whichever instance owned intake meanwhile.
        """
        grace = self._state.rules.restart_grace
        self.heartbeats, self.doses, self.fixes = (
            Supervisor(grace=grace),
            DoseWatch(),
            Supervisor(grace=grace),
        )
        self._fixed_again, self._missed, self._late = [], [], []
        wall = self._clock.now()
        dispensers = [d.id for d in self._state.devices.values() if d.settings.dose_times]
        self._dose_history = await history.dose_history(dispensers, wall, DOSE_LOOKBACK)
        self.watch_all(self._state.devices.values(), await history.last_heard())
        self._dose_history = {}

    def watch_all(
        self, devices: Iterable[Device], last_heard: Mapping[str, datetime] | None = None
    ) -> None:
        """At start: every device, seeded with the store's last-heard times; the outage ends now."""
        now = self.now()
        self._watch_many(devices, now, last_heard or {})
        self.heartbeats.restart(now)

    def rewatch(self, devices: Iterable[Device]) -> None:
        """After a rules reload: each device's interval, misses and no-fix limit anew.

        Without it a reload that gave a kind its `default_heartbeat_interval_s` (what
        `supervision.device_unsupervised` asks for) left those devices unwatched
        until a restart. Re-watching keeps a watched device's silence
        (Supervisor.watch), so a reload never hides a dead one; a device the old
        rules left unwatched counts from now. No restart grace: nothing was down.
        """
        self._watch_many(devices, self.now(), {})

    def _watch_many(
        self, devices: Iterable[Device], now: datetime, heard: Mapping[str, datetime]
    ) -> None:
        """watch() for each device, their heartbeats in one Supervisor.watch_many: the
        start-up's registry (1 M devices) in one pass, without a list of them all."""
        wall = self._clock.now()
        rules = self._state.rules
        unsupervised = 0

        def beats() -> Iterator[tuple[str, timedelta, datetime | None, bool]]:
            nonlocal unsupervised
            for d in devices:
                last_heard = heard.get(d.id)
                interval = rules.heartbeat_interval(d)
                if d.active and interval is not None:
                    silent = self._open_alarm(d, EventType.DEVICE_SILENT) is not None
                    yield d.id, interval, last_heard, silent
                else:
                    self.heartbeats.unwatch(d.id)
                    unsupervised += d.active
                self._watch_others(d, now, wall, last_heard)

        self.heartbeats.watch_many(beats(), rules.offline_after_misses, now)
        if unsupervised:
            log.warning(
                "supervision.unsupervised_devices",
                count=unsupervised,
                hint="no heartbeat interval and no default_heartbeat_interval_s for their kind",
            )

    def watch(
        self,
        d: Device,
        now: datetime,
        wall: datetime,
        misses: int,
        *,
        last_heard: datetime | None = None,
        warn: bool = True,
    ) -> None:
        """Watch (or stop watching) one device; registered or changed: `warn` if unsupervised."""
        interval = self._state.rules.heartbeat_interval(d)
        if warn and d.active and interval is None:
            # Registered through the API or the CLI without an interval, and the rules
            # give its kind no default: say so, never leave it out silently (item 16).
            log.warning("supervision.device_unsupervised", device_id=d.id, kind=d.kind.value)
        if d.active and interval is not None:
            silent = self._open_alarm(d, EventType.DEVICE_SILENT) is not None
            self.heartbeats.watch(d.id, interval, misses, now, last_heard=last_heard, silent=silent)
        else:
            self.heartbeats.unwatch(d.id)
        self._watch_others(d, now, wall, last_heard)

    def _watch_others(
        self, d: Device, now: datetime, wall: datetime, last_heard: datetime | None
    ) -> None:
        """A device's no-fix clock (geofenced trackers) and dose schedule (dispensers)."""
        no_fix_after = self._state.rules.no_fix_after
        if (
            d.active
            and no_fix_after is not None
            and d.kind is DeviceKind.GPS_TRACKER
            and geofence_of(d) is not None
        ):
            silent = self._open_alarm(d, EventType.NO_USABLE_FIX) is not None
            self.fixes.watch(d.id, no_fix_after, 1, now, last_heard=last_heard, silent=silent)
        else:
            self.fixes.unwatch(d.id)
        if d.active and d.settings.dose_times:
            schedule = DoseSchedule(
                dose_times(d.settings.dose_times),
                self._state.rules.timezone,
                timedelta(minutes=d.settings.dose_window_min),
            )
            history = self._dose_history.get(d.id)
            if history is None or self.doses.settled(d.id) is not None:
                self.doses.track(d.id, schedule, wall)  # new now, or kept as it is
                return
            # From where the store says its doses stand, replaying the takes since:
            # doses missed while alarmhub was down are reported (item 17).
            self.doses.track(d.id, schedule, history.since)
            for at in history.taken:
                self._missed.extend(self.doses.taken(d.id, at).missed)
        else:
            self.doses.untrack(d.id)

    def heard(self, device_ids: Iterable[str]) -> None:
        now = self.now()
        for device_id in device_ids:
            self.heartbeats.heard(device_id, now)

    def location(self, event: Event) -> None:
        """A committed location event: a current usable fix restarts the tracker's no-fix
        clock; a stale one (buffered, delivered late: core.rules.current_fix) does not."""
        device = self._state.devices.get(event.device_id)
        limit = self._state.rules.no_fix_after
        if device is None or limit is None or not current_fix(event, device, limit):
            return
        if self.fixes.heard(device.id, self.now()) is Heard.RECOVERED:
            self._fixed_again.append(device.id)

    def dose_taken(self, device_id: str, at: datetime) -> None:
        """A committed dose.taken; doses it shows were missed are raised at the next step.

        A take that settles, late, a dose reported missed closes that dose's own
        dose_missed alarm (`dose.late`, item 17); any other take leaves them open.
        """
        result = self.doses.taken(device_id, at)
        self._missed.extend(result.missed)
        if result.settles_missed and result.scheduled_at is not None:
            self._late.append((device_id, result.scheduled_at))

    def restart(self) -> None:
        """A broker reconnect ended an outage: what fell due meanwhile gets its grace."""
        self.heartbeats.restart(self.now())
        self.fixes.restart(self.now())

    def resolved(self, alarm: Alarm) -> None:
        """An alarm changed by hand: a resolved offline (or no-usable-fix) alarm re-arms
        a device still silent (or still without a usable fix)."""
        device = self._state.devices.get(alarm.device_id)
        if device is None or alarm.state is not AlarmState.RESOLVED:
            return
        if alarm.kind in self._kinds(EventType.DOSE_OVERDUE):
            self.doses.resolved(device.id, alarm.scheduled_at)
        if alarm.kind in self._kinds(EventType.DEVICE_SILENT) and self.heartbeats.resolved(
            device.id, self.now()
        ):
            log.info("supervision.rearmed", device_id=device.id)
        # Likewise a tracker's "no usable fix": closing it does not make the fixes
        # usable, and left reported, its safe zone went unwatched with nobody told.
        if alarm.kind in self._kinds(EventType.NO_USABLE_FIX) and self.fixes.resolved(
            device.id, self.now()
        ):
            log.info("supervision.rearmed", device_id=device.id, what="usable fix")

    def _kinds(self, etype: EventType) -> frozenset[str]:
        """Every alarm kind a rule raises for alarmhub's own event `etype`.

        Looked up for every device at start and at each registry change: a set per
        rules version, not a rule match per device (a million devices).
        """
        rules = self._state.rules
        key = (rules.version, etype)
        found = self._kind_cache.get(key)
        if found is None:
            every = [*rules.rules, *(r for m in rules.municipalities.values() for r in m.rules)]
            found = frozenset(r.alarm for r in every if r.event is etype and r.alarm)
            self._kind_cache[key] = found
        return found

    def _open_alarm(self, device: Device, etype: EventType) -> Alarm | None:
        for kind in self._kinds(etype):
            alarm = self._state.alarms.active((device.id, kind))
            if alarm is not None:
                return alarm
        return None

    def _broker_reachable(self) -> bool:
        """Whether devices can reach alarmhub; the connect itself calls :meth:`restart`."""
        return self._broker_connected()

    async def run(self) -> None:
        while True:
            await asyncio.sleep(STEP_S)
            await self.step()

    async def step(self) -> int:
        """Raise what is overdue now; returns how many. One tick of :meth:`run`.

        The scenario suite (tests/scenarios/scenario.py) calls it itself at each instant of
        virtual time, so a night of supervision runs in milliseconds.
        """
        metrics = self._metrics
        if not self._broker_reachable():
            return 0  # devices cannot reach us: their silence is not theirs
        started = time.perf_counter()
        now = self.now()
        overdue = self.heartbeats.due(now) + self.doses.due(self._clock.now())
        overdue += [replace(o, kind=OverdueKind.NO_USABLE_FIX) for o in self.fixes.due(now)]
        if self._missed:
            overdue, self._missed = self._missed + overdue, []
        if self._fixed_again or self._late:
            fixed, self._fixed_again = self._fixed_again, []
            late, self._late = self._late, []
            await self._raise_fixed(fixed, late)
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
            times.append(self._clock.now() + (heard - self.now()))
        dose = self.doses.next_deadline()
        if dose is not None:
            times.append(dose)
        return min(times, default=None)

    async def _raise(self, overdue: list[Overdue]) -> None:
        wall = self._clock.now()
        events: list[tuple[Event, Device]] = []
        for item in overdue:
            device = self._state.devices.get(item.device_id)
            if device is None or not device.active:
                continue
            if item.kind is OverdueKind.DOSE_MISSED:
                # One alarm per scheduled dose (item 17): the event names the dose.
                event = dose_event(device.id, EventType.DOSE_OVERDUE, item.since, wall)
                events.append((event, device))
                continue
            if item.kind is OverdueKind.DEVICE_SILENT:
                # The deadline too: a device re-armed after a resolve by hand is
                # reported again with the same last-heard time, as a new alarm.
                since, deadline = item.since.isoformat(), item.deadline.isoformat()
                etype, msg_id = EventType.DEVICE_SILENT, f"silent:{since}:{deadline}"
                self.declared_silent += 1
            else:
                since, deadline = item.since.isoformat(), item.deadline.isoformat()
                etype, msg_id = EventType.NO_USABLE_FIX, f"nofix:{since}:{deadline}"
            fields = {"since": item.since.isoformat()}
            events.append((Event(device.id, msg_id, etype, wall, wall, fields), device))
        if events:
            await self._raise_events(events)
            log.info("supervision.overdue", count=len(events))

    async def _raise_fixed(self, device_ids: list[str], late: list[tuple[str, datetime]]) -> None:
        """What came back: `location.fix` after `location.no_fix`, `dose.late` for a dose."""
        wall = self._clock.now()
        events = [
            (Event(d.id, f"fix:{wall.isoformat()}", EventType.USABLE_FIX, wall, wall), d)
            for device_id in device_ids
            if (d := self._state.devices.get(device_id)) is not None
        ]
        events += [
            (dose_event(d.id, EventType.DOSE_LATE, at, wall), d)
            for device_id, at in late
            if (d := self._state.devices.get(device_id)) is not None
        ]
        if events:
            await self._raise_events(events)
