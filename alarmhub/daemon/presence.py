"""An instance's presence in the shared database: registered, heartbeating, stopped.

What `alarmhub cluster status` lists and what tells an operator which instance
is doing the single-owner work. The heartbeat carries what this instance owns
(the leases it holds now), read from a callback at each beat, so the row says
what the instance believed at that moment. A heartbeat is only information:
ownership is decided by the leases (daemon/leadership.py), never by it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Protocol

import structlog

from alarmhub.observability.logs import OncePer
from alarmhub.store.cluster import InstanceInfo, Instances

log = structlog.get_logger("alarmhub.presence")


class _Gauge(Protocol):
    def set(self, value: float) -> None: ...


class Presence:
    def __init__(
        self,
        instances: Instances,
        info: InstanceInfo,
        owns: Callable[[], Sequence[str]],
        interval_s: float,
        writable: _Gauge | None = None,
    ) -> None:
        self._instances = instances
        self._info = info
        self._owns = owns
        self._interval = interval_s
        self._writable = writable
        self._once = OncePer(60.0)

    async def run(self) -> None:
        """Register, then beat every interval until cancelled; then say stopped (best effort)."""
        try:
            await self._beat(first=True)
            while True:
                await asyncio.sleep(self._interval)
                await self._beat(first=False)
        finally:
            try:
                async with asyncio.timeout(self._interval):
                    await self._instances.mark_stopped(self._info.id)
            except Exception as exc:  # a crash leaves a stale heartbeat: that says it too
                log.warning("instance.stop_unrecorded", instance=self._info.id, error=str(exc))

    async def _beat(self, *, first: bool) -> None:
        owns = list(self._owns())
        try:
            async with asyncio.timeout(self._interval):
                if first:
                    await self._instances.register_instance(self._info)
                else:
                    await self._instances.heartbeat(self._info, owns)
        except Exception as exc:  # the database away: the next beat (an upsert) catches up
            should, suppressed = self._once.should_log("instance.heartbeat_failed")
            if should:
                log.warning("instance.heartbeat_failed", error=repr(exc), since_last=suppressed)
            self._standby_writable(owns, 0)
            return
        self._standby_writable(owns, 1)

    def _standby_writable(self, owns: Sequence[str], value: int) -> None:
        """A standby's `store_writable` (its /readyz) follows its heartbeat, a write.

        The gauge is otherwise set only by the write gate, and a standby writes nothing
        through it: an owner cut from PostgreSQL whose last commit failed stayed "not
        ready" after the network healed, as a standby, for as long as nothing else
        happened to write (tests/system/test_cluster.py saw it once in 180 s). An owner
        leaves the gauge to its commits, which say more than a heartbeat does.
        """
        if self._writable is not None and not owns:
            self._writable.set(value)
