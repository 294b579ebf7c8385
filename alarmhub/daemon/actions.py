"""People's actions on alarms: acknowledge, resolve, note, … decided under the write gate.

An action and an ingest batch never interleave: both decide and commit under
the gate's lock. Resolving an inhibiting alarm or an incident releases what it
hid in the same transaction. After the commit the alarm is re-armed, counted
(time to acknowledge and resolve, SLA breaches), logged and shown, and a
native device is told a person has taken its alarm (SCAIP's "handled").
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any, Protocol

import orjson
import structlog

from alarmhub.clock import Clock
from alarmhub.core import suppress
from alarmhub.core.actions import Action, Applied, Conflict, apply_action
from alarmhub.core.model import Alarm, ScaipVoice, TimelineType
from alarmhub.core.people import AuditEntry
from alarmhub.core.receipts import handled_receipt
from alarmhub.core.resolution import Resolution
from alarmhub.core.scaip_record import answered_on_taking
from alarmhub.core.views import alarm_json
from alarmhub.daemon.fanout import Broadcaster
from alarmhub.daemon.gate import WriteGate
from alarmhub.daemon.state import HubState
from alarmhub.observability.gauges import QueueGauges
from alarmhub.observability.metrics import Metrics
from alarmhub.store.errors import StoreError
from alarmhub.store.journal_outbox import JournalExport
from alarmhub.store.ports import ActionStore, Notification, RaisingMessages

log = structlog.get_logger("alarmhub")
# Stable log event names per timeline entry: alarm.acknowledged, alarm.resolved, …
_EVENT_NAMES = {t: f"alarm.{t.value}" for t in TimelineType}
# The outbox's target of a device's receipt queued for the owner to publish.
RECEIPT_TARGET = "device"


class Releases(Protocol):
    """The suppression keeper's part in a resolution (daemon/suppression.py)."""

    def on_resolved(self, alarm: Alarm, now: datetime, actor: str) -> list[suppress.Release]: ...
    def announce(self, releases: Sequence[suppress.Release]) -> None: ...


class Resolved(Protocol):
    def resolved(self, alarm: Alarm) -> None: ...


class Publish(Protocol):
    """The owner's broker connection (daemon/owner.py Link); a standby has none."""

    @property
    def connected(self) -> bool: ...
    def publish(self, topic: str, payload: bytes, qos: int = 1) -> None: ...


Spawn = Callable[[Coroutine[Any, Any, None], str], None]
# Told, after the commit, the SCAIP voice parameters an operator chose on taking an alarm
# (daemon/scaip.py `ScaipIntake.voice_chosen`): the device's next resend carries them.
VoiceChosen = Callable[[str, ScaipVoice], None]
Given = tuple[str | None, str | None, Resolution | None, ScaipVoice | None]
# The journal exports a resolve starts (daemon/journal.py exports_on_resolve).
JournalRows = Callable[[Alarm, datetime], list[JournalExport]]


class Actions:
    def __init__(
        self,
        *,
        state: HubState,
        store: ActionStore,
        reader: RaisingMessages,
        gate: WriteGate,
        clock: Clock,
        metrics: Metrics,
        releases: Releases,
        supervision: Resolved,
        arm: Callable[[Alarm], None],
        live: Broadcaster,
        queue_gauges: QueueGauges,
        device_link: Publish,
        spawn: Spawn,
        voice_chosen: VoiceChosen | None = None,
        journal: JournalRows = lambda _alarm, _now: [],
        journal_wake: Callable[[], None] = lambda: None,
    ) -> None:
        self._state = state
        self._store = store
        self._reader = reader
        self._gate = gate
        self._clock = clock
        self._metrics = metrics
        self._releases = releases
        self._supervision = supervision
        self._arm = arm
        self._live = live
        self._queue_gauges = queue_gauges
        self._device_link = device_link
        self._spawn = spawn
        self._voice_chosen = voice_chosen
        self._journal = journal
        self._journal_wake = journal_wake

    async def act(
        self,
        alarm_id: str,
        action: Action,
        actor: str,
        *,
        outcome: str | None = None,
        note: str | None = None,
        resolution: Resolution | None = None,
        voice: ScaipVoice | None = None,
        audit: Sequence[AuditEntry],
    ) -> Alarm | Conflict | None:
        """Apply an operator's action; None when there is no such alarm.

        `audit` is committed in the action's own transaction, and only if it applied.
        `resolution`: the cause and action taken of a RESOLVE (core/resolution.py);
        `voice`: the SCAIP voice parameters chosen on an ACKNOWLEDGE.
        """
        given = (outcome, note, resolution, voice)
        with structlog.contextvars.bound_contextvars(alarm_id=alarm_id):
            return await self._act(alarm_id, action, actor, given, audit)

    async def _act(
        self,
        alarm_id: str,
        action: Action,
        actor: str,
        given: Given,
        audit: Sequence[AuditEntry],
    ) -> Alarm | Conflict | None:
        async with self._gate.lock:
            decided = await self._gate.deciding(
                lambda: self._decide_and_save(alarm_id, action, actor, given, audit)
            )
            if decided is None or isinstance(decided, Conflict):
                return decided
            alarm, result, releases, changed = decided
            stored = [self._state.alarms.committed(each) for each in changed]
            result = replace(result, alarm=stored[0])
            releases = [replace(r, alarm=a) for r, a in zip(releases, stored[1:], strict=True)]
        self._arm(result.alarm)
        voice = given[3]
        if voice is not None and self._voice_chosen is not None:
            self._voice_chosen(result.alarm.id, voice)
        self._after_action(alarm, result)
        self._supervision.resolved(result.alarm)  # still silent: offline again in an interval
        self._releases.announce(releases)
        if action is Action.RESOLVE:
            self._journal_wake()
        return result.alarm

    async def _decide_and_save(
        self,
        alarm_id: str,
        action: Action,
        actor: str,
        given: Given,
        audit: Sequence[AuditEntry],
    ) -> tuple[Alarm, Applied, list[suppress.Release], tuple[Alarm, ...]] | Conflict | None:
        """Decide on the alarm as known now and commit; run again by the gate if it was stale.

        `given`: the action's outcome, note and resolution, as the operator sent them.
        """
        alarm = self._state.alarms.get(alarm_id) or await self._store.get_alarm(alarm_id)
        if alarm is None:
            return None
        now = self._clock.now()
        outcome, note, resolution, voice = given
        result = apply_action(
            alarm,
            action,
            actor,
            now,
            outcome=outcome,
            note=note,
            resolution=resolution,
            voice=voice,
        )
        if isinstance(result, Conflict):
            return result
        # Taking a held SCAIP alarm decides the device's next answer: recorded with it.
        device = self._state.devices.get(alarm.device_id)
        rules = self._state.rules
        answered = answered_on_taking(alarm, result.alarm, device, rules, voice, now)
        if answered is not None:
            result = replace(result, timeline=(*result.timeline, answered))
        # Resolving an inhibiting alarm or an incident releases what it hid, in
        # the same transaction (issue 12 item 2).
        releases = self._releases.on_resolved(result.alarm, now, actor)
        changed = (result.alarm, *(r.alarm for r in releases))
        entries = (*result.timeline, *(r.entry for r in releases))
        # An operator's answer to a person's alarm goes to the journal: its export row
        # commits with the answer, or neither does (issue 17, daemon/journal.py).
        journal = self._journal(result.alarm, now) if action is Action.RESOLVE else []
        await self._gate.until_committed(
            lambda: self._store.save_alarms(changed, entries, audit=audit, journal=journal)
        )
        return alarm, result, releases, changed

    def _after_action(self, before: Alarm, result: Applied) -> None:
        alarm = result.alarm
        label = str(int(alarm.priority))
        # Time to acknowledge is the first acknowledgement's: an alarm back in the queue
        # (a repeat on an acknowledged person alarm, an acknowledgement-timeout
        # reminder) acknowledged again is not a second response to count.
        first = before.acknowledged_at is None
        if result.acknowledged_now and first and alarm.acknowledged_at is not None:
            waited = (alarm.acknowledged_at - alarm.raised_at).total_seconds()
            self._metrics.time_to_acknowledge.labels(label, alarm.municipality).observe(waited)
            target = self._state.rules.sla_ack.get(alarm.priority)
            if target is not None and waited > target.total_seconds():
                self._metrics.sla_breaches.labels(label).inc()
            self._spawn(self._send_handled(alarm), f"handled-{alarm.id}")
        if before.state.value != "resolved" and alarm.resolved_at is not None:
            self._metrics.time_to_resolve.labels(label, alarm.municipality).observe(
                (alarm.resolved_at - alarm.raised_at).total_seconds()
            )
        with structlog.contextvars.bound_contextvars(
            device_id=alarm.device_id, municipality=alarm.municipality
        ):
            for entry in result.timeline:
                log.info(_EVENT_NAMES[entry.type], actor=entry.actor)
        self._live.publish("alarm", alarm_json(alarm))
        self._queue_gauges.update(self._state.alarms.by_id.values())

    async def _send_handled(self, alarm: Alarm) -> None:
        """SCAIP's "handled": tell the device a person has taken its alarm."""
        try:
            source = await self._reader.raising_message(alarm.id)
        except StoreError:  # out of reach: no receipt, rather than the daemon ended
            log.warning("receipt.not_sent", alarm_id=alarm.id, reason="store_unavailable")
            return
        receipt = handled_receipt(*source, alarm.id) if source is not None else None
        if receipt is None:
            return
        if self._device_link.connected:
            self._device_link.publish(*receipt, qos=1)
            return
        # No broker connection here (a standby, or the owner between connections):
        # the owner's notifier publishes the row at QoS 1 (issue 15).
        topic, payload = receipt
        note = Notification(RECEIPT_TARGET, "mqtt", topic, orjson.loads(payload))
        try:
            async with self._gate.lock:
                await self._store.queue_outbox(alarm.id, note, self._clock.now())
        except StoreError:
            log.warning("receipt.not_sent", alarm_id=alarm.id, reason="store_unavailable")
            return
        log.info("receipt.queued", alarm_id=alarm.id, topic=topic)
