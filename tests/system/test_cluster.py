"""Several `alarmhub run` processes on one PostgreSQL and one Mosquitto (issue 15, section 4).

Real processes with distinct `ALARMHUB_INSTANCE_ID`s and the service's one
`ALARMHUB_MQTT_CLIENT_ID`, each serving HTTP on its own port. One is killed with
SIGKILL, or cut off from PostgreSQL through a TCP proxy the test controls, in
the middle of a burst. The verdicts are the database's rows, the survivors'
API answers and each instance's `/readyz` role, polled with generous ceilings;
how long anything took decides nothing.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
import pytest

from alarmhub.core.model import Device, DeviceKind
from alarmhub.dev.mosquitto import LocalBroker, free_port
from alarmhub.store.postgres.store import PostgresStore
from tests.support.helpers import REPO, Publisher, native, spawn_daemon
from tests.support.tcp_proxy import TcpProxy

pytestmark = [pytest.mark.broker, pytest.mark.postgres]

FAILOVER_S = 3.0  # the lease's ttl 1.5 s: short, but not flapping on a busy machine
WAIT = 180.0  # a ceiling that catches a hang, not a timing


@dataclass
class Instance:
    """One `alarmhub run` process, its HTTP port and its log."""

    name: str
    env: dict[str, str]
    log: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = spawn_daemon(
            {**self.env, "ALARMHUB_HTTP_LISTEN": f"127.0.0.1:{self.port}"}, self.log
        )

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def role(self, http: httpx.AsyncClient) -> str | None:
        """`owner`/`standby` from /readyz when it is ready, else None (down, unready, hung)."""
        try:
            answer = await http.get(f"{self.base}/readyz", timeout=5.0)
        except httpx.HTTPError:
            return None
        body = answer.json() if answer.status_code == 200 else {}
        return str(body["role"]) if body.get("ready") else None

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(30)

    def tail(self) -> str:
        return self.log.read_text()[-3000:] if self.log.exists() else ""


def daemon_env(db_url: str, broker: LocalBroker, client_id: str, name: str) -> dict[str, str]:
    return {
        "ALARMHUB_DATABASE_URL": db_url,
        "ALARMHUB_MQTT_URL": broker.url,
        "ALARMHUB_MQTT_CLIENT_ID": client_id,
        "ALARMHUB_INSTANCE_ID": name,
        "ALARMHUB_FAILOVER_S": str(FAILOVER_S),
        "ALARMHUB_MQTT_RECONNECT_MIN_S": "0.1",
        "ALARMHUB_MQTT_RECONNECT_MAX_S": "1.0",
    }


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
        await asyncio.sleep(0.2)
    return await check()


async def count(url: str, sql: str) -> int:
    return int(await value(url, sql) or 0)


async def at_least(url: str, sql: str, n: int) -> bool:
    return await count(url, sql) >= n


def api_token(db_url: str) -> str:
    """An admin user and a bearer token through the real CLI."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALARMHUB_")}
    env |= {"ALARMHUB_DATABASE_URL": db_url, "ALARMHUB_RULES": str(REPO / "config/rules.toml")}
    cli = [sys.executable, "-m", "alarmhub.cli"]
    made = subprocess.run(
        [*cli, "users", "create", "--name", "cluster-admin", "--role", "admin", "--password-stdin"],
        input="cluster-password-not-secret-6\n",
        env=env,
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
    )
    assert made.returncode == 0, made.stderr
    tok = subprocess.run(
        [*cli, "tokens", "create", "--user", "cluster-admin"],
        env=env,
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
    )
    assert tok.returncode == 0, tok.stderr
    return tok.stdout.strip().splitlines()[-1].strip()


async def same_queue(
    http: httpx.AsyncClient, instances: Sequence[Instance], token: str, n: int
) -> bool:
    """Whether every instance's API lists the same n alarms, states and revisions."""
    queues = [await queue(http, i, token) for i in instances]
    return len(queues[0]) == n and all(q == queues[0] for q in queues[1:])


async def queue(http: httpx.AsyncClient, inst: Instance, token: str) -> list[tuple[str, str, int]]:
    """Every alarm as this instance's API lists it: (id, state, rev), page by page."""
    got: list[tuple[str, str, int]] = []
    cursor: str | None = None
    while True:
        params: dict[str, str | int] = {"limit": 500} | ({"cursor": cursor} if cursor else {})
        answer = await http.get(
            f"{inst.base}/api/v1/alarms",
            params=params,
            headers={"Authorization": f"Bearer {token}"},
            timeout=30.0,
        )
        assert answer.status_code == 200, answer.text
        page = answer.json()
        got += [(a["id"], a["state"], a["rev"]) for a in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            return sorted(got)


def burst(
    devices: list[Device], n: int, presses: int, again: int, seed: int
) -> list[tuple[str, bytes]]:
    """`n` messages: the first `presses` devices press (the first `again` twice), the
    rest heartbeats spread over every device, shuffled. Every message id distinct."""
    now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    msgs = [native(d.id, f"p-{d.id}", "button.pressed", ts=now) for d in devices[:presses]]
    msgs += [native(d.id, f"p2-{d.id}", "button.pressed", ts=now) for d in devices[:again]]
    beats = n - len(msgs)
    msgs += [
        native(devices[i % len(devices)].id, f"h-{i}", "heartbeat", ts=now) for i in range(beats)
    ]
    random.Random(seed).shuffle(msgs)
    return msgs


async def the_owner(http: httpx.AsyncClient, instances: list[Instance]) -> Instance | None:
    """The one instance whose /readyz says `owner` while every other says `standby`."""
    roles = [await i.role(http) for i in instances]
    if roles.count("owner") == 1 and roles.count("standby") == len(instances) - 1:
        return instances[roles.index("owner")]
    return None


async def assert_stored_once(url: str, sent: int, alarmed: set[str]) -> None:
    """Each message once; one alarm per pressing device and kind; each step at most once."""
    assert await count(url, "SELECT count(*) FROM inbox") == sent
    assert await count(url, "SELECT count(DISTINCT msg_id) FROM inbox") == sent
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch("SELECT device_id, kind FROM alarms")
        assert len(rows) == len(alarmed)
        assert {r["device_id"] for r in rows} == alarmed
        assert len({(r["device_id"], r["kind"]) for r in rows}) == len(alarmed)
        raised = await conn.fetchval("SELECT count(*) FROM timeline WHERE type = 'raised'")
        assert raised == len(alarmed)
        # Every step 1 (after_s = 0) fired; each step once (the escalations' primary key),
        # and each alarm's 'escalated' timeline entries match its escalation rows exactly.
        fired = await conn.fetchval("SELECT count(DISTINCT alarm_id) FROM escalations")
        assert fired == len(alarmed)
        mismatched = await conn.fetchval(
            "SELECT count(*) FROM alarms a WHERE "
            "(SELECT count(*) FROM escalations e WHERE e.alarm_id = a.id) <> "
            "(SELECT count(*) FROM timeline t WHERE t.alarm_id = a.id AND t.type = 'escalated')"
        )
        assert mismatched == 0
    finally:
        await conn.close()


async def test_three_instances_the_owner_killed_mid_burst_nothing_lost_or_doubled(
    tmp_path: Path, broker: LocalBroker, client_id: str, pg_url: str
) -> None:
    """kill -9 of the owner among three, mid-burst of 20,000 messages from 5,000 devices.

    A survivor takes the lease and the service's MQTT session; the broker gives it
    what the dead owner had not acknowledged and the inbox's unique key drops
    what it had. Every message is stored once, every pressing device has one alarm,
    every escalation step fired once, and both survivors' APIs list the same
    queue. The killed instance, started again under its own id, rejoins as a
    standby and nothing is duplicated.
    """
    n, presses, again = 20_000, 1_000, 200
    devices = [Device(f"cl-{i:05d}", DeviceKind.SAFETY_ALARM, "0301") for i in range(5_000)]
    await register(pg_url, devices)
    token = await asyncio.to_thread(api_token, pg_url)
    msgs = burst(devices, n, presses, again, seed=15)
    alarmed = {d.id for d in devices[:presses]}
    names = ("inst-a", "inst-b", "inst-c")
    cluster = [
        Instance(x, daemon_env(pg_url, broker, client_id, x), tmp_path / f"{x}.log") for x in names
    ]
    pub = Publisher(broker.port, client_id=f"{client_id}-pub")
    try:
        async with httpx.AsyncClient() as http:
            for inst in cluster:
                inst.start()
            holder: list[Instance | None] = [None]

            async def one_owner() -> bool:
                holder[0] = await the_owner(http, cluster)
                return holder[0] is not None

            assert await eventually(one_owner), [i.tail() for i in cluster]
            owner = holder[0]
            assert owner is not None
            # Its subscription is in place before the burst (a new session's SUBACK).
            assert await eventually(lambda: _in_log(owner, "mqtt.connected")), owner.tail()
            publishing = asyncio.create_task(asyncio.to_thread(pub.publish_many, msgs))
            assert await eventually(
                lambda: at_least(pg_url, "SELECT count(*) FROM inbox", n // 10)
            ), owner.tail()
            owner.kill()
            stored_at_kill = await count(pg_url, "SELECT count(*) FROM inbox")
            survivors = [i for i in cluster if i is not owner]
            assert await eventually(one_owner_among(http, survivors)), [i.tail() for i in survivors]
            assert await publishing == n
            assert await eventually(lambda: at_least(pg_url, "SELECT count(*) FROM inbox", n)), [
                i.tail() for i in survivors
            ]
            assert await eventually(
                lambda: at_least(
                    pg_url, "SELECT count(DISTINCT alarm_id) FROM escalations", presses
                )
            )
            assert stored_at_kill < n, "the kill came after the whole burst: it proved nothing"
            await assert_stored_once(pg_url, n, alarmed)
            # Two survivors, one queue: the same alarms, states and revisions through each.
            # Read again until two reads agree: the survivor's escalator keeps firing the
            # policies' later steps while the pages are read, so one read of each, one
            # after the other, can straddle a step (seen under load: an alarm at
            # revision 1 through the first, 2 through the second).
            assert await eventually(lambda: same_queue(http, survivors, token, presses))

            # The killed instance comes back under its own id: a standby, nothing doubled.
            owner.start()
            assert await eventually(lambda: _is(owner.role(http), "standby")), owner.tail()
            assert await eventually(one_owner_among(http, cluster))
            assert await eventually(lambda: same_queue(http, [owner, survivors[0]], token, presses))
            await assert_stored_once(pg_url, n, alarmed)
    finally:
        pub.close()
        for inst in cluster:
            inst.stop()


# In the slow set (`make test-all`) since one full run with a busy core: everything up to
# the heal held (A stopped acknowledging, B took over, 6,000 messages stored once), but A
# was not ready again within 180 s after the proxy was restored. The cause, a standby's
# readiness that only commits could set again, is fixed (Presence follows the heartbeat;
# docs/scaling.md); under load 8-9 the test can still fail where B's own broker connection
# drops with the 3 s failover's 2 s keepalive. `make test` keeps the same cut, with the
# heal, in tests/daemon/test_instances.py (two instances in one process, a TCP proxy).
@pytest.mark.slow
async def test_the_owner_cut_from_postgresql_stops_acknowledging_and_the_other_takes_over(
    tmp_path: Path, broker: LocalBroker, client_id: str, pg_url: str
) -> None:
    """A network cut between the owning process and PostgreSQL, mid-burst.

    Instance A reaches the database only through a TCP proxy the test controls; B
    directly. After the cut A can commit nothing, so it acknowledges nothing more:
    every receipt sent before B took over is for a message already stored. A
    gives up intake (its `/readyz` says standby or not ready), B takes over, and
    the whole burst is stored once.
    """
    n_dev, n, presses = 2_000, 6_000, 1_000
    devices = [Device(f"cut-{i:05d}", DeviceKind.SAFETY_ALARM, "0301") for i in range(n_dev)]
    await register(pg_url, devices)
    msgs = burst(devices, n, presses, 0, seed=16)
    alarmed = {d.id for d in devices[:presses]}
    pub = Publisher(broker.port, client_id=f"{client_id}-pub")
    watcher = Publisher(broker.port, client_id=f"{client_id}-receipts")
    watcher.subscribe("alarmhub/v1/+/receipts")
    a: Instance | None = None
    b: Instance | None = None
    try:
        async with TcpProxy(5432) as proxy, httpx.AsyncClient() as http:
            cut_url = proxy.url(pg_url.rsplit("/", 1)[-1])
            a = Instance(
                "inst-a", daemon_env(cut_url, broker, client_id, "inst-a"), tmp_path / "a.log"
            )
            b = Instance(
                "inst-b", daemon_env(pg_url, broker, client_id, "inst-b"), tmp_path / "b.log"
            )
            a.start()
            assert await eventually(lambda: _is(a.role(http), "owner")), a.tail()
            b.start()
            assert await eventually(lambda: _is(b.role(http), "standby")), b.tail()
            assert await eventually(lambda: _in_log(a, "mqtt.connected")), a.tail()
            publishing = asyncio.create_task(asyncio.to_thread(pub.publish_many, msgs))
            assert await eventually(
                lambda: at_least(pg_url, "SELECT count(*) FROM inbox", n // 10)
            ), a.tail()
            proxy.cut()
            assert await eventually(lambda: _is(b.role(http), "owner")), b.tail()
            # A receipt leaves only after its message's commit: every receipt heard by
            # the takeover (A's, and B's first) is for a stored message, asked at once.
            before_takeover = {orjson.loads(p)["ref"] for _t, p in list(watcher.received)}
            stored = {
                r["msg_id"]
                for r in await _fetch(
                    pg_url, "SELECT msg_id FROM inbox WHERE msg_id = ANY($1)", list(before_takeover)
                )
            }
            assert before_takeover, "A acknowledged nothing before the cut: the test proved nothing"
            assert before_takeover <= stored
            assert await a.role(http) in (None, "standby"), a.tail()
            # A closed its MQTT client when it lost the lease: the broker never took the
            # service's session back from B (a client left open would reconnect with the
            # same client id while A's term waits on a database call through the cut).
            assert await _in_log(a, "owner.term_ending"), a.tail()
            assert await publishing == n
            assert await eventually(lambda: at_least(pg_url, "SELECT count(*) FROM inbox", n))
            assert await eventually(
                lambda: at_least(
                    pg_url, "SELECT count(DISTINCT alarm_id) FROM escalations", presses
                )
            )
            await assert_stored_once(pg_url, n, alarmed)
            assert not await _in_log(b, "mqtt.disconnected"), b.tail()
            proxy.restore()
            # Healed: A is a standby again and B still owns; nothing doubled.
            assert await eventually(lambda: _is(a.role(http), "standby")), a.tail()
            assert await eventually(lambda: _is(b.role(http), "owner")), b.tail()
            holder = "SELECT holder FROM leases WHERE name = 'intake' AND expires_at > now()"
            assert await value(pg_url, holder) == "inst-b"
            await assert_stored_once(pg_url, n, alarmed)
            # Stop A while the proxy is still up (it reaches the database only through it),
            # and let the proxy's handlers see its connections end before the proxy closes.
            a.stop()
            await asyncio.sleep(1.0)
    finally:
        pub.close()
        watcher.close()
        for inst in (a, b):
            if inst is not None:
                inst.stop()


def one_owner_among(
    http: httpx.AsyncClient, instances: list[Instance]
) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return await the_owner(http, instances) is not None

    return check


async def _in_log(inst: Instance, event: str) -> bool:
    return inst.log.exists() and event in inst.log.read_text()


async def _is(got: Awaitable[object], expected: object) -> bool:
    return await got == expected


async def _fetch(url: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(url)
    try:
        return list(await conn.fetch(sql, *args))
    finally:
        await conn.close()
