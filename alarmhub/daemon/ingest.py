"""The ingest path: the per-batch sandwich, and alarmhub's own events through the same pipeline.

For each batch the broker hands over: pure decode -> one read (seen
fingerprints) -> pure decide -> one write -> ack -> fan-out. The write and the
decisions before it happen under the write gate's lock; acks and receipts leave
only once the batch is durable; memory changes only after the commit. Fan-out
is what the other services are told: supervision hears the devices, the
escalator arms the alarms, the live feed and the metrics show them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

import structlog
from prometheus_client import Counter as PromCounter

from alarmhub.clock import Clock
from alarmhub.core.decode import Catalog, DecodeLimits
from alarmhub.core.dedup import Identity
from alarmhub.core.model import (
    Alarm,
    Decoded,
    Device,
    Event,
    EventType,
    RawMessage,
    Rejected,
    RejectReason,
    Verdict,
)
from alarmhub.core.pipeline import (
    BatchEffects,
    Context,
    MessageOutcome,
    decode_all,
    fingerprint,
    process_batch,
    process_internal,
)
from alarmhub.core.receipts import stored_receipts
from alarmhub.core.scaip_record import answered_in_batch
from alarmhub.core.views import alarm_json
from alarmhub.daemon.backlog import Backlog
from alarmhub.daemon.fanout import Broadcaster
from alarmhub.daemon.gate import WriteGate
from alarmhub.daemon.state import HubState
from alarmhub.mqtt.client import Delivery
from alarmhub.observability.gauges import QueueGauges
from alarmhub.observability.logs import OncePer
from alarmhub.observability.metrics import UNKNOWN_KIND, Metrics
from alarmhub.settings import Settings
from alarmhub.store.ports import DecidedRow, IngestStore

log = structlog.get_logger("alarmhub")
# A batch raising more new alarms than this logs one `alarms.raised` line with counts
# instead of an info line each (a storm; docs/operations.md, "Logs").
RAISED_LINES_PER_BATCH = 10


class BatchSource(Protocol):
    """Where batches come from and where their acks and receipts go (MQTT today)."""

    def batches(self, max_batch: int, coalesce_s: float) -> AsyncIterator[list[Delivery]]: ...
    def settle(
        self, deliveries: Sequence[Delivery], receipts: Sequence[tuple[str, bytes]]
    ) -> int: ...


class WalReset(Protocol):
    """Between two batches the WAL may be started over (store/wal.py)."""

    reset_due: bool

    async def reset(self) -> None: ...


class Escalation(Protocol):
    """The escalator as ingest uses it: first steps decided in the batch, then armed."""

    def first_steps(self, alarms: Iterable[Alarm], now: datetime) -> list[DecidedRow]: ...
    def first_steps_committed(
        self, rows: Sequence[DecidedRow], recorded: Sequence[bool], stored: Mapping[str, Alarm]
    ) -> set[str]: ...
    def arm(self, alarm: Alarm, anchor: tuple[datetime, float] | None = None) -> None: ...


class Heard(Protocol):
    """What supervision learns from committed messages."""

    def heard(self, device_ids: Iterable[str]) -> None: ...
    def dose_taken(self, device_id: str, at: datetime) -> None: ...
    def location(self, event: Event) -> None: ...


class Ingest:
    def __init__(
        self,
        *,
        settings: Settings,
        catalog: Catalog,
        state: HubState,
        store: IngestStore,
        gate: WriteGate,
        wal: WalReset,
        backlog: Backlog,
        clock: Clock,
        metrics: Metrics,
        heard: Heard,
        escalation: Escalation,
        live: Broadcaster,
        queue_gauges: QueueGauges,
        stopping: asyncio.Event,
    ) -> None:
        self._settings = settings
        self._catalog = catalog
        self._state = state
        self._store = store
        self._gate = gate
        self._wal = wal
        self._backlog = backlog
        self._clock = clock
        self._metrics = metrics
        self._heard = heard
        self._escalation = escalation
        self._live = live
        self._queue_gauges = queue_gauges
        self._stopping = stopping
        self._once = OncePer(60.0)
        self._limits = DecodeLimits(
            max_payload_bytes=settings.max_payload_bytes,
            max_future_skew=timedelta(seconds=settings.max_future_skew_s),
            max_past_skew=timedelta(seconds=settings.max_past_skew_s),
            content_dedup_window=timedelta(seconds=settings.content_dedup_window_s),
        )
        self.batches_committed = 0

    def context(self) -> Context:
        state = self._state
        return Context(
            registry=state.devices,
            catalog=self._catalog,
            rules=state.rules,
            silences=state.silences,
            limits=self._limits,
            message_id_window=timedelta(hours=self._settings.message_id_dedup_window_h),
            unknown_device_municipality=self._settings.unknown_device_municipality,
            retained_max_age=timedelta(days=self._settings.inbox_retention_days),
        )

    async def run(
        self,
        source: BatchSource,
        *,
        settled: Callable[[Sequence[Delivery], BatchEffects], None] | None = None,
        from_broker: bool = True,
    ) -> None:
        """Take batches until stop; the batch in hand is committed and acknowledged first.

        `settled`: told each committed batch's outcomes after `source.settle` (SCAIP answers
        each request from its own outcome). `from_broker`: the source is the MQTT broker,
        whose backlog after a reconnect is marked (daemon/backlog.py); SIP has none.
        """
        s = self._settings
        batches = source.batches(s.max_batch, s.commit_delay_ms / 1000)
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
                # When an owner's term ends (daemon/owner.py) the batch's commit fails on
                # its fence, or its ack finds the connection closed: nothing is acked.
                handling = asyncio.ensure_future(
                    self._handle(batch, source, settled, from_broker=from_broker)
                )
                try:
                    await asyncio.shield(handling)
                except asyncio.CancelledError:
                    handling.add_done_callback(_finished_alone)
                    raise
                if self._wal.reset_due:
                    await asyncio.shield(self._wal.reset())
        finally:
            stop.cancel()

    async def _handle(
        self,
        batch: list[Delivery],
        source: BatchSource,
        settled: Callable[[Sequence[Delivery], BatchEffects], None] | None,
        *,
        from_broker: bool,
    ) -> None:
        async with self._gate.lock:
            effects, steps = await self._decide_and_commit(batch, from_broker=from_broker)
        # Acks and receipts leave as one write, only now that the batch is durable.
        source.settle(batch, stored_receipts(effects.messages))
        if settled is not None:
            settled(batch, effects)
        self.batches_committed += 1
        self._after_commit(effects, steps)

    async def _decide_and_commit(
        self, batch: list[Delivery], *, from_broker: bool
    ) -> tuple[BatchEffects, FirstSteps]:
        # Marked with when they may have been queued: MQTT carries no broker time.
        raws = [d.raw for d in batch]
        raws = self._backlog.mark(raws) if from_broker else raws

        async def attempt() -> tuple[BatchEffects, FirstSteps]:
            # Decided on the registry and the alarms in memory; decided again if a
            # device moved or an alarm changed in the database meanwhile
            # (WriteGate.deciding). From the decoding on: each message's Decoded holds
            # the registry entry of its device, reloaded by then.
            ctx = self.context()
            decoded = decode_all(raws, ctx)
            decoded = await self._retry_unknown_devices(raws, decoded)
            fps = [fingerprint(r, d) for r, d in zip(raws, decoded, strict=True)]
            seen = await self._gate.until_committed(
                lambda: self._store.latest_messages(fps), writes=False
            )
            await self._gate.until_wal_has_room()
            effects = process_batch(raws, decoded, fps, seen, self._state.alarms, ctx)
            # What each SCAIP device will be answered about its alarm, in this commit. Only
            # the SIP source carries SCAIP requests: an MQTT batch (the hot path) skips the
            # walk over every message's events.
            if not from_broker:
                answered = answered_in_batch(effects, self._state.alarms.get, ctx.rules)
                effects.timeline.extend(answered)
            municipality_of = {
                m.rejected.device_id: dev.municipality
                for m in effects.messages
                if m.rejected
                and m.rejected.device_id
                and (dev := self._state.devices.get(m.rejected.device_id)) is not None
            }
            started = self._clock.monotonic()
            steps = await self._commit(effects, municipality_of)
            self._metrics.commit_seconds.observe(self._clock.monotonic() - started)
            return effects, steps

        effects, steps = await self._gate.deciding(attempt)
        return effects, self._apply(effects, steps)

    async def _commit(self, effects: BatchEffects, municipality_of: dict[str, str]) -> FirstSteps:
        """Commit the batch with its new alarms' first steps (those due at once).

        One transaction for both, where the escalator used to write the first steps in
        one of its own right after (issue 18: ~6 % of a storm). The step is decided at
        the instant read here, on the alarms as this batch leaves them; the escalator
        learns it as fired only after the commit (`_apply`), and arms the next one.
        """
        clock = self._clock
        anchor = (clock.now(), clock.monotonic())
        new = [effects.alarms[i] for i in dict.fromkeys(effects.new_alarm_ids)]
        rows = self._escalation.first_steps(new, anchor[0]) if new else []
        recorded = await self._gate.until_committed(
            lambda: self._store.commit_batch(effects, municipality_of, rows)
        )
        return FirstSteps(rows, recorded, anchor)

    def _apply(self, effects: BatchEffects, steps: FirstSteps) -> FirstSteps:
        """Memory after the commit: the alarms as stored (an escalated one at its new level)."""
        for row, recorded in zip(steps.rows, steps.recorded, strict=True):
            if recorded and row.alarm is not None:
                effects.alarms[row.alarm_id] = row.alarm
        self._state.apply(effects)
        return steps

    async def _retry_unknown_devices(
        self, raws: list[RawMessage], decoded: list[Decoded | Rejected]
    ) -> list[Decoded | Rejected]:
        """A device registered a moment ago (CLI, API) is looked up before rejecting; retried
        as the commit is: a refusal out of here ended ingest and the daemon."""
        unknown = {
            d.device_id
            for d in decoded
            if isinstance(d, Rejected) and d.reason is RejectReason.UNKNOWN_DEVICE and d.device_id
        }
        if not unknown:
            return decoded
        found = await self._gate.until_committed(
            lambda: self._store.get_devices(unknown), writes=False
        )
        if not found:
            return decoded
        for device in found:
            self._state.devices[device.id] = device
        ctx = self.context()
        return decode_all(raws, ctx)

    async def process_internal(self, events: list[tuple[Event, Device]]) -> None:
        """Judge and commit events alarmhub raised itself (a silent device, an overdue dose)."""
        async with self._gate.lock:

            async def attempt() -> tuple[BatchEffects, FirstSteps]:
                # Each device as the registry holds it now: after a DeviceMovedError it
                # was reloaded (WriteGate.deciding), where it was moved to.
                devices = self._state.devices
                current = [(event, devices.get(d.id, d)) for event, d in events]
                effects = process_internal(current, self._state.alarms, self.context())
                return effects, await self._commit(effects, {})

            effects, steps = await self._gate.deciding(attempt)
            steps = self._apply(effects, steps)
        self._after_commit(effects, steps)

    def _after_commit(self, effects: BatchEffects, steps: FirstSteps) -> None:
        if effects.device_seen:
            self._heard.heard(effects.device_seen)
        self._metrics.commit_batch_size.observe(len(effects.messages))
        self._count(effects)
        self._raised(effects)
        escalation = self._escalation
        # The first steps that fired with the batch: told to the escalator (which
        # announces them, the live feed included) before anything is armed.
        if steps.rows:
            steps.announced = escalation.first_steps_committed(
                steps.rows, steps.recorded, effects.alarms
            )
        announced, publish = steps.announced, self._live.publish
        for alarm in effects.alarms.values():
            if alarm.id in announced:
                # Its first step was decided with the batch: armed for the next step on
                # the instant that step was decided at (Escalator.arm), and shown once
                # already, at its new level (on_escalated).
                escalation.arm(alarm, steps.anchor)
            else:
                escalation.arm(alarm)
                publish("alarm", alarm_json(alarm))
        self._queue_gauges.update(self._state.alarms.by_id.values(), throttled=True)

    def _raised(self, effects: BatchEffects) -> None:
        """Count and log the batch's new alarms: `alarm.raised` each, at info while a batch
        raises a few; in a storm one `alarms.raised` line with counts, each at debug.

        One info line per alarm was ~4 % of a storm's profile (issue 18): a batch of a
        thousand new alarms wrote a thousand lines. Every alarm is in the database with
        its timeline either way; the log is for people watching.
        """
        new = effects.new_alarm_ids
        if not new:
            return
        alarms = [effects.alarms[alarm_id] for alarm_id in new]
        storm = len(new) > RAISED_LINES_PER_BATCH
        # In a storm each line is at debug: not even built when debug is off.
        if not storm or log.is_enabled_for(logging.DEBUG):
            each = log.debug if storm else log.info
            for alarm in alarms:
                each(
                    "alarm.raised",
                    alarm_id=alarm.id,
                    device_id=alarm.device_id,
                    municipality=alarm.municipality,
                    kind=alarm.kind,
                    priority=int(alarm.priority),
                )
        raised = Counter((alarm.kind, str(int(alarm.priority))) for alarm in alarms)
        for labels, n in raised.items():
            self._metrics.alarms_raised.labels(*labels).inc(n)
        if storm:
            log.info(
                "alarms.raised",
                count=len(new),
                by_municipality=dict(Counter(alarm.municipality for alarm in alarms)),
                by_kind=dict(Counter(alarm.kind for alarm in alarms)),
            )

    def _count(self, effects: BatchEffects) -> None:
        m = self._metrics
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
                        self._heard.dose_taken(ev.event.device_id, ev.event.ts)
                    elif ev.event.type is EventType.LOCATION:
                        self._heard.location(ev.event)
        for (metric, labels), n in counts.items():
            metric.labels(*labels).inc(n)

    def _count_decoding(
        self,
        msg: MessageOutcome,
        kind: str,
        counts: Counter[tuple[PromCounter, tuple[str, ...]]],
    ) -> None:
        """Count and log (once a minute per device) fields dropped and clocks clamped.
        Issue 12 items 10 and 11: the message was used, so it is no dead letter, but a
        converter sending what alarmhub cannot read or a clock out of bounds needs
        someone to fix the device."""
        for dropped in msg.dropped:
            counts[self._metrics.fields_dropped, (dropped.reason, kind)] += 1
        skew: int | None = None
        for e in msg.events:  # a loop, not next(genexpr): one generator per message cost more
            if e.event.clock_skew_s:
                skew = e.event.clock_skew_s
                break
        if skew is not None:
            direction = "ahead" if skew > 0 else "behind"
            counts[self._metrics.clock_skew_clamped, (direction, kind)] += len(msg.events)
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

    def _kind_of(self, rejected: Rejected | None) -> str:
        if rejected is not None and rejected.device_id:
            device = self._state.devices.get(rejected.device_id)
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


@dataclass(slots=True)
class FirstSteps:
    """A batch's first escalation steps: decided, whether each was recorded now, the
    (wall, monotonic) instant they were decided at, and the alarms announced."""

    rows: list[DecidedRow]
    recorded: list[bool]
    anchor: tuple[datetime, float]
    announced: set[str] = field(default_factory=set)


def _finished_alone(task: asyncio.Future[None]) -> None:
    """A batch that went on after its ingest was cancelled: its failure, if any, logged."""
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.warning("ingest.batch_abandoned", error=repr(exc))
