"""Alarms changed by another instance, brought into this one's memory and live stream.

Several instances share one PostgreSQL (issue 15): an operator on instance A must
see an acknowledgement made through instance B. Every transaction that writes
alarms announces their ids at its commit (store/postgres/rows.py upsert_alarms,
LISTEN/NOTIFY); :class:`ChangeFollower` hears them through the
:class:`~alarmhub.store.cluster.AlarmChangeFeed` port, reads those alarms back in
one query and, for each the store holds at a newer revision than memory, does
what a local change does after its commit: put it in memory, publish it on the
live stream, re-arm it, recount the queue gauges.

The revision decides, never the order of arrival: this instance's own commits
come back too, and find memory already at the stored revision (a no-op). A
resolved alarm that memory does not hold active is left alone: either this
instance resolved it (and showed it) or it never was in this instance's queue.

Notifications are not stored. After every (re)connect of the listener the feed
calls for a resync: every active alarm is read again and compared the same way,
and the alarms memory holds active that the store no longer lists active (resolved
elsewhere while the listener was away) are read back by id.

Announcements that arrive while a read is running are gathered and read together
in the next one: under load the follower costs one query per round, not one per
notification. The comparison and the update run under the write gate's lock, so a
stored revision never lands in the middle of a local writer's decide → commit →
apply, where that writer's apply would then put an older revision back.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Sequence

import structlog

from alarmhub.core.model import Alarm
from alarmhub.core.views import alarm_json
from alarmhub.daemon.fanout import Broadcaster
from alarmhub.daemon.state import HubState
from alarmhub.observability.gauges import QueueGauges
from alarmhub.observability.logs import OncePer
from alarmhub.store.cluster import AlarmChangeFeed
from alarmhub.store.errors import StoreError
from alarmhub.store.ports import FollowedAlarms

log = structlog.get_logger("alarmhub.follower")


class ChangeFollower:
    """Follows the alarms other instances change; `run` until cancelled.

    `arm` is the escalator's: the composition root passes one that does nothing
    while this instance does not run the escalator. `on_resolved` is told of an
    alarm resolved elsewhere, as a local resolution tells supervision (a resolved
    offline alarm of a device still silent is watched again).
    """

    def __init__(
        self,
        *,
        feed: AlarmChangeFeed,
        store: FollowedAlarms,
        state: HubState,
        lock: asyncio.Lock,
        live: Broadcaster,
        queue_gauges: QueueGauges,
        arm: Callable[[Alarm], None],
        on_resolved: Callable[[Alarm], None],
    ) -> None:
        self._feed = feed
        self._store = store
        self._state = state
        self._lock = lock
        self._live = live
        self._queue_gauges = queue_gauges
        self._arm = arm
        self._on_resolved = on_resolved
        self._pending: set[str] = set()
        self._resync = False
        self._wake = asyncio.Event()
        self._once = OncePer(60.0)
        self.applied = 0  # alarms taken from the store (for tests and logs)
        self.resyncs = 0  # resyncs done

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._feed.listen(self._on_changed, self._on_resync), name="feed")
            tg.create_task(self._drain(), name="follow")

    async def _on_changed(self, ids: Sequence[str]) -> None:
        self._pending.update(ids)
        self._wake.set()

    async def _on_resync(self) -> None:
        self._resync = True
        self._wake.set()

    async def _drain(self) -> None:
        """Read and apply what was announced, a round at a time, until cancelled.

        A failed read (the store out of reach) keeps what it was to read and tries
        again: the listener's own reconnect will also ask for a resync.
        """
        while True:
            await self._wake.wait()
            self._wake.clear()
            ids, self._pending = self._pending, set()
            resync, self._resync = self._resync, False
            try:
                if resync:
                    await self.resync()
                elif ids:
                    await self.follow(ids)
            except StoreError as exc:  # out of reach: kept and retried
                should, suppressed = self._once.should_log("follower.read_failed")
                if should:
                    log.warning("follower.read_failed", error=str(exc), since_last=suppressed)
                self._pending |= ids
                self._resync |= resync
                await asyncio.sleep(1.0)
                self._wake.set()

    async def follow(self, ids: Iterable[str]) -> int:
        """Take these alarms from the store where it holds them newer; how many were."""
        stored = await self._store.get_alarms(ids)
        async with self._lock:
            return self._apply(stored)

    async def resync(self) -> int:
        """Compare every active alarm, and those memory holds active but the store does not."""
        active = await self._store.load_active_alarms()
        listed = {a.id for a in active}
        gone = [i for i in self._state.alarms.by_id if i not in listed]
        left = await self._store.get_alarms(gone) if gone else []
        async with self._lock:
            count = self._apply([*active, *left])
        self.resyncs += 1
        log.info("follower.resynced", active=len(active), taken=count)
        return count

    def _apply(self, stored: Sequence[Alarm]) -> int:
        """Put, show and re-arm each alarm the store holds newer than memory."""
        taken = 0
        for alarm in stored:
            known = self._state.alarms.get(alarm.id)  # active alarms only
            if known is None and not alarm.is_active:
                continue  # resolved here (already shown), or never in this queue
            if known is not None and alarm.rev <= known.rev:
                continue  # this instance's own commit, or an older read
            self._state.alarms.put(alarm)
            self._live.publish("alarm", alarm_json(alarm))
            self._arm(alarm)
            if not alarm.is_active:
                self._on_resolved(alarm)
            taken += 1
        if taken:
            self.applied += taken
            self._queue_gauges.update(self._state.alarms.by_id.values())
        return taken
