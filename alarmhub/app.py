"""The composition root: `async with AlarmHub(settings) as hub:` runs alarmhub.

The same object serves `alarmhub run` and the in-process integration tests. Wiring
only: settings -> adapters (store, MQTT, metrics, clock) -> services (daemon/), each
given the few things it uses. It owns one TaskGroup; every task is named, cancelled
and awaited on exit. Its public names (`act`, `register_devices`, `reload_rules`, …)
delegate to the service that does the work, for the web (`web/ports.py`), CLI, tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import socket
from collections.abc import Awaitable, Callable, Coroutine
from datetime import timedelta
from types import TracebackType
from typing import Any, Self, TypeVar

import structlog

from alarmhub.builtin import installed_version
from alarmhub.clock import Clock, SystemClock
from alarmhub.config.profiles import default_profiles_dir, load_catalog
from alarmhub.config.rules import alarm_kinds, load_rules
from alarmhub.core.actions import Action, Conflict
from alarmhub.core.cluster import BrokerTiming, LeaseTiming, StallTiming
from alarmhub.core.decode import Catalog
from alarmhub.core.model import Alarm, Device, Event
from alarmhub.core.retention import Retention
from alarmhub.core.rules import RuleSet
from alarmhub.core.suppress import Silence
from alarmhub.core.views import alarm_json
from alarmhub.daemon.actions import Actions
from alarmhub.daemon.backlog import Backlog
from alarmhub.daemon.escalator import Escalator
from alarmhub.daemon.fanout import Broadcaster, first_sequence
from alarmhub.daemon.follower import ChangeFollower
from alarmhub.daemon.gate import WriteGate
from alarmhub.daemon.ingest import Ingest
from alarmhub.daemon.journal import ExportSwitch, delivery_from, exports_on_resolve
from alarmhub.daemon.leadership import Leadership, Ownership, SoleOwnership
from alarmhub.daemon.notifier import Notifier
from alarmhub.daemon.owner import Link, OwnerTerm
from alarmhub.daemon.presence import Presence
from alarmhub.daemon.pruner import Pruner
from alarmhub.daemon.registry import Registry
from alarmhub.daemon.scaip import ScaipIntake, ScaipSource
from alarmhub.daemon.sipwatch import sip_watches
from alarmhub.daemon.state import HubState
from alarmhub.daemon.supervisor import Supervision
from alarmhub.daemon.suppression import SuppressionKeeper
from alarmhub.mqtt.client import Backoff, MqttIngest
from alarmhub.observability.gauges import QueueGauges
from alarmhub.observability.logs import OncePer
from alarmhub.observability.metrics import Metrics
from alarmhub.settings import Settings
from alarmhub.sip.server import sip_server_from
from alarmhub.store.cluster import InstanceInfo
from alarmhub.store.opening import OpenedStores, open_stores
from alarmhub.store.ports import AlarmStore, Directory
from alarmhub.store.versions import check_runnable

log = structlog.get_logger("alarmhub")
T = TypeVar("T")


class AlarmHub:
    def __init__(
        self,
        settings: Settings,
        *,
        clock: Clock | None = None,
        metrics: Metrics | None = None,
        serve_http: bool = True,
    ) -> None:
        self.settings = settings
        self.clock = clock or SystemClock()
        self.metrics = metrics or Metrics()
        self.serve_http = serve_http
        self.catalog: Catalog
        self.state: HubState
        self.stores: OpenedStores
        self.store: AlarmStore
        self.reader: AlarmStore
        self.directory: Directory
        # The owner's term's MQTT connection (daemon/owner.py): intake is single-owner work.
        self.link = Link()
        self.pipeline: Ingest | None = None
        self.live = Broadcaster(start=first_sequence(self.clock.now()))
        self._stopping = asyncio.Event()
        # The lock + retry-until-committed every writer shares (daemon/gate.py).
        self.gate = WriteGate(self.metrics, self._stopping, self.clock)
        self.ready = asyncio.Event()
        self._tasks: asyncio.TaskGroup | None = None
        self._ownership_task: asyncio.Task[None] | None = None
        self._stack = contextlib.AsyncExitStack()
        self.queue_gauges = QueueGauges(self.metrics, self.clock)
        self.http_port: int | None = None

    # --- lifecycle ---------------------------------------------------------

    async def __aenter__(self) -> Self:
        s = self.settings
        self.state = HubState(load_rules(s.rules, journal_exporting=s.journal_exporting()))
        profiles = s.devices_dir or default_profiles_dir()
        self.catalog = load_catalog(profiles)
        await self._open_store()
        self._wire()
        await self.registry.load()
        self.metrics.zero_alarm_kinds(alarm_kinds(self.rules))
        self.state.silences = tuple(await self.reader.active_silences(self.clock.now()))
        self._tasks = await self._stack.enter_async_context(asyncio.TaskGroup())
        await self._start_tasks(self._tasks)
        # SQLite: the one term runs before `ready`; so does a first-try lease holder's.
        await self.ownership.tried.wait()
        if self.ownership.owner.is_set():
            await self.owner.wait_started()
        log.info(
            "alarmhub.started",
            instance_id=s.instance_id,
            rules_version=self.rules.version,
            # Which files are in force: the built-in ones or a deployment's own.
            rules_file=str(s.rules),
            profiles_dir=str(profiles),
            devices=len(self.state.devices),
            active_alarms=len(self.state.alarms),
            subscriptions=self.catalog.subscriptions(),
            owns=self.owner.owns,
        )
        # What is loaded (registry, rules, profiles) lives as long as the process: out of
        # the cyclic collector's view, so no full collection walks a million devices.
        gc.freeze()
        self.ready.set()
        return self

    async def _open_store(self) -> None:
        # A schema older or newer than this alarmhub knows: refused, nothing written.
        # Which store, its writer and reader: store/opening.py, from settings.database.
        await check_runnable(self.settings.database)
        self.stores = await self._stack.enter_async_context(open_stores(self.settings))
        self.store = self.stores.store
        self.reader = self.journal_outbox = self.stores.reader  # the web reads exports here
        self.directory = self.stores.directory
        self.residents = self.stores.register(self.settings.resident_keys, self.clock)

    def _wire(self) -> None:
        """Every service with the few things it uses; none is handed the hub."""
        s, state, gate = self.settings, self.state, self.gate
        clock, metrics, reader = self.clock, self.metrics, self.reader
        gate.reload_alarms = lambda ids: state.reload(reader.get_alarms, ids)
        mqtt = self.link
        self.wal = self.stores.wal_keeper(
            lock=gate.lock,
            room=gate.wal_room,
            limit_bytes=s.sqlite_wal_limit_mb * 1024 * 1024,
            metrics=metrics,
            once=OncePer(60.0),
        )
        self.notifier = Notifier(self.reader, self.store, gate.lock, clock, mqtt)
        self.journal_switch = ExportSwitch(s.journal_exporting())  # issue 17
        self.journal = delivery_from(
            s, reader, self.store, self.residents, lambda: state.rules, gate.lock, clock, metrics
        )
        self.escalator = Escalator(state, self.store, gate, clock, metrics, self._escalated)
        arm = self.escalator.arm_in_term
        self.suppression = SuppressionKeeper(
            state, self.reader, self.store, gate, clock, arm, self.live
        )
        self.supervision = Supervision(
            state, clock, metrics, self._raise_internal, lambda: mqtt.connected
        )
        self.registry = Registry(
            state=state,
            store=self.store,
            reader=self.reader,
            lock=gate.lock,
            clock=clock,
            metrics=metrics,
            queue_gauges=self.queue_gauges,
            watch=self.supervision,
            arm=arm,
            rules_file=s.rules,
            journal_exporting=s.journal_exporting(),
            stopping=self._stopping,
        )
        gate.reload_devices = self.registry.reload_devices
        self.scaip = ScaipIntake(state, ScaipSource(), clock, metrics, s)  # sip/ports.py's handler
        self.actions = Actions(
            state=state,
            store=self.store,
            reader=self.reader,
            gate=gate,
            clock=clock,
            metrics=metrics,
            releases=self.suppression,
            supervision=self.supervision,
            arm=arm,
            live=self.live,
            queue_gauges=self.queue_gauges,
            device_link=mqtt,
            spawn=self._spawn,
            voice_chosen=self.scaip.voice_chosen,
            journal=exports_on_resolve(self.journal_switch.exporting),
            journal_wake=self.journal.wake if self.journal is not None else lambda: None,
        )
        self.follower = self._follower(arm)
        retention = Retention(
            inbox=timedelta(days=s.inbox_retention_days),
            dead_letters=timedelta(days=s.dead_letter_retention_days),
        )
        self.pruner = Pruner(self.store, clock, retention, gate.lock, metrics.oldest_row_age)
        self.sip = sip_server_from(
            s, self.directory.device_credentials, clock, metrics, handler=self.scaip
        )
        self._wire_ownership()

    def _wire_ownership(self) -> None:
        """Who does the single-owner work: the lease on PostgreSQL, this process on SQLite."""
        s, stores, sip = self.settings, self.stores, self.sip
        self.ownership: Ownership
        self.owner = OwnerTerm(
            load=self._load_owner_state,
            connect=self._connect,
            work=self._start_owner_tasks,
            fence_writes=stores.fence_writes,
            current_fence=lambda: self.ownership.fence,
            link=self.link,
            spawn=self._start_task,
            lease_owned=self.metrics.lease_owned,
        )
        on_acquired, on_lost = self.owner.on_acquired, self.owner.on_lost
        self.escalator.in_term = lambda: not self.owner.ended.is_set()
        coordination = stores.coordination
        self.presence: Presence | None = None
        if coordination is None:
            self.ownership = SoleOwnership(s.instance_id, on_acquired=on_acquired, on_lost=on_lost)
            return
        timing = LeaseTiming.for_failover(s.failover_s)
        self.ownership = Leadership(
            coordination,
            self.clock,
            s.instance_id,
            timing,
            on_acquired=on_acquired,
            on_lost=on_lost,
            # An owner cut from the broker steps down (core/cluster.py BrokerTiming);
            # a term still loading its state has not had its chance to connect yet.
            able=lambda: self.link.connected or not self.owner.running.is_set(),
            broker=BrokerTiming.for_failover(s.failover_s),
            # An owner whose writes keep failing hands the lease over (StallTiming).
            stalled=lambda: self.owner.stalled(self.gate.stalled()),
            stall=StallTiming.for_failover(s.failover_s, s.owner_stall_s),
            step_downs=self.metrics.lease_step_downs,
            # An owner that cannot bind a SCAIP address hands the lease over (sipwatch.py).
            watches=sip_watches(
                sip.unbound if sip else None, self.owner.running, s.failover_s, self.clock
            ),
        )
        info = InstanceInfo(s.instance_id, socket.gethostname(), os.getpid(), installed_version())
        owns, writable = (lambda: self.owner.owns), self.metrics.store_writable
        self.presence = Presence(coordination, info, owns, s.failover_s / 6, writable)

    def _connect(self) -> MqttIngest:
        """A fresh client with the service's one client id, for one owner's term."""
        s = self.settings
        keepalive = s.mqtt_keepalive_s
        if self.stores.coordination is not None:  # several instances: a cut must show soon
            keepalive = min(keepalive, BrokerTiming.for_failover(s.failover_s).keepalive_s)
        return MqttIngest(
            s.mqtt_brokers,
            s.mqtt_client_id,
            self.catalog.subscriptions(),
            self.clock.now,
            keepalive=keepalive,
            backoff=Backoff(s.mqtt_reconnect_min_s, s.mqtt_reconnect_max_s),
            on_connection_change=self._on_connection_change,
            # At CONNACK, not SUBACK: a kept session's queue comes first (Backlog.link).
            on_link=lambda up, kept: self.backlog.link(up=up, session_present=kept),
            paho_internals=s.mqtt_paho_internals,
            max_payload_bytes=s.max_payload_bytes,
        )

    async def _load_owner_state(self) -> None:
        """At a term's start: what a previous owner may have changed, as stored now."""
        if self.stores.coordination is not None:  # shared: another instance may have written
            async with self.gate.lock:
                await self.registry.reload_alarms()
            self.state.silences = tuple(await self.reader.active_silences(self.clock.now()))
        await self.escalator.load()
        # Seeded from the store: a restart must not restart anyone's silence (issue 12 item 15).
        await self.supervision.load(self.stores.history)
        self.backlog = Backlog(self.clock, await self.stores.last_received())
        self.pipeline = self._ingest_service(self.backlog)

    def _ingest_service(self, backlog: Backlog) -> Ingest:
        return Ingest(
            settings=self.settings,
            catalog=self.catalog,
            state=self.state,
            store=self.store,
            gate=self.gate,
            wal=self.wal,
            backlog=backlog,
            clock=self.clock,
            metrics=self.metrics,
            heard=self.supervision,
            escalation=self.escalator,
            live=self.live,
            queue_gauges=self.queue_gauges,
            stopping=self._stopping,
        )

    def _follower(self, arm: Callable[[Alarm], None]) -> ChangeFollower | None:
        """Alarms other instances change (PostgreSQL), shown here as a local change is."""
        changes = self.stores.changes
        if changes is None:
            return None  # SQLite: this process is the only writer
        return ChangeFollower(
            feed=changes,
            store=self.reader,
            state=self.state,
            lock=self.gate.lock,
            live=self.live,
            queue_gauges=self.queue_gauges,
            arm=arm,
            on_resolved=self.supervision.resolved,
        )

    def _start_owner_tasks(self, tasks: asyncio.TaskGroup, mqtt: MqttIngest) -> None:
        """The single-owner work of one term; each task ends by itself at stop."""
        assert self.pipeline is not None
        tasks.create_task(self.pipeline.run(mqtt), name="ingest")
        scaip = self.scaip.source
        tasks.create_task(
            self.pipeline.run(scaip, settled=scaip.settled, from_broker=False), name="scaip-ingest"
        )
        tasks.create_task(self._until_stopped(self.wal.run()), name="checkpoint")
        tasks.create_task(self._until_stopped(self.escalator.run()), name="escalator")
        tasks.create_task(self._until_stopped(self.suppression.run()), name="silences")
        tasks.create_task(self._until_stopped(self.notifier.run()), name="notifier")
        if self.journal is not None:
            tasks.create_task(self._until_stopped(self.journal.run()), name="journal")
        tasks.create_task(self._until_stopped(self.supervision.run()), name="supervision")
        tasks.create_task(self._until_stopped(self.pruner.run()), name="retention")
        if self.sip is not None:  # SCAIP over SIP (issue 16): intake, as MQTT's is
            tasks.create_task(self._until_stopped(self.sip.run()), name="sip")

    async def _start_tasks(self, tasks: asyncio.TaskGroup) -> None:
        """What every instance runs: the registry, presence, the lease, HTTP."""
        tasks.create_task(self.registry.run(), name="registry-refresh")
        if self.presence is not None:
            tasks.create_task(self._until_stopped(self.presence.run()), name="presence")
        self._ownership_task = tasks.create_task(self.ownership.run(), name="ownership")
        if self.follower is not None:
            tasks.create_task(self._until_stopped(self.follower.run()), name="follower")
        if self.serve_http:
            from alarmhub.web.server import serve  # noqa: PLC0415 - web is optional in tests

            started = asyncio.Event()
            tasks.create_task(serve(self, started), name="http")
            await started.wait()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()
        await self._hand_over()
        await self._stack.__aexit__(exc_type, exc, tb)

    async def _hand_over(self) -> None:
        """End the term (its batch in hand acknowledged), then release the lease at once."""
        if not hasattr(self, "owner"):
            return  # stopped before it was wired
        await self.owner.finish()
        task = self._ownership_task
        if task is not None:
            task.cancel()
            await asyncio.wait({task})
        await self.ownership.resign()

    async def stop(self) -> None:
        """Stop intake; the batch being committed finishes and is acknowledged first."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        log.info("alarmhub.stopping", batches_committed=self.batches_committed)

    async def wait_stopped(self) -> None:
        await self._stopping.wait()

    async def _until_stopped(self, work: Coroutine[Any, Any, None]) -> None:
        """Run a forever-task until stop; it is cancelled at a safe point (an await)."""
        task = asyncio.ensure_future(work)
        stop = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait({task, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in (task, stop):
                t.cancel()
            for t in (task, stop):
                with contextlib.suppress(asyncio.CancelledError):
                    await t

    def _start_task(self, work: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        """A task of the always-running TaskGroup (an owner's term)."""
        assert self._tasks is not None
        return self._tasks.create_task(work, name=name)

    def _spawn(self, work: Coroutine[Any, Any, None], name: str) -> None:
        """A short task owned by the TaskGroup (a device's "handled" receipt)."""
        if self._tasks is not None:
            self._tasks.create_task(work, name=name)
        else:
            work.close()

    # --- callbacks between services ------------------------------------------

    async def _raise_internal(self, events: list[tuple[Event, Device]]) -> None:
        assert self.pipeline is not None
        await self.pipeline.process_internal(events)

    def _escalated(self, alarm: Alarm, notify: bool) -> None:
        self.live.publish("alarm", alarm_json(alarm))
        if notify:
            self.notifier.wake()

    def _on_connection_change(self, connected: bool, connections: int) -> None:
        self.metrics.mqtt_connected.set(1 if connected else 0)
        if connected and connections > 1:
            self.metrics.mqtt_reconnects.inc()
        if connected:  # devices could not reach us until now: what fell due gets its grace
            self.supervision.restart()

    # --- what the web, the CLI and the tests reach -----------------------------

    @property
    def rules(self) -> RuleSet:
        return self.state.rules

    @property
    def silences(self) -> tuple[Silence, ...]:
        return self.state.silences

    @property
    def batches_committed(self) -> int:
        return self.pipeline.batches_committed if self.pipeline is not None else 0

    @property
    def ingest(self) -> MqttIngest | None:
        """The MQTT client of the owner's current (or last) term; None before the first."""
        return self.link.current

    @property
    def owns(self) -> list[str]:
        """The leases this instance holds and works under now (issue 15: /readyz, metrics)."""
        return self.owner.owns

    @property
    def mqtt_connected(self) -> bool:
        return self.link.connected

    @property
    def mqtt_broker(self) -> str | None:
        """The broker of the list ingest is connected to (password redacted), or None."""
        ingest = self.ingest
        return ingest.broker.shown if ingest is not None and ingest.connected else None

    async def until_committed(self, op: Callable[[], Awaitable[T]], *, writes: bool = True) -> T:
        return await self.gate.until_committed(op, writes=writes)

    async def act(
        self, alarm_id: str, action: Action, actor: str, **given: Any
    ) -> Alarm | Conflict | None:
        """daemon/actions.py `Actions.act`: outcome, note, resolution, voice, audit."""
        return await self.actions.act(alarm_id, action, actor, **given)

    async def register_new_device(self, device: Device, **given: Any) -> bool:
        """daemon/registry.py `register_new_device`: audit, assign_bridges."""
        return await self.registry.register_new_device(device, **given)

    async def register_devices(self, devices: list[Device], *args: Any, **given: Any) -> list[str]:
        """daemon/registry.py `register_devices`: keep, audit, existing_in, assign_bridges."""
        return await self.registry.register_devices(devices, *args, **given)

    async def refresh_registry(self) -> None:
        await self.registry.refresh()

    def reload_rules(self) -> bool:
        return self.registry.reload_rules()
