"""SCAIP requests through the same pipeline as MQTT, each answered from its own commit.

The SIP layer (alarmhub/sip/) authenticates a device and calls :class:`ScaipIntake` with
the request; the intake puts the raw XML into :class:`ScaipSource`, a batch source of its
own that the owner's term runs through :class:`~alarmhub.daemon.ingest.Ingest` on the same
write gate as MQTT: decode -> dedup -> rules -> one commit. Only then is the request
answered, from its committed outcome:

- handled (`snu=0`), with the voice parameters, once the alarm is durably stored: SCAIP's
  equivalent of MQTT's acknowledgement after the commit;
- HOLD (`snu=4`) when the commit has not happened within ``scaip_hold_after_s`` (the store
  is failing, or this instance does not own intake): the device resends the same `ref`
  every 5-20 s, and the request, still queued, commits when the store is back, so the
  resend is a redelivery, answered 0. Nothing is lost and nothing is stored twice;
- the rejection's own code (2, 3, 7, 10, 1) for a body the codec refuses, 5 (not
  treated) for a device alarmhub does not serve with the scaip profile; both dead-lettered
  by the pipeline like bad MQTT input;
- SIP 403 when the body's `cid` is not the authenticated device: a forgery, dead-lettered
  (`device_mismatch`) and logged with both ids, never an alarm;
- SIP 415 with `Accept` when the request's Content-Type is not SCAIP's or XML: the body is
  not read as SCAIP, but it goes through the pipeline all the same and is answered only
  once it is committed as a dead letter (`unsupported_content_type`); 503 with
  `Retry-After` (there is no `<mrs>` to carry a HOLD) while it is not, and the device's
  resend finds it stored.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Sequence

import structlog

from alarmhub.clock import Clock
from alarmhub.core.model import AlarmState, Device, RawMessage, ScaipVoice
from alarmhub.core.pipeline import BatchEffects, MessageOutcome
from alarmhub.core.scaip import (
    CONTENT_TYPES,
    MAX_BODY_BYTES,
    Answer,
    MessageType,
    Request,
    ScaipRejected,
    Snu,
    answer_for,
    build_answer,
    hbi_minutes,
    parse_request,
    salvaged_ref,
)
from alarmhub.daemon.state import HubState
from alarmhub.mqtt.client import Delivery
from alarmhub.observability.logs import OncePer
from alarmhub.observability.metrics import SCAIP_SIP_ANSWERS, SCAIP_UNREAD, Metrics
from alarmhub.settings import Settings
from alarmhub.sip.ports import InboundMessage, Reply

log = structlog.get_logger("alarmhub.scaip")

TOPIC_PREFIX = "scaip/"  # + the authenticated device id: the profile's topic
MAX_PENDING = 10_000  # requests queued for a commit; beyond it, HOLD without queueing
MAX_REMEMBERED = 100_000  # alarm -> the voice an operator chose for its device
RETRY_AFTER_S = 5  # a 503's Retry-After: the store could not keep a refused body yet
# A request answered HOLD is still being resent this long after that answer: three times
# the standard's longest resend interval (20 s), so that two lost resends do not end it.
RESENDING_WITHIN_S = 60.0
_ALARM_TYPES = frozenset({MessageType.MESSAGE, MessageType.INFORMATION})


class HeldRequests:
    """The requests this intake last answered HOLD, by (device, `ref`), and when.

    A device resends a request every 5-20 s until it is answered 0, 5 or 6, which end
    its session for that `ref`. While the last answer was HOLD, the same `ref` again is
    the device resending it, and ingest is told so (`RawMessage.resending`): under
    `hold_until_taken` an operator may take and resolve the alarm between two resends,
    and dedup took the next one, byte for byte the first, for a `ref` counter restart
    and raised a second alarm (core/dedup.py). In memory only: after a restart or a
    failover the first resend is judged by its bytes alone, a second alarm if its alarm
    was resolved (the safe side). Bounded by time (a device that gave up sends no more)
    and by count.
    """

    def __init__(self, within_s: float = RESENDING_WITHIN_S, limit: int = MAX_PENDING) -> None:
        self._at: OrderedDict[tuple[str, str], float] = OrderedDict()
        self._within = within_s
        self._limit = limit

    def resending(self, device_id: str, ref: str, now: float) -> bool:
        """Was this request answered HOLD recently enough that the device still resends it?"""
        at = self._at.get((device_id, ref))
        return at is not None and now - at <= self._within

    def answered(self, device_id: str, answer: Answer, now: float) -> None:
        """Remember a HOLD; any other answer ends the session (or was never one)."""
        key = (device_id, answer.ref)
        if answer.snu is not Snu.HOLD or not answer.ref:
            self._at.pop(key, None)
            return
        self._at[key] = now
        self._at.move_to_end(key)
        while len(self._at) > self._limit or now - next(iter(self._at.values())) > self._within:
            self._at.popitem(last=False)


class ScaipSource:
    """A batch source of SCAIP requests (daemon/ingest.py `BatchSource`).

    Requests wait here until the owner's ingest takes them; each carries a future that
    its handler awaits and :meth:`settled` fulfils with the committed outcome. A request
    whose handler gave up (HOLD) stays queued: it is committed when the store is back.
    """

    def __init__(self, max_pending: int = MAX_PENDING) -> None:
        self._pending: deque[Delivery] = deque()
        self._futures: dict[int, asyncio.Future[MessageOutcome]] = {}
        self._wakeup = asyncio.Event()
        self._next = 0
        self._max = max_pending

    def submit(self, raw: RawMessage) -> asyncio.Future[MessageOutcome] | None:
        """Queue a request for the next batch; None when the queue is full."""
        if len(self._pending) >= self._max:
            return None
        self._next += 1
        delivery = Delivery(raw, mid=self._next, qos=0, generation=-1)
        future: asyncio.Future[MessageOutcome] = asyncio.get_running_loop().create_future()
        self._futures[delivery.mid] = future
        self._pending.append(delivery)
        self._wakeup.set()
        return future

    async def batches(self, max_batch: int, coalesce_s: float) -> AsyncIterator[list[Delivery]]:
        while True:
            if not self._pending:
                await self._wakeup.wait()
                self._wakeup.clear()
                if coalesce_s > 0 and len(self._pending) < max_batch:
                    await asyncio.sleep(coalesce_s)
            batch: list[Delivery] = []
            while self._pending and len(batch) < max_batch:
                batch.append(self._pending.popleft())
            if batch:
                yield batch

    def settle(self, deliveries: Sequence[Delivery], receipts: Sequence[tuple[str, bytes]]) -> int:
        """Nothing to acknowledge: SIP answers come from :meth:`settled`."""
        del deliveries, receipts
        return 0

    def settled(self, deliveries: Sequence[Delivery], effects: BatchEffects) -> None:
        """The batch is committed: each waiting handler gets its request's outcome."""
        for delivery, outcome in zip(deliveries, effects.messages, strict=True):
            future = self._futures.pop(delivery.mid, None)
            if future is not None and not future.done():
                future.set_result(outcome)

    @property
    def pending(self) -> int:
        return len(self._pending)


class ScaipIntake:
    """The SIP layer's handler (sip/ports.py `MessageHandler`) for SCAIP requests."""

    def __init__(
        self,
        state: HubState,
        source: ScaipSource,
        clock: Clock,
        metrics: Metrics,
        settings: Settings,
    ) -> None:
        self.source = source
        self._state = state
        self._clock = clock
        self._metrics = metrics
        self._hold_after_s = settings.scaip_hold_after_s
        # As the decoder reads it (core/scaip_decode.py scaip_payload).
        self._max_body = min(settings.max_payload_bytes, MAX_BODY_BYTES)
        self._once = OncePer(60.0)
        self._hbi_told: dict[str, int] = {}  # the heartbeat interval each device was last sent
        # The voice parameters an operator chose on taking an alarm (hold_until_taken):
        # the answer to the device's next resend carries exactly these. Bounded; kept in
        # memory (the acknowledgement's timeline entry records them in the database).
        self._voice_of: OrderedDict[str, ScaipVoice] = OrderedDict()
        self._held = HeldRequests()

    def voice_chosen(self, alarm_id: str, voice: ScaipVoice) -> None:
        """An operator took the alarm and chose how the device is to call (daemon/actions.py)."""
        self._voice_of[alarm_id] = voice
        while len(self._voice_of) > MAX_REMEMBERED:
            self._voice_of.popitem(last=False)

    async def __call__(self, message: InboundMessage) -> Reply:
        """Every request is counted by what it was answered: the `<mrs>`'s `snu`, else the
        SIP refusal sent instead (a 415 counted nowhere hid a device whose every alarm
        was refused for its label)."""
        started = self._clock.monotonic()
        snu: Snu | None = None  # None: a SIP refusal, no `<mrs>`
        if message.content_type not in CONTENT_TYPES:
            reply, mty = await self._unsupported(message), SCAIP_UNREAD
        else:
            request = parse_request(message.body, self._max_body)
            mty = request.mty.value if isinstance(request, Request) else SCAIP_UNREAD
            if isinstance(request, Request) and request.cid != message.user:
                reply = await self._forged(message, request)
            else:
                answer = await self._answer(message, request)
                self._held.answered(message.user, answer, self._clock.monotonic())
                device = self._state.devices.get(message.user)
                inline = device is not None and device.settings.scaip_inline
                reply, snu = Reply(200, body=build_answer(answer), inline=inline), answer.snu
        label = str(int(snu)) if snu is not None else SCAIP_SIP_ANSWERS[reply.status]
        self._metrics.scaip_requests.labels(mty, label).inc()
        self._metrics.scaip_answer_seconds.observe(self._clock.monotonic() - started)
        return reply

    async def _unsupported(self, message: InboundMessage) -> Reply:
        """A body under a type that is no SCAIP body: 415 once it is kept as a dead letter.

        The decoder refuses it by its label, unread (core/scaip_decode.py), and ingest
        counts and logs it as any dead letter (`message.dead_lettered`, once a minute per
        device). A 415 sent before the commit would end the device's session with the
        body lost if the store then failed; so until the commit it is 503, which the
        device resends after (the request stays queued and commits when the store is back).
        """
        refused = Reply(415, headers=(("Accept", ", ".join(CONTENT_TYPES)),))
        return await self._once_kept(message, salvaged_ref(message.body) or "", refused)

    async def _forged(self, message: InboundMessage, request: Request) -> Reply:
        """A body naming another device: refused once dead-lettered by the pipeline.

        The 403 ends the device's transaction, so it leaves only once the body (the
        evidence of a forgery, or of a device configured with another's `cid`) is
        committed; until then 503 with Retry-After, as for `_unsupported`.
        """
        key = f"forged:{message.user}"
        should, suppressed = self._once.should_log(key)
        if should:
            log.warning(
                "scaip.forged_cid",
                user=message.user,
                cid=request.cid,
                ref=request.ref,
                source=f"{message.source[0]}:{message.source[1]}",
                similar_since_last_log=suppressed,
            )
        refused = Reply(403, "cid is not the authenticated device")
        return await self._once_kept(message, request.ref or "", refused)

    async def _once_kept(self, message: InboundMessage, ref: str, refused: Reply) -> Reply:
        """`refused` once the request is committed as a dead letter, else 503 Retry-After:
        a final refusal ends the device's transaction, and must not leave the body unkept."""
        if await self._committed(self._raw(message)) is None:
            self._log_held(message.user, ref)
            return Reply(503, "not stored yet", headers=(("Retry-After", str(RETRY_AFTER_S)),))
        return refused

    async def _answer(self, message: InboundMessage, request: Request | ScaipRejected) -> Answer:
        ref = request.ref or ""
        resending = isinstance(request, Request) and self._held.resending(
            message.user, ref, self._clock.monotonic()
        )
        outcome = await self._committed(self._raw(message, resending=resending))
        if outcome is None:
            self._log_held(message.user, ref)
            return Answer(ref, Snu.HOLD, ste="not stored yet: send again")
        if isinstance(request, ScaipRejected):
            return Answer(ref, request.snu, ste=request.detail[:120])
        if outcome.rejected is not None:
            # Not registered, decommissioned, or not a scaip device: alarmhub does not serve
            # it, so the device ends the session (dead-lettered for an operator to see).
            return Answer(ref, Snu.NOT_TREATED, ste=outcome.rejected.reason.value)
        return self._handled(request, outcome, message.user)

    async def _committed(self, raw: RawMessage) -> MessageOutcome | None:
        """The request's committed outcome, or None when it was not committed in time."""
        future = self.source.submit(raw)
        if future is None:
            return None
        try:
            return await asyncio.wait_for(asyncio.shield(future), self._hold_after_s)
        except TimeoutError:
            return None

    def _handled(self, request: Request, outcome: MessageOutcome, cid: str) -> Answer:
        device = self._state.devices.get(cid)
        if device is None:  # committed, so registered; forgotten since by a refresh
            return Answer(request.ref, Snu.HANDLED)
        policy = self._state.rules.scaip_policy(device.municipality)
        waiting, voice = None, device.settings.scaip_voice
        alarm_id = _alarm_of(outcome) if request.mty in _ALARM_TYPES else None
        if alarm_id is not None:
            alarm = self._state.alarms.get(alarm_id)
            # Not in memory: resolved since, so nobody is to be waited for.
            waiting = alarm is not None and alarm.state is AlarmState.OPEN
            voice = self._voice_of.get(alarm_id, voice)  # the operator's choice wins
        return answer_for(
            request,
            alarm_waiting=waiting,
            policy=policy,
            voice=voice,
            hbi=self._hbi(request, device),
        )

    def _hbi(self, request: Request, device: Device) -> int | None:
        """The heartbeat interval to tell a device that accepts one, when it was not told it yet."""
        if not request.hbo:
            return None
        seconds = device.heartbeat_interval_s
        if seconds is None:
            default = self._state.rules.heartbeat_defaults.get(device.kind)
            seconds = int(default.total_seconds()) if default is not None else None
        if seconds is None:
            return None
        minutes = hbi_minutes(seconds)
        if self._hbi_told.get(device.id) == minutes:
            return None
        self._hbi_told[device.id] = minutes
        return minutes

    def _raw(self, message: InboundMessage, *, resending: bool = False) -> RawMessage:
        # The topic names the authenticated sender, as an MQTT topic does under the broker's
        # ACL: the decoder believes the body's `cid` only when it is this device.
        return RawMessage(
            TOPIC_PREFIX + message.user,
            message.body,
            message.received_at,
            content_type=message.content_type,
            resending=resending,
        )

    def _log_held(self, device_id: str, ref: str) -> None:
        should, suppressed = self._once.should_log(f"held:{device_id}")
        if should:
            log.warning(
                "scaip.held",
                device_id=device_id,
                ref=ref,
                pending=self.source.pending,
                similar_since_last_log=suppressed,
            )


def _alarm_of(outcome: MessageOutcome) -> str | None:
    """The alarm a request raised or joined, or that its stored copy did (a redelivery).

    A resend is a redelivery, which raises nothing: its alarm is the one dedup found
    for the stored copy (core/dedup.py Prior, read from the inbox row), so the answer
    is right whoever awaited the commit (a HOLD answered the first copy) and after a
    restart. None: the request raised no alarm (a status), answered without voice.
    """
    found = next((e.alarm_id for e in outcome.events if e.alarm_id), None)
    if found is None and outcome.earlier_alarm_ids:
        found = outcome.earlier_alarm_ids[0]
    return found
