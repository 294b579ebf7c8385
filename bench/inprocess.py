"""Where a batch's CPU goes, without the broker: `python -m bench.inprocess storm|rate`.

The phases of `python -m bench` measure the daemon from outside, against a real broker;
their figures move by 10-20 % between runs here, so a change of a few per cent takes many
interleaved pairs to see. This runs the same code in one process instead: an AlarmHub
whose broker is unreachable, and `Ingest.run` over a source of our own (the
`BatchSource` MQTT implements), so that each figure is CPU time read per thread from
/proc, not a rate against a wall clock. It is for A/B work on the ingest path; the
issue's targets stay the bench's.

- `storm`: N pendants each raise one new alarm, in batches of the daemon's `max_batch`
  handed over at once (a broker backlog).
- `rate`: the bench's mix at `--rate` messages/s, arriving in bursts of `--burst` (the
  broker's Nagle delivers ~8 at a time at 2,000 msg/s, docs/performance.md, eleventh
  part) and coalesced as the daemon does. Per batch and per message, so the fixed cost
  of a batch shows: fit two runs with different bursts.

Each prints one JSON line last: the loop's and the other threads' CPU per message and
per batch, and the event loop's turns per batch.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any, cast

from alarmhub.app import AlarmHub
from alarmhub.clock import SystemClock
from alarmhub.core.model import RawMessage
from alarmhub.mqtt.client import Delivery
from alarmhub.observability.logs import configure_logging
from alarmhub.settings import load_settings
from bench import harness, workload

REPO = Path(__file__).resolve().parent.parent


class FedSource:
    """A BatchSource fed from a thread: batches as MqttIngest.batches makes them.

    `batches` is that method's loop, copied on purpose: the figures are worth something
    only if batches form here as they do in the daemon (the coalescing delay, a wake-up of
    the loop only for a message that finds it waiting). A change there belongs here too.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._pending: collections.deque[Delivery] = collections.deque()
        self._wakeup = asyncio.Event()
        self._waiting = False
        self.settled = 0
        self.receipts = 0
        self._settled_more = asyncio.Event()

    def put(self, deliveries: Sequence[Delivery]) -> None:
        """From the feeding thread: the loop is woken only if it waits for a message."""
        self._pending.extend(deliveries)
        if self._waiting:
            self._waiting = False
            self._loop.call_soon_threadsafe(self._wakeup.set)

    async def batches(self, max_batch: int, coalesce_s: float) -> AsyncIterator[list[Delivery]]:
        pending = self._pending
        while True:
            if not pending:
                self._wakeup.clear()
                self._waiting = True
                if not pending:
                    await self._wakeup.wait()
                self._waiting = False
                if not pending:
                    continue
                if coalesce_s > 0 and len(pending) < max_batch:
                    await asyncio.sleep(coalesce_s)
            batch: list[Delivery] = []
            while pending and len(batch) < max_batch:
                batch.append(pending.popleft())
            if batch:
                yield batch

    async def all_settled(self, n: int) -> None:
        """Until `n` messages have been settled (committed and acknowledged)."""
        while self.settled < n:
            self._settled_more.clear()
            await self._settled_more.wait()

    def settle(self, deliveries: Sequence[Delivery], receipts: Sequence[tuple[str, bytes]]) -> int:
        self.settled += len(deliveries)
        self.receipts += len(receipts)
        self._settled_more.set()
        return len(deliveries)


def thread_cpu_s() -> dict[int, float]:
    """CPU seconds (user + system) of each of this process's threads, by native id."""
    out: dict[int, float] = {}
    for task in Path("/proc/self/task").iterdir():
        try:
            out[int(task.name)] = harness.stat_cpu_s(task / "stat")
        except FileNotFoundError:  # a thread that ended meanwhile
            continue
    return out


class TurnCounter:
    """Counts the event loop's turns: each call of `_run_once` is one.

    CPython's own loop's private method, wrapped for the measurement only: asyncio has no
    public count, and each turn (a select, the ready callbacks) is a fixed cost of a
    batch, which is what this tool is for.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.turns = 0
        self._loop: Any = cast("Any", loop)
        self._orig = self._loop._run_once  # noqa: SLF001 - see the docstring

        def counted() -> None:
            self.turns += 1
            self._orig()

        self._loop._run_once = counted  # noqa: SLF001

    def close(self) -> None:
        self._loop._run_once = self._orig  # noqa: SLF001


def deliveries(messages: Sequence[workload.Message], first_mid: int) -> list[Delivery]:
    now = SystemClock().now()
    return [
        Delivery(RawMessage(m.topic, m.payload, now), mid, 1, 0)
        for mid, m in enumerate(messages, first_mid)
    ]


def feed_at_rate(
    src: FedSource, messages: Sequence[workload.Message], rate: float, burst: int
) -> None:
    """On its own thread: `burst` messages every `burst / rate` seconds."""
    period = burst / rate
    start = time.perf_counter()
    for k, i in enumerate(range(0, len(messages), burst)):
        delay = start + k * period - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        src.put(deliveries(messages[i : i + burst], i + 1))


def feed_at_once(src: FedSource, messages: Sequence[workload.Message]) -> None:
    src.put(deliveries(messages, 1))


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    """One run in a temporary directory, removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="alarmhub-inprocess-") as work:
        return await _measure(args, Path(work) / "alarmhub.db")


async def _measure(args: argparse.Namespace, db: Path) -> dict[str, Any]:
    start = SystemClock().now()
    if args.mode == "storm":
        pendants = workload.press_devices(args.n, prefix="storm")
        devices: list[Any] = pendants
        messages = workload.storm(pendants, run_id="storm", start=start)
    else:
        fleet = workload.registry(args.devices, prefix="dev")
        presses = workload.press_devices(max(10, args.n // 20), prefix="press")
        devices = [*fleet, *presses]
        messages = list(workload.messages(args.n, fleet, run_id="r", start=start, presses=presses))
    await asyncio.to_thread(harness.register, db, devices)
    settings = load_settings(
        None,
        mqtt_url="mqtt://127.0.0.1:1",  # nothing listens: only our source feeds ingest
        mqtt_client_id="bench-inprocess",
        database_url=f"sqlite:///{db}",
        http_listen="127.0.0.1:0",
        rules=REPO / "config" / "rules.toml",
        devices_dir=REPO / "devices",
        commit_delay_ms=args.commit_delay_ms,
    )
    async with AlarmHub(settings, serve_http=False) as hub:
        pipeline = hub.pipeline  # SQLite: the one term started before `ready`
        assert pipeline is not None
        loop = asyncio.get_running_loop()
        src = FedSource(loop)
        task = asyncio.create_task(pipeline.run(src))
        turns = TurnCounter(loop)
        batches0, cpu0 = pipeline.batches_committed, thread_cpu_s()
        wall0 = time.perf_counter()
        if args.mode == "storm":
            feeder = threading.Thread(target=feed_at_once, args=(src, messages))
        else:
            feeder = threading.Thread(
                target=feed_at_rate, args=(src, messages, args.rate, args.burst)
            )
        # The feeder started after the first reading: its own CPU is not counted.
        feeder.start()
        await asyncio.to_thread(feeder.join)
        await src.all_settled(len(messages))
        wall = time.perf_counter() - wall0
        cpu1, n_turns = thread_cpu_s(), turns.turns
        turns.close()
        batches = pipeline.batches_committed - batches0
        active = len(hub.state.alarms)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    n = len(messages)
    loop_tid = threading.get_native_id()
    others = sum(c - cpu0[t] for t, c in cpu1.items() if t in cpu0 and t != loop_tid)
    loop_s = cpu1[loop_tid] - cpu0[loop_tid]
    return {
        "mode": args.mode,
        "messages": n,
        "batches": batches,
        "per_batch": round(n / batches, 1),
        "wall_us_per_msg": round(wall / n * 1e6, 1),
        "loop_us_per_msg": round(loop_s / n * 1e6, 1),
        "other_threads_us_per_msg": round(others / n * 1e6, 1),
        "loop_us_per_batch": round(loop_s / batches * 1e6),
        "other_threads_us_per_batch": round(others / batches * 1e6),
        "loop_turns_per_batch": round(n_turns / batches, 1),
        # What the run did, beside what it cost: a storm raises one alarm per pendant.
        "alarms_active": active,
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        prog="python -m bench.inprocess", description=__doc__.splitlines()[0]
    )
    p.add_argument("mode", choices=("storm", "rate"))
    p.add_argument("--n", type=int, default=20_000, help="messages (storm: pendants)")
    p.add_argument("--rate", type=float, default=2000.0, help="rate: messages/s")
    p.add_argument("--burst", type=int, default=8, help="rate: messages arriving together")
    p.add_argument("--devices", type=int, default=2000, help="rate: the registry's size")
    p.add_argument(
        "--commit-delay-ms",
        type=float,
        default=2.0,
        help="how long a batch waits for more after its first message (the daemon's 2)",
    )
    args = p.parse_args(argv)
    configure_logging("warning", "json")
    out = asyncio.run(measure(args))
    print(
        f"{out['mode']}: {out['messages']:,} messages in {out['batches']:,} batches "
        f"({out['per_batch']} each); CPU per message: loop {out['loop_us_per_msg']} us, other "
        f"threads {out['other_threads_us_per_msg']} us; per batch: loop "
        f"{out['loop_us_per_batch']} us in {out['loop_turns_per_batch']} turns, other threads "
        f"{out['other_threads_us_per_batch']} us"
    )
    print(json.dumps(out))


if __name__ == "__main__":
    main()
