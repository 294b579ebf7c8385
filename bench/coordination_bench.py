"""Figures for docs/scaling.md "Intake and ownership" (not a test; needs the local PostgreSQL).

    .venv/bin/python bench/coordination_bench.py [failover_s ...]

For each failover time (default: 3 and 15 s), three runs of each:
- crash: the owner stops without releasing at a random point of its renewal
  cycle → seconds until the standby holds the lease;
- cut: the owner's connection to PostgreSQL goes silent (a TCP proxy) → seconds
  until it declares itself not-owner, until the standby holds the lease, and
  the gap between the two (how long nobody acts; it must be positive).
Then, once: LISTEN/NOTIFY latency from commit to the listener's callback, and
the cost of the fence in a one-row transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import asyncpg

from alarmhub.clock import SystemClock
from alarmhub.core.cluster import LeaseTiming
from alarmhub.daemon.leadership import Leadership, LossReason
from alarmhub.store.cluster import Fence
from alarmhub.store.postgres import leases
from alarmhub.store.postgres.coordination import PgCoordination
from alarmhub.store.postgres.migrations import migrate
from alarmhub.store.postgres.notify import PgAlarmChangeFeed, notify_changed
from tests.support.postgres import scratch_database
from tests.support.tcp_proxy import TcpProxy


class Recorder:
    def __init__(self) -> None:
        self.acquired: list[float] = []
        self.lost: list[float] = []

    async def on_acquired(self, _f: Fence) -> None:
        self.acquired.append(time.monotonic())

    async def on_lost(self, _f: Fence, _r: LossReason) -> None:
        self.lost.append(time.monotonic())


async def _wait(check: Callable[[], bool], limit_s: float = 120.0) -> None:
    end = time.monotonic() + limit_s
    while not check():
        if time.monotonic() > end:
            raise TimeoutError
        await asyncio.sleep(0.005)


async def _one(
    url: str, owner_url: str, timing: LeaseTiming, proxy: TcpProxy | None
) -> dict[str, Any]:
    ra, rb = Recorder(), Recorder()
    ca, cb = await PgCoordination.open(owner_url), await PgCoordination.open(url)
    a = Leadership(ca, SystemClock(), "a", timing, on_acquired=ra.on_acquired, on_lost=ra.on_lost)
    b = Leadership(cb, SystemClock(), "b", timing, on_acquired=rb.on_acquired, on_lost=rb.on_lost)
    ta = asyncio.ensure_future(a.run())
    await _wait(lambda: a.is_owner)
    tb = asyncio.ensure_future(b.run())
    await asyncio.sleep(timing.ttl_s + random.uniform(0, timing.renew_s))
    t0 = time.monotonic()
    if proxy is None:
        ta.cancel()
    else:
        proxy.cut()
    await _wait(lambda: b.is_owner)
    out = {"takeover_s": rb.acquired[0] - t0}
    if proxy is not None:
        out["stopped_s"] = ra.lost[0] - t0
        out["gap_s"] = rb.acquired[0] - ra.lost[0]
        proxy.restore()
    for t in (ta, tb):
        t.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await t
    await ca.close(1.0)
    await cb.close(1.0)
    return out


async def _notify_latency(url: str, n: int = 300) -> list[float]:
    sent: dict[str, float] = {}
    got: list[float] = []

    async def on_changed(ids: Sequence[str]) -> None:
        got.extend(time.monotonic() - sent[i] for i in ids)

    async def on_resync() -> None:
        return None

    feed = PgAlarmChangeFeed(url)
    task = asyncio.ensure_future(feed.listen(on_changed, on_resync))
    await _wait(feed.connected.is_set)
    conn = await asyncpg.connect(url)
    for k in range(n):
        async with conn.transaction():
            await notify_changed(conn, [f"a{k}"])
            sent[f"a{k}"] = time.monotonic()  # stamped just before the commit
        await asyncio.sleep(0.005)
    await _wait(lambda: len(got) == n)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await conn.close()
    return got


async def _fence_cost(url: str, n: int = 2000) -> tuple[float, float]:
    conn = await asyncpg.connect(url)
    await conn.execute("CREATE TABLE IF NOT EXISTS t (id bigserial PRIMARY KEY, v int)")
    fence = await leases.acquire(conn, "bench", "me", 3600)
    assert fence is not None
    results = []
    for fenced in (False, True, False, True):
        t = time.perf_counter()
        for _ in range(n):
            async with conn.transaction():
                if fenced:
                    await leases.check_fence(conn, fence)
                await conn.execute("INSERT INTO t (v) VALUES (1)")
        results.append((fenced, (time.perf_counter() - t) / n * 1e6))
    await conn.close()
    plain = statistics.median(us for f, us in results if not f)
    with_fence = statistics.median(us for f, us in results if f)
    return plain, with_fence


async def main(failovers: list[float]) -> None:
    async with scratch_database("alarmhub_bench") as url:
        conn = await asyncpg.connect(url)
        await migrate(conn)
        await conn.close()
        port = int(url.rsplit(":", 1)[1].split("/", 1)[0])
        for failover in failovers:
            timing = LeaseTiming.for_failover(failover)
            crash = [await _one(url, url, timing, None) for _ in range(3)]
            async with TcpProxy(port) as proxy:
                cut = [
                    await _one(url, proxy.url(url.rsplit("/", 1)[1]), timing, proxy)
                    for _ in range(3)
                ]
            print(f"failover_s={failover:g} ttl={timing.ttl_s:g} bound={timing.takeover_bound_s:g}")
            print("  crash takeover_s", [round(r["takeover_s"], 2) for r in crash])
            for key in ("stopped_s", "takeover_s", "gap_s"):
                print(f"  cut {key}", [round(r[key], 2) for r in cut])
        lat = sorted(await _notify_latency(url))
        print(
            f"notify latency ms: p50={lat[len(lat) // 2] * 1e3:.2f} "
            f"p99={lat[int(len(lat) * 0.99)] * 1e3:.2f} max={lat[-1] * 1e3:.2f}"
        )
        plain, fenced = await _fence_cost(url)
        print(f"one-row transaction us: plain={plain:.0f} fenced={fenced:.0f}")


if __name__ == "__main__":
    asyncio.run(main([float(a) for a in sys.argv[1:]] or [3.0, 15.0]))
