"""The composition root: `async with AlarmHub(settings) as hub:` runs alarmhub.

The same object serves `alarmhub run` and the integration tests, which run it
in-process. It owns one TaskGroup; every task is named and is cancelled and
awaited on exit. The per-batch sandwich lives in :meth:`AlarmHub._handle`:
pure decode -> one read (seen fingerprints) -> pure decide -> one write ->
ack -> fan-out.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from datetime import timedelta
from types import TracebackType
from typing import Any, Self, TypeVar

import structlog
from prometheus_client import Counter as PromCounter

from alarmhub.clock import Clock, SystemClock
from alarmhub.config.profiles import default_profiles_dir, load_catalog
from alarmhub.config.rules import RulesError, alarm_kinds, load_rules
from alarmhub.core.actions import Action, Applied, Conflict, apply_action
from alarmhub.core.decode import Catalog, DecodeLimits
from alarmhub.core.dedup import Identity
from alarmhub.core.escalation import orphaned
from alarmhub.core.model import (
    Alarm,
    Decoded,
    Device,
    Event,
    EventType,
    RawMessage,
    Rejected,
    RejectReason,
    TimelineType,
    Verdict,
)
from alarmhub.core.people import AuditEntry
from alarmhub.core.pipeline import (
    BatchEffects,
    Context,
    MessageOutcome,
    decode_all,
    fingerprint,
    process_batch,
    process_internal,
)
from alarmhub.core.receipts import handled_receipt, stored_receipt
from alarmhub.core.retention import Retention
from alarmhub.core.rules import RuleSet
from alarmhub.core.views import alarm_json
from alarmhub.daemon.backlog import Backlog
from alarmhub.daemon.escalator import Escalator
from alarmhub.daemon.fanout import Broadcaster
from alarmhub.daemon.notifier import Notifier
from alarmhub.daemon.pruner import Pruner
from alarmhub.daemon.state import HubState
from alarmhub.daemon.supervisor import Supervision
from alarmhub.daemon.suppression import SuppressionKeeper
from alarmhub.mqtt.client import Backoff, Delivery, MqttIngest
from alarmhub.observability.gauges import QueueGauges, device_gauges
from alarmhub.observability.logs import OncePer
from alarmhub.observability.metrics import UNKNOWN_KIND, Metrics
from alarmhub.settings import Settings
from alarmhub.store.sqlite.backlog_rows import last_received
from alarmhub.store.sqlite.store import IdTakenError, SqliteStore, StoreError, disk_full

log = structlog.get_logger("alarmhub")
T = TypeVar("T")
# Stable log event names per timeline entry: alarm.acknowledged, alarm.resolved, …
_EVENT_NAMES = {t: f"alarm.{t.value}" for t in TimelineType}

REGISTRY_POLL_S = 2.0
COMMIT_RETRY_MAX_S = 5.0
CHECKPOINT_S = 1.0
CHECKPOINT_FULL_S = 0.1  # while the disk is full: retry soon, ingest is waiting
# A WAL above this after the background checkpoint is started over between two
# batches (_reset_wal); above sqlite_wal_limit_mb it is cut, and commits wait at
# most WAL_TRUNCATE_WAIT_MS for that.
WAL_RESET_BYTES = 4 * 1024 * 1024
WAL_TRUNCATE_WAIT_MS = 100


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
        self._limits = DecodeLimits(
            max_payload_bytes=settings.max_payload_bytes,
            max_future_skew=timedelta(seconds=settings.max_future_skew_s),
            max_past_skew=timedelta(seconds=settings.max_past_skew_s),
            content_dedup_window=timedelta(seconds=settings.content_dedup_window_s),
        )
        self.rules: RuleSet
        self.catalog: Catalog
        self.state: HubState
        self.store: SqliteStore
        self.reader: SqliteStore
        self.ingest: MqttIngest | None = None
        self.live = Broadcaster()
        # Ingest batches and people's actions change alarms one at a time, in order:
        # decide and commit under this lock, so an acknowledgement and a repeat (or
        # two acknowledgements) can never interleave.
        self.write_lock = asyncio.Lock()
        self.ready = asyncio.Event()
        self._tasks: asyncio.TaskGroup | None = None
        self._stack = contextlib.AsyncExitStack()
        self._stopping = asyncio.Event()
        self._once = OncePer(60.0)
        self._registry_mark = ""
        self.batches_committed = 0
        # Cleared while the checkpoint fails for lack of disk space (_checkpoint_loop).
        self._wal_room = asyncio.Event()
        self._wal_room.set()
        # Set by _checkpoint_loop when the WAL keeps growing; the ingest loop then
        # finishes the checkpoint on the writer's connection between batches.
        self._wal_reset_due = False
        self.queue_gauges = QueueGauges(self.metrics, self.clock)
        self.http_port: int | None = None

    # --- lifecycle ---------------------------------------------------------

    async def __aenter__(self) -> Self:
        s = self.settings
        self.rules = load_rules(s.rules)
        profiles = s.devices_dir or default_profiles_dir()
        self.catalog = load_catalog(profiles)
        db = s.database
        if db.kind != "sqlite" or db.path is None:
            raise NotImplementedError("only sqlite:/// databases are supported so far")
        self.store = await SqliteStore.open(
            db.path,
            synchronous=s.sqlite_synchronous,
            autocheckpoint=False,
            wal_size_limit=s.sqlite_wal_limit_mb * 1024 * 1024,
        )
        self._stack.push_async_callback(self.store.close)
        # Reads for HTTP and reports use their own connection: never the writer's.
        self.reader = await SqliteStore.open(
            db.path, synchronous=s.sqlite_synchronous, migrate=False
        )
        self._stack.push_async_callback(self.reader.close)
        await self._load_state()
        self.metrics.zero_alarm_kinds(alarm_kinds(self.rules))
        self.silences = tuple(await self.reader.active_silences(self.clock.now()))
        self.escalator = Escalator(self)
        self.suppression = SuppressionKeeper(self)
        await self.escalator.load()
        self.notifier = Notifier(self)
        self.supervision = Supervision(self)
        self.pruner = Pruner(
            self.store,
            self.clock,
            Retention(
                inbox=timedelta(days=s.inbox_retention_days),
                dead_letters=timedelta(days=s.dead_letter_retention_days),
            ),
            self.write_lock,
            self.metrics.oldest_row_age,
        )
        # Seeded from the store: a restart must not restart anyone's silence (issue 12 item 15).
        await self.supervision.load(db.path)
        self.backlog = Backlog(self.clock, await last_received(db.path))
        self.ingest = MqttIngest(
            s.mqtt,
            s.mqtt_client_id,
            self.catalog.subscriptions(),
            self.clock.now,
            keepalive=s.mqtt_keepalive_s,
            backoff=Backoff(s.mqtt_reconnect_min_s, s.mqtt_reconnect_max_s),
            on_connection_change=self._on_connection_change,
            paho_internals=s.mqtt_paho_internals,
            max_payload_bytes=s.max_payload_bytes,
        )
        await self._stack.enter_async_context(self.ingest)
        self._tasks = await self._stack.enter_async_context(asyncio.TaskGroup())
        self._tasks.create_task(self._ingest_loop(), name="ingest")
        self._tasks.create_task(self._registry_loop(), name="registry-refresh")
        self._tasks.create_task(self._until_stopped(self._checkpoint_loop()), name="checkpoint")
        self._tasks.create_task(self._until_stopped(self.escalator.run()), name="escalator")
        self._tasks.create_task(self._until_stopped(self.suppression.run()), name="silences")
        self._tasks.create_task(self._until_stopped(self.notifier.run()), name="notifier")
        self._tasks.create_task(self._until_stopped(self.supervision.run()), name="supervision")
        self._tasks.create_task(self._until_stopped(self.pruner.run()), name="retention")
        if self.serve_http:
            from alarmhub.web.server import serve  # noqa: PLC0415 - web is optional in tests

            started = asyncio.Event()
            self._tasks.create_task(serve(self, started), name="http")
            await started.wait()
        log.info(
            "alarmhub.started",
            rules_version=self.rules.version,
            # Which files are in force: the built-in ones or a deployment's own.
            rules_file=str(s.rules),
            profiles_dir=str(profiles),
            devices=len(self.state.devices),
            active_alarms=len(self.state.alarms),
            subscriptions=self.catalog.subscriptions(),
        )
        # Everything loaded so far (the registry, rules, profiles) lives as long as the
        # process: move it out of the cyclic collector's view, so a full collection
        # does not walk a million devices in the middle of a batch.
        gc.freeze()
        self.ready.set()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()
        await self._stack.__aexit__(exc_type, exc, tb)

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

    async def _load_state(self) -> None:
        now = self.clock.now()
        self.state = HubState()
        self.state.load(
            await self.store.load_devices(),
            await self.store.load_active_alarms(),
            await self.store.load_resolved_since(now - self.rules.max_flap_window()),
        )
        self._registry_mark = await self.store.newest_device_update()
        self._update_device_gauges()

    def context(self) -> Context:
        return Context(
            registry=self.state.devices,
            catalog=self.catalog,
            rules=self.rules,
            silences=self.silences,
            limits=self._limits,
            message_id_window=timedelta(hours=self.settings.message_id_dedup_window_h),
            unknown_device_municipality=self.settings.unknown_device_municipality,
        )

    # --- the ingest path ---------------------------------------------------

    async def _ingest_loop(self) -> None:
        assert self.ingest is not None
        s = self.settings
        batches = self.ingest.batches(s.max_batch, s.commit_delay_ms / 1000)
        stop = asyncio.create_task(self._stopping.wait(), name="stop-watch")
        try:
            while True:
                nxt = asyncio.ensure_future(anext(batches))
                done, _ = await asyncio.wait({nxt, stop}, return_when=asyncio.FIRST_COMPLETED)
                if nxt not in done:
                    nxt.cancel()
                    with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                        await nxt
                    return
                try:
                    batch = nxt.result()
                except StopAsyncIteration:
                    return
                # Shielded: a stop or cancel in the middle of a batch lets it commit and ack.
                await asyncio.shield(self._handle(batch))
                if self._wal_reset_due:
                    await asyncio.shield(self._reset_wal())
        finally:
            stop.cancel()

    async def _handle(self, batch: list[Delivery]) -> None:
        async with self.write_lock:
            effects = await self._decide_and_commit(batch)
        assert self.ingest is not None
        # Acks and receipts leave as one write, only now that the batch is durable.
        self.ingest.settle(batch, self._stored_receipts(effects))
        self.batches_committed += 1
        self._after_commit(effects)

    async def _decide_and_commit(self, batch: list[Delivery]) -> BatchEffects:
        # Marked with when they may have been queued: MQTT carries no broker time.
        raws = self.backlog.mark([d.raw for d in batch])
        ctx = self.context()
        decoded = decode_all(raws, ctx)
        decoded = await self._retry_unknown_devices(raws, decoded)
        fps = [fingerprint(r, d) for r, d in zip(raws, decoded, strict=True)]
        seen = await self.until_committed(lambda: self.store.latest_messages(fps), writes=False)
        effects = process_batch(raws, decoded, fps, seen, self.state.alarms, ctx)
        municipality_of = {
            m.rejected.device_id: dev.municipality
            for m in effects.messages
            if m.rejected
            and m.rejected.device_id
            and (dev := self.state.devices.get(m.rejected.device_id)) is not None
        }
        await self._until_wal_has_room()
        started = self.clock.monotonic()
        await self.until_committed(lambda: self.store.commit_batch(effects, municipality_of))
        self.metrics.commit_seconds.observe(self.clock.monotonic() - started)
        self.state.apply(effects)
        return effects

    async def _retry_unknown_devices(
        self, raws: list[RawMessage], decoded: list[Decoded | Rejected]
    ) -> list[Decoded | Rejected]:
        """A device registered a moment ago (by the CLI or API) is looked up before rejecting."""
        unknown = {
            d.device_id
            for d in decoded
            if isinstance(d, Rejected) and d.reason is RejectReason.UNKNOWN_DEVICE and d.device_id
        }
        if not unknown:
            return decoded
        found = await self.store.get_devices(unknown)
        if not found:
            return decoded
        for device in found:
            self.state.devices[device.id] = device
        ctx = self.context()
        return decode_all(raws, ctx)

    async def until_committed(self, op: Callable[[], Awaitable[T]], *, writes: bool = True) -> T:
        """Retry a store operation until it succeeds; meanwhile nothing is acknowledged.

        The broker keeps every unacknowledged message, and its in-flight window stops
        new ones from piling up here: a full disk or a locked database delays alarms
        but loses none. The fault is logged once a minute, not per attempt.

        Only a write that succeeds (`writes`) reports the store writable again: a
        database locked by another process still answers reads, and the ingest
        batch's fingerprint lookup used to set `store_writable` (and /readyz) back to
        1 while the escalator's commits were still failing.
        """
        delay = 0.05
        while True:
            try:
                result = await op()
            except StoreError as exc:
                self.metrics.commit_failures.inc()
                self.metrics.store_writable.set(0)
                should, suppressed = self._once.should_log("store.commit_failed")
                if should:
                    log.error(  # noqa: TRY400 - an expected fault: no traceback
                        "store.commit_failed", error=str(exc), retries_since_last_log=suppressed
                    )
                await asyncio.sleep(delay)
                delay = min(COMMIT_RETRY_MAX_S, delay * 2)
                continue
            if writes:
                if delay > 0.05:
                    log.info("store.recovered")
                self.metrics.store_writable.set(1)
            return result

    async def process_internal(self, events: list[tuple[Event, Device]]) -> None:
        """Judge and commit events alarmhub raised itself (a silent device, an overdue dose)."""
        async with self.write_lock:
            effects = process_internal(events, self.state.alarms, self.context())
            await self.until_committed(lambda: self.store.commit_batch(effects, {}))
            self.state.apply(effects)
        self._after_commit(effects)

    def after_escalation(self, alarm: Alarm, notify: bool) -> None:
        self.live.publish("alarm", alarm_json(alarm))
        if notify:
            self.notifier.wake()

    def _after_commit(self, effects: BatchEffects) -> None:
        if effects.device_seen:
            self.supervision.heard(effects.device_seen)
        for alarm in effects.alarms.values():
            self.escalator.arm(alarm)
        self.metrics.commit_batch_size.observe(len(effects.messages))
        self._count(effects)
        for alarm in effects.alarms.values():
            self.live.publish("alarm", alarm_json(alarm))
        for alarm_id in effects.new_alarm_ids:
            alarm = effects.alarms[alarm_id]
            self.metrics.alarms_raised.labels(alarm.kind, str(int(alarm.priority))).inc()
            log.info(
                "alarm.raised",
                alarm_id=alarm.id,
                device_id=alarm.device_id,
                municipality=alarm.municipality,
                kind=alarm.kind,
                priority=int(alarm.priority),
            )
        self._update_queue_gauges(throttled=True)

    def _count(self, effects: BatchEffects) -> None:
        m = self.metrics
        # Counted per batch, then added once per label set: a labels() lookup per
        # message was a measurable share of the hot path (docs/performance.md).
        counts: Counter[tuple[PromCounter, tuple[str, ...]]] = Counter()
        for msg in effects.messages:
            # StrEnum members count as their text (prometheus-client str()s labels).
            kind = msg.device.kind if msg.device else self._kind_of(msg.rejected)
            counts[m.messages_received, (kind,)] += 1
            if msg.verdict is Verdict.REDELIVERY:
                counts[m.messages_deduplicated, (kind,)] += 1
            elif msg.rejected is not None:
                counts[m.messages_dead_lettered, (msg.rejected.reason, kind)] += 1
                self._log_dead_letter(msg.rejected, msg.raw.topic)
            else:
                counts[m.messages_decoded, (kind,)] += 1
                if msg.identity is Identity.ID_REUSED:
                    self._log_id_reused(msg.raw.topic, msg.msg_id)
                self._count_decoding(msg, kind, counts)
                for ev in msg.events:
                    counts[m.events, (ev.verdict,)] += 1
                    if ev.event.type is EventType.DOSE_TAKEN:
                        self.supervision.dose_taken(ev.event.device_id, ev.event.ts)
                    elif ev.event.type is EventType.LOCATION:
                        self.supervision.location(ev.event)
        for (metric, labels), n in counts.items():
            metric.labels(*labels).inc(n)

    def _count_decoding(
        self,
        msg: MessageOutcome,
        kind: str,
        counts: Counter[tuple[PromCounter, tuple[str, ...]]],
    ) -> None:
        """Count and log (once a minute per device) fields dropped and clocks clamped.

        Issue 12 items 10 and 11: the message was used, so it is no dead letter, but
        a converter sending what alarmhub cannot read or a clock out of bounds needs
        someone to fix the device.
        """
        for dropped in msg.dropped:
            counts[self.metrics.fields_dropped, (dropped.reason, kind)] += 1
        skew = next((e.event.clock_skew_s for e in msg.events if e.event.clock_skew_s), None)
        if skew is not None:
            direction = "ahead" if skew > 0 else "behind"
            counts[self.metrics.clock_skew_clamped, (direction, kind)] += len(msg.events)
        if not msg.dropped and skew is None:
            return
        device_id = msg.device.id if msg.device else None
        should, suppressed = self._once.should_log(f"message.partial:{device_id}")
        if should:
            log.warning(
                "message.partial",
                device_id=device_id,
                topic=msg.raw.topic,
                dropped=[f"{d.field}: {d.reason}" for d in msg.dropped],
                clock_skew_s=skew,
                similar_since_last_log=suppressed,
            )

    # --- people's actions ----------------------------------------------------

    async def act(
        self,
        alarm_id: str,
        action: Action,
        actor: str,
        *,
        outcome: str | None = None,
        note: str | None = None,
        audit: Sequence[AuditEntry],
    ) -> Alarm | Conflict | None:
        """Apply an operator's action; None when there is no such alarm.

        `audit` is committed in the action's own transaction, and only if it applied.
        """
        with structlog.contextvars.bound_contextvars(alarm_id=alarm_id):
            return await self._act(alarm_id, action, actor, outcome, note, audit)

    async def _act(
        self,
        alarm_id: str,
        action: Action,
        actor: str,
        outcome: str | None,
        note: str | None,
        audit: Sequence[AuditEntry],
    ) -> Alarm | Conflict | None:
        async with self.write_lock:
            alarm = self.state.alarms.get(alarm_id) or await self.store.get_alarm(alarm_id)
            if alarm is None:
                return None
            now = self.clock.now()
            result = apply_action(alarm, action, actor, now, outcome=outcome, note=note)
            if isinstance(result, Conflict):
                return result
            # Resolving an inhibiting alarm or an incident releases what it hid, in
            # the same transaction (issue 12 item 2).
            releases = self.suppression.on_resolved(result.alarm, now, actor)
            changed = (result.alarm, *(r.alarm for r in releases))
            entries = (*result.timeline, *(r.entry for r in releases))
            await self.until_committed(
                lambda: self.store.save_alarms(changed, entries, audit=audit)
            )
            for each in changed:
                self.state.alarms.put(each)
        self.escalator.arm(result.alarm)
        self._after_action(alarm, result)
        self.supervision.resolved(result.alarm)  # still silent: offline again in an interval
        self.suppression.announce(releases)
        return result.alarm

    def _after_action(self, before: Alarm, result: Applied) -> None:
        alarm = result.alarm
        label = str(int(alarm.priority))
        # Time to acknowledge is the first acknowledgement's: an alarm back in the queue
        # (a repeat on an acknowledged person alarm, an acknowledgement-timeout
        # reminder) acknowledged again is not a second response to count.
        first = before.acknowledged_at is None
        if result.acknowledged_now and first and alarm.acknowledged_at is not None:
            waited = (alarm.acknowledged_at - alarm.raised_at).total_seconds()
            self.metrics.time_to_acknowledge.labels(label, alarm.municipality).observe(waited)
            target = self.rules.sla_ack.get(alarm.priority)
            if target is not None and waited > target.total_seconds():
                self.metrics.sla_breaches.labels(label).inc()
            self._handled_receipt(alarm)
        if before.state.value != "resolved" and alarm.resolved_at is not None:
            self.metrics.time_to_resolve.labels(label, alarm.municipality).observe(
                (alarm.resolved_at - alarm.raised_at).total_seconds()
            )
        with structlog.contextvars.bound_contextvars(
            device_id=alarm.device_id, municipality=alarm.municipality
        ):
            for entry in result.timeline:
                log.info(_EVENT_NAMES[entry.type], actor=entry.actor)
        self.live.publish("alarm", alarm_json(alarm))
        self._update_queue_gauges()

    def _handled_receipt(self, alarm: Alarm) -> None:
        """SCAIP's "handled": tell the device a person has taken its alarm."""
        if self.ingest is not None and self._tasks is not None:
            self._tasks.create_task(self._send_handled(alarm), name=f"handled-{alarm.id}")

    async def _send_handled(self, alarm: Alarm) -> None:
        source = await self.reader.raising_message(alarm.id)
        receipt = handled_receipt(*source, alarm.id) if source is not None else None
        if receipt is not None and self.ingest is not None:
            self.ingest.publish(*receipt, qos=1)

    async def register_new_device(self, device: Device, *, audit: Sequence[AuditEntry]) -> bool:
        """Register a device whose id must be new; False if the id is taken anywhere.

        The id is checked again inside the write's transaction (the CLI writes
        without this lock), and `audit` commits with the device.
        """
        async with self.write_lock:
            if device.id in self.state.devices:
                return False
            try:
                await self.store.register_devices(
                    [device], self.clock.now(), audit=audit, existing_in=frozenset()
                )
            except IdTakenError:
                return False
            self.state.devices[device.id] = device
            self.supervision.watch(
                device, self.supervision.now(), self.clock.now(), self.rules.offline_after_misses
            )
        return True

    async def register_devices(
        self,
        devices: list[Device],
        keep: frozenset[str] = frozenset(),
        *,
        audit: Sequence[AuditEntry],
        existing_in: frozenset[str] | None = None,
    ) -> None:
        """Register, change or decommission (active=False) devices; seen by ingest at once.

        Columns in `keep` (resident, settings) stay as stored on existing devices.
        `audit` commits in the same transaction; `existing_in` limits which existing
        devices may be overwritten (checked in that transaction, IdTakenError).
        """
        async with self.write_lock:
            await self.store.register_devices(
                devices, self.clock.now(), keep, audit=audit, existing_in=existing_in
            )
            if keep:
                devices = await self.store.get_devices(d.id for d in devices)
            now, wall = self.supervision.now(), self.clock.now()
            for device in devices:
                self.state.devices[device.id] = device
                self.supervision.watch(device, now, wall, self.rules.offline_after_misses)

    def _kind_of(self, rejected: Rejected | None) -> str:
        if rejected is not None and rejected.device_id:
            device = self.state.devices.get(rejected.device_id)
            if device is not None:
                return device.kind.value
        return UNKNOWN_KIND

    def _log_id_reused(self, topic: str, msg_id: str | None) -> None:
        """A device sent an id it used within the window for other content: stored as
        a new message (core/dedup.py); worth a look at the device's firmware."""
        should, suppressed = self._once.should_log(f"id_reused:{topic}")
        if should:
            log.warning(
                "message.id_reused", topic=topic, msg_id=msg_id, similar_since_last_log=suppressed
            )

    def _log_dead_letter(self, rejected: Rejected, topic: str) -> None:
        key = f"dead_letter:{rejected.reason}:{rejected.device_id}"
        should, suppressed = self._once.should_log(key)
        if should:
            log.warning(
                "message.dead_lettered",
                reason=rejected.reason.value,
                detail=rejected.detail,
                device_id=rejected.device_id,
                topic=topic,
                similar_since_last_log=suppressed,
            )

    @staticmethod
    def _stored_receipts(effects: BatchEffects) -> list[tuple[str, bytes]]:
        """What to tell native devices: stored (or why not). Sent at QoS 0.

        A lost receipt is answered again when the device resends (docs/protocol.md).
        """
        receipts = []
        for msg in effects.messages:
            receipt = stored_receipt(msg.raw.topic, msg.msg_id, msg.rejected, msg.verdict)
            if receipt is not None:
                receipts.append(receipt)
        return receipts

    def _update_queue_gauges(self, *, throttled: bool = False) -> None:
        self.queue_gauges.update(self.state.alarms.by_id.values(), throttled=throttled)

    def _update_device_gauges(self) -> None:
        device_gauges(self.metrics, self.state.devices.values())

    async def _checkpoint_loop(self) -> None:
        """Move the WAL into the database once a second, on a reader connection.

        On a full disk the checkpoint fails too, and the WAL can only grow. When
        space comes back, the ingest writes would take it first and the
        checkpoint would never get the room to finish, so the disk fills again
        (seen in the disk-full test: stuck at 5,900 of 6,000 after the space
        was freed). So while the checkpoint fails for want of space, ingest
        holds its commits (unacknowledged: the broker keeps the messages), and
        the checkpoint retries quickly; the first one that succeeds lets them go.
        """
        page_size = await self.reader.page_size()
        limit = self.settings.sqlite_wal_limit_mb * 1024 * 1024
        while True:
            full = not self._wal_room.is_set()
            await asyncio.sleep(CHECKPOINT_FULL_S if full else CHECKPOINT_S)
            try:
                busy, pages, _done = await self.reader.checkpoint(truncate=full)
                wal_bytes = pages * page_size
                self.metrics.store_wal_bytes.set(wal_bytes)
                if not full and wal_bytes > limit:
                    await self._truncate_wal(wal_bytes)
                elif not full and wal_bytes > WAL_RESET_BYTES:
                    self._wal_reset_due = True
            except Exception as exc:  # a failing checkpoint must not stop the daemon
                if disk_full(exc) and self._wal_room.is_set():
                    self._wal_room.clear()
                    self.metrics.store_writable.set(0)
                    log.error("store.wal_full", error=str(exc))  # noqa: TRY400 - expected fault
                should, suppressed = self._once.should_log("store.checkpoint_failed")
                if should:
                    log.warning("store.checkpoint_failed", error=str(exc), since_last=suppressed)
                continue
            if full and not busy:
                self._wal_room.set()
                log.info("store.wal_checkpointed")

    async def _reset_wal(self) -> None:
        """Let SQLite start its WAL over, by a checkpoint on the writer's own connection.

        SQLite reuses the WAL from the start only when a checkpoint has copied
        every frame. The once-a-second checkpoint on the reader connection never
        gets there under steady traffic: a commit always lands while it copies,
        so the WAL grew by every commit (80.9 MB in 6 s at 2,000 msg/s in
        `make bench`). Between two batches no commit can land: this checkpoint
        copies only what arrived since the background one (a few milliseconds'
        worth) and completes, and the next commit starts the WAL over.
        """
        self._wal_reset_due = False
        async with self.write_lock:
            try:
                await self.store.checkpoint()
            except Exception as exc:  # the background loop sees and reports a real fault
                log.debug("store.wal_reset_failed", error=str(exc))

    async def _truncate_wal(self, wal_bytes: int) -> None:
        """Cut a WAL that readers kept SQLite from reusing (SqliteStore.truncate_wal)."""
        started = time.monotonic()
        if await self.reader.truncate_wal(WAL_TRUNCATE_WAIT_MS):
            self.metrics.store_wal_truncations.inc()
            self.metrics.store_wal_bytes.set(0)
            log.info(
                "store.wal_truncated",
                wal_mb=round(wal_bytes / 2**20, 1),
                waited_ms=round((time.monotonic() - started) * 1000, 1),
            )
            return
        should, suppressed = self._once.should_log("store.wal_truncate_busy")
        if should:
            log.warning(
                "store.wal_truncate_busy",
                wal_mb=round(wal_bytes / 2**20, 1),
                since_last=suppressed,
                hint="a reader held the WAL longer than "
                f"{WAL_TRUNCATE_WAIT_MS} ms; retried every second",
            )

    async def _until_wal_has_room(self) -> None:
        """Hold an ingest commit while the WAL cannot be checkpointed for lack of space."""
        if self._wal_room.is_set():
            return
        room = asyncio.ensure_future(self._wal_room.wait())
        stop = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait({room, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            room.cancel()
            stop.cancel()

    async def _registry_loop(self) -> None:
        """Pick up devices registered, changed or decommissioned by the CLI or another process."""
        while not self._stopping.is_set():
            await asyncio.sleep(REGISTRY_POLL_S)
            await self.refresh_registry()

    async def refresh_registry(self) -> None:
        """One tick of :meth:`_registry_loop`: devices, silences and gauges as stored now.

        The scenario suite (tests/scenarios/scenario.py) calls it at each instant of virtual time.
        """
        try:
            changed, self._registry_mark = await self.store.devices_changed_since(
                self._registry_mark
            )
        except StoreError:
            return
        now, wall = self.supervision.now(), self.clock.now()
        for device in changed:
            self.state.devices[device.id] = device
            self.supervision.watch(device, now, wall, self.rules.offline_after_misses)
        self.silences = tuple(await self.reader.active_silences(wall))
        if changed:
            # Also the hub's own registrations: their rows show up here too, so the
            # gauges (a walk over the whole registry) are recounted at most every
            # REGISTRY_POLL_S, never once per API call.
            self._update_device_gauges()
            log.info("registry.refreshed", changed=len(changed))
        self._update_queue_gauges()
        self.state.alarms.forget_resolved_before(self.clock.now() - self.rules.max_flap_window())

    def _on_connection_change(self, connected: bool, connections: int) -> None:
        self.metrics.mqtt_connected.set(1 if connected else 0)
        if connected and self.ingest is not None:
            self.backlog.connected(session_present=self.ingest.session_present)
        elif not connected:
            self.backlog.disconnected()
        if connected and connections > 1:
            self.metrics.mqtt_reconnects.inc()
        if connected:
            # Devices could not reach us until now (start-up or a cut-off): what fell
            # due meanwhile gets its grace; supervision pauses while disconnected.
            self.supervision.restart()

    def reload_rules(self) -> bool:
        """SIGHUP: load the rules file again; a bad file keeps the rules in force."""
        try:
            rules = load_rules(self.settings.rules)
        except RulesError as exc:
            log.error(  # noqa: TRY400 - the message is the error; no traceback
                "rules.reload_failed", error=str(exc), kept_version=self.rules.version
            )
            return False
        # A renamed or removed policy would silently stop the escalation of every
        # open alarm raised under it (issue 12 item 6): refuse, keep the rules in force.
        stranded = orphaned(self.state.alarms.by_id.values(), rules.policy_named)
        if stranded:
            log.error(
                "rules.reload_failed",
                error="the new rules lack the escalation policy of open alarms: "
                + ", ".join(sorted({f"{a.policy} ({a.municipality})" for a in stranded})),
                alarms=sorted(a.id for a in stranded)[:20],
                kept_version=self.rules.version,
            )
            return False
        old, self.rules = self.rules.version, rules
        self.metrics.zero_alarm_kinds(alarm_kinds(rules))
        for alarm in list(self.state.alarms.by_id.values()):
            self.escalator.arm(alarm)
        log.info("rules.reloaded", old_version=old, version=rules.version)
        return True

    @property
    def mqtt_connected(self) -> bool:
        return self.ingest is not None and self.ingest.connected
