"""The whole daemon on PostgreSQL: a real Mosquitto, the local PostgreSQL, AlarmHub in-process."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import orjson
import pytest

from alarmhub.app import AlarmHub
from alarmhub.core.actions import Action
from alarmhub.core.model import Device, DeviceKind
from alarmhub.dev.mosquitto import LocalBroker
from alarmhub.store.postgres.store import PostgresStore
from tests.support.helpers import Publisher, async_wait_until, hub_settings, native, run_cli
from tests.support.pg_server import PgServer
from tests.support.postgres import allow_connections, terminate_backends

pytestmark = [pytest.mark.broker, pytest.mark.postgres]


async def register(url: str, devices: list[Device]) -> None:
    store = await PostgresStore.open(url)
    try:
        await store.register_devices(devices, datetime.now(UTC), audit=())
    finally:
        await store.close()


async def rows(url: str, sql: str) -> list[tuple[object, ...]]:
    conn = await asyncpg.connect(url)
    try:
        return [tuple(r) for r in await conn.fetch(sql)]
    finally:
        await conn.close()


async def test_a_press_becomes_an_alarm_in_postgresql_with_its_receipts(
    tmp_path: Path, broker: LocalBroker, client_id: str, pg_url: str
) -> None:
    await register(pg_url, [Device("pend-1", DeviceKind.SAFETY_ALARM, "0301")])
    pub = Publisher(broker.port)
    pub.subscribe("alarmhub/v1/+/receipts")
    settings = hub_settings(tmp_path, broker.url, client_id, database_url=pg_url)
    try:
        async with AlarmHub(settings, serve_http=False) as hub:
            assert hub.ingest is not None
            assert await hub.ingest.wait_connected(5)
            pub.publish(*native("pend-1", "m0", "button.pressed"))
            pub.publish(*native("pend-1", "m1", "button.pressed"))
            pub.publish(*native("pend-1", "m0", "button.pressed"))  # a device retry
            # A receipt leaves after its batch's commit: then the rows are there.
            assert await async_wait_until(lambda: len(pub.received) == 3, 30), pub.received
            receipts = [orjson.loads(p) for _, p in pub.received]
            assert [r["ref"] for r in receipts] == ["m0", "m1", "m0"]
            assert receipts[2].get("duplicate") is True
            assert await rows(pg_url, "SELECT msg_id FROM inbox ORDER BY seq") == [("m0",), ("m1",)]
            assert await rows(
                pg_url, "SELECT kind, priority, state, repeat_count, municipality FROM alarms"
            ) == [("button", 1, "open", 1, "0301")]

            # An operator takes it: the device hears "handled" for the press that raised it.
            [alarm_id] = hub.state.alarms.by_id
            await hub.act(alarm_id, Action.ACKNOWLEDGE, "op-1", audit=())
            assert await async_wait_until(lambda: len(pub.received) == 4, 30), pub.received
            assert orjson.loads(pub.received[3][1]) == {
                "ref": "m0",
                "status": "handled",
                "alarm": alarm_id,
            }
            # The CLI reads the same database.
            listed = run_cli(["alarms", "list", "--json"], {"ALARMHUB_DATABASE_URL": pg_url})
            assert listed.returncode == 0, listed.stderr
            [row] = orjson.loads(listed.stdout)
            assert (row["id"], row["state"], row["repeat_count"]) == (alarm_id, "acknowledged", 1)
    finally:
        pub.close()


async def eventually(read: Callable[[], Awaitable[object]], expected: object) -> object:
    """Poll `read` until it returns `expected` (a generous ceiling, not a timing)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 60
    got = await read()
    while got != expected and loop.time() < deadline:
        await asyncio.sleep(0.1)
        got = await read()
    return got


async def test_postgresql_going_away_stops_acknowledgements_and_loses_nothing(
    tmp_path: Path, broker: LocalBroker, client_id: str, pg_url: str
) -> None:
    """Connections cut mid-burst, then the database out of reach: every press stored once.

    While PostgreSQL refuses connections nothing is acknowledged (no receipt: the
    receipt leaves with the acknowledgement, after the commit); once it is back the
    held batches commit, each message exactly once.
    """
    presses = 300
    devices = [Device(f"pend-{i}", DeviceKind.SAFETY_ALARM, "0301") for i in range(presses)]
    await register(pg_url, devices)
    pub = Publisher(broker.port)
    pub.subscribe("alarmhub/v1/+/receipts")
    settings = hub_settings(tmp_path, broker.url, client_id, database_url=pg_url, max_batch=20)

    def refs() -> set[str]:
        return {orjson.loads(p)["ref"] for _, p in pub.received}

    try:
        async with AlarmHub(settings, serve_http=False) as hub:
            assert hub.ingest is not None
            assert await hub.ingest.wait_connected(5)
            first = presses // 2
            cuts = 0
            for i, d in enumerate(devices[:first]):
                pub.publish(*native(d.id, f"m{i}", "button.pressed"))
                if i % 50 == 20:
                    cuts += await terminate_backends(pg_url)
            assert cuts > 0
            assert await async_wait_until(lambda: len(refs()) == first, 60), len(refs())

            failures = hub.metrics.commit_failures._value.get()
            await allow_connections(pg_url, False)
            try:
                await terminate_backends(pg_url)
                for i, d in enumerate(devices[first:], start=first):
                    pub.publish(*native(d.id, f"m{i}", "button.pressed"))
                assert await async_wait_until(
                    lambda: hub.metrics.commit_failures._value.get() > failures, 60
                )
                assert len(refs()) == first  # none of the held presses acknowledged
                assert hub.metrics.store_writable._value.get() == 0
            finally:
                await allow_connections(pg_url, True)
            assert await async_wait_until(lambda: len(refs()) == presses, 120), len(refs())
            assert refs() == {f"m{i}" for i in range(presses)}
            assert await async_wait_until(lambda: hub.metrics.store_writable._value.get() == 1, 30)
            # Each alarm's first escalation step (the operator queue, at once) decided once.
            first_steps = (
                "SELECT count(*), count(DISTINCT alarm_id) FROM escalations WHERE step = 0"
            )
            steps = await eventually(lambda: rows(pg_url, first_steps), [(presses, presses)])
            assert steps == [(presses, presses)]
        assert await rows(pg_url, "SELECT count(*), count(DISTINCT msg_id) FROM inbox") == [
            (presses, presses)
        ]
        assert await rows(pg_url, "SELECT count(*), count(DISTINCT device_id) FROM alarms") == [
            (presses, presses)
        ]
        raised = await rows(pg_url, "SELECT count(*) FROM timeline WHERE type = 'raised'")
        assert raised == [(presses,)]
    finally:
        pub.close()


async def test_a_postgresql_restart_mid_burst_loses_nothing_and_doubles_nothing(
    tmp_path: Path, broker: LocalBroker, client_id: str
) -> None:
    """A private server stopped (every connection cut) and started again while presses flow."""
    presses = 300
    devices = [Device(f"pend-{i}", DeviceKind.SAFETY_ALARM, "0301") for i in range(presses)]
    pub = Publisher(broker.port)
    pub.subscribe("alarmhub/v1/+/receipts")

    def refs() -> set[str]:
        return {orjson.loads(p)["ref"] for _, p in pub.received}

    try:
        with PgServer() as server:
            url = server.url()
            await register(url, devices)
            settings = hub_settings(tmp_path, broker.url, client_id, database_url=url, max_batch=20)
            async with AlarmHub(settings, serve_http=False) as hub:
                assert hub.ingest is not None
                assert await hub.ingest.wait_connected(5)
                first = presses // 2
                for i, d in enumerate(devices[:first]):
                    pub.publish(*native(d.id, f"m{i}", "button.pressed"))
                failures = hub.metrics.commit_failures._value.get()
                await asyncio.to_thread(server.stop, "fast")
                for i, d in enumerate(devices[first:], start=first):
                    pub.publish(*native(d.id, f"m{i}", "button.pressed"))
                assert await async_wait_until(
                    lambda: hub.metrics.commit_failures._value.get() > failures, 60
                )
                held = presses - len(refs())
                assert held >= presses - first  # the presses sent while it was down wait
                await asyncio.to_thread(server.start)
                assert await async_wait_until(lambda: len(refs()) == presses, 120), len(refs())
                assert refs() == {f"m{i}" for i in range(presses)}
            inbox = await rows(url, "SELECT count(*), count(DISTINCT msg_id) FROM inbox")
            assert inbox == [(presses, presses)]
            alarms = await rows(url, "SELECT count(*), count(DISTINCT device_id) FROM alarms")
            assert alarms == [(presses, presses)]
            raised = await rows(url, "SELECT count(*) FROM timeline WHERE type = 'raised'")
            assert raised == [(presses,)]
    finally:
        pub.close()


async def test_a_restart_on_postgresql_reloads_open_alarms_and_fires_no_step_again(
    tmp_path: Path, broker: LocalBroker, client_id: str, pg_url: str
) -> None:
    await register(pg_url, [Device("pend-1", DeviceKind.SAFETY_ALARM, "0301")])
    pub = Publisher(broker.port)
    pub.subscribe("alarmhub/v1/+/receipts")
    settings = hub_settings(tmp_path, broker.url, client_id, database_url=pg_url)
    # The step's effect, not its row: a second decision of the step would insert no row
    # (the primary key) but, were the store to get it wrong, write its timeline again.
    first_step = "SELECT count(*) FROM timeline WHERE type = 'escalated'"
    try:
        async with AlarmHub(settings, serve_http=False) as hub:
            assert hub.ingest is not None
            assert await hub.ingest.wait_connected(5)
            pub.publish(*native("pend-1", "m0", "button.pressed"))
            assert await async_wait_until(lambda: len(pub.received) == 1, 30)
            assert await eventually(lambda: rows(pg_url, first_step), [(1,)]) == [(1,)]
            [alarm_id] = hub.state.alarms.by_id
        async with AlarmHub(settings, serve_http=False) as again:
            assert again.ingest is not None
            assert list(again.state.alarms.by_id) == [alarm_id]
            assert await again.ingest.wait_connected(5)
            pub.publish(*native("pend-1", "m1", "button.pressed"))
            assert await async_wait_until(lambda: len(pub.received) == 2, 30)
        assert await rows(pg_url, first_step) == [(1,)]
        assert await rows(pg_url, "SELECT id, repeat_count FROM alarms") == [(alarm_id, 1)]
    finally:
        pub.close()


async def test_a_press_of_an_unknown_device_while_postgresql_is_away_ends_nothing(
    tmp_path: Path, broker: LocalBroker, client_id: str, pg_url: str
) -> None:
    """Ingest looks a device it does not know up in the store (registered a moment ago
    elsewhere?) before it rejects the message. That read was made outside the write
    gate: PostgreSQL away, its StoreUnavailableError ended ingest, the owner's term and
    the daemon's TaskGroup. It is retried as the batch's commit is, and nothing of the
    batch is acknowledged meanwhile."""
    await register(pg_url, [Device("pend-1", DeviceKind.SAFETY_ALARM, "0301")])
    pub = Publisher(broker.port)
    pub.subscribe("alarmhub/v1/+/receipts")
    settings = hub_settings(tmp_path, broker.url, client_id, database_url=pg_url)
    try:
        async with AlarmHub(settings, serve_http=False) as hub:
            assert hub.ingest is not None
            assert await hub.ingest.wait_connected(5)
            failures = hub.metrics.commit_failures._value.get()
            await allow_connections(pg_url, False)
            try:
                await terminate_backends(pg_url)
                pub.publish(*native("ghost-1", "g0", "button.pressed"))
                # The lookup refused (and retried), or the term ended by it.
                assert await async_wait_until(
                    lambda: (
                        hub.metrics.commit_failures._value.get() > failures
                        or not hub.owner.running.is_set()
                    ),
                    60,
                )
                assert hub.owner.running.is_set()
            finally:
                await allow_connections(pg_url, True)
            pub.publish(*native("pend-1", "m0", "button.pressed"))
            assert await async_wait_until(lambda: len(pub.received) == 1, 60), pub.received
            dead = "SELECT device_id, reason FROM inbox WHERE verdict = 'rejected'"
            rejected = [("ghost-1", "unknown_device")]
            assert await eventually(lambda: rows(pg_url, dead), rejected) == rejected
            assert hub.owner.running.is_set()
    finally:
        pub.close()
