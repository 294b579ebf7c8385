"""The pruning task: deletes inbox rows and dead letters past their retention.

Owned by the daemon's TaskGroup (app.py), off the ingest path: it deletes a
small batch per transaction under the hub's write lock and yields between
batches, so an ingest batch waits for at most one batch of deletes (a few
milliseconds), never for a whole backlog of months. What may go and from when
is decided in core/retention.py; the store keeps rows still needed (a message
whose alarm is still active). Retention is at least the dedup window (settings
check it), so a redelivery still finds its first copy.
"""

from __future__ import annotations

import asyncio

import structlog
from prometheus_client import Gauge

from alarmhub.clock import Clock
from alarmhub.core.retention import RetainedTable, Retention, age_seconds
from alarmhub.observability.logs import OncePer
from alarmhub.store.errors import LeaseLostError
from alarmhub.store.ports import RetentionStore

log = structlog.get_logger("alarmhub.retention")

PRUNE_BATCH_ROWS = 500
PRUNE_INTERVAL_S = 60.0


class Pruner:
    def __init__(
        self,
        store: RetentionStore,
        clock: Clock,
        retention: Retention,
        write_lock: asyncio.Lock,
        oldest_age: Gauge,
        *,
        batch_rows: int = PRUNE_BATCH_ROWS,
        interval_s: float = PRUNE_INTERVAL_S,
    ) -> None:
        self._store = store
        self._clock = clock
        self._retention = retention
        self._lock = write_lock
        self._oldest_age = oldest_age
        self._batch = batch_rows
        self._interval = interval_s
        self._once = OncePer(600.0)

    async def run(self) -> None:
        """Prune now and then every interval; a failure (a full disk) is retried next time."""
        while True:
            try:
                await self.prune_once()
            except LeaseLostError:
                raise  # not the owner any more: the term ends (daemon/owner.py)
            except Exception as exc:  # a failed prune must not stop the daemon
                should, suppressed = self._once.should_log("retention.prune_failed")
                if should:
                    log.warning("retention.prune_failed", error=str(exc), since_last=suppressed)
            await asyncio.sleep(self._interval)

    async def prune_once(self) -> dict[RetainedTable, int]:
        """Delete everything past retention, a batch at a time; return rows deleted per table."""
        # One `now` for the whole pass: the cutoffs must not move while it runs.
        now = self._clock.now()
        deleted: dict[RetainedTable, int] = {}
        for table, before in self._retention.cutoffs(now).items():
            total = 0
            while True:
                async with self._lock:
                    n = await self._store.prune(table, before, self._batch)
                total += n
                if n < self._batch:
                    break
                await asyncio.sleep(0)  # let an ingest batch waiting for the lock in
            deleted[table] = total
            oldest = await self._store.oldest_received(table)
            self._oldest_age.labels(table).set(age_seconds(now, oldest))
        if any(deleted.values()):
            log.info("retention.pruned", **{t.value: n for t, n in deleted.items()})
        return deleted
