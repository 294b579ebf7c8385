"""The registry and the rules in force: registration, the poll for other writers, reloads.

Devices registered through the API are written under the write gate's lock and
seen by ingest at once; those written by the CLI or another process are picked
up by the poll (:meth:`Registry.run`, every REGISTRY_POLL_S), or sooner by a
batch whose commit finds one of its devices moved (:meth:`Registry.reload_devices`).
Either way supervision starts watching them. A rules reload (SIGHUP) is
all-or-nothing: a bad file, or one that strands open alarms without their
escalation policy, keeps the rules in force.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Protocol

import structlog

from alarmhub.clock import Clock
from alarmhub.config.rules import RulesError, alarm_kinds, load_rules
from alarmhub.core.escalation import orphaned
from alarmhub.core.model import Alarm, Device
from alarmhub.core.people import AuditEntry
from alarmhub.daemon.state import HubState
from alarmhub.daemon.waits import wait_set
from alarmhub.observability.gauges import QueueGauges, device_gauges
from alarmhub.observability.logs import OncePer
from alarmhub.observability.metrics import Metrics
from alarmhub.store.errors import IdTakenError, StoreError
from alarmhub.store.ports import RegistryStore, SilenceSource

log = structlog.get_logger("alarmhub")
REGISTRY_POLL_S = 2.0


class Watch(Protocol):
    """Supervision's part in registration (daemon/supervisor.py)."""

    def now(self) -> datetime: ...
    def watch(self, d: Device, now: datetime, wall: datetime, misses: int) -> None: ...
    def rewatch(self, devices: Iterable[Device]) -> None: ...


class Registry:
    def __init__(
        self,
        *,
        state: HubState,
        store: RegistryStore,
        reader: SilenceSource,
        lock: asyncio.Lock,
        clock: Clock,
        metrics: Metrics,
        queue_gauges: QueueGauges,
        watch: Watch,
        arm: Callable[[Alarm], None],
        rules_file: Path,
        stopping: asyncio.Event,
        journal_exporting: frozenset[str] = frozenset(),
    ) -> None:
        self._state = state
        self._store = store
        self._reader = reader
        self._lock = lock
        self._clock = clock
        self._metrics = metrics
        self._queue_gauges = queue_gauges
        self._rules_file = rules_file
        self._journal_exporting = journal_exporting
        self._stopping = stopping
        self._watcher = watch
        self._arm = arm
        self._mark = ""
        self._once = OncePer(60.0)

    async def load(self) -> None:
        """At start: the registry, the active alarms and those that may still flap."""
        now = self._clock.now()
        self._state.load(
            await self._store.load_devices(),
            await self._store.load_active_alarms(),
            await self._store.load_resolved_since(now - self._state.rules.max_flap_window()),
        )
        self._mark = await self._store.newest_device_update()
        device_gauges(self._metrics, self._state.devices.values())

    async def reload_alarms(self) -> None:
        """The active alarms and those that may still flap, as stored now (a new term)."""
        now = self._clock.now()
        self._state.reload_alarms(
            await self._store.load_active_alarms(),
            await self._store.load_resolved_since(now - self._state.rules.max_flap_window()),
        )

    async def reload_devices(self, ids: list[str]) -> None:
        """These devices as stored now, into memory and supervision: moved by another process.

        Called under the write gate's lock by a decision the store refused
        (DeviceMovedError, WriteGate.deciding), before the next poll would have found
        them: the decision is taken again on where the devices are now.
        """
        self._watch(await self._store.get_devices(ids))

    def _watch(self, devices: Iterable[Device]) -> datetime:
        """Into the registry in memory and under supervision; returns the wall time used."""
        now, wall = self._watcher.now(), self._clock.now()
        for device in devices:
            self._state.devices[device.id] = device
            self._watcher.watch(device, now, wall, self._state.rules.offline_after_misses)
        return wall

    async def register_new_device(
        self, device: Device, *, audit: Sequence[AuditEntry], assign_bridges: bool = False
    ) -> bool:
        """Register a device whose id must be new; False if the id is taken anywhere.

        The id is checked again inside the write's transaction (the CLI writes
        without this lock), and `audit` commits with the device. `assign_bridges`:
        a system admin's, who may open a bridge nobody assigned (core/bridges.py).
        """
        async with self._lock:
            if device.id in self._state.devices:
                return False
            try:
                await self._store.register_devices(
                    [device],
                    self._clock.now(),
                    audit=audit,
                    existing_in=frozenset(),
                    assign_bridges=assign_bridges,
                )
            except IdTakenError:
                return False
            self._watch([device])
        return True

    async def register_devices(
        self,
        devices: list[Device],
        keep: frozenset[str] = frozenset(),
        *,
        audit: Sequence[AuditEntry],
        existing_in: frozenset[str] | None = None,
        assign_bridges: bool = False,
    ) -> list[str]:
        """Register, change or decommission (active=False) devices; seen by ingest at once.

        Columns in `keep` (resident, settings) stay as stored on existing devices.
        `audit` commits in the same transaction; `existing_in` limits which existing
        devices may be overwritten (checked in that transaction, IdTakenError);
        `assign_bridges` as in register_new_device.
        Returns the ids whose SIP credentials were set in another municipality.
        """
        async with self._lock:
            stale = await self._store.register_devices(
                devices,
                self._clock.now(),
                keep,
                audit=audit,
                existing_in=existing_in,
                assign_bridges=assign_bridges,
            )
            if keep:
                devices = await self._store.get_devices(d.id for d in devices)
            self._watch(devices)
        if stale:
            log.warning(
                "device.credentials_set_before_move",
                device_ids=stale[:20],
                count=len(stale),
                hint="set new SIP credentials in the new municipality (docs/scaip.md)",
            )
        return stale

    async def run(self) -> None:
        """Pick up devices registered, changed or decommissioned by the CLI or another process.

        The wait ends at once when the hub stops, not after the rest of a poll interval.
        """
        while not self._stopping.is_set():
            await wait_set(self._stopping, REGISTRY_POLL_S)
            if not self._stopping.is_set():
                await self.refresh()

    async def refresh(self) -> None:
        """One tick of :meth:`run`: devices, silences and gauges as stored now.

        The scenario suite (tests/scenarios/scenario.py) calls it at each instant of virtual time.
        """
        try:
            changed, self._mark = await self._store.devices_changed_since(self._mark)
        except StoreError as exc:  # refused: the registry in memory stands until next time
            self._refresh_failed(exc)
            return
        wall = self._watch(changed)
        state = self._state
        try:
            state.silences = tuple(await self._reader.active_silences(wall))
        except StoreError as exc:  # refused: the silences read last stand
            self._refresh_failed(exc)
        if changed:
            # Also the hub's own registrations: their rows show up here too, so the
            # gauges (a walk over the whole registry) are recounted at most every
            # REGISTRY_POLL_S, never once per API call.
            device_gauges(self._metrics, state.devices.values())
            log.info("registry.refreshed", changed=len(changed))
        self._queue_gauges.update(state.alarms.by_id.values())
        state.alarms.forget_resolved_before(self._clock.now() - state.rules.max_flap_window())

    def _refresh_failed(self, exc: StoreError) -> None:
        """Said once a minute: the refresh runs every few seconds and retries by itself."""
        self._once.warn(log, "registry.refresh_failed", error=str(exc))

    def reload_rules(self) -> bool:
        """SIGHUP: load the rules file again; a bad file keeps the rules in force.

        Bad includes a file that leaves an alarm kind of a municipality with journal
        export on without its `[journal.<kind>]` section (checked as at start).
        """
        state = self._state
        try:
            rules = load_rules(self._rules_file, journal_exporting=self._journal_exporting)
        except RulesError as exc:
            log.error(  # noqa: TRY400 - the message is the error; no traceback
                "rules.reload_failed", error=str(exc), kept_version=state.rules.version
            )
            return False
        # A renamed or removed policy would silently stop the escalation of every
        # open alarm raised under it (issue 12 item 6): refuse, keep the rules in force.
        stranded = orphaned(state.alarms.by_id.values(), rules.policy_named)
        if stranded:
            log.error(
                "rules.reload_failed",
                error="the new rules lack the escalation policy of open alarms: "
                + ", ".join(sorted({f"{a.policy} ({a.municipality})" for a in stranded})),
                alarms=sorted(a.id for a in stranded)[:20],
                kept_version=state.rules.version,
            )
            return False
        old, state.rules = state.rules.version, rules
        self._metrics.zero_alarm_kinds(alarm_kinds(rules))
        for alarm in list(state.alarms.by_id.values()):
            self._arm(alarm)
        self._watcher.rewatch(list(state.devices.values()))
        log.info("rules.reloaded", old_version=old, version=rules.version)
        return True
