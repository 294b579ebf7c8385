"""A failover to a synchronous standby: alarmhub follows the primary, nothing acknowledged lost.

A private primary and its streaming standby (tests/support/pg_server.py): the
primary's COMMIT waits for the standby (`synchronous_standby_names`), so whatever
alarmhub acknowledged — a receipt leaves only after its batch's COMMIT returned —
is on the standby when the primary dies. alarmhub is given one URL naming both
hosts with `target_session_attrs=read-write` (docs/scaling.md, "PostgreSQL with
high availability"): every new connection of its pools, of the coordination pool
and of the change feed goes to whichever host accepts writes.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from pathlib import Path

import asyncpg
import orjson
import pytest

from alarmhub.app import AlarmHub
from alarmhub.core.model import Device, DeviceKind
from alarmhub.dev.mosquitto import LocalBroker
from alarmhub.settings import writable_dsn
from alarmhub.store.errors import StoreError
from alarmhub.store.postgres.coordination import PgCoordination
from alarmhub.store.postgres.notify import PgAlarmChangeFeed, notify_changed
from alarmhub.store.postgres.store import PostgresStore
from tests.store.test_postgres_hub import register, rows
from tests.support.helpers import Publisher, async_wait_until, hub_settings, native
from tests.support.pg_server import PgServer, PgStandby, multi_host_url, primary_settings

pytestmark = [pytest.mark.broker, pytest.mark.postgres]

WAIT = 120.0


async def synchronous(primary: PgServer) -> bool:
    """Whether the primary has a standby in sync (its COMMITs wait for it from now on)."""
    conn = await asyncpg.connect(primary.url())
    try:
        state = await conn.fetchval("SELECT string_agg(sync_state, ',') FROM pg_stat_replication")
    finally:
        await conn.close()
    return state == "sync"


async def wait_synchronous(primary: PgServer) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT
    while not await synchronous(primary):
        assert loop.time() < deadline, "the standby never became synchronous"
        await asyncio.sleep(0.1)


async def count(url: str, sql: str) -> int:
    conn = await asyncpg.connect(url)
    try:
        return int(await conn.fetchval(sql))
    finally:
        await conn.close()


@pytest.mark.parametrize(
    "outage_s",
    [
        0.0,
        # As with a failover manager, which promotes only after its own detection time:
        # alarmhub's retries have backed off by then (the write gate's 5 s at most).
        pytest.param(10.0, marks=pytest.mark.slow),
    ],
)
async def test_a_failover_to_the_synchronous_standby_mid_burst_loses_no_acknowledged_press(
    tmp_path: Path, broker: LocalBroker, client_id: str, outage_s: float
) -> None:
    """Primary stopped as by a crash mid-burst, standby promoted: every press stored once.

    The presses acknowledged before the crash (their receipts in hand) must be on the
    promoted server; those in flight are held (no receipt) until alarmhub reaches the
    promoted server through the same URL, then stored once each.
    """
    presses = 400
    devices = [Device(f"pend-{i}", DeviceKind.SAFETY_ALARM, "0301") for i in range(presses)]
    pub = Publisher(broker.port)
    pub.subscribe("alarmhub/v1/+/receipts")
    loop = asyncio.get_running_loop()

    def refs() -> set[str]:
        return {orjson.loads(p)["ref"] for _, p in list(pub.received)}

    try:
        with PgServer(settings=primary_settings()) as primary, PgStandby(primary) as standby:
            await wait_synchronous(primary)
            await register(primary.url(), devices)
            # The standby first and no target_session_attrs: alarmhub adds read-write
            # itself (settings.writable_dsn); with asyncpg's default "any" every write
            # would go to the read-only standby and fail.
            url = multi_host_url([standby, primary]).partition("?")[0]
            settings = hub_settings(tmp_path, broker.url, client_id, database_url=url, max_batch=20)
            assert settings.database.dsn == f"{url}?target_session_attrs=read-write"
            async with AlarmHub(settings, serve_http=False) as hub:
                assert hub.ingest is not None
                assert await hub.ingest.wait_connected(5)
                first = presses // 2
                for i, d in enumerate(devices[:first]):
                    pub.publish(*native(d.id, f"m{i}", "button.pressed"))
                # Mid-burst: some batches committed and acknowledged, the rest on the way.
                assert await async_wait_until(lambda: len(refs()) >= first // 4, WAIT)

                stopped_at = loop.time()
                await asyncio.to_thread(primary.stop, "immediate")
                acknowledged = refs()  # every one of these COMMITs returned on the primary
                for i, d in enumerate(devices[first:], start=first):
                    pub.publish(*native(d.id, f"m{i}", "button.pressed"))
                # The standby, still read-only, has replayed all the primary sent it.
                inbox = "SELECT count(*) FROM inbox"
                before = await count(standby.url(), inbox)
                await asyncio.sleep(outage_s)  # the scenario's outage, not a wait for a state
                await asyncio.to_thread(standby.promote)
                promoted_at = loop.time()
                while await count(standby.url(), inbox) == before:
                    assert loop.time() - promoted_at < WAIT, "nothing committed after promotion"
                    await asyncio.sleep(0.02)
                committed_at = loop.time()

                assert await async_wait_until(lambda: len(refs()) == presses, WAIT), len(refs())
                assert refs() == {f"m{i}" for i in range(presses)}

            promoted = standby.url()
            stored = {r[0] for r in await rows(promoted, "SELECT msg_id FROM inbox")}
            assert acknowledged <= stored, sorted(acknowledged - stored)[:10]
            inbox_rows = "SELECT count(*), count(DISTINCT msg_id) FROM inbox"
            assert await rows(promoted, inbox_rows) == [(presses, presses)]
            alarms = "SELECT count(*), count(DISTINCT device_id) FROM alarms"
            assert await rows(promoted, alarms) == [(presses, presses)]
            raised = "SELECT count(*) FROM timeline WHERE type = 'raised'"
            assert await rows(promoted, raised) == [(presses,)]
            print(
                f"\nfailover ({outage_s:.0f} s before promotion): acknowledged before the stop {len(acknowledged)}, "
                f"on the standby at promotion {before}; "
                f"stop -> promoted {promoted_at - stopped_at:.2f} s, "
                f"promoted -> first commit {committed_at - promoted_at:.2f} s, "
                f"stop -> first commit {committed_at - stopped_at:.2f} s"
            )
    finally:
        pub.close()


async def test_with_the_standby_down_a_commit_waits_and_nothing_is_acknowledged(
    tmp_path: Path, broker: LocalBroker, client_id: str
) -> None:
    """Synchronous commit is what makes a receipt a promise: no standby, no receipt.

    With the standby stopped the primary holds the batch's COMMIT (wait event
    `SyncRep`) and alarmhub sends no receipt; once the standby is back the COMMIT
    returns and the receipt follows. The price of the guarantee, in docs/scaling.md.
    """
    pub = Publisher(broker.port)
    pub.subscribe("alarmhub/v1/+/receipts")
    waiting = "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'SyncRep'"
    try:
        with PgServer(settings=primary_settings()) as primary, PgStandby(primary) as standby:
            await wait_synchronous(primary)
            await register(primary.url(), [Device("pend-1", DeviceKind.SAFETY_ALARM, "0301")])
            url = multi_host_url([primary, standby])
            settings = hub_settings(tmp_path, broker.url, client_id, database_url=url)
            async with AlarmHub(settings, serve_http=False) as hub:
                assert hub.ingest is not None
                assert await hub.ingest.wait_connected(5)
                await asyncio.to_thread(standby.stop, "fast")
                pub.publish(*native("pend-1", "m0", "button.pressed"))
                loop = asyncio.get_running_loop()
                deadline = loop.time() + WAIT
                while await count(primary.url(), waiting) == 0:
                    assert loop.time() < deadline, "no COMMIT waited for the standby"
                    await asyncio.sleep(0.05)
                # The COMMIT has not returned (it is still waiting): so no receipt yet.
                assert pub.received == []
                await asyncio.to_thread(standby.start)
                assert await async_wait_until(lambda: len(pub.received) == 1, WAIT)
            assert await rows(standby.url(), "SELECT msg_id FROM inbox") == [("m0",)]
    finally:
        pub.close()


async def test_an_old_primary_back_as_a_primary_acknowledges_nothing(
    tmp_path: Path, broker: LocalBroker, client_id: str
) -> None:
    """Split brain after a failover: the old primary restarted as a primary, listed first.

    A multi-host URL takes the first host that accepts writes, and a revived old
    primary does. It still waits for its synchronous standby, which now leads a
    timeline of its own and never comes: its COMMITs hang. The first of them is the
    intake lease's grant (daemon/leadership.py), so alarmhub owns nothing there: it
    does not even connect to the broker, and acknowledges nothing. Once the old
    primary is stopped (what a failover manager's fencing does), alarmhub takes the
    lease on the promoted server and the press is stored there. Why the old primary must rejoin as a standby, never as a
    primary: docs/scaling.md.
    """
    pub = Publisher(broker.port)
    pub.subscribe("alarmhub/v1/+/receipts")
    waiting = "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'SyncRep'"
    try:
        with PgServer(settings=primary_settings()) as old, PgStandby(old) as new:
            await wait_synchronous(old)
            await register(old.url(), [Device("pend-1", DeviceKind.SAFETY_ALARM, "0301")])
            await asyncio.to_thread(old.stop, "immediate")
            await asyncio.to_thread(new.promote)
            await asyncio.to_thread(old.start)  # split brain: two servers take writes
            url = multi_host_url([old, new])
            settings = hub_settings(tmp_path, broker.url, client_id, database_url=url)
            async with AlarmHub(settings, serve_http=False) as hub:
                loop = asyncio.get_running_loop()
                deadline = loop.time() + WAIT
                while await count(old.url(), waiting) == 0:
                    assert loop.time() < deadline, "no COMMIT waited on the old primary"
                    await asyncio.sleep(0.05)
                # The lease's grant has not returned: no owner, no broker connection.
                assert hub.owns == []
                assert hub.ingest is None
                await asyncio.to_thread(old.stop, "immediate")  # fenced
                assert await async_wait_until(lambda: hub.ingest is not None, WAIT)
                assert hub.ingest is not None
                assert await hub.ingest.wait_connected(WAIT)
                pub.publish(*native("pend-1", "m0", "button.pressed"))
                assert await async_wait_until(lambda: len(pub.received) == 1, WAIT)
            assert await rows(new.url(), "SELECT msg_id FROM inbox") == [("m0",)]
    finally:
        pub.close()


async def test_coordination_and_the_change_feed_follow_the_primary_to_the_promoted_standby() -> (
    None
):
    """The lease pool and the LISTEN connection reconnect to the new primary by the same URL.

    The lease row came over by replication: the fence granted on the old primary is
    renewed on the promoted one (same holder, same epoch), and the change feed is
    listening there again (it resyncs, then hears a change committed there).
    """
    with PgServer(settings=primary_settings()) as primary, PgStandby(primary) as standby:
        await wait_synchronous(primary)
        url = multi_host_url([primary, standby])
        await (await PostgresStore.open(url)).close()  # the schema, migrated
        coordination = await PgCoordination.open(url)
        changed: list[list[str]] = []
        resyncs: list[int] = []

        async def on_changed(ids: Sequence[str]) -> None:
            changed.append(list(ids))

        async def on_resync() -> None:
            resyncs.append(len(changed))

        feed = PgAlarmChangeFeed(url, ping_s=1.0, reconnect_min_s=0.05, reconnect_max_s=0.5)
        task = asyncio.ensure_future(feed.listen(on_changed, on_resync))
        try:
            fence = await coordination.acquire("intake", "inst-a", 60.0)
            assert fence is not None
            assert await async_wait_until(lambda: len(resyncs) == 1, WAIT)

            await asyncio.to_thread(primary.stop, "immediate")
            await asyncio.to_thread(standby.promote)

            renewed = False
            loop = asyncio.get_running_loop()
            deadline = loop.time() + WAIT
            while loop.time() < deadline:
                try:
                    # An answer ends the loop: False (the grant lost) fails the test below.
                    renewed = await coordination.renew(fence, 60.0)
                    break
                except (
                    OSError,
                    TimeoutError,
                    asyncpg.PostgresError,
                    asyncpg.InterfaceError,
                    StoreError,
                ):
                    await asyncio.sleep(0.1)
            assert renewed
            assert await coordination.acquire("intake", "inst-b", 60.0) is None  # still held

            assert await async_wait_until(lambda: len(resyncs) == 2, WAIT)
            conn = await asyncpg.connect(url)
            try:
                assert not await conn.fetchval("SELECT pg_is_in_recovery()")
                async with conn.transaction():
                    await notify_changed(conn, ["after-failover"])
            finally:
                await conn.close()
            assert await async_wait_until(lambda: changed == [["after-failover"]], WAIT)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await coordination.close()


def test_a_url_naming_several_hosts_asks_for_the_writable_one() -> None:
    assert writable_dsn("postgresql://u:pw@a:5432,b:5432/db") == (
        "postgresql://u:pw@a:5432,b:5432/db?target_session_attrs=read-write"
    )
    assert writable_dsn("postgresql://u@a:1,b:2/db?sslmode=require") == (
        "postgresql://u@a:1,b:2/db?sslmode=require&target_session_attrs=read-write"
    )
    # What the URL says stands; a single host (or a virtual address) is left as given.
    kept = "postgresql://a:1,b:2/db?target_session_attrs=prefer-standby"
    assert writable_dsn(kept) == kept
    assert writable_dsn("postgresql://u@vip:5432/db") == "postgresql://u@vip:5432/db"
