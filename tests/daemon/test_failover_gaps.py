"""Failover's remaining gaps (issue 15): a broker cut, a term stuck in the database,
notifications sent twice, a standby's "handled" receipt.

Two AlarmHub instances in this process on one Mosquitto and one PostgreSQL
database; one of them reaches the broker or the database through a TCP proxy
the test controls. The verdicts are rows, leases, receipts and the order in
which the two instances' events happen, never how long anything took.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest

from alarmhub.app import AlarmHub
from alarmhub.core.actions import Action
from alarmhub.core.model import Device, DeviceKind
from alarmhub.daemon.leadership import Leadership
from alarmhub.dev.mosquitto import LocalBroker
from alarmhub.settings import Settings
from tests.daemon.test_instances import FAILOVER_S, WAIT, eventually, holder, register, value
from tests.support.helpers import (
    Publisher,
    async_wait_until,
    hub_settings,
    native,
    rules_with_webhook,
)
from tests.support.tcp_proxy import TcpProxy

pytestmark = [pytest.mark.broker, pytest.mark.postgres]


def settings(
    tmp_path: Path, client_id: str, instance: str, db: str, mqtt: str, **extra: Any
) -> Settings:
    return hub_settings(
        tmp_path,
        mqtt,
        client_id,
        database_url=db,
        instance_id=instance,
        failover_s=FAILOVER_S,
        max_batch=20,
        **extra,
    )


async def owner_and_standby(
    stack: AsyncExitStack, first: Settings, second: Settings
) -> tuple[AlarmHub, AlarmHub]:
    """Two instances: the first started owns intake and is connected, the second waits."""
    a = await stack.enter_async_context(AlarmHub(first, serve_http=False))
    b = await stack.enter_async_context(AlarmHub(second, serve_http=False))
    assert (a.owns, b.owns) == (["intake"], [])
    assert a.ingest is not None
    assert await a.ingest.wait_connected(WAIT)
    return a, b


async def count(url: str, sql: str) -> int:
    return int(await value(url, sql) or 0)


def _now() -> str:
    return datetime.now(UTC).isoformat()


async def test_an_owner_cut_from_the_broker_steps_down_and_the_other_takes_intake(
    tmp_path: Path, broker: LocalBroker, client_id: str, pg_url: str
) -> None:
    """Cut from the broker (silently, through a proxy), not from PostgreSQL.

    Its lease stays renewable, so before the fix it kept intake and every message
    waited at the broker. Now it steps down after its grace and holds off; the
    other instance, which reaches the broker, owns `intake` and stores every
    message published meanwhile exactly once; the cut one commits nothing more.
    """
    n = 60
    devices = [Device(f"bc-{i}", DeviceKind.SAFETY_ALARM, "0301") for i in range(n)]
    await register(pg_url, devices)
    presses = [native(d.id, f"m-{d.id}", "button.pressed", ts=_now()) for d in devices]
    pub = Publisher(broker.port, client_id=f"{client_id}-pub")
    try:
        async with TcpProxy(broker.port) as proxy, AsyncExitStack() as stack:
            cut_mqtt = f"mqtt://127.0.0.1:{proxy.port}"
            a, b = await owner_and_standby(
                stack,
                settings(tmp_path, client_id, "inst-a", pg_url, cut_mqtt),
                settings(tmp_path, client_id, "inst-b", pg_url, broker.url),
            )
            pub.publish_many(presses[: n // 2])
            assert await eventually(lambda: _at_least(pg_url, "SELECT count(*) FROM inbox", n // 2))
            proxy.cut()
            pub.publish_many(presses[n // 2 :])
            assert await async_wait_until(lambda: b.owns == ["intake"], WAIT)
            assert a.owns == []
            assert isinstance(a.ownership, Leadership)
            assert a.ownership.step_downs >= 1  # it stepped down; the lease did not expire
            committed_by_a = a.batches_committed
            assert await eventually(lambda: _at_least(pg_url, "SELECT count(*) FROM inbox", n))
            assert await count(pg_url, "SELECT count(*) FROM inbox") == n
            assert await count(pg_url, "SELECT count(DISTINCT msg_id) FROM inbox") == n
            assert await count(pg_url, "SELECT count(*) FROM alarms") == n
            # B still owns, A (still cut) took nothing back and committed nothing more.
            assert await holder(pg_url) == "inst-b"
            assert a.owns == []
            assert a.batches_committed == committed_by_a
    finally:
        pub.close()


async def _at_least(url: str, sql: str, n: int) -> bool:
    return await count(url, sql) >= n


async def test_a_database_cut_owners_term_ends_before_the_other_lease_starts(
    tmp_path: Path, broker: LocalBroker, client_id: str, pg_url: str
) -> None:
    """The owner's batch is in flight in PostgreSQL when its network to it is cut.

    The test holds a lock on `inbox`, so the owner's commit waits inside the
    server; then the owner's database connection is cut. Cancelling that commit
    used to wait for asyncpg's cancel request through the dead network (60 s, the
    command timeout) before the term could end. Now the term ends at the lease's
    local deadline: before the other instance holds the lease. Nothing is
    acknowledged by the cut owner; the press is stored once, by the other.
    """
    await register(pg_url, [Device("tc-1", DeviceKind.SAFETY_ALARM, "0301")])
    watcher = Publisher(broker.port, client_id=f"{client_id}-receipts")
    watcher.subscribe("alarmhub/v1/+/receipts")
    pub = Publisher(broker.port, client_id=f"{client_id}-pub")
    locker = await asyncpg.connect(pg_url)
    try:
        async with TcpProxy(5432) as proxy, AsyncExitStack() as stack:
            cut_db = proxy.url(pg_url.rsplit("/", 1)[-1])
            a, b = await owner_and_standby(
                stack,
                settings(tmp_path, client_id, "inst-a", cut_db, broker.url),
                settings(tmp_path, client_id, "inst-b", pg_url, broker.url),
            )
            order: list[tuple[str, int]] = []

            async def note(event: asyncio.Event, name: str) -> None:
                await event.wait()
                order.append((name, len(watcher.received)))

            watching = [
                asyncio.create_task(note(a.owner.ended, "a_term_ended")),
                asyncio.create_task(note(b.ownership.owner, "b_owns")),
            ]
            lock = locker.transaction()
            await lock.start()
            await locker.execute("LOCK TABLE inbox IN ACCESS EXCLUSIVE MODE")
            pub.publish(*native("tc-1", "m0", "button.pressed", ts=_now()))
            waiting = (
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE wait_event_type = 'Lock' AND query ILIKE '%inbox%'"
            )
            assert await eventually(lambda: _at_least(pg_url, waiting, 1))
            proxy.cut()
            await lock.rollback()  # the server runs A's statement; A never hears back
            done, _ = await asyncio.wait(watching, timeout=WAIT)
            assert len(done) == 2, order
            assert [name for name, _ in order] == ["a_term_ended", "b_owns"], order
            assert order[1][1] == 0, "a receipt left before the survivor owned"
            assert await eventually(lambda: _at_least(pg_url, "SELECT count(*) FROM inbox", 1))
            assert await async_wait_until(lambda: len(watcher.received) == 1, WAIT)
            assert await count(pg_url, "SELECT count(*) FROM inbox") == 1
            assert await count(pg_url, "SELECT count(*) FROM alarms") == 1
            assert await holder(pg_url) == "inst-b"
            proxy.restore()  # A closes its pools through the proxy on the way out
    finally:
        await locker.close()
        pub.close()
        watcher.close()


class Hook:
    """A webhook receiver on loopback; `on_first` runs (once) before the first answer."""

    def __init__(self, on_first: Any) -> None:
        self.calls: list[tuple[str | None, str | None]] = []  # (header id, body id)
        self._first = on_first
        self._lock = threading.Lock()
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = orjson.loads(self.rfile.read(int(self.headers.get("content-length", 0))))
                with hook._lock:
                    hook.calls.append(
                        (self.headers.get("Idempotency-Key"), body.get("notification_id"))
                    )
                    first, hook._first = hook._first, None
                if first is not None:
                    first()
                self.send_response(204)
                self.end_headers()

            def log_message(self, *_args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@asynccontextmanager
async def cut_on_first_call(proxy: TcpProxy) -> AsyncIterator[Hook]:
    """A hook that cuts the owner's database before it answers the first call 204."""
    loop = asyncio.get_running_loop()

    def cut() -> None:
        done = threading.Event()

        def in_loop() -> None:
            proxy.cut()
            done.set()

        loop.call_soon_threadsafe(in_loop)
        assert done.wait(10)

    hook = Hook(cut)
    try:
        yield hook
    finally:
        hook.close()


async def test_a_notification_sent_again_after_failover_keeps_its_stable_id(
    tmp_path: Path, broker: LocalBroker, client_id: str, pg_url: str
) -> None:
    """The owner's webhook is answered, but the owner is cut off before it marks it sent.

    The survivor finds the row still due and sends it again: with the same
    `notification_id` (body) and `Idempotency-Key` (header), so the receiver can
    drop the second copy. Every notification arrives; no notification ever has
    two different ids.
    """
    n = 3
    devices = [Device(f"nt-{i}", DeviceKind.SAFETY_ALARM, "0301") for i in range(n)]
    await register(pg_url, devices)
    pub = Publisher(broker.port, client_id=f"{client_id}-pub")
    try:
        async with (
            TcpProxy(5432) as proxy,
            cut_on_first_call(proxy) as hook,
            AsyncExitStack() as stack,
        ):
            rules = rules_with_webhook(tmp_path, hook.url)
            cut_db = proxy.url(pg_url.rsplit("/", 1)[-1])
            _a, b = await owner_and_standby(
                stack,
                settings(tmp_path, client_id, "inst-a", cut_db, broker.url, rules=rules),
                settings(tmp_path, client_id, "inst-b", pg_url, broker.url, rules=rules),
            )
            pub.publish_many(
                [native(d.id, f"m-{d.id}", "button.pressed", ts=_now()) for d in devices]
            )
            assert await async_wait_until(lambda: b.owns == ["intake"], WAIT)
            sent = "SELECT count(*) FROM outbox WHERE target = 'hook' AND sent_at IS NOT NULL"
            assert await eventually(lambda: _at_least(pg_url, sent, n))
            rows = await count(pg_url, "SELECT count(*) FROM outbox WHERE target = 'hook'")
            assert rows == n
            calls = list(hook.calls)
            assert all(header == body and body is not None for header, body in calls), calls
            ids = [body for _, body in calls]
            assert len(set(ids)) == n, calls  # every notification arrived, one id each
            resent = [i for i in set(ids) if ids.count(i) > 1]
            assert resent, f"nothing was sent twice: the window was not exercised {calls}"
            alarms = {str(r) for r in await _alarm_ids(pg_url)}
            assert {str(i).split("/")[0] for i in ids} == alarms
            proxy.restore()  # A closes its pools through the proxy on the way out
    finally:
        pub.close()


async def _alarm_ids(url: str) -> list[str]:
    conn = await asyncpg.connect(url)
    try:
        return [r["id"] for r in await conn.fetch("SELECT id FROM alarms")]
    finally:
        await conn.close()


async def test_a_handled_receipt_made_on_a_standby_reaches_the_device(
    tmp_path: Path, broker: LocalBroker, client_id: str, pg_url: str
) -> None:
    """Only the owner has the broker connection: an acknowledgement on the standby
    leaves the "handled" receipt in the outbox, and the owner publishes it."""
    await register(pg_url, [Device("hr-1", DeviceKind.SAFETY_ALARM, "0301")])
    watcher = Publisher(broker.port, client_id=f"{client_id}-receipts")
    watcher.subscribe("alarmhub/v1/hr-1/receipts")
    pub = Publisher(broker.port, client_id=f"{client_id}-pub")
    try:
        async with AsyncExitStack() as stack:
            _a, b = await owner_and_standby(
                stack,
                settings(tmp_path, client_id, "inst-a", pg_url, broker.url),
                settings(tmp_path, client_id, "inst-b", pg_url, broker.url),
            )
            pub.publish(*native("hr-1", "m0", "button.pressed", ts=_now()))
            assert await eventually(lambda: _at_least(pg_url, "SELECT count(*) FROM alarms", 1))
            alarm_id = (await _alarm_ids(pg_url))[0]
            assert await async_wait_until(lambda: len(watcher.received) == 1, WAIT)  # accepted
            assert not b.mqtt_connected
            acted = await b.act(alarm_id, Action.ACKNOWLEDGE, "kari", audit=())
            assert acted is not None
            assert await async_wait_until(lambda: len(watcher.received) == 2, WAIT), (
                watcher.received
            )
            topic, payload = watcher.received[1]
            assert topic == "alarmhub/v1/hr-1/receipts"
            assert orjson.loads(payload) == {"ref": "m0", "status": "handled", "alarm": alarm_id}
            # Through the outbox, marked sent by the owner; not twice.
            sent = "SELECT count(*) FROM outbox WHERE target = 'device' AND sent_at IS NOT NULL"
            assert await eventually(lambda: _at_least(pg_url, sent, 1))
            assert await count(pg_url, "SELECT count(*) FROM outbox WHERE target = 'device'") == 1
    finally:
        pub.close()
        watcher.close()
