"""What one ingest batch costs PostgreSQL in round trips, and that folding them kept the fence.

Each statement is a round trip the ingest loop waits for (issue 18): a batch is
BEGIN, two statements (store/postgres/inbox_rows.py) and COMMIT, whatever it holds,
with the owner's fence inside the first; the dedup read is one statement; neither
pays asyncpg's reset query on release (rows.keep_session).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import asyncpg
import pytest

from alarmhub.core.model import AlarmState
from alarmhub.store.cluster import Fence
from alarmhub.store.errors import LeaseLostError
from alarmhub.store.postgres import leases
from alarmhub.store.postgres.store import PostgresStore
from tests.store.conftest import OpenedStore
from tests.store.test_store_contract import T0, alarm, decided, new_alarm_batch, registered

pytestmark = pytest.mark.postgres


@pytest.fixture
async def pg(pg_url: str) -> AsyncIterator[OpenedStore]:
    """One connection, so every statement of the store passes the one logger."""
    store = await PostgresStore.open(pg_url, min_size=1, max_size=1)
    try:
        yield OpenedStore("postgres", store, url=pg_url)
    finally:
        await store.close()


async def _statements(store: PostgresStore) -> list[str]:
    """A list that collects every statement the store's connection sends from now on."""
    sent: list[str] = []
    async with store.pool.acquire() as conn:
        conn.add_query_logger(lambda record: sent.append(record.query))
    sent.clear()
    return sent


async def _grant(store: PostgresStore, holder: str, ttl_s: float) -> Fence:
    async with store.pool.acquire() as conn:
        fence = await leases.acquire(conn, "intake", holder, ttl_s)
    assert fence is not None
    return fence


async def test_a_fenced_batch_is_begin_two_statements_and_commit(pg: OpenedStore) -> None:
    store = pg.store
    assert isinstance(store, PostgresStore)
    await registered(pg)
    grant = await _grant(store, "inst-a", 60)
    store.fence_with(lambda: grant)
    # The first use of each statement on a connection also asks for its types: once.
    first = new_alarm_batch("m1", "a-1")
    await store.latest_messages([m.fingerprint for m in first.messages])
    assert await store.commit_batch(first, {}, [decided(0, rev=0)]) == [True]
    sent = await _statements(store)

    # A batch resolving a-1 and raising a-2 with its first step.
    batch = new_alarm_batch("m2", "a-2", T0 + timedelta(minutes=1))
    batch.alarms["a-1"] = alarm(
        state=AlarmState.RESOLVED, resolved_at=T0, escalation_level=1, rev=1
    )
    assert await store.latest_messages([m.fingerprint for m in batch.messages]) == {}
    assert len(sent) == 1
    sent.clear()
    assert await store.commit_batch(batch, {}, [decided(0, "a-2", rev=0)]) == [True]
    assert [s.split()[0] for s in sent] == ["BEGIN;", "WITH", "WITH", "COMMIT;"]

    # All of it written: the alarms, both entries, the step, its outbox row, last seen.
    stored = {a.id: a for a in await store.list_alarms()}
    assert (stored["a-1"].state, stored["a-1"].rev) == (AlarmState.RESOLVED, 2)
    assert (stored["a-2"].escalation_level, stored["a-2"].rev) == (1, 1)
    assert [t["type"] for t in await store.timeline("a-2")] == ["raised", "escalated"]
    assert await pg.count("SELECT count(*) FROM escalations") == 2
    assert await pg.count("SELECT count(*) FROM outbox") == 2
    assert await pg.count("SELECT count(*) FROM inbox") == 2


async def test_a_batch_under_a_lost_grant_writes_nothing(pg: OpenedStore) -> None:
    """The fence rides in the batch's first statement: a grant that moved on rolls all back."""
    store = pg.store
    assert isinstance(store, PostgresStore)
    await registered(pg)
    old = await _grant(store, "inst-a", 0.01)
    await asyncio.sleep(0.05)  # the 10 ms grant has expired
    new = await _grant(store, "inst-b", 60)
    store.fence_with(lambda: old)
    with pytest.raises(LeaseLostError) as raised:
        await store.commit_batch(new_alarm_batch(), {}, [decided(0, rev=0)])
    assert (raised.value.holder, raised.value.epoch) == ("inst-a", old.epoch)
    for table in ("inbox", "alarms", "timeline", "escalations", "outbox"):
        assert await pg.count(f"SELECT count(*) FROM {table}") == 0, table
    assert await pg.count("SELECT count(*) FROM devices WHERE last_seen_at IS NOT NULL") == 0
    store.fence_with(lambda: new)
    assert await store.commit_batch(new_alarm_batch(), {}, [decided(0, rev=0)]) == [True]
    assert await pg.count("SELECT count(*) FROM escalations") == 1


async def _waiting_on_a_lock(conn: asyncpg.Connection, query_start: str) -> None:
    """Until a backend running a statement that starts so waits on a lock."""
    sql = (
        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
        "AND query LIKE $1 || '%'"
    )
    async with asyncio.timeout(60):
        while not await conn.fetchval(sql, query_start):
            await asyncio.sleep(0.02)


async def test_the_fence_lock_holds_a_takeover_until_the_batch_commits(
    pg: OpenedStore, pg_url: str
) -> None:
    """The first statement's FOR SHARE on the lease row: a takeover waits for the commit."""
    store = pg.store
    assert isinstance(store, PostgresStore)
    await registered(pg)
    grant = await _grant(store, "inst-a", 60)
    store.fence_with(lambda: grant)
    at_commit, release = asyncio.Event(), asyncio.Event()

    # The batch's transaction held open after its statements: COMMIT waits for `release`.
    original = asyncpg.transaction.Transaction.commit

    async def held_commit(self: Any) -> None:
        at_commit.set()
        await release.wait()
        await original(self)

    other = await asyncpg.connect(pg_url)
    watcher = await asyncpg.connect(pg_url)
    takeover_sql = "UPDATE leases SET holder = 'inst-b', epoch = epoch + 1 WHERE name = 'intake'"
    try:
        asyncpg.transaction.Transaction.commit = held_commit  # type: ignore[method-assign]
        try:
            batch = asyncio.create_task(store.commit_batch(new_alarm_batch(), {}))
            await asyncio.wait_for(at_commit.wait(), 60)
            takeover = asyncio.create_task(other.execute(takeover_sql))
            await _waiting_on_a_lock(watcher, "UPDATE leases")
            assert not takeover.done()
            release.set()
            await batch
        finally:
            asyncpg.transaction.Transaction.commit = original  # type: ignore[method-assign]
        await asyncio.wait_for(takeover, 60)
    finally:
        await other.close()
        await watcher.close()
    assert await pg.count("SELECT count(*) FROM inbox") == 1
    # The batch committed under the old grant; the next one is refused.
    with pytest.raises(LeaseLostError):
        await store.commit_batch(new_alarm_batch("m2"), {})


async def test_statements_are_planned_for_their_values(pg: OpenedStore) -> None:
    """No generic plan kept from a young, empty table (PostgresStore.open's settings)."""
    store = pg.store
    assert isinstance(store, PostgresStore)
    async with store.pool.acquire() as conn:
        assert await conn.fetchval("SHOW plan_cache_mode") == "force_custom_plan"
