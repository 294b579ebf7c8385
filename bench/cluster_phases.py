"""`make bench`'s cluster phase: PostgreSQL with 1, 2 and 3 instances, and the failover time.

Each run gets a scratch database on the local PostgreSQL (127.0.0.1:5432, trust
auth; `ALARMHUB_BENCH_PG_ADMIN_URL` overrides), created here and dropped WITH
(FORCE) at the end, and a fresh persistent session, as the SQLite phases do.

- *drain*: the same pre-queued mixed backlog as the SQLite throughput phase,
  drained by k `alarmhub run` processes sharing the database; one of them owns
  intake (issue 15's design (b)), so k > 1 measures what the standbys cost the
  owner (presence beats, the change feed), not k-fold intake.
- *failover*: two instances; a steady stream of presses from fresh pendants;
  kill -9 of the owner (its /readyz `role`) → the first alarm committed after the
  kill, which only a survivor can have committed.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import asyncpg
import orjson

from alarmhub.clock import SystemClock
from alarmhub.core.model import Device
from alarmhub.store.postgres.store import PostgresStore
from bench import harness, workload
from bench.harness import Hub, free_port

PG_ADMIN_URL = os.environ.get(
    "ALARMHUB_BENCH_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
FAILOVER_S = 3.0  # the lease's failover bound for the failover phase's instances


def create_database() -> str:
    name = f"alarmhub_bench_{uuid.uuid4().hex[:16]}"

    async def go() -> None:
        conn = await asyncpg.connect(PG_ADMIN_URL)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()

    asyncio.run(go())
    return f"{PG_ADMIN_URL.rpartition('/')[0]}/{name}"


def drop_database(url: str) -> None:
    async def go() -> None:
        conn = await asyncpg.connect(PG_ADMIN_URL)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[-1]}" WITH (FORCE)')
        finally:
            await conn.close()

    asyncio.run(go())


def register(url: str, devices: Sequence[Device]) -> None:
    async def go() -> None:
        store = await PostgresStore.open(url)
        try:
            now = SystemClock().now()
            for i in range(0, len(devices), harness.REGISTER_CHUNK):
                await store.register_devices(devices[i : i + harness.REGISTER_CHUNK], now, audit=())
        finally:
            await store.close()

    asyncio.run(go())


def _env(port: int, url: str, client_id: str, name: str, extra: dict[str, str]) -> dict[str, str]:
    env = harness.hub_env(port, Path("unused.db"), client_id, free_port(), **extra)
    env["ALARMHUB_DATABASE_URL"] = url
    env["ALARMHUB_INSTANCE_ID"] = name
    return env


def _role(hub: Hub) -> str | None:
    try:
        status, body = hub.get("/readyz", timeout=2.0)
    except OSError:
        return None
    answer = orjson.loads(body) if status == 200 else {}
    return str(answer["role"]) if answer.get("ready") else None


def _owner(hubs: Sequence[Hub], timeout_s: float) -> Hub:
    deadline = time.perf_counter() + timeout_s
    while time.perf_counter() < deadline:
        for hub in hubs:
            if _role(hub) == "owner":
                return hub
        time.sleep(0.05)
    raise TimeoutError(f"no owner after {timeout_s} s: {hubs[0].tail()}")


def _received(hubs: Sequence[Hub]) -> float:
    total = 0.0
    for hub in hubs:
        try:
            text = hub.metrics("alarmhub_messages_received_total")
        except OSError:
            continue
        total += harness.metric_sum(text, "alarmhub_messages_received_total")
    return total


def drain_once(
    port: int,
    work: Path,
    devices: Sequence[Device],
    items: Sequence[tuple[str, bytes]],
    tag: str,
    k: int,
    opts: Any,
) -> dict[str, Any]:
    """k instances on one scratch database drain the backlog; msgs/s while draining."""
    url = create_database()
    hubs: list[Hub] = []
    client_id = f"bench-pg{k}-{tag}"
    try:
        register(url, devices)
        # Standbys first, ready, then the backlog: the drain starts with the owner's term.
        harness.create_session(port, client_id, harness.subscriptions())
        harness.publish_all(port, items)
        for i in range(k):
            env = _env(port, url, client_id, f"bench-{i}", opts.hub_settings)
            hubs.append(Hub(env, work / f"pg{k}-{tag}-{i}.log"))
            hubs[-1].start()
        n = len(items)
        first: tuple[float, float] | None = None
        last = (0.0, 0.0)
        deadline = time.perf_counter() + opts.timeout_s
        while time.perf_counter() < deadline:
            count = _received(hubs)
            now = time.perf_counter()
            if count > 0 and first is None:
                first = (now, count)
            last = (now, count)
            if count >= n:
                break
            time.sleep(0.25 if first is not None else 0.05)
    finally:
        for hub in hubs:
            hub.stop()
        harness.drop_session(port, client_id)
        drop_database(url)
    if first is None or last[1] < n:
        return {"msgs_per_s": None, "committed": last[1], "error": "did not drain in time"}
    (t0, c0), (t1, c1) = first, last
    return {"msgs_per_s": (c1 - c0) / (t1 - t0) if t1 > t0 else None, "committed": c1}


def failover_once(port: int, work: Path, tag: str, opts: Any) -> dict[str, Any]:
    """Seconds from kill -9 of the owner to the first alarm a survivor commits."""
    url = create_database()
    presses = workload.press_devices(4000, prefix=f"fo{tag}")
    hubs: list[Hub] = []
    stop = threading.Event()
    try:
        register(url, presses)
        client_id = f"bench-fo-{tag}"
        extra = {**opts.hub_settings, "failover_s": str(FAILOVER_S)}
        for i in range(2):
            hubs.append(
                Hub(_env(port, url, client_id, f"fo-{i}", extra), work / f"fo-{tag}-{i}.log")
            )
            hubs[-1].start()
        for hub in hubs:
            hub.wait_ready(opts.timeout_s)
        owner = _owner(hubs, opts.timeout_s)
        feeder = threading.Thread(target=_feed, args=(port, presses, stop), daemon=True)
        feeder.start()
        _wait_alarms(url, 50, opts.timeout_s)
        assert owner.process is not None
        owner.process.send_signal(signal.SIGKILL)
        killed = time.perf_counter()
        owner.process.wait(30)
        base = _alarms(url)
        deadline = killed + opts.timeout_s
        while time.perf_counter() < deadline:
            if _alarms(url) > base:
                return {"failover_s": time.perf_counter() - killed}
            time.sleep(0.02)
        return {"failover_s": None, "error": "no alarm committed by a survivor in time"}
    finally:
        stop.set()
        for hub in hubs:
            hub.stop()
        drop_database(url)


def _feed(port: int, presses: Sequence[Device], stop: threading.Event) -> None:
    """200 presses/s, each from a fresh pendant (so each is a new alarm), until stopped."""
    client = harness._client(f"bench-fo-pub-{time.monotonic_ns()}")  # noqa: SLF001
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        now = workload._ts(SystemClock().now())  # noqa: SLF001
        for i, d in enumerate(presses):
            if stop.is_set():
                return
            body = {"id": f"fo-{d.id}", "ts": now, "type": "button.pressed"}
            client.publish(f"alarmhub/v1/{d.id}/events", orjson.dumps(body), qos=1)
            if i % 10 == 9:
                time.sleep(0.05)
    finally:
        client.disconnect()
        client.loop_stop()


def _alarms(url: str) -> int:
    async def go() -> int:
        conn = await asyncpg.connect(url)
        try:
            return int(await conn.fetchval("SELECT count(*) FROM alarms"))
        finally:
            await conn.close()

    return asyncio.run(go())


def _wait_alarms(url: str, n: int, timeout_s: float) -> None:
    deadline = time.perf_counter() + timeout_s
    while _alarms(url) < n:
        if time.perf_counter() > deadline:
            raise TimeoutError(f"fewer than {n} alarms after {timeout_s} s")
        time.sleep(0.05)


def latency_once(
    port: int, work: Path, devices: Sequence[Device], tag: str, opts: Any
) -> dict[str, Any]:
    """The latency phase (publish -> receipt at a fixed rate) on a scratch PostgreSQL."""
    from bench import phases  # noqa: PLC0415 - phases imports this module

    url = create_database()
    try:
        result: dict[str, Any] = phases.latency_once(
            port, work, devices, f"pg{tag}", opts, None, url
        )
        return result
    finally:
        drop_database(url)
