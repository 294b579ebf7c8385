"""The WAL keeper: SQLite's write-ahead log kept small, and a full disk survived.

SQLite-specific, so it lives with the store and not among the daemon's
services. The daemon gives it the writer's and a reader's connection, the
write lock (a reset runs between two batches, under it) and the event that
holds ingest commits while the WAL has no room; the metrics are plain
gauges and a counter. Self-contained: it imports nothing of the daemon.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol

import structlog

from alarmhub.store.sqlite.store import disk_full

log = structlog.get_logger("alarmhub")

CHECKPOINT_S = 1.0
CHECKPOINT_FULL_S = 0.1  # while the disk is full: retry soon, ingest is waiting
# A WAL above this after the background checkpoint is started over between two
# batches (WalKeeper.reset); above sqlite_wal_limit_mb it is cut, and commits wait at
# most WAL_TRUNCATE_WAIT_MS for that.
WAL_RESET_BYTES = 4 * 1024 * 1024
WAL_TRUNCATE_WAIT_MS = 100


class Checkpointing(Protocol):
    async def page_size(self) -> int: ...
    async def checkpoint(self, *, truncate: bool = False) -> tuple[int, int, int]: ...
    async def truncate_wal(self, wait_ms: int) -> bool: ...


class _Gauge(Protocol):
    def set(self, value: float) -> None: ...


class _Counter(Protocol):
    def inc(self, amount: float = 1) -> None: ...


class _Once(Protocol):
    def should_log(self, key: str) -> tuple[bool, int]: ...


class WalMetrics(Protocol):
    @property
    def store_wal_bytes(self) -> _Gauge: ...
    @property
    def store_writable(self) -> _Gauge: ...
    @property
    def store_wal_truncations(self) -> _Counter: ...


class WalKeeper:
    def __init__(
        self,
        writer: Checkpointing,
        reader: Checkpointing,
        *,
        lock: asyncio.Lock,
        room: asyncio.Event,
        limit_bytes: int,
        metrics: WalMetrics,
        once: _Once,
    ) -> None:
        self._writer = writer
        self._reader = reader
        self._lock = lock
        self._room = room
        self._limit = limit_bytes
        self._metrics = metrics
        self._once = once
        # Set by run() when the WAL keeps growing; the ingest loop then calls reset()
        # to finish the checkpoint on the writer's connection between batches.
        self.reset_due = False

    async def run(self) -> None:
        """Move the WAL into the database once a second, on a reader connection.

        On a full disk the checkpoint fails too, and the WAL can only grow. When
        space comes back, the ingest writes would take it first and the
        checkpoint would never get the room to finish, so the disk fills again
        (seen in the disk-full test: stuck at 5,900 of 6,000 after the space
        was freed). So while the checkpoint fails for want of space, ingest
        holds its commits (unacknowledged: the broker keeps the messages), and
        the checkpoint retries quickly; the first one that succeeds lets them go.
        """
        page_size = 0  # read in the loop: a refusal of it is retried as a checkpoint's is
        while True:
            full = not self._room.is_set()
            await asyncio.sleep(CHECKPOINT_FULL_S if full else CHECKPOINT_S)
            try:
                page_size = page_size or await self._reader.page_size()
                busy, pages, _done = await self._reader.checkpoint(truncate=full)
                wal_bytes = pages * page_size
                self._metrics.store_wal_bytes.set(wal_bytes)
                if not full and wal_bytes > self._limit:
                    await self._truncate(wal_bytes)
                elif not full and wal_bytes > WAL_RESET_BYTES:
                    self.reset_due = True
            except Exception as exc:  # a failing checkpoint must not stop the daemon
                if disk_full(exc) and self._room.is_set():
                    self._room.clear()
                    self._metrics.store_writable.set(0)
                    log.error("store.wal_full", error=str(exc))  # noqa: TRY400 - expected fault
                should, suppressed = self._once.should_log("store.checkpoint_failed")
                if should:
                    log.warning("store.checkpoint_failed", error=str(exc), since_last=suppressed)
                continue
            if full and not busy:
                self._room.set()
                log.info("store.wal_checkpointed")

    async def reset(self) -> None:
        """Let SQLite start its WAL over, by a checkpoint on the writer's own connection.

        SQLite reuses the WAL from the start only when a checkpoint has copied
        every frame. The once-a-second checkpoint on the reader connection never
        gets there under steady traffic: a commit always lands while it copies,
        so the WAL grew by every commit (80.9 MB in 6 s at 2,000 msg/s in
        `make bench`). Between two batches no commit can land: this checkpoint
        copies only what arrived since the background one (a few milliseconds'
        worth) and completes, and the next commit starts the WAL over.
        """
        self.reset_due = False
        async with self._lock:
            try:
                await self._writer.checkpoint()
            except Exception as exc:  # the background loop sees and reports a real fault
                log.debug("store.wal_reset_failed", error=str(exc))

    async def _truncate(self, wal_bytes: int) -> None:
        """Cut a WAL that readers kept SQLite from reusing (SqliteStore.truncate_wal)."""
        started = time.monotonic()
        if await self._reader.truncate_wal(WAL_TRUNCATE_WAIT_MS):
            self._metrics.store_wal_truncations.inc()
            self._metrics.store_wal_bytes.set(0)
            log.info(
                "store.wal_truncated",
                wal_mb=round(wal_bytes / 2**20, 1),
                waited_ms=round((time.monotonic() - started) * 1000, 1),
            )
            return
        should, suppressed = self._once.should_log("store.wal_truncate_busy")
        if should:
            log.warning(
                "store.wal_truncate_busy",
                wal_mb=round(wal_bytes / 2**20, 1),
                since_last=suppressed,
                hint="a reader held the WAL longer than "
                f"{WAL_TRUNCATE_WAIT_MS} ms; retried every second",
            )
