"""Leases, fences and instances in PostgreSQL (store/postgres/leases.py, instances.py).

Each verdict is read from the database: who holds the lease with which epoch,
whether a fenced transaction committed or raised LeaseLostError. Waits poll
with generous timeouts; nothing asserts how fast.
"""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from alarmhub.store.cluster import Fence, InstanceInfo
from alarmhub.store.errors import LeaseLostError
from alarmhub.store.postgres import leases
from alarmhub.store.postgres.coordination import PgCoordination
from alarmhub.store.postgres.migrations import migrate

pytestmark = pytest.mark.postgres


async def _migrated(url: str) -> asyncpg.Connection:
    conn = await asyncpg.connect(url)
    await migrate(conn)
    return conn


async def _expired(conn: asyncpg.Connection, name: str) -> bool:
    return bool(
        await conn.fetchval(
            "SELECT expires_at <= clock_timestamp() FROM leases WHERE name = $1", name
        )
    )


async def _fenced_insert(conn: asyncpg.Connection, fence: Fence) -> None:
    async with conn.transaction():
        await leases.check_fence(conn, fence)
        await conn.execute("INSERT INTO claims (epoch) VALUES ($1)", fence.epoch)


async def _wait_acquired(conn, name: str, holder: str, ttl: float) -> Fence:
    for _ in range(3000):
        got = await leases.acquire(conn, name, holder, ttl)
        if got is not None:
            return got
        await asyncio.sleep(0.02)
    raise AssertionError(f"{holder} never acquired {name}")


async def test_one_grant_at_a_time_and_every_grant_a_new_epoch(pg_url: str) -> None:
    conn = await _migrated(pg_url)
    try:
        a = await leases.acquire(conn, "intake", "a", 0.5)
        assert a == Fence("intake", "a", 1)
        assert await leases.acquire(conn, "intake", "b", 0.5) is None
        assert await leases.acquire(conn, "intake", "a", 0.5) is None  # not even its holder
        assert await leases.renew(conn, a, 0.5)

        b = await _wait_acquired(conn, "intake", "b", 30)  # after a's expiry
        assert b == Fence("intake", "b", 2)
        assert not await leases.renew(conn, a, 30)  # an expired grant is not revived
        async with conn.transaction():
            await leases.check_fence(conn, b)
        with pytest.raises(LeaseLostError) as lost:
            async with conn.transaction():
                await leases.check_fence(conn, a)
        assert (lost.value.holder, lost.value.epoch) == ("a", 1)

        await leases.release(conn, b)  # a clean stop: the next one need not wait
        assert await leases.acquire(conn, "intake", "a", 30) == Fence("intake", "a", 3)
        rows = await leases.all_leases(conn)
        assert [(r.name, r.holder, r.epoch) for r in rows] == [("intake", "a", 3)]
    finally:
        await conn.close()


async def test_fence_outside_a_transaction_is_refused(pg_url: str) -> None:
    conn = await _migrated(pg_url)
    try:
        fence = await leases.acquire(conn, "intake", "a", 30)
        assert fence is not None
        with pytest.raises(RuntimeError, match="inside"):
            await leases.check_fence(conn, fence)
    finally:
        await conn.close()


async def test_a_takeover_waits_for_the_fenced_transaction_in_flight(pg_url: str) -> None:
    """The old holder's write that passed its fence commits before the new grant, never after."""
    old, new, watch = (
        await _migrated(pg_url),
        await asyncpg.connect(pg_url),
        await asyncpg.connect(pg_url),
    )
    try:
        await old.execute("CREATE TABLE claims (id bigserial PRIMARY KEY, epoch bigint)")
        fence = await leases.acquire(old, "intake", "a", 1.0)
        assert fence is not None
        tx = old.transaction()
        await tx.start()
        await leases.check_fence(old, fence)  # holds FOR SHARE on the lease row
        for _ in range(3000):
            if await _expired(watch, "intake"):
                break
            await asyncio.sleep(0.02)
        assert await _expired(watch, "intake")
        new_pid = new.get_server_pid()
        takeover = asyncio.ensure_future(leases.acquire(new, "intake", "b", 30))
        # The takeover is blocked on the row lock (seen in pg_stat_activity, not by timing).
        for _ in range(3000):
            waiting = await watch.fetchval(
                "SELECT wait_event_type FROM pg_stat_activity WHERE pid = $1", new_pid
            )
            if waiting == "Lock":
                break
            await asyncio.sleep(0.02)
        assert waiting == "Lock"
        assert not takeover.done()
        await old.execute("INSERT INTO claims (epoch) VALUES ($1)", fence.epoch)
        await tx.commit()
        assert await asyncio.wait_for(takeover, 30) == Fence("intake", "b", 2)
        assert await watch.fetchval("SELECT count(*) FROM claims") == 1
        with pytest.raises(LeaseLostError):
            await _fenced_insert(old, fence)
        assert await watch.fetchval("SELECT count(*) FROM claims") == 1  # rolled back
    finally:
        for c in (old, new, watch):
            await c.close()


async def test_instances_register_beat_stop_and_list(pg_url: str) -> None:
    await (await _migrated(pg_url)).close()
    coord = await PgCoordination.open(pg_url)
    try:
        a = InstanceInfo("inst-a", "host-a", 11, "1.0")
        b = InstanceInfo("inst-b", "host-b", 22, "1.0")
        await coord.register_instance(a)
        await coord.heartbeat(a, ["intake"])
        await coord.heartbeat(b, [])  # never registered (database away at start): upserted
        await coord.mark_stopped("inst-b")
        fence = await coord.acquire("intake", "inst-a", 30)
        assert fence is not None
        view = await coord.cluster()
        by_id = {i.id: i for i in view.instances}
        assert by_id["inst-a"].owns == ("intake",)
        assert by_id["inst-a"].stopped_at is None
        assert by_id["inst-a"].heartbeat_at <= view.now
        assert by_id["inst-b"].stopped_at is not None
        assert by_id["inst-b"].owns == ()
        assert [(lease.holder, lease.epoch) for lease in view.leases] == [("inst-a", 1)]
        assert view.leases[0].expires_at > view.now
    finally:
        await coord.close()


async def test_an_expired_grant_fails_its_fence_before_anyone_takes_over(pg_url: str) -> None:
    conn = await _migrated(pg_url)
    try:
        fence = await leases.acquire(conn, "intake", "a", 0.3)
        assert fence is not None
        for _ in range(3000):
            if await _expired(conn, "intake"):
                break
            await asyncio.sleep(0.02)
        with pytest.raises(LeaseLostError):
            async with conn.transaction():
                await leases.check_fence(conn, fence)
        rows = await leases.all_leases(conn)
        assert [(r.holder, r.epoch) for r in rows] == [("a", 1)]  # nobody took it over
    finally:
        await conn.close()
