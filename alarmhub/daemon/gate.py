"""The write gate: every writer of alarms goes through one lock and one retry.

Ingest batches, people's actions, escalation decisions, the silence keeper,
notifications and registrations change alarms one at a time, in order: each
decides and commits under :attr:`WriteGate.lock`, so an acknowledgement and a
repeat (or two acknowledgements) can never interleave. A failing store is
retried until it commits (:meth:`WriteGate.until_committed`), and an ingest
commit waits while the WAL has no room on a full disk
(:meth:`WriteGate.until_wal_has_room`). One object instead of the composition
root: a service that writes takes the gate, and nothing else of the daemon.

The gate also keeps what is failing right now (:meth:`WriteGate.stalled`): an
intake owner whose writes fail for long while its lease renews hands the lease
over (daemon/leadership.py, core/cluster.py StallTiming). A decision the store
refuses round after round (:meth:`WriteGate.deciding`) is such a failure too: the
store answers, but nothing commits.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Protocol, TypeVar

import structlog

from alarmhub.clock import Clock, SystemClock
from alarmhub.core.cluster import Stalled
from alarmhub.observability.logs import OncePer
from alarmhub.store.errors import (
    DeviceMovedError,
    StaleAlarmError,
    StoreError,
    StoreUnavailableError,
)

log = structlog.get_logger("alarmhub")
T = TypeVar("T")
COMMIT_RETRY_MAX_S = 5.0
# A decision refused this many times running is logged at error level (deciding), once a
# minute; each round before it at info. AlarmhubDecisionRefused fires at the same count.
STALE_ROUNDS_BEFORE_ERROR = 10
# Why a decision was refused: `alarmhub_decisions_refused_total{reason}`
# (observability/metrics.py REFUSAL_REASONS names the same).
ALARM_CHANGED = "alarm_changed"  # StaleAlarmError
DEVICE_MOVED = "device_moved"  # DeviceMovedError
# The grant the work of the running task belongs to: daemon/owner.py sets it for each
# owner's term, and its tasks inherit it. Called after a failure, it raises
# LeaseLostError once that term is over (see WriteGate.until_committed).
RETRIES_UNDER: ContextVar[Callable[[], object] | None] = ContextVar("retries_under", default=None)


class _Counter(Protocol):
    def inc(self, amount: float = 1) -> None: ...


class _Gauge(Protocol):
    def set(self, value: float) -> None: ...


class _Refusals(Protocol):
    def labels(self, *labelvalues: str) -> _Counter: ...


class GateMetrics(Protocol):
    """What the gate counts and shows (observability/metrics.py; docs/metrics.md)."""

    @property
    def commit_failures(self) -> _Counter: ...
    @property
    def store_writable(self) -> _Gauge: ...
    @property
    def decisions_refused(self) -> _Refusals: ...
    @property
    def decision_refused_rounds(self) -> _Gauge: ...


@dataclass(slots=True)
class _Failing:
    """One operation being retried: since its first attempt, what it is, its last error."""

    since: float
    what: str  # Stalled.what: "commit" (a store error), "refused" (deciding)
    error: str


class WriteGate:
    def __init__(
        self, metrics: GateMetrics, stopping: asyncio.Event, clock: Clock | None = None
    ) -> None:
        self.lock = asyncio.Lock()
        # Cleared while the checkpoint fails for lack of disk space (store/wal.py).
        self.wal_room = asyncio.Event()
        self.wal_room.set()
        self._metrics = metrics
        self._stopping = stopping
        self._once = OncePer(60.0)
        # Reloads alarms from the store into memory; set by the composition root once
        # the store is open. The default reloads nothing, which only a test without
        # a second writer can afford.
        self.reload_alarms: Callable[[list[str]], Awaitable[None]] = _reload_nothing
        # Reloads devices from the store into the registry in memory (DeviceMovedError).
        self.reload_devices: Callable[[list[str]], Awaitable[None]] = _reload_nothing
        self._unreachable = False  # between a store.unavailable and the next success
        self._clock = clock or SystemClock()
        # Each operation retrying now (a failing store, a refused decision).
        self._failing: dict[object, _Failing] = {}
        # The rounds each decision now being decided again has been refused running:
        # the most is shown (`alarmhub_decision_refused_rounds`).
        self._refusing: dict[object, int] = {}

    async def until_committed(self, op: Callable[[], Awaitable[T]], *, writes: bool = True) -> T:
        """Retry a store operation until it succeeds; meanwhile nothing is acknowledged.

        The broker keeps every unacknowledged message, and its in-flight window stops
        new ones from piling up here: a full disk or a locked database delays alarms
        but loses none. The fault is logged once a minute (a server out of reach:
        once per outage), not per attempt.

        Only a write that succeeds (`writes`) reports the store writable again: a
        database locked by another process still answers reads, and the ingest
        batch's fingerprint lookup used to set `store_writable` (and /readyz) back to
        1 while the escalator's commits were still failing.

        A retry of an owner's term's work ends with LeaseLostError once that term is
        over (RETRIES_UNDER): a batch whose ingest was cancelled with its term goes on
        alone (daemon/ingest.py), and would otherwise retry under the instance's next
        grant, holding the gate's lock, and so that term's start, for as long as the
        store refused it. Nothing of it was acknowledged; the broker redelivers it.
        """
        delay = 0.05
        started, token = self._clock.monotonic(), object()
        try:
            while True:
                try:
                    result = await op()
                except StoreError as exc:
                    self._metrics.commit_failures.inc()
                    self._metrics.store_writable.set(0)
                    self._failed(token, started, "commit", str(exc))
                    self._log_failure(exc)
                    if (grant := RETRIES_UNDER.get()) is not None:
                        grant()  # its term is over: LeaseLostError, no more retries
                    await asyncio.sleep(delay)
                    delay = min(COMMIT_RETRY_MAX_S, delay * 2)
                    continue
                # Any answer, a read's too, shows the server is back within reach.
                self._unreachable = False
                if writes:
                    if delay > 0.05:
                        log.info("store.recovered")
                    self._metrics.store_writable.set(1)
                return result
        finally:  # succeeded, or given up by its caller (cancelled, a lease lost)
            self._failing.pop(token, None)

    def stalled(self) -> Stalled | None:
        """The oldest operation that has failed and is still being retried, if any.

        Counted from its first attempt, so a statement that hung until its timeout
        counts the hang too; a slow operation that succeeds never shows here. A
        decision refused and decided again (`refused`) counts from its first attempt too.
        """
        if not self._failing:
            return None
        oldest = min(self._failing.values(), key=lambda f: f.since)
        return Stalled(oldest.since, oldest.what, oldest.error)

    def _failed(self, token: object, started: float, what: str, error: str) -> None:
        failing = self._failing.get(token)
        if failing is None:
            self._failing[token] = _Failing(started, what, error)
        else:
            failing.error = error

    async def deciding(self, attempt: Callable[[], Awaitable[T]]) -> T:
        """Decide and commit with `attempt`; again, on fresh rows, while they were stale.

        A commit refused because an alarm changed in the database since it was read
        (StaleAlarmError: another instance acknowledged it, issue 15) reloads the
        named alarms and runs `attempt` again, so the decision is taken on what the
        database holds, never against it. So does one refused because a device moved
        to another municipality or resident since it was read (DeviceMovedError: the
        CLI or another instance moved it, and the registry has not polled since): the
        devices are reloaded, and `attempt` decides from the registry in memory.

        Each round reloads what moved, as stored at that moment, right before it
        decides again, so memory then matches the database: a round is refused again
        only if another writer committed a further change of the same rows between
        the reload and this commit (milliseconds; moves come from people and the CLI).
        From the fourth round each waits longer first, up to COMMIT_RETRY_MAX_S, to
        give that writer room. (The wait used to come after the reload, and a change
        during it refused the round again.)

        A refusal that reloading never cures (a corrupt row, a bug that decides the
        same refused write again: 2026-12-06, a reused message id) holds the gate,
        and so every later write, with nothing committed or acknowledged. It is
        therefore no quiet retry: each refusal is counted by reason, the rounds show
        in a gauge (alert AlarmhubDecisionRefused), the log says it once a minute
        with counts from STALE_ROUNDS_BEFORE_ERROR rounds on, and it is a stall from
        its first attempt (`stalled`, `refused`): an owner on PostgreSQL hands intake
        over after ALARMHUB_OWNER_STALL_S, as one whose store fails does. Nothing is
        dropped: the batch stays unacknowledged until it commits, and a term's work
        refused after its term ended stops there (LeaseLostError, RETRIES_UNDER).
        """
        rounds, started, token = 0, self._clock.monotonic(), object()
        try:
            while True:
                try:
                    return await attempt()
                except (StaleAlarmError, DeviceMovedError) as exc:
                    reload = self._refused(token, exc, started, rounds)
                if (grant := RETRIES_UNDER.get()) is not None:
                    grant()  # its term is over: LeaseLostError, no more rounds
                rounds += 1
                if rounds > 3:  # a writer racing us on the same rows: give it room
                    await asyncio.sleep(min(COMMIT_RETRY_MAX_S, 0.05 * 2 ** (rounds - 3)))
                # A read: the server may have gone between the refusal and it. A
                # StoreError out of here ended the caller's task (the escalator, ingest),
                # and the daemon's TaskGroup with it; it is waited out as a write is.
                await self.until_committed(reload, writes=False)
        finally:  # committed, or given up by its caller (cancelled, a lease lost)
            self._failing.pop(token, None)
            # Only a decision that was refused moved the gauge: every ingest batch
            # passes here, and most were never refused.
            if self._refusing.pop(token, None) is not None:
                self._show_rounds()

    def _refused(
        self, token: object, exc: StaleAlarmError | DeviceMovedError, started: float, rounds: int
    ) -> Callable[[], Awaitable[None]]:
        """Count, show and say one refusal; what to reload before deciding again."""
        if isinstance(exc, StaleAlarmError):
            reason, event = ALARM_CHANGED, "store.alarms_changed_elsewhere"
            reload = functools.partial(self.reload_alarms, exc.ids)
        else:
            reason, event = DEVICE_MOVED, "store.devices_moved_elsewhere"
            reload = functools.partial(self.reload_devices, exc.ids)
        self._failed(token, started, "refused", str(exc))
        self._refusing[token] = rounds + 1
        self._show_rounds()
        self._metrics.decisions_refused.labels(reason).inc()
        if rounds < STALE_ROUNDS_BEFORE_ERROR:
            log.info(event, count=len(exc.ids), ids=exc.ids[:10], round=rounds + 1)
        else:
            refused_for = self._clock.monotonic() - started
            self._log_refused_again(reason, exc.ids, rounds + 1, refused_for)
        return reload

    def _show_rounds(self) -> None:
        self._metrics.decision_refused_rounds.set(max(self._refusing.values(), default=0))

    def _log_refused_again(
        self, reason: str, ids: list[str], rounds: int, refused_for_s: float
    ) -> None:
        """Refused round after round: nothing commits meanwhile, so say it at error level,
        once a minute, with the rounds, how long, and how many refusals went unsaid.

        Another writer changing the same alarms (or moving the same devices) settles
        within a few rounds. A decision refused every time (a new alarm minted with a
        stored alarm's id was one, AlarmIndex.taken) holds every later message
        unacknowledged.
        """
        should, suppressed = self._once.should_log("store.alarms_refused_again")
        if should:
            log.error(
                "store.alarms_refused_again",
                reason=reason,
                rounds=rounds,
                refused_for_s=round(refused_for_s, 1),
                ids=ids[:10],
                since_last=suppressed,
                hint="nothing is committed or acknowledged until this passes; an owner on "
                "PostgreSQL hands intake over after ALARMHUB_OWNER_STALL_S; if it does not "
                "pass, report it with these alarm or device ids",
            )

    def _log_failure(self, exc: StoreError) -> None:
        """A refused write once a minute; a server out of reach once per outage.

        A PostgreSQL restart or failover fails every writer (ingest, escalator,
        notifier marks) at every retry: one `store.unavailable` line says it, and
        `store.recovered` says when the writes go through again.
        """
        if isinstance(exc, StoreUnavailableError):
            if not self._unreachable:
                self._unreachable = True
                log.error("store.unavailable", error=str(exc))
            return
        should, suppressed = self._once.should_log("store.commit_failed")
        if should:
            log.error("store.commit_failed", error=str(exc), retries_since_last_log=suppressed)

    async def until_wal_has_room(self) -> None:
        """Hold an ingest commit while the WAL cannot be checkpointed for lack of space."""
        if self.wal_room.is_set():
            return
        room = asyncio.ensure_future(self.wal_room.wait())
        stop = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait({room, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            room.cancel()
            stop.cancel()


async def _reload_nothing(_ids: list[str]) -> None:
    return None
