"""Several alarmhub instances on one PostgreSQL and one Mosquitto (issue 15, section 2).

One instance owns the `intake` lease and does the single-owner work; the others
serve HTTP and wait. The verdicts are the database's rows and the lease's holder,
polled with generous ceilings, never how long something took.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from alarmhub.app import AlarmHub
from alarmhub.core.model import Device, DeviceKind
from alarmhub.core.pipeline import BatchEffects
from alarmhub.dev.mosquitto import LocalBroker
from alarmhub.settings import Settings
from alarmhub.store.cluster import Fence
from alarmhub.store.errors import LeaseLostError
from alarmhub.store.postgres import leases
from alarmhub.store.postgres.store import PostgresStore
from tests.support.helpers import Publisher, async_wait_until, hub_settings, native, spawn_daemon
from tests.support.tcp_proxy import TcpProxy

pytestmark = [pytest.mark.broker, pytest.mark.postgres]

FAILOVER_S = 3.0  # the lease's ttl 1.5 s: short, but not flapping on a busy machine
WAIT = 90.0  # a ceiling that catches a hang, not a timing


async def register(url: str, devices: list[Device]) -> None:
    store = await PostgresStore.open(url)
    try:
        await store.register_devices(devices, datetime.now(UTC), audit=())
    finally:
        await store.close()


async def value(url: str, sql: str, *args: Any) -> Any:
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetchval(sql, *args)
    finally:
        await conn.close()


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = WAIT) -> bool:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        if await check():
            return True
        await asyncio.sleep(0.1)
    return await check()


async def holder(url: str) -> str | None:
    got = await value(
        url, "SELECT holder FROM leases WHERE name = 'intake' AND expires_at > clock_timestamp()"
    )
    return None if got is None else str(got)


def daemon_env(url: str, broker: LocalBroker, client_id: str, instance: str) -> dict[str, str]:
    return {
        "ALARMHUB_DATABASE_URL": url,
        "ALARMHUB_MQTT_URL": broker.url,
        "ALARMHUB_MQTT_CLIENT_ID": client_id,
        "ALARMHUB_INSTANCE_ID": instance,
        "ALARMHUB_FAILOVER_S": str(FAILOVER_S),
        "ALARMHUB_MAX_BATCH": "20",
        "ALARMHUB_MQTT_RECONNECT_MIN_S": "0.1",
        "ALARMHUB_MQTT_RECONNECT_MAX_S": "1.0",
    }


async def test_the_owner_killed_mid_burst_the_standby_takes_over_and_nothing_is_lost_or_doubled(
    tmp_path: Path, broker: LocalBroker, client_id: str, pg_url: str
) -> None:
    """kill -9 of the instance doing the work, in the middle of a burst.

    Instance A is an `alarmhub run` process, B an AlarmHub in this process, both
    with the service's one MQTT client id. While A owns, B is a standby: not
    connected to the broker, `owns` empty. A is killed with SIGKILL (no release,
    no DISCONNECT) after part of the burst is stored; B takes the lease when it
    expires, connects with the same client id, and the broker gives it what A
    had not acknowledged. Every message is stored once, every alarm raised once,
    every escalation step fired once.
    """
    n = 400
    devices = [Device(f"pend-{i}", DeviceKind.SAFETY_ALARM, "0301") for i in range(n)]
    await register(pg_url, devices)
    log_a = tmp_path / "inst-a.log"
    proc = spawn_daemon(daemon_env(pg_url, broker, client_id, "inst-a"), log_a)
    pub = Publisher(broker.port)
    try:
        assert await eventually(lambda: _is(holder(pg_url), "inst-a")), log_a.read_text()
        # Its subscription is in place before the burst (a new session's SUBACK).
        assert await async_wait_until(lambda: "mqtt.connected" in log_a.read_text(), WAIT)
        settings = hub_settings(
            tmp_path,
            broker.url,
            client_id,
            database_url=pg_url,
            instance_id="inst-b",
            failover_s=FAILOVER_S,
            max_batch=20,
        )
        async with AlarmHub(settings, serve_http=False) as b:
            # A standby: serving, but neither owning nor connected to the broker.
            assert b.owns == []
            assert not b.mqtt_connected
            assert b.ingest is None
            presses = [native(d.id, f"m-{d.id}", "button.pressed") for d in devices]
            pub.publish_many(presses[: n // 2])
            assert await eventually(
                lambda: _at_least(value(pg_url, "SELECT count(*) FROM inbox"), 1)
            )
            proc.send_signal(signal.SIGKILL)
            proc.wait(30)
            pub.publish_many(presses[n // 2 :])
            assert await async_wait_until(lambda: b.owns == ["intake"], WAIT)
            assert await holder(pg_url) == "inst-b"
            # Its term connects with the service's client id (a SUBACK away from `owns`).
            assert b.ingest is not None
            assert await b.ingest.wait_connected(WAIT)
            assert await eventually(
                lambda: _at_least(value(pg_url, "SELECT count(*) FROM inbox"), n)
            )
            # Every step 1 (after_s = 0) decided, by whichever instance owned then.
            assert await eventually(
                lambda: _at_least(value(pg_url, "SELECT count(*) FROM escalations"), n)
            )
            inbox = await value(pg_url, "SELECT count(*) FROM inbox")
            distinct = await value(pg_url, "SELECT count(DISTINCT msg_id) FROM inbox")
            assert (inbox, distinct) == (n, n)
            alarms = await value(pg_url, "SELECT count(*) FROM alarms")
            per_device = await value(pg_url, "SELECT count(DISTINCT device_id) FROM alarms")
            assert (alarms, per_device) == (n, n)
            assert await value(pg_url, "SELECT max(repeat_count) FROM alarms") == 0
            # One escalation row per alarm (its primary key) and one timeline entry each.
            assert await value(pg_url, "SELECT count(*) FROM escalations") == n
            doubled = await value(
                pg_url,
                "SELECT count(*) FROM (SELECT alarm_id FROM timeline WHERE type = 'escalated' "
                "GROUP BY alarm_id HAVING count(*) > 1) d",
            )
            assert doubled == 0
            assert (
                await value(pg_url, "SELECT count(*) FROM timeline WHERE type = 'escalated'") == n
            )
            # The survivor's memory holds what A committed too.
            assert len(b.state.alarms.by_id) == n
    finally:
        pub.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)


def _now() -> str:
    return datetime.now(UTC).isoformat()


async def _is(got: Awaitable[object], expected: object) -> bool:
    return await got == expected


async def _at_least(got: Awaitable[Any], n: int) -> bool:
    return int(await got or 0) >= n


async def test_two_instances_in_one_process_one_owns_and_a_clean_stop_hands_over_at_once(
    tmp_path: Path, broker: LocalBroker, client_id: str, pg_url: str
) -> None:
    """Exactly one owner; its clean stop releases the lease, and the other owns next."""
    await register(pg_url, [Device("pend-1", DeviceKind.SAFETY_ALARM, "0301")])
    pub = Publisher(broker.port)

    def settings(instance: str) -> Settings:
        return hub_settings(
            tmp_path,
            broker.url,
            client_id,
            database_url=pg_url,
            instance_id=instance,
            failover_s=FAILOVER_S,
        )

    try:
        async with AsyncExitStack() as stack:
            a = await stack.enter_async_context(AlarmHub(settings("inst-a")))
            b = await stack.enter_async_context(AlarmHub(settings("inst-b")))
            assert a.owns == ["intake"]
            assert b.owns == []
            assert a.ingest is not None
            assert await a.ingest.wait_connected(WAIT)
            assert b.ingest is None
            # /readyz: the owner needs its broker; a standby is ready without one.
            async with httpx.AsyncClient() as http:
                ready_a = (await http.get(f"http://127.0.0.1:{a.http_port}/readyz")).json()
                answer_b = await http.get(f"http://127.0.0.1:{b.http_port}/readyz")
            assert (ready_a["role"], ready_a["owns"], ready_a["ready"]) == (
                "owner",
                ["intake"],
                True,
            )
            assert ready_a["checks"]["broker_connected"] is True
            assert answer_b.status_code == 200
            ready_b = answer_b.json()
            assert (ready_b["role"], ready_b["owns"], ready_b["ready"]) == ("standby", [], True)
            assert "broker_connected" not in ready_b["checks"]
            # Presence says the same: `alarmhub cluster status` reads these rows.
            assert await eventually(
                lambda: _is(
                    value(
                        pg_url,
                        "SELECT owns = '[\"intake\"]'::jsonb FROM instances WHERE id = 'inst-a'",
                    ),
                    True,
                )
            )
            assert await value(
                pg_url, "SELECT owns = '[]'::jsonb FROM instances WHERE id = 'inst-b'"
            )
            gauge = a.metrics.registry.get_sample_value
            assert gauge("alarmhub_lease_owned", {"lease": "intake"}) == 1
            assert (
                b.metrics.registry.get_sample_value("alarmhub_lease_owned", {"lease": "intake"})
                == 0
            )
            pub.publish(*native("pend-1", "m0", "button.pressed", ts=_now()))
            assert await eventually(
                lambda: _at_least(value(pg_url, "SELECT count(*) FROM alarms"), 1)
            )
            epoch = await value(pg_url, "SELECT epoch FROM leases WHERE name = 'intake'")
            # A clean stop ends the term, then resigns: the lease is expired at once.
            await a.__aexit__(None, None, None)
            stack.pop_all()
            stack.push_async_callback(b.__aexit__, None, None, None)
            assert await async_wait_until(lambda: b.owns == ["intake"], WAIT)
            assert (
                await value(pg_url, "SELECT epoch FROM leases WHERE name = 'intake'") == epoch + 1
            )
            pub.publish(*native("pend-1", "m1", "button.pressed", ts=_now()))
            assert await eventually(
                lambda: _at_least(value(pg_url, "SELECT count(*) FROM inbox"), 2)
            )
            # The second press joined the alarm B loaded at its term's start.
            assert await value(pg_url, "SELECT count(*) FROM alarms") == 1
            assert await value(pg_url, "SELECT repeat_count FROM alarms") == 1
    finally:
        pub.close()


async def test_a_stale_owners_fenced_write_fails_and_writes_nothing(pg_url: str) -> None:
    """The grant moved on: commit_batch, the decisions, the outbox and pruning all refuse."""
    store = await PostgresStore.open(pg_url)
    try:
        async with store.pool.acquire() as conn:
            old = await leases.acquire(conn, "intake", "inst-a", 0.01)
            assert old is not None
            await asyncio.sleep(0.05)  # the 10 ms grant has expired
            new = await leases.acquire(conn, "intake", "inst-b", 60)
            assert new is not None
            assert new.epoch == old.epoch + 1
        store.fence_with(lambda: old)
        with pytest.raises(LeaseLostError) as raised:
            await store.commit_batch(BatchEffects(), {})
        assert (raised.value.holder, raised.value.epoch) == ("inst-a", old.epoch)
        with pytest.raises(LeaseLostError):
            await store.commit_decisions([], datetime.now(UTC))
        with pytest.raises(LeaseLostError):
            await store.outbox_sent(1, datetime.now(UTC))
        # The current grant passes the same fence.
        store.fence_with(lambda: new)
        await store.commit_batch(BatchEffects(), {})

        # No grant at all (between terms): refused before the database is asked.
        def none() -> Fence:
            raise LeaseLostError("intake", "inst-b", new.epoch)

        store.fence_with(none)
        with pytest.raises(LeaseLostError):
            await store.commit_batch(BatchEffects(), {})
    finally:
        await store.close()


async def test_a_lease_taken_behind_the_owners_back_ends_its_term_and_acks_nothing(
    tmp_path: Path, broker: LocalBroker, client_id: str, pg_url: str
) -> None:
    """Another grant appears while this instance believes it owns (a paused VM's view).

    The press that arrives meanwhile is neither stored nor acknowledged (no
    receipt: it leaves with the ack); the daemon keeps running, and once the
    other grant expires it owns again under a new epoch and the broker's
    redelivery is stored exactly once.
    """
    await register(pg_url, [Device("pend-1", DeviceKind.SAFETY_ALARM, "0301")])
    pub = Publisher(broker.port)
    pub.subscribe("alarmhub/v1/+/receipts")
    settings = hub_settings(
        tmp_path,
        broker.url,
        client_id,
        database_url=pg_url,
        instance_id="inst-a",
        failover_s=FAILOVER_S,
    )
    try:
        async with AlarmHub(settings, serve_http=False) as hub:
            assert hub.owns == ["intake"]
            assert hub.ingest is not None
            assert await hub.ingest.wait_connected(WAIT)
            first_epoch = await value(pg_url, "SELECT epoch FROM leases WHERE name = 'intake'")
            await value(
                pg_url,
                "UPDATE leases SET holder = 'thief', epoch = epoch + 1, "
                "expires_at = clock_timestamp() + interval '4 seconds' WHERE name = 'intake'",
            )
            pub.publish(*native("pend-1", "m0", "button.pressed"))
            # The term ends (fenced, or the renewal refused: whichever comes first).
            assert await async_wait_until(lambda: hub.owns == [], WAIT)
            assert await value(pg_url, "SELECT count(*) FROM inbox") == 0
            assert pub.received == []
            # The thief's grant expires; this instance owns again under a new epoch.
            assert await async_wait_until(lambda: hub.owns == ["intake"], WAIT)
            epoch = await value(pg_url, "SELECT epoch FROM leases WHERE name = 'intake'")
            assert epoch == first_epoch + 2
            assert await async_wait_until(lambda: len(pub.received) == 1, WAIT), pub.received
            assert await value(pg_url, "SELECT count(*) FROM inbox") == 1
            assert await value(pg_url, "SELECT count(*) FROM alarms") == 1
            assert hub.owner.terms == 2
    finally:
        pub.close()


async def test_the_owner_cut_from_postgresql_stops_and_the_other_takes_over(
    tmp_path: Path, broker: LocalBroker, client_id: str, pg_url: str
) -> None:
    """A network cut between the owner and PostgreSQL (a TCP proxy the test controls).

    The owner stops acting at its lease's local deadline (its MQTT connection is
    closed unacknowledged), the other instance takes over and stores the whole
    burst once; when the network heals, the former owner is a standby and can
    commit nothing under its old grant.
    """
    n = 200
    devices = [Device(f"pend-{i}", DeviceKind.SAFETY_ALARM, "0301") for i in range(n)]
    await register(pg_url, devices)
    pub = Publisher(broker.port)

    def settings(instance: str, url: str) -> Settings:
        return hub_settings(
            tmp_path,
            broker.url,
            client_id,
            database_url=url,
            instance_id=instance,
            failover_s=FAILOVER_S,
            max_batch=20,
        )

    try:
        async with TcpProxy(5432) as proxy, AsyncExitStack() as stack:
            cut_url = proxy.url(pg_url.rsplit("/", 1)[-1])
            a = await stack.enter_async_context(
                AlarmHub(settings("inst-a", cut_url), serve_http=False)
            )
            b = await stack.enter_async_context(
                AlarmHub(settings("inst-b", pg_url), serve_http=False)
            )
            assert (a.owns, b.owns) == (["intake"], [])
            assert a.ingest is not None
            assert await a.ingest.wait_connected(WAIT)
            presses = [native(d.id, f"m-{d.id}", "button.pressed") for d in devices]
            pub.publish_many(presses[: n // 2])
            assert await eventually(
                lambda: _at_least(value(pg_url, "SELECT count(*) FROM inbox"), 1)
            )
            proxy.cut()
            pub.publish_many(presses[n // 2 :])
            assert await async_wait_until(lambda: b.owns == ["intake"], WAIT)
            assert a.owns == []
            assert await async_wait_until(lambda: not a.mqtt_connected, WAIT)
            assert await eventually(
                lambda: _at_least(value(pg_url, "SELECT count(*) FROM inbox"), n)
            )
            # A standby cut from its database is not ready (/readyz): its heartbeat, a
            # write, fails; the owner's last batch was cancelled, not refused, so
            # nothing else said so (it stayed "writable" through the cut).
            assert await async_wait_until(lambda: _writable(a) == 0, WAIT)
            proxy.restore()
            # Healed: the former owner is a standby and its old grant commits nothing.
            assert await async_wait_until(a.ownership.standby.is_set, WAIT)
            # And it says it is writable again (its /readyz: ready as a standby), though a
            # standby writes nothing through the write gate that otherwise tells it.
            assert await async_wait_until(lambda: _writable(a) == 1, WAIT)
            assert await holder(pg_url) == "inst-b"
            assert a.owns == []
            assert await value(pg_url, "SELECT count(*) FROM inbox") == n
            assert await value(pg_url, "SELECT count(DISTINCT msg_id) FROM inbox") == n
            assert await value(pg_url, "SELECT count(*) FROM alarms") == n
            assert await value(pg_url, "SELECT count(DISTINCT device_id) FROM alarms") == n
    finally:
        pub.close()


async def test_a_writer_cut_off_inside_a_fenced_transaction_does_not_hold_up_the_takeover(
    pg_url: str,
) -> None:
    """The fence's share lock of a writer cut off mid-transaction ends with its session.

    A takeover UPDATEs the lease row and so waits for every fenced transaction
    still open. A writer whose network was cut between two statements leaves its
    transaction open on the server; the writer's `idle_in_transaction_s` has the
    server end it, so the standby's grant comes once the old one expired.
    """
    await (await PostgresStore.open(pg_url)).close()  # the schema
    conn = await asyncpg.connect(pg_url)
    async with TcpProxy(5432) as proxy:
        writer = await PostgresStore.open(
            proxy.url(pg_url.rsplit("/", 1)[-1]), migrate=False, idle_in_transaction_s=0.5
        )
        try:
            old = await leases.acquire(conn, "intake", "inst-a", 1.0)
            assert old is not None
            held = await writer.pool.acquire()
            await held.execute("BEGIN")
            await leases.check_fence(held, old)  # FOR SHARE on the lease row
            proxy.cut()
            got: Fence | None = None
            loop = asyncio.get_running_loop()
            deadline = loop.time() + WAIT
            while got is None and loop.time() < deadline:
                try:
                    async with asyncio.timeout(2.0):
                        got = await leases.acquire(conn, "intake", "inst-b", 60)
                except TimeoutError:  # waiting on the share lock: asyncpg cancels, try again
                    got = None
                if got is None:
                    await asyncio.sleep(0.1)
            assert got is not None
            assert (got.holder, got.epoch) == ("inst-b", old.epoch + 1)
        finally:
            writer.pool.terminate()
            await conn.close()


def _writable(hub: AlarmHub) -> float | None:
    return hub.metrics.registry.get_sample_value("alarmhub_store_writable")
