"""A simulated SCAIP device, or a fleet of them sharing one socket per transport.

    async with ScaipFleet("udp://127.0.0.1:5060", ResendPolicy(interval_s=(0.2, 0.4))) as fleet:
        pendant = fleet.device("4790012345", password="secret")
        record = pendant.alarm("A1", stc="0010")
        await fleet.wait_all(30)
        record.snus  # e.g. [4, 4, 0]: held twice, then handled

What a device does, per the standard (docs/scaip.md) and RFC 3261:
- each `<mrq>` travels in a SIP MESSAGE whose Contact is the fleet's own listening port;
  a 401 is answered with digest credentials (the strongest algorithm offered, qop=auth),
  and a `stale=true` challenge once more with the new nonce; the last challenge is reused
  (nonce count + 1) for the next request, as devices do to save the round trip;
- over UDP a request without a final response is retransmitted (Timer E: T1 = 500 ms
  doubling to T2 = 4 s) until Timer F (64·T1 = 32 s) gives up;
- the answer `<mrs>` comes inline in the 200 OK or as a new MESSAGE to the contact, which
  is matched to its session by the request URI's user (the cid) and `<ref>`, since its
  Call-ID is new; the device answers it 200 OK;
- on HOLD (`snu=4`), or no answer within `answer_timeout_s`, the device resends the same
  request (same `ref`, new SIP transaction) every `interval_s` (5 to 20 s by the standard),
  for at most `give_up_after_s`; the session for a ref ends on `snu` 0, 5 or 6.

Sessions are tasks in the fleet's TaskGroup: leaving the `async with` cancels what is left.
A device is a few small objects, so 500 of them on one socket are cheap.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import secrets
from collections.abc import Coroutine
from dataclasses import dataclass, field
from enum import StrEnum
from types import TracebackType
from typing import Any, Self

from sipmessage import AuthChallenge, AuthCredentials, Request

from alarmhub.sim import scaip_wire as wire
from alarmhub.sim.scaip_transport import Reply, SipTransport
from alarmhub.sim.scaip_wire import Answer, MessageType

ENDING_SNUS = frozenset({0, 5, 6})  # the standard: the session for a ref ends on these
RESEND_SNUS = frozenset({4})  # HOLD: resend the same request
MAX_AUTH_ROUNDS = 3  # the first request, a challenge, a stale challenge
RESEND_STATUSES = frozenset({408, 480, 500, 503, 504})  # worth trying again later


@dataclass(frozen=True)
class ResendPolicy:
    """When a device resends; the standard's values by default, tests shorten them."""

    interval_s: tuple[float, float] = (5.0, 20.0)
    answer_timeout_s: float = 10.0
    give_up_after_s: float = 30 * 60.0
    t1_s: float = 0.5  # RFC 3261 Timer E starts here, Timer F is 64 times it
    t2_s: float = 4.0
    reuse_nonce: bool = True


class Outcome(StrEnum):
    """How a session for one ref ended."""

    HANDLED = "handled"  # snu 0
    NOT_TREATED = "not_treated"  # snu 5
    BUSY = "busy"  # snu 6
    REFUSED = "refused"  # another snu: the request itself was wrong, resending cannot help
    SIP_REFUSED = "sip_refused"  # a final SIP error (401 after credentials, 403, 415, …)
    GAVE_UP = "gave_up"  # no ending answer within give_up_after_s
    CANCELLED = "cancelled"  # a later request for the same ref (IN, RE) took over


SNU_OUTCOMES = {0: Outcome.HANDLED, 5: Outcome.NOT_TREATED, 6: Outcome.BUSY}


@dataclass(frozen=True)
class Attempt:
    """One SIP transaction of a session: when, its final status (None: Timer F), the digest."""

    at: float
    mty: MessageType | None
    sip_status: int | None
    algorithm: str | None
    auth_rounds: int


@dataclass
class RefRecord:
    """What happened to one ref: every attempt, every answer (with loop times), the outcome."""

    cid: str
    ref: str
    started_at: float
    attempts: list[Attempt] = field(default_factory=list)
    answers: list[tuple[float, Answer]] = field(default_factory=list)
    outcome: Outcome | None = None
    ended_at: float | None = None
    changed: asyncio.Event = field(default_factory=asyncio.Event, repr=False, compare=False)
    finished: asyncio.Event = field(default_factory=asyncio.Event, repr=False, compare=False)

    @property
    def snus(self) -> list[int]:
        return [a.snu for _, a in self.answers]

    @property
    def sip_statuses(self) -> list[int | None]:
        return [a.sip_status for a in self.attempts]

    @property
    def answered_after_s(self) -> float | None:
        """Request → the first `snu=0`, from the session's first send."""
        return next((t - self.started_at for t, a in self.answers if a.snu == 0), None)

    def add_answer(self, at: float, answer: Answer) -> None:
        self.answers.append((at, answer))
        self.changed.set()

    def end(self, at: float, outcome: Outcome) -> None:
        if self.outcome is None:
            self.outcome, self.ended_at = outcome, at
        self.finished.set()

    async def wait(self, within_s: float) -> bool:
        """True when the session has ended within `within_s` seconds."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.finished.wait(), within_s)
        return self.finished.is_set()


class ScaipDevice:
    """One device of a fleet: its cid, credentials, digest state and records by ref."""

    def __init__(self, fleet: ScaipFleet, cid: str, password: str, username: str, dty: str) -> None:
        self.fleet = fleet
        self.cid = cid
        self.password = password
        self.username = username
        self.dty = dty
        self.records: dict[str, RefRecord] = {}
        self.challenge: AuthChallenge | None = None
        self.nc = 0
        self.cseq = 0
        self._sent: dict[str, dict[str, str | dict[str, str]]] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def alarm(self, ref: str, stc: str = "0010", **extra: str | dict[str, str]) -> RefRecord:
        """An alarm (`mty` omitted = ME); `extra` adds or overrides elements (even `cid`)."""
        fields: dict[str, str | dict[str, str]] = {
            "ref": ref,
            "cid": self.cid,
            "dty": self.dty,
            "stc": stc,
        }
        return self.send(ref, fields | extra, MessageType.ALARM)

    def update(self, ref: str, **extra: str | dict[str, str]) -> RefRecord:
        """An information update: repeats the original's mandatory values, with `extra`."""
        base = self._sent.get(ref, {"ref": ref, "cid": self.cid, "dty": self.dty})
        return self.send(ref, base | {"mty": MessageType.UPDATE.value} | extra, MessageType.UPDATE)

    def reset(self, ref: str) -> RefRecord:
        """A reset: aborts the alarm with the same ref."""
        fields = {"ref": ref, "cid": self.cid, "dty": self.dty, "mty": MessageType.RESET.value}
        return self.send(ref, dict(fields), MessageType.RESET)

    def heartbeat(self, ref: str, hbo: bool = True) -> RefRecord:
        """A heartbeat (PI); `hbo=001` says the device accepts a new interval (`hbi`)."""
        fields: dict[str, str | dict[str, str]] = {
            "ref": ref,
            "cid": self.cid,
            "dty": self.dty,
            "mty": MessageType.HEARTBEAT.value,
        }
        if hbo:
            fields["hbo"] = "001"
        return self.send(ref, fields, MessageType.HEARTBEAT)

    def send(
        self,
        ref: str,
        fields: dict[str, str | dict[str, str]],
        mty: MessageType | None,
        *,
        body: bytes | None = None,
        content_type: str = wire.SCAIP_CONTENT_TYPE,
    ) -> RefRecord:
        """Start a session for `ref`; `body` replaces the built `<mrq>` (hostile tests)."""
        previous = self._tasks.pop(ref, None)
        if previous is not None:
            previous.cancel()
            self.records[ref].end(self.fleet.now(), Outcome.CANCELLED)
        record = RefRecord(self.cid, ref, self.fleet.now())
        old = self.records.get(ref)
        if old is not None:  # one ref, one history: IN/RE answers follow the alarm's
            record.attempts, record.answers = old.attempts, old.answers
        self.records[ref] = record
        self._sent.setdefault(ref, fields)
        data = body if body is not None else wire.mrq_body(fields)
        self._tasks[ref] = self.fleet.start(self, record, data, content_type, mty)
        return record

    def cancel(self) -> None:
        for task in self._tasks.values():
            task.cancel()

    def authorization(self, uri: str) -> AuthCredentials | None:
        if self.challenge is None:
            return None
        self.nc += 1
        return wire.digest_response(
            self.challenge, self.username, self.password, "MESSAGE", uri, nc=self.nc
        )


class ScaipFleet:
    """Devices sharing one UDP socket, or one TCP connection and one TCP listener."""

    def __init__(
        self,
        target: str,
        policy: ResendPolicy | None = None,
        *,
        local_host: str = "127.0.0.1",
        seed: int = 0,
    ) -> None:
        self.policy = policy or ResendPolicy()
        self.sip = SipTransport(
            target,
            self._on_request,
            self._spawn,
            local_host=local_host,
            t1_s=self.policy.t1_s,
            t2_s=self.policy.t2_s,
        )
        self.devices: dict[str, ScaipDevice] = {}
        self.unmatched: list[Answer] = []  # answers whose ref no device has
        self.malformed: list[bytes] = []  # MESSAGEs to the contact that held no <mrs>
        self._rng = random.Random(seed)  # noqa: S311 -- resend jitter, not a secret
        self._seen: set[tuple[str, str]] = set()
        self._tg = asyncio.TaskGroup()

    async def __aenter__(self) -> Self:
        await self._tg.__aenter__()
        await self.sip.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for device in self.devices.values():
            device.cancel()
        self.sip.close()
        await self._tg.__aexit__(exc_type, exc, tb)

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        return self._tg.create_task(coro, name=name)

    @property
    def contact_port(self) -> int:
        return self.sip.contact_port

    def now(self) -> float:
        return asyncio.get_running_loop().time()

    def device(
        self, cid: str, password: str, *, username: str | None = None, dty: str = "0003"
    ) -> ScaipDevice:
        """A device with these credentials (the digest username is its cid unless given)."""
        device = ScaipDevice(self, cid, password, username or cid, dty)
        self.devices[cid] = device
        return device

    def records(self) -> list[RefRecord]:
        return [r for d in self.devices.values() for r in d.records.values()]

    async def wait_all(self, within_s: float) -> bool:
        """True when every session has ended within `within_s` seconds."""
        deadline = self.now() + within_s
        for record in self.records():
            if not await record.wait(max(0.0, deadline - self.now())):
                return False
        return True

    def start(
        self,
        device: ScaipDevice,
        record: RefRecord,
        body: bytes,
        content_type: str,
        mty: MessageType | None,
    ) -> asyncio.Task[None]:
        coro = self._session(device, record, body, content_type, mty)
        return self._spawn(coro, f"scaip-{device.cid}-{record.ref}")

    # --- one session: send, wait for the answer, resend per the standard ----------------

    async def _session(
        self,
        device: ScaipDevice,
        record: RefRecord,
        body: bytes,
        content_type: str,
        mty: MessageType | None,
    ) -> None:
        p = self.policy
        give_up_at = record.started_at + p.give_up_after_s
        while True:
            heard = len(record.answers)
            status = await self._transaction(device, record, body, content_type, mty)
            if status is not None and status >= 300 and status not in RESEND_STATUSES:
                record.end(self.now(), Outcome.SIP_REFUSED)
                return
            if status is not None and status < 300 and len(record.answers) == heard:
                await self._sleep(record, self.now() + p.answer_timeout_s)
            outcome = self._ended(record, heard)
            if outcome is not None:
                record.end(self.now(), outcome)
                return
            # HOLD, or no answer: resend the same request after the interval, unless an
            # ending answer (a late one for an earlier attempt) arrives meanwhile.
            resend_at = self.now() + self._rng.uniform(*p.interval_s)
            if resend_at > give_up_at:
                await self._sleep(record, give_up_at, heard)
                record.end(self.now(), self._ended(record, heard) or Outcome.GAVE_UP)
                return
            await self._sleep(record, resend_at, heard)
            outcome = self._ended(record, heard)
            if outcome is not None:
                record.end(self.now(), outcome)
                return

    def _ended(self, record: RefRecord, heard: int) -> Outcome | None:
        for _, answer in record.answers[heard:]:
            if answer.snu in ENDING_SNUS:
                return SNU_OUTCOMES[answer.snu]
            if answer.snu not in RESEND_SNUS:
                return Outcome.REFUSED
        return None

    async def _sleep(self, record: RefRecord, until: float, heard: int | None = None) -> None:
        """Sleep until `until`; any answer wakes it, or with `heard` only an ending answer
        after the first `heard` ones (a HOLD does not hasten the next resend)."""
        while (left := until - self.now()) > 0:
            record.changed.clear()  # no await since the caller looked: no answer slips by
            try:
                await asyncio.wait_for(record.changed.wait(), left)
            except TimeoutError:
                return
            if heard is None or self._ended(record, heard) is not None:
                return

    async def _transaction(
        self,
        device: ScaipDevice,
        record: RefRecord,
        body: bytes,
        content_type: str,
        mty: MessageType | None,
    ) -> int | None:
        """One MESSAGE through digest; its final status, or None when none came (Timer F)."""
        ep = self.sip.endpoint
        uri = f"sip:{ep.target_host}:{ep.target_port}"
        call_id, tag = f"{secrets.token_hex(8)}@{ep.local_host}", secrets.token_hex(4)
        auth = device.authorization(uri) if self.policy.reuse_nonce else None
        fresh, rounds, response = False, 0, None
        for rounds in range(1, MAX_AUTH_ROUNDS + 1):  # noqa: B007 -- rounds is recorded below
            device.cseq += 1
            req = wire.message_request(
                ep,
                device.cid,
                body,
                call_id=call_id,
                cseq=device.cseq,
                from_tag=tag,
                branch=wire.new_branch(),
                authorization=auth,
            )
            req.headers.set("Content-Type", content_type)
            response = await self.sip.send(req)
            if response is None or response.code != 401:
                break
            challenge = wire.strongest(wire.challenges_of(response))
            if challenge is None or (fresh and not wire.is_stale(challenge)):
                break  # wrong credentials, or a challenge we cannot answer: a final 401
            device.challenge, device.nc, fresh = challenge, 0, True
            auth = device.authorization(uri)
        status = None if response is None else response.code
        algorithm = (
            None if auth is None or auth.parameters is None else auth.parameters["algorithm"]
        )
        record.attempts.append(Attempt(self.now(), mty, status, algorithm, rounds))
        if response is not None and 200 <= response.code < 300 and response.body:
            answer = wire.parse_mrs(response.body, via="inline")
            if answer is not None and answer.ref == record.ref:
                record.add_answer(self.now(), answer)
        return status

    def _on_request(self, req: Request, reply: Reply) -> None:
        if req.method != "MESSAGE":
            reply(bytes(wire.response_to(req, 405, "Method Not Allowed")))
            return
        answer = wire.parse_mrs(req.body)
        if answer is None:
            self.malformed.append(req.body)
            reply(bytes(wire.response_to(req, 400, "Bad Request")))
            return
        reply(bytes(wire.response_to(req, 200, "OK")))
        key = (req.headers.get("Call-ID") or "", req.headers.get("CSeq") or "")
        if key in self._seen:
            return  # the receiver retransmitted its MESSAGE: one answer, counted once
        self._seen.add(key)
        record = self._record_for(req.uri.user, answer.ref)
        if record is None:
            self.unmatched.append(answer)
        else:
            record.add_answer(self.now(), answer)

    def _record_for(self, cid: str | None, ref: str) -> RefRecord | None:
        device = self.devices.get(cid or "")
        if device is not None and ref in device.records:
            return device.records[ref]
        # A receiver that addressed the contact without the user part: refs are unique
        # per device, so take the one device that has this ref, if only one has it.
        found = [d.records[ref] for d in self.devices.values() if ref in d.records]
        return found[0] if len(found) == 1 else None
