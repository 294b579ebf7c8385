"""The write gate through a database outage: retried until it answers, logged once."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from structlog.testing import capture_logs

from alarmhub.daemon.gate import WriteGate
from alarmhub.observability.metrics import Metrics
from alarmhub.store.errors import StaleAlarmError, StoreUnavailableError
from alarmhub.store.sqlite.store import SqliteStore
from tests.support.helpers import async_wait_until


async def test_an_outage_is_retried_until_it_ends_and_logged_once() -> None:
    metrics = Metrics()
    gate = WriteGate(metrics, asyncio.Event())
    attempts: list[int] = []

    async def commit() -> str:
        attempts.append(len(attempts))
        if len(attempts) <= 4:
            raise StoreUnavailableError("ConnectionRefusedError: connect call failed")
        return "committed"

    with capture_logs() as logs:
        assert await gate.until_committed(commit) == "committed"
        attempts.clear()
        assert await gate.until_committed(commit) == "committed"  # a second outage
    assert [e["event"] for e in logs] == [
        "store.unavailable",
        "store.recovered",
        "store.unavailable",
        "store.recovered",
    ]
    assert metrics.commit_failures._value.get() == 8
    assert metrics.store_writable._value.get() == 1


async def test_a_refused_reload_of_alarms_changed_elsewhere_is_waited_out(tmp_path: Path) -> None:
    """A decision refused as stale reloads the alarms named; that read was made outside
    the retry, and a refusal of it (the database gone between the two) ended the decider
    (the escalator, ingest, the silence keeper) and the daemon's TaskGroup with it."""
    db = tmp_path / "a.db"
    store = await SqliteStore.open(db)
    metrics = Metrics()
    gate = WriteGate(metrics, asyncio.Event())
    reloads: list[int] = []

    async def reload(ids: list[str]) -> None:
        reloads.append(len(await store.get_alarms(ids)))

    gate.reload_alarms = reload
    tries = 0

    async def attempt() -> str:
        nonlocal tries
        tries += 1
        if tries == 1:
            raise StaleAlarmError(["a-1"])  # another instance changed it meanwhile
        return "decided"

    other = sqlite3.connect(db, isolation_level=None)
    try:
        other.execute("ALTER TABLE alarms RENAME TO alarms_away")  # the read is refused
        task = asyncio.create_task(gate.deciding(attempt))
        assert await async_wait_until(
            lambda: metrics.commit_failures._value.get() > 0 or task.done(), 60
        )
        assert not task.done(), task.exception()
        other.execute("ALTER TABLE alarms_away RENAME TO alarms")
        assert await asyncio.wait_for(task, 60) == "decided"
        assert reloads == [0]  # reloaded once, when the store answered
    finally:
        other.close()
        await store.close()
