"""Who does the single-owner work: a lease held through the database, with a local deadline.

One instance at a time holds a lease (`intake`) and does what must not be done
twice: MQTT intake with the service's client id, escalation deadlines,
supervision, notifications, pruning. The others serve the API and wait.

Two guards, because either alone fails somewhere:

- **The local deadline.** The holder computes when its grant can earliest
  expire from the local monotonic time at which it SENT the renewal that
  succeeded (``sent + ttl - margin``, core/cluster.py says why that is safe),
  and a watchdog declares it not-owner at that instant, whether or not the
  database answers, so it stops acting before any survivor can take over. A
  renewal stuck on a cut network does not hold it up: the watchdog does not
  wait for the renewal.
- **The fence in the database.** A process paused longer than its deadline (a
  stopped VM, a swap storm) wakes up believing it owns; every single-owner
  write therefore checks its grant inside its own transaction
  (store/postgres/leases.py `check_fence`) and is rolled back if the grant has
  moved on.

`is_owner`, `fence` and the `owner`/`standby` events change at once, in the
loop; the `on_acquired`/`on_lost` callbacks follow in that order, one at a
time (a slow start of the work delays the "lost" callback but not the events).
A cancelled `run()` drops ownership locally without telling the database (a
crash and a cancel look alike to the others); `resign()` afterwards releases the
lease so that a standby need not wait out the ttl on a clean shutdown.

A holder whose lease renews but whose work cannot proceed **steps down**: it
ends its term, releases the lease and holds off before contending again, so
another instance gets it: no broker connection for a grace (`_watch_able`,
core/cluster.py BrokerTiming), work waiting on a failing store for a limit
(`_watch_stall`, StallTiming), a SCAIP address unbound (`watches`, daemon/sipwatch.py).
Each is counted in `alarmhub_lease_step_downs_total{lease, reason}`.
"""

from __future__ import annotations

import asyncio
import enum
import math
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any, Protocol

import structlog
from prometheus_client import Counter

from alarmhub.clock import Clock
from alarmhub.core.cluster import (
    BrokerTiming,
    BrokerVerdict,
    LeaseTiming,
    Stalled,
    StallTiming,
    broker_verdict,
    stalled_for,
)
from alarmhub.observability.logs import OncePer
from alarmhub.store.cluster import Fence, Leases

log = structlog.get_logger("alarmhub.leadership")
INTAKE_LEASE = "intake"
MIN_BACKOFF_S = 0.05


class LossReason(enum.StrEnum):
    DEADLINE = "deadline"  # no renewal succeeded in time (the database unreachable or slow)
    REFUSED = "refused"  # the database says the grant expired or moved on
    STOPPED = "stopped"  # this instance stopped (run() cancelled)
    BROKER = "broker"  # stepped down: no broker connection for the grace (core/cluster.py)
    STALLED = "stalled"  # stepped down: its work failed to commit for the limit (core/cluster.py)
    SIP = "sip"  # stepped down: a SCAIP address unbound for the grace (daemon/sipwatch.py)


# The reasons a holder hands its lease over itself (released once its term has ended).
STEP_DOWN_REASONS = (LossReason.BROKER, LossReason.STALLED, LossReason.SIP)
OnAcquired = Callable[[Fence], Awaitable[None]]
OnLost = Callable[[Fence, LossReason], Awaitable[None]]
Watch = Callable[["Leadership"], Coroutine[Any, Any, None]]  # may step_down (daemon/sipwatch.py)


class Ownership(Protocol):
    """The shape the daemon uses, whether the lease is real (PostgreSQL) or trivial (SQLite)."""

    owner: asyncio.Event
    standby: asyncio.Event
    tried: asyncio.Event  # set once the first attempt has its answer: owner or standby

    @property
    def fence(self) -> Fence | None: ...

    async def run(self) -> None: ...

    async def resign(self) -> None: ...


class Leadership:
    """Contend for one lease, hold it while renewals succeed, announce every change."""

    def __init__(
        self,
        leases: Leases,
        clock: Clock,
        instance_id: str,
        timing: LeaseTiming,
        *,
        name: str = INTAKE_LEASE,
        on_acquired: OnAcquired | None = None,
        on_lost: OnLost | None = None,
        able: Callable[[], bool] | None = None,
        broker: BrokerTiming | None = None,
        stalled: Callable[[], Stalled | None] | None = None,
        stall: StallTiming | None = None,
        step_downs: Counter | None = None,
        watches: Sequence[Watch] = (),
    ) -> None:
        """A holder without its broker connection (`able`) for `broker`'s grace steps
        down (_watch_able), as does one whose work waited on a failing store (`stalled`)
        for `stall`'s limit (_watch_stall) and any `watches` decide; `step_downs` counts
        each by lease and reason."""
        self._leases = leases
        self._clock = clock
        self._id = instance_id
        self._t = timing
        self._name = name
        self._on_acquired = on_acquired
        self._on_lost = on_lost
        self._fence: Fence | None = None
        self._deadline = 0.0
        self._renew_at = 0.0
        self._rearm = asyncio.Event()
        self._events: asyncio.Queue[tuple[Fence, LossReason | None]] = asyncio.Queue()
        self._unreleased: Fence | None = None
        # An acquire sent and not answered yet: when it was sent, and the call.
        self._asking: tuple[float, asyncio.Future[Fence | None]] | None = None
        self._once = OncePer(60.0)
        self._able = able
        self._broker = broker
        self._stalled = stalled
        self._stall = stall
        self._step_down_counter = step_downs
        self._watches = tuple(watches)
        self._granted_at = 0.0  # monotonic: when the grant held now was taken up
        self._hold_until = 0.0  # monotonic: no acquire before (after a step-down)
        self._hold_off_s = 0.0  # the last step-down's hold-off, counted again from the release
        self._strikes = 0  # step-downs since this holder last had its broker
        self._stepped_down: int | None = None  # the epoch of the last step-down
        self.step_downs = 0
        self.owner = asyncio.Event()
        self.standby = asyncio.Event()
        self.standby.set()
        self.tried = asyncio.Event()

    @property
    def fence(self) -> Fence | None:
        """The grant this instance acts under, None when it must not act."""
        if self._fence is not None and self._clock.monotonic() >= self._deadline:
            return None  # the watchdog is about to say so; never act past the deadline
        return self._fence

    @property
    def is_owner(self) -> bool:
        return self.fence is not None

    async def run(self) -> None:
        """Contend, renew and watch until cancelled; then stop acting (no release)."""
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._contend(), name=f"lease-{self._name}")
                tg.create_task(self._watch(), name=f"lease-{self._name}-watchdog")
                tg.create_task(self._announce(), name=f"lease-{self._name}-callbacks")
                if self._able is not None and self._broker is not None:
                    tg.create_task(self._watch_able(), name=f"lease-{self._name}-able")
                if self._stalled is not None and self._stall is not None:
                    tg.create_task(self._watch_stall(), name=f"lease-{self._name}-stall")
                for i, watch in enumerate(self._watches):
                    tg.create_task(watch(self), name=f"lease-{self._name}-watch-{i}")
        finally:
            await self._drop_asking()
            held = self._fence
            if held is not None:
                self._drop(held, LossReason.STOPPED)
                self._unreleased = held
                await self._deliver(held, LossReason.STOPPED)

    async def _drop_asking(self) -> None:
        """At the end of run(): an acquire still unanswered is cancelled (a crash's loss)."""
        if self._asking is None:
            return
        asking = self._asking[1]
        self._asking = None
        asking.cancel()
        await asyncio.wait({asking})
        if not asking.cancelled():
            asking.exception()  # retrieved: the outcome no longer matters

    async def resign(self) -> None:
        """After run() ended: expire the lease held at the end, so a standby takes over now."""
        held, self._unreleased = self._unreleased, None
        if held is not None:
            await self._release(held)

    async def _release(self, held: Fence) -> None:
        try:
            async with asyncio.timeout(self._t.retry_s):
                await self._leases.release(held)
            log.info("lease.released", lease=held.name, epoch=held.epoch)
        except Exception as exc:  # the lease expires by itself within the ttl
            log.warning("lease.release_failed", lease=held.name, error=str(exc))

    # --- the three tasks -----------------------------------------------------------

    async def _contend(self) -> None:
        backoff = MIN_BACKOFF_S
        while True:
            held = self._fence
            hold_off = self._hold_until - self._clock.monotonic()
            if held is None and hold_off > 0:  # stepped down: others' turn first
                # In steps of the retry period: the hold-off is on the clock a test moves.
                await asyncio.sleep(min(hold_off, self._t.retry_s))
                continue
            try:
                if held is None:
                    await self._try_acquire()
                else:
                    await self._renew(held)
                backoff = MIN_BACKOFF_S
            except Exception as exc:  # the database away: keep the deadline, try again
                self.tried.set()
                key = "lease.renew_failed" if held else "lease.acquire_failed"
                should, suppressed = self._once.should_log(key)
                if should:
                    log.warning(key, lease=self._name, error=repr(exc), since_last=suppressed)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self._t.retry_s)

    async def _try_acquire(self) -> None:
        if self._asking is None:
            call = self._leases.acquire(self._name, self._id, self._t.ttl_s)
            self._asking = (self._clock.monotonic(), asyncio.ensure_future(call))
        sent, asking = self._asking
        # The bound keeps the loop moving, but never cancels the call itself: the
        # database may have granted already, and a grant whose answer is dropped is
        # held by nobody for a whole ttl, no standby let in. An answer that comes
        # later is taken at the next try, like any other (too late: handed back).
        try:
            async with asyncio.timeout(self._t.retry_s):
                got = await asyncio.shield(asking)
        finally:
            if asking.done():
                self._asking = None
        if got is None:
            self.tried.set()
            await asyncio.sleep(self._t.retry_s)
            return
        deadline = sent + self._t.ttl_s - self._t.margin_s
        if self._clock.monotonic() >= deadline:
            # Granted, but the answer came too late to act on: give it back at once.
            self.tried.set()
            await self._leases.release(got)
            return
        self._fence, self._deadline = got, deadline
        self._renew_at = sent + self._t.renew_s
        self._granted_at = self._clock.monotonic()
        self.owner.set()
        self.standby.clear()
        self._rearm.set()
        log.info("lease.acquired", lease=self._name, holder=self._id, epoch=got.epoch)
        self._events.put_nowait((got, None))
        self.tried.set()

    async def _renew(self, held: Fence) -> None:
        await asyncio.sleep(max(0.0, self._renew_at - self._clock.monotonic()))
        if self._fence is not held:
            return
        sent = self._clock.monotonic()
        # A renewal may hang on a cut network; the watchdog keeps the deadline
        # meanwhile, this bound only keeps the loop moving.
        async with asyncio.timeout(self._t.retry_s):
            ok = await self._leases.renew(held, self._t.ttl_s)
        if self._fence is not held:
            if ok:  # renewed after the deadline was declared: hand it back, re-acquire anew
                await self._leases.release(held)
            return
        if not ok:
            self._lose(held, LossReason.REFUSED)
            return
        if self._clock.monotonic() >= self._deadline:
            # The answer came after the local deadline, before the watchdog said so.
            # Meanwhile `fence` was None, so a writer may have been refused and the
            # term ended by itself: keeping the grant would hold the lease with no
            # term running, no intake, and no standby let in. Lose it, hand it back.
            self._lose(held, LossReason.DEADLINE)
            await self._release(held)
            return
        self._deadline = sent + self._t.ttl_s - self._t.margin_s
        self._renew_at = sent + self._t.renew_s
        self._rearm.set()

    async def _watch(self) -> None:
        while True:
            self._rearm.clear()
            held = self._fence
            if held is None:
                await self._rearm.wait()
                continue
            remaining = self._deadline - self._clock.monotonic()
            if remaining <= 0:
                self._lose(held, LossReason.DEADLINE)
                continue
            try:
                async with asyncio.timeout(remaining):
                    await self._rearm.wait()
            except TimeoutError:
                pass

    async def _announce(self) -> None:
        while True:
            fence, reason = await self._events.get()
            await self._deliver(fence, reason)
            if reason in STEP_DOWN_REASONS:
                # The work has stopped (on_lost returned): now let another instance in
                # without waiting out the ttl.
                await self._release(fence)
                # The others' turn starts with the release (_step_down says why).
                self._hold_until = self._clock.monotonic() + self._hold_off_s

    async def _watch_able(self) -> None:
        """Step down when this holder has had no broker connection for the grace.

        Its lease stays renewable (PostgreSQL is fine), so without this nobody else
        could take intake over while devices' messages wait at the broker.
        """
        assert self._able is not None
        assert self._broker is not None
        timing = self._broker
        since: float | None = None  # monotonic: unable since, while holding
        kept: int | None = None  # the epoch kept without the broker (logged once)
        while True:
            await asyncio.sleep(timing.grace_s / 5)
            held, now = self._fence, self._clock.monotonic()
            if held is None or self._able():
                if held is not None:  # the broker is back: a fresh start
                    self._strikes, self._stepped_down = 0, None
                since = None
                continue
            since = now if since is None else since
            verdict = broker_verdict(
                now - since, self._strikes, held.epoch, self._stepped_down, timing
            )
            if verdict is BrokerVerdict.STEP_DOWN:
                self._strikes += 1
                self._stepped_down = held.epoch
                unreachable_s = round(now - since, 2)
                self.step_down(
                    held,
                    LossReason.BROKER,
                    timing.hold_off_s,
                    unreachable_s=unreachable_s,
                    strikes=self._strikes,
                )
                since = None
            elif verdict is BrokerVerdict.ALONE and kept != held.epoch:
                kept = held.epoch
                log.warning("lease.kept_without_broker", lease=self._name, epoch=held.epoch)

    async def _watch_stall(self) -> None:
        """Step down when this holder's work has waited on a failing store for the limit.

        Its writes fail (a broken or stuck writer connection, a fault of its own, a
        write refused round after round: gate.py) while its renewals go through: else
        it would keep the lease for ever with nothing committed or acknowledged, and
        no other instance could take intake over. Handing it back loses nothing: the
        batch in hand was never acknowledged, and the broker redelivers it to the
        next owner. See core/cluster.py StallTiming for the limit and the hold-off.
        """
        assert self._stalled is not None
        assert self._stall is not None
        timing = self._stall
        while True:
            await asyncio.sleep(timing.check_s)
            held, stalled = self._fence, self._stalled()
            if held is None or stalled is None:
                continue
            waited = stalled_for(stalled, self._granted_at, self._clock.monotonic())
            if waited >= timing.limit_s:
                self.step_down(
                    held,
                    LossReason.STALLED,
                    timing.hold_off_s,
                    waited_s=round(waited, 2),
                    limit_s=timing.limit_s,
                    waiting=stalled.what,
                    error=stalled.error,
                    hint="writes failed or were refused while the lease renewed: it is handed "
                    "over, nothing uncommitted was acknowledged (the broker redelivers it); "
                    "see store.commit_failed, store.alarms_refused_again or owner.load_failed",
                )

    # --- state changes ---------------------------------------------------------------

    def step_down(self, held: Fence, reason: LossReason, hold_off_s: float, **why: object) -> None:
        """End the term now, release once it has ended (_announce), contend again only
        `hold_off_s` after the release: an acquire sent before it could be granted right
        after it (seen), with its on_acquired waiting behind the on_lost still running."""
        self._hold_until = math.inf  # until released (_announce): then `hold_off_s` more
        self._hold_off_s = hold_off_s
        self.step_downs += 1
        if self._step_down_counter is not None:
            self._step_down_counter.labels(self._name, reason.value).inc()
        # Error for a stall, a fault of this instance's; a broker cut (the network's) and an
        # unbound SCAIP port (sip.bind_failed is the error) at warning level.
        emit = log.error if reason is LossReason.STALLED else log.warning
        emit(
            "lease.stepped_down",
            lease=self._name,
            epoch=held.epoch,
            reason=reason.value,
            hold_off_s=hold_off_s,
            **why,
        )
        self._lose(held, reason)

    def _lose(self, held: Fence, reason: LossReason) -> None:
        if self._drop(held, reason):
            self._events.put_nowait((held, reason))

    def _drop(self, held: Fence, reason: LossReason) -> bool:
        if self._fence is not held:
            return False
        self._fence = None
        self.owner.clear()
        self.standby.set()
        self._rearm.set()
        log.warning("lease.lost", lease=self._name, epoch=held.epoch, reason=reason.value)
        return True

    async def _deliver(self, fence: Fence, reason: LossReason | None) -> None:
        try:
            if reason is None:
                if self._on_acquired is not None:
                    await self._on_acquired(fence)
            elif self._on_lost is not None:
                await self._on_lost(fence, reason)
        except Exception:
            log.exception("lease.callback_failed", lease=self._name, epoch=fence.epoch)


class SoleOwnership:
    """One instance on one SQLite file: always the owner, nothing to contend for or fence.

    The same shape as :class:`Leadership`, so the daemon is wired one way; the
    epoch is 0 and the SQLite store does not check it (its file has one writer).

    It never steps down, not even when its writes keep failing (a locked or full
    database): there is nobody to hand the work over to, and a term restarted on the
    same file would meet the same fault. The write gate retries and says so
    (`store.commit_failed`, `alarmhub_store_writable` 0, /readyz 503), nothing is
    acknowledged meanwhile, and the batch commits as soon as the file takes it.
    """

    def __init__(
        self,
        instance_id: str,
        *,
        name: str = INTAKE_LEASE,
        on_acquired: OnAcquired | None = None,
        on_lost: OnLost | None = None,
    ) -> None:
        self._grant = Fence(name, instance_id, 0)
        self._on_acquired = on_acquired
        self._on_lost = on_lost
        self._held = False
        self.owner = asyncio.Event()
        self.standby = asyncio.Event()
        self.standby.set()
        self.tried = asyncio.Event()

    @property
    def fence(self) -> Fence | None:
        return self._grant if self._held else None

    async def run(self) -> None:
        self._held = True
        self.owner.set()
        self.standby.clear()
        self.tried.set()
        try:
            if self._on_acquired is not None:
                await self._on_acquired(self._grant)
            await asyncio.Event().wait()  # until cancelled
        finally:
            self._held = False
            self.owner.clear()
            self.standby.set()
            if self._on_lost is not None:
                await self._on_lost(self._grant, LossReason.STOPPED)

    async def resign(self) -> None:
        return None
