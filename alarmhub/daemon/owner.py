"""The owner's term: the single-owner work, run only while this instance holds the lease.

Every instance serves people (the API, the operator page, the live stream), keeps
its registry fresh and beats its presence. Only the holder of the `intake` lease
(daemon/leadership.py) does what must not be done twice or by two at once: MQTT
intake with the service's one client id, escalation deadlines, suppression
sweeps, notifications, supervision, pruning, SQLite's WAL keeping. A *term* is
one grant of the lease, and this service runs the work for exactly that long:

- ``on_acquired(fence)`` starts a term: what the previous owner may have changed
  is read again from the database (the caller's `load`), a fresh MQTT client
  connects with the service's client id (a former owner still connected is
  disconnected by the broker's session takeover), and the owner's tasks start in
  a TaskGroup of the term's own.
- ``on_lost`` ends it at once: the term's tasks are cancelled and the MQTT
  connection is closed without acknowledging anything not yet committed. The
  broker redelivers those messages to the next owner and the inbox's unique key
  deduplicates them. The instance goes on serving HTTP; a later grant starts a
  fresh term.
- The store is told, at the start of a term, which grant its single-owner writes
  are fenced by (``fence_writes``): the grant while the lease says it is still
  this term's, None after, so a write after the term raises LeaseLostError
  without touching the database. A LeaseLostError raised inside the term (the
  database says the grant moved on before this instance's own deadline did) ends
  the term as a loss, never the daemon: nothing of that batch was acknowledged.
- A retry of the term's work (the write gate's) ends with the term: its tasks carry
  the term's grant (gate.RETRIES_UNDER), which raises LeaseLostError once it is over.
- ``stalled`` tells the lease what of the term's work waits on a failing store; an
  owner whose work waited too long hands the lease over (daemon/leadership.py).

On SQLite :class:`~alarmhub.daemon.leadership.SoleOwnership` starts one term at
start-up and ends it at stop: the daemon behaves as it always did.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import paho.mqtt.client as paho
import structlog
from prometheus_client import Gauge

from alarmhub.core.cluster import Stalled
from alarmhub.daemon.gate import RETRIES_UNDER
from alarmhub.daemon.leadership import LossReason
from alarmhub.mqtt.client import MqttIngest
from alarmhub.observability.logs import OncePer
from alarmhub.store.cluster import Fence
from alarmhub.store.errors import LeaseLostError, StoreError

log = structlog.get_logger("alarmhub.owner")
LOAD_RETRY_MAX_S = 5.0

Grant = Callable[[], Fence]  # the term's grant, or LeaseLostError when there is none
Spawn = Callable[[Coroutine[Any, Any, None], str], "asyncio.Task[None]"]


class Link:
    """The MQTT connection of the current term, for the services that outlive terms.

    Actions (a device's "handled" receipt) and the notifier publish through it;
    supervision asks whether devices can reach alarmhub. Between terms, and on a
    standby, nothing is connected: a receipt goes to the outbox for the owner to
    publish (daemon/actions.py), a notification waits.
    `current` stays the last term's client, closed, so it can still be inspected.
    """

    def __init__(self) -> None:
        self.current: MqttIngest | None = None
        self.active = False

    @property
    def connected(self) -> bool:
        return self.active and self.current is not None and self.current.connected

    def publish(self, topic: str, payload: bytes, qos: int = 1) -> None:
        if self.active and self.current is not None:
            self.current.publish(topic, payload, qos=qos)

    def publish_tracked(self, topic: str, payload: bytes, qos: int = 1) -> paho.MQTTMessageInfo:
        if not self.active or self.current is None:
            raise ConnectionError("not the owner: no broker connection")
        return self.current.publish_tracked(topic, payload, qos=qos)


class OwnerTerm:
    """Starts and ends the single-owner work with each grant of the lease.

    `load` reads again what a previous owner may have changed; `connect` makes a
    fresh MQTT client; `work` starts the owner's tasks in the term's TaskGroup,
    each ending by itself at a clean stop; `fence_writes` hands the store the
    term's fence provider; `current_fence` is the lease's own view (None past
    its local deadline).
    """

    def __init__(
        self,
        *,
        load: Callable[[], Awaitable[None]],
        connect: Callable[[], MqttIngest],
        work: Callable[[asyncio.TaskGroup, MqttIngest], None],
        fence_writes: Callable[[Grant], None],
        current_fence: Callable[[], Fence | None],
        link: Link,
        spawn: Spawn,
        lease_owned: Gauge,
    ) -> None:
        self._load = load
        self._connect = connect
        self._work = work
        self._fence_writes = fence_writes
        self._current_fence = current_fence
        self._link = link
        self._spawn = spawn
        self._gauge = lease_owned
        self._task: asyncio.Task[None] | None = None
        self._fence: Fence | None = None
        self.running = asyncio.Event()  # the owner's tasks run (set at each term's start)
        self.ended = asyncio.Event()  # no term is running
        self.ended.set()
        self._settled = asyncio.Event()  # the latest term runs its tasks, or has ended
        self.terms = 0
        self._once = OncePer(60.0)
        self._load_failed: Stalled | None = None  # this term's start, while its reads fail

    @property
    def owns(self) -> list[str]:
        """The leases this instance holds and works under now (`/readyz`, presence)."""
        fence = self._fence
        if fence is None or not self.running.is_set() or self._current_fence() != fence:
            return []
        return [fence.name]

    def stalled(self, writes: Stalled | None) -> Stalled | None:
        """What of this term's work waits on a failing store (the lease's stall watch).

        A term still starting waits on its reads (`owner.load_failed`), or on the
        write gate's lock, which a failing write holds (an operator's action retried
        on this instance); a running one on its writes, which go through the write
        gate (`writes`, the gate's own view). Between terms nothing of it waits.
        """
        if self.ended.is_set():
            return None
        if not self.running.is_set():  # its reads fail, or it waits for a failing writer
            return self._load_failed or writes
        return writes

    async def on_acquired(self, fence: Fence) -> None:
        """Start a term under `fence`; returns at once (the start runs in the term's task)."""
        await self._end()  # a term of an earlier grant must be over first
        self._fence = fence
        self._load_failed = None
        self.ended.clear()
        self._settled.clear()
        self.terms += 1
        self._task = self._spawn(self._term(fence), f"owner-term-{fence.epoch}")

    async def on_lost(self, fence: Fence, reason: LossReason) -> None:
        """End the term at once; nothing not yet committed is acknowledged."""
        if self._fence != fence:
            return
        if self._task is not None and not self._task.done():
            log.warning(
                "owner.term_ending", lease=fence.name, epoch=fence.epoch, reason=reason.value
            )
        await self._end()

    async def wait_started(self) -> None:
        """Until a term granted by now runs its tasks, or has ended (lost while starting)."""
        await self._settled.wait()

    async def finish(self) -> None:
        """At a clean stop: the term's tasks end by themselves (the batch in hand is
        committed and acknowledged first); a term still starting is cancelled."""
        task = self._task
        if task is None or task.done():
            return
        if not self.running.is_set():
            task.cancel()
        await asyncio.wait({task})
        if not self.ended.is_set():
            self._closed()

    async def _end(self) -> None:
        task = self._task
        if task is not None and not task.done():
            task.cancel()
            # The MQTT client first: a task of the term blocked in a database call on a
            # cut network may hold the term's end up for a long time (60 s was seen), and
            # meanwhile paho would reconnect with the service's client id and take the
            # session back from the new owner again and again.
            mqtt = self._link.current
            if self._link.active and mqtt is not None:
                self._link.active = False
                await mqtt.close()
            await asyncio.wait({task})  # its end, whatever it raised (the term logged it)
            if not self.ended.is_set():  # cancelled before its first step: nothing ran
                self._closed()

    async def _term(self, fence: Fence) -> None:
        current = self._current_fence

        def grant() -> Fence:
            # The store's single-owner writes carry this grant while the lease says it
            # is still this term's, and nothing after: a write past it fails unsent.
            if current() != fence:
                raise LeaseLostError(fence.name, fence.holder, fence.epoch)
            return fence

        self._fence_writes(grant)
        RETRIES_UNDER.set(grant)  # this task's context, and so its tasks': not the caller's
        try:
            await self._load_until_loaded()
            mqtt = self._connect()
            self._link.current = mqtt
            async with mqtt:
                self._link.active = True
                try:
                    async with asyncio.TaskGroup() as tasks:
                        self._work(tasks, mqtt)
                        self._gauge.labels(fence.name).set(1)
                        self.running.set()
                        self._settled.set()
                        log.info("owner.term_started", lease=fence.name, epoch=fence.epoch)
                finally:
                    # Before the close: nothing more is published on a closing client.
                    self._link.active = False
        except* LeaseLostError as group:
            lost = group.exceptions[0]
            log.warning("owner.fenced", lease=fence.name, epoch=fence.epoch, error=str(lost))
        finally:
            self._closed()
            log.info("owner.term_ended", lease=fence.name, epoch=fence.epoch)

    def _closed(self) -> None:
        fence = self._fence
        if fence is not None:
            self._fence_writes(lambda: _no_grant(fence))
            self._gauge.labels(fence.name).set(0)
        self.running.clear()
        self.ended.set()
        self._settled.set()

    async def _load_until_loaded(self) -> None:
        """Read the owner's state; a database out of reach is waited for, as writes are."""
        delay = 0.05
        while True:
            try:
                await self._load()
            except StoreError as exc:  # said once a minute, not at every retry
                self._once.warn(log, "owner.load_failed", error=str(exc))
                self._load_failed = Stalled(None, "start", str(exc))  # since the grant
                await asyncio.sleep(delay)
                delay = min(LOAD_RETRY_MAX_S, delay * 2)
                continue
            self._load_failed = None
            return


def _no_grant(fence: Fence) -> Fence:
    """Between terms: every single-owner write fails before it reaches the database."""
    raise LeaseLostError(fence.name, fence.holder, fence.epoch)
