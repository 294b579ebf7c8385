"""Operators see one queue across instances (issue 15 section 2): LISTEN/NOTIFY.

Two AlarmHub instances in this process share one PostgreSQL database and one
Mosquitto, each serving HTTP on a port of its own. Until ownership is wired in,
both take intake (distinct client ids); the inbox's unique key and the alarm ids
derived from the message make the second instance's copy of a press a no-op. What
is under test is the other direction: a change made through one instance's API
reaches the other instance's memory and live stream through the change feed.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import statistics
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
import pytest

from alarmhub.app import AlarmHub
from alarmhub.core.model import Alarm, AlarmState, Device, DeviceKind
from alarmhub.core.people import Role
from alarmhub.daemon.follower import ChangeFollower
from alarmhub.dev.mosquitto import LocalBroker
from alarmhub.store.accounts import hash_password
from alarmhub.store.postgres.directory import PostgresDirectory
from alarmhub.store.postgres.notify import PgAlarmChangeFeed
from alarmhub.store.postgres.store import PostgresStore
from tests.support.helpers import Publisher, async_wait_until, hub_settings, native
from tests.support.postgres import admin

pytestmark = [pytest.mark.broker, pytest.mark.postgres]

WAIT = 60.0  # a ceiling for what must happen, never a measured figure
STREAM = "/api/v1/alarms/stream"
OPERATORS = ("op-a", "op-b")


@dataclass
class Node:
    hub: AlarmHub
    base: str

    def client(self, token: str) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {token}"}
        return httpx.AsyncClient(base_url=self.base, headers=headers, timeout=WAIT)

    @property
    def feed(self) -> PgAlarmChangeFeed:
        feed = self.hub.stores.changes
        assert isinstance(feed, PgAlarmChangeFeed)
        return feed

    @property
    def follower(self) -> ChangeFollower:
        assert self.hub.follower is not None
        return self.hub.follower

    def alarm(self, alarm_id: str) -> Alarm | None:
        return self.hub.state.alarms.get(alarm_id)


@dataclass
class Pair:
    a: Node
    b: Node
    pub: Publisher
    url: str
    tokens: dict[str, str]
    a_role: str  # the login role A connects as (`refuse_logins`)


@dataclass
class Events:
    """Every event of one open stream, with the loop time it arrived, read in the background."""

    seen: list[tuple[float, dict[str, Any]]] = field(default_factory=list)

    def find(self, check: Callable[[dict[str, Any]], bool]) -> dict[str, Any] | None:
        return next((data for _, data in self.seen if check(data)), None)

    def arrival(self, check: Callable[[dict[str, Any]], bool]) -> float | None:
        return next((at for at, data in self.seen if check(data)), None)


async def _prepare(url: str, devices: list[Device]) -> dict[str, str]:
    """The schema, the devices and two operators of 0301 with an API token each."""
    store = await PostgresStore.open(url)
    try:
        now = datetime.now(UTC)
        await store.register_devices(devices, now, audit=())
        directory = PostgresDirectory(store.pool)
        secret = hash_password("correct horse battery staple")
        tokens = {}
        for name in OPERATORS:
            await directory.create_user(name, Role.OPERATOR, ["0301"], secret, now, ())
            tokens[name] = await directory.create_token(name, now, None, ())
        return tokens
    finally:
        await store.close()


@contextlib.asynccontextmanager
async def login_role(url: str) -> AsyncIterator[tuple[str, str]]:
    """A login role of this test's own and `url` as that role; dropped at the end.

    Instance A connects as it, so the test can refuse A's new connections alone
    (`ALTER ROLE … NOLOGIN`) while B keeps making its own. Roles are the server's,
    not the database's: the name is unique and the role is dropped, with anything
    it came to own in the test's database, whatever the test's outcome.
    """
    role = f"alarmhub_trole_{uuid.uuid4().hex[:16]}"
    await admin(f'CREATE ROLE "{role}" LOGIN SUPERUSER')
    try:
        base, _, rest = url.partition("://")
        yield role, f"{base}://{role}@{rest.partition('@')[2]}"
    finally:
        await admin(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE usename = $1",
            role,
        )
        # The database may be gone already (a test stopped by its timeout): then the
        # role owns nothing, and it is dropped all the same.
        with contextlib.suppress(OSError, asyncpg.PostgresError):
            conn = await asyncpg.connect(url)
            try:
                await conn.execute(f'REASSIGN OWNED BY "{role}" TO CURRENT_USER')
                await conn.execute(f'DROP OWNED BY "{role}"')
            finally:
                await conn.close()
        await admin(f'DROP ROLE IF EXISTS "{role}"')


async def refuse_logins(role: str, refuse: bool) -> None:
    """Refuse (or allow again) new connections of `role`; those it holds stay open."""
    await admin(f'ALTER ROLE "{role}" {"NOLOGIN" if refuse else "LOGIN"}')


@contextlib.asynccontextmanager
async def two_instances(
    tmp_path: Path, broker: LocalBroker, client_id: str, url: str, devices: int = 2
) -> AsyncIterator[Pair]:
    tokens = await _prepare(
        url, [Device(f"pend-{i}", DeviceKind.SAFETY_ALARM, "0301") for i in range(devices)]
    )
    pub = Publisher(broker.port, client_id=f"{client_id}-pub")

    def settings(name: str, database_url: str) -> Any:
        (tmp_path / name).mkdir()
        return hub_settings(
            tmp_path / name,
            broker.url,
            client_id,  # the service's one identity: only the lease's owner connects
            database_url=database_url,
            instance_id=f"inst-{name}",
        )

    try:
        async with (
            login_role(url) as (role, url_a),
            AlarmHub(settings("a", url_a)) as a,
            AlarmHub(settings("b", url)) as b,
        ):
            nodes = [Node(h, f"http://127.0.0.1:{h.http_port}") for h in (a, b)]
            # One holds the intake lease and takes the messages; both serve operators.
            [owner] = [n.hub.ingest for n in nodes if n.hub.ingest is not None]
            assert await owner.wait_connected(WAIT)
            for node in nodes:
                # Listening, and the first resync done: from here on nothing is missed.
                assert await async_wait_until(functools.partial(resynced, node), WAIT)
            yield Pair(nodes[0], nodes[1], pub, url, tokens, role)
    finally:
        pub.close()


@contextlib.asynccontextmanager
async def stream(node: Node, token: str) -> AsyncIterator[Events]:
    """An operator's live stream on `node`, read into an :class:`Events` until the block ends."""
    events = Events()
    async with node.client(token) as c, c.stream("GET", STREAM) as resp:
        assert resp.status_code == 200

        async def read() -> None:
            loop = asyncio.get_running_loop()
            event: dict[str, Any] = {}
            async for line in resp.aiter_lines():
                if line.startswith(":"):
                    continue
                if line == "":
                    if event.get("event") == "alarm":
                        events.seen.append((loop.time(), event["data"]))
                    event = {}
                    continue
                key, _, value = line.partition(": ")
                event[key] = orjson.loads(value) if key == "data" else value

        reader = asyncio.ensure_future(read())
        try:
            yield events
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, httpx.HTTPError):
                await reader


def resynced(node: Node) -> bool:
    return node.follower.resyncs >= 1


def at_rev(node: Node, alarm_id: str, rev: int) -> bool:
    held = node.alarm(alarm_id)
    return held is not None and held.rev == rev


def arrived_on(events: Events, check: Callable[[dict[str, Any]], bool]) -> bool:
    return events.arrival(check) is not None


def shows(alarm_id: str, state: AlarmState) -> Callable[[dict[str, Any]], bool]:
    return lambda d: d["id"] == alarm_id and d["state"] == state.value


async def raise_alarm(pair: Pair, events: Events, device: str, msg_id: str) -> str:
    """Press once; the alarm's id as A's stream shows it, once both instances hold it."""
    pair.pub.publish(*native(device, msg_id, "button.pressed"))

    def raised() -> dict[str, Any] | None:
        return events.find(lambda d: d["device_id"] == device)

    assert await async_wait_until(lambda: raised() is not None, WAIT)
    data = raised()
    assert data is not None
    alarm_id = str(data["id"])
    assert await async_wait_until(
        lambda: pair.a.alarm(alarm_id) is not None and pair.b.alarm(alarm_id) is not None, WAIT
    )
    return alarm_id


async def stored(url: str, alarm_id: str) -> tuple[str, str | None, int]:
    """The alarm's state, acknowledger and revision as the database holds them."""
    conn = await asyncpg.connect(url)
    try:
        sql = "SELECT state, acknowledged_by, rev FROM alarms WHERE id = $1"
        row = await conn.fetchrow(sql, alarm_id)
    finally:
        await conn.close()
    assert row is not None
    return (row[0], row[1], row[2])


async def test_an_acknowledgement_through_b_appears_on_the_stream_of_an_operator_on_a(
    tmp_path: Path, broker: LocalBroker, client_id: str, pg_url: str
) -> None:
    async with (
        two_instances(tmp_path, broker, client_id, pg_url) as pair,
        stream(pair.a, pair.tokens["op-a"]) as on_a,
    ):
        b_from = pair.b.hub.live.seq  # B's change number before the press (as a list page's)
        alarm_id = await raise_alarm(pair, on_a, "pend-0", "m0")
        async with pair.b.client(pair.tokens["op-b"]) as b:
            r = await b.post(f"/api/v1/alarms/{alarm_id}/acknowledge")
        assert r.status_code == 200, r.text
        # Only the change feed can bring it to A: A takes no action of B's any other way.
        assert await async_wait_until(
            lambda: on_a.find(shows(alarm_id, AlarmState.ACKNOWLEDGED)) is not None, WAIT
        )
        event = on_a.find(shows(alarm_id, AlarmState.ACKNOWLEDGED))
        assert event is not None
        assert event["acknowledged_by"] == "op-b"
        # A's memory is at the stored revision: its next write of the alarm is not stale.
        in_a = pair.a.alarm(alarm_id)
        assert in_a is not None
        assert in_a.state is AlarmState.ACKNOWLEDGED
        assert await stored(pg_url, alarm_id) == ("acknowledged", "op-b", in_a.rev)
        # And it goes on from there: A resolves it, B's stream would show it the same way.
        async with pair.a.client(pair.tokens["op-a"]) as a:
            r = await a.post(f"/api/v1/alarms/{alarm_id}/resolve", json={"outcome": "helped"})
        assert r.status_code == 200, r.text
        assert await async_wait_until(lambda: pair.b.alarm(alarm_id) is None, WAIT)
        # B heard its own acknowledgement back before A's resolution (commit order):
        # its revision was in memory already, so B showed it once, not twice.
        on_b = pair.b.hub.live.missed_since(b_from)
        assert on_b is not None
        states = [c.data["state"] for c in on_b if c.data.get("id") == alarm_id]
        assert states.count("acknowledged") == 1, states
        assert states[-1] == "resolved"


async def test_two_operators_on_two_instances_acknowledging_one_alarm_get_one_200_and_one_409(
    tmp_path: Path, broker: LocalBroker, client_id: str, pg_url: str
) -> None:
    async with (
        two_instances(tmp_path, broker, client_id, pg_url) as pair,
        stream(pair.a, pair.tokens["op-a"]) as on_a,
        pair.a.client(pair.tokens["op-a"]) as a,
        pair.b.client(pair.tokens["op-b"]) as b,
    ):
        alarm_id = await raise_alarm(pair, on_a, "pend-0", "m0")
        path = f"/api/v1/alarms/{alarm_id}/acknowledge"
        ra, rb = await asyncio.gather(a.post(path), b.post(path))
        assert sorted([ra.status_code, rb.status_code]) == [200, 409], (ra.text, rb.text)
        winner, loser = ("op-a", rb) if ra.status_code == 200 else ("op-b", ra)
        assert loser.json()["error"]["code"] == "already_acknowledged"
        state, by, rev = await stored(pg_url, alarm_id)
        assert (state, by) == ("acknowledged", winner)
        # Both instances end at what the database holds, whoever lost.
        for node in (pair.a, pair.b):
            assert await async_wait_until(functools.partial(at_rev, node, alarm_id, rev), WAIT)
            held = node.alarm(alarm_id)
            assert held is not None
            assert held.acknowledged_by == winner


async def test_a_change_made_while_the_listener_was_cut_off_is_shown_after_its_resync(
    tmp_path: Path, broker: LocalBroker, client_id: str, pg_url: str
) -> None:
    """The notification of a change made while A's listener is away is lost; the resync is not.

    A's new connections are refused while its listener is killed, so it cannot be
    back before B's changes commit: they are announced to nobody on A's side. B
    connects as another role and works on as usual.
    """
    async with (
        two_instances(tmp_path, broker, client_id, pg_url) as pair,
        stream(pair.a, pair.tokens["op-a"]) as on_a,
        pair.b.client(pair.tokens["op-b"]) as b,
    ):
        acked = await raise_alarm(pair, on_a, "pend-0", "m0")
        resolved = await raise_alarm(pair, on_a, "pend-1", "m1")
        resyncs = pair.a.follower.resyncs
        pid = pair.a.feed.backend_pid
        assert pid is not None
        try:
            await refuse_logins(pair.a_role, refuse=True)
            assert await admin("SELECT pg_terminate_backend($1)", pid) is True
            assert await async_wait_until(lambda: not pair.a.feed.connected.is_set(), WAIT)
            r = await b.post(f"/api/v1/alarms/{acked}/acknowledge")
            assert r.status_code == 200, r.text
            r = await b.post(f"/api/v1/alarms/{resolved}/resolve", json={"outcome": "helped"})
            assert r.status_code == 200, r.text
            # A heard nothing: its listener is away and cannot come back yet.
            assert not pair.a.feed.connected.is_set()
            held = pair.a.alarm(acked)
            assert held is not None
            assert held.state is AlarmState.OPEN
            assert pair.a.alarm(resolved) is not None
        finally:
            await refuse_logins(pair.a_role, refuse=False)
        # Back: the resync re-reads the queue, and A shows both changes.
        assert await async_wait_until(lambda: pair.a.follower.resyncs > resyncs, WAIT)
        assert await async_wait_until(
            lambda: (
                on_a.find(shows(acked, AlarmState.ACKNOWLEDGED)) is not None
                and on_a.find(shows(resolved, AlarmState.RESOLVED)) is not None
            ),
            WAIT,
        )
        held = pair.a.alarm(acked)
        assert held is not None
        assert held.state is AlarmState.ACKNOWLEDGED
        assert pair.a.alarm(resolved) is None  # out of A's queue, as it is out of the database's


@pytest.mark.slow
@pytest.mark.parametrize("presses_per_s", [0, 200])
async def test_measure_acknowledgement_through_b_to_the_event_on_a(
    tmp_path: Path, broker: LocalBroker, client_id: str, pg_url: str, presses_per_s: int
) -> None:
    """The figure of docs/scaling.md: B's 200 → the event on A's stream, over 50 acks.

    Idle, and while other devices' presses arrive at `presses_per_s` (each a new
    alarm, announced and followed like the acknowledgements). Printed, not asserted
    (a test's verdict never depends on speed); what is asserted is that every
    acknowledgement arrives.
    """
    count, spare = 50, 3000
    stop = threading.Event()

    def flood() -> int:
        pub = Publisher(broker.port, client_id=f"{client_id}-load")
        sent = 0
        try:
            while presses_per_s and not stop.is_set() and sent < spare:
                pub.client.publish(*native(f"pend-{count + sent}", "p", "button.pressed"), qos=1)
                sent += 1
                time.sleep(1 / presses_per_s)
        finally:
            pub.close()
        return sent

    async with (
        two_instances(tmp_path, broker, client_id, pg_url, devices=count + spare) as pair,
        stream(pair.a, pair.tokens["op-a"]) as on_a,
        pair.b.client(pair.tokens["op-b"]) as b,
    ):
        ids = [await raise_alarm(pair, on_a, f"pend-{i}", f"m{i}") for i in range(count)]
        load = asyncio.ensure_future(asyncio.to_thread(flood))
        loop = asyncio.get_running_loop()
        after_200: list[float] = []
        after_sent: list[float] = []
        try:
            for alarm_id in ids:
                sent = loop.time()
                r = await b.post(f"/api/v1/alarms/{alarm_id}/acknowledge")
                answered = loop.time()
                assert r.status_code == 200, r.text
                check = shows(alarm_id, AlarmState.ACKNOWLEDGED)
                assert await async_wait_until(functools.partial(arrived_on, on_a, check), WAIT)
                arrived = on_a.arrival(check)
                assert arrived is not None
                after_200.append(arrived - answered)
                after_sent.append(arrived - sent)
        finally:
            stop.set()
            presses = await load

    def figures(xs: list[float]) -> str:
        ms = sorted(x * 1000 for x in xs)
        p99 = ms[min(len(ms) - 1, round(0.99 * (len(ms) - 1)))]
        return f"median {statistics.median(ms):.1f} ms, p99 {p99:.1f} ms, max {ms[-1]:.1f} ms"

    print(f"\n{count} acks, {presses} presses at {presses_per_s}/s meanwhile")
    print(f"B's 200 -> A's event: {figures(after_200)}")
    print(f"B's request sent -> A's event: {figures(after_sent)}")
