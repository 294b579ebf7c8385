"""Pace a plan onto an MQTT broker with aiomqtt, QoS 1, as the devices would send it.

The plan's simulated time maps onto the monotonic clock (`speed` simulated
seconds per real second). Publishes overlap up to a window: aiomqtt waits for
each PUBACK, and one round trip per message would cap the rate far below
what the hub can take. Order is still the plan's order on the wire, because
each publish task hands its message to paho before its first await and tasks
start in the order they were created.

A lost connection is counted and retried with backoff; what failed in flight
is counted as errors, not resent (a device would resend; the hub's dedup
would make that harmless, but the simulator's counts would then lie).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import TextIO

import aiomqtt

from alarmhub.clock import Clock
from alarmhub.settings import MqttTarget
from alarmhub.sim.model import Planned
from alarmhub.sim.wire import OSLO

WINDOW = 500  # publishes awaiting their PUBACK at once
PUBLISH_TIMEOUT_S = 10.0
BACKOFF_MAX_S = 10.0
PROGRESS_EVERY_S = 1.0


class SimulatorError(Exception):
    """A failure the person can fix (the broker is unreachable); the message says which."""


@dataclass(slots=True)
class Stats:
    sent: int = 0
    errors: int = 0
    reconnects: int = 0
    seconds: float = 0.0
    sim_now: datetime | None = None  # simulated time of the last message handed over
    behind_s: float = 0.0  # how far the last message went out after its due time

    @property
    def rate(self) -> float:
        return self.sent / self.seconds if self.seconds > 0 else 0.0


@dataclass(slots=True)
class Pace:
    """Where simulated time `start` is on the monotonic clock, and how fast it runs."""

    start: datetime
    t0: float
    speed: float
    deadline: float | None  # monotonic time to stop at, or None to run the plan out

    def due(self, at: datetime) -> float:
        return self.t0 + (at - self.start).total_seconds() / self.speed


async def publish(
    items: Iterator[Planned],
    target: MqttTarget,
    pace: Pace,
    clock: Clock,
    stop: asyncio.Event,
    *,
    client_id: str,
    progress: TextIO | None = None,
) -> Stats:
    """Send `items` on time until the plan, the deadline or `stop` ends the run."""
    stats = Stats()
    source = _Source(items)
    failure: SimulatorError | None = None
    async with asyncio.TaskGroup() as tg:
        reporter = None
        if progress is not None:
            reporter = tg.create_task(_report(stats, clock, progress), name="sim-progress")
        try:
            await _run(source, target, pace, clock, stop, stats, client_id)
        except SimulatorError as exc:
            failure = exc  # raised outside the group, not wrapped in an ExceptionGroup
        finally:
            stats.seconds = clock.monotonic() - pace.t0
            if reporter is not None:
                reporter.cancel()
    if failure is not None:
        raise failure
    return stats


class _Source:
    """The plan, with room to put back the one message a lost connection interrupted."""

    def __init__(self, items: Iterator[Planned]) -> None:
        self._items = items
        self._back: Planned | None = None

    def next(self) -> Planned | None:
        if self._back is not None:
            item, self._back = self._back, None
            return item
        return next(self._items, None)

    def put_back(self, item: Planned) -> None:
        self._back = item


async def _run(
    source: _Source,
    target: MqttTarget,
    pace: Pace,
    clock: Clock,
    stop: asyncio.Event,
    stats: Stats,
    client_id: str,
) -> None:
    delay = 0.5
    connected_once = False
    while not stop.is_set():
        try:
            async with _client(target, client_id) as client:
                connected_once, delay = True, 0.5
                if await _pump(client, source, pace, clock, stop, stats):
                    return
        except aiomqtt.MqttError as exc:
            if not connected_once:
                where = f"{target.host}:{target.port}"
                raise SimulatorError(f"cannot connect to the broker at {where}: {exc}") from exc
        stats.reconnects += 1
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), delay)
        delay = min(BACKOFF_MAX_S, delay * 2)


def _client(target: MqttTarget, client_id: str) -> aiomqtt.Client:
    client = aiomqtt.Client(
        target.host,
        target.port,
        username=target.username,
        password=target.password,
        identifier=client_id,
        # 3.1.1: MQTT 5 costs up to twice the CPU per message and adds nothing here.
        protocol=aiomqtt.ProtocolVersion.V311,
        clean_session=True,
        max_inflight_messages=WINDOW,
        tls_context=ssl.create_default_context() if target.tls else None,
    )
    # A full window is the intended state here, not the leak aiomqtt warns about.
    client.pending_calls_threshold = WINDOW + 1
    return client


async def _pump(
    client: aiomqtt.Client,
    source: _Source,
    pace: Pace,
    clock: Clock,
    stop: asyncio.Event,
    stats: Stats,
) -> bool:
    """Publish until done (True) or the connection broke (False: reconnect and go on)."""
    window = asyncio.Semaphore(WINDOW)
    broken = asyncio.Event()
    finished = True
    async with asyncio.TaskGroup() as tg:
        while not stop.is_set():
            item = source.next()
            if item is None:
                break
            due = pace.due(item.at)
            # The run ends at its deadline: when the plan goes past it, or when a
            # publisher that fell behind reaches it.
            if pace.deadline is not None and max(due, clock.monotonic()) >= pace.deadline:
                break
            wait = due - clock.monotonic()
            if wait > 0.002:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), wait)
                if stop.is_set():
                    break
            await window.acquire()
            if broken.is_set():
                source.put_back(item)
                window.release()
                finished = False
                break
            stats.sim_now = item.at
            stats.behind_s = max(0.0, clock.monotonic() - due)
            tg.create_task(_send(client, item, window, stats, broken), name="sim-publish")
    return finished


async def _send(
    client: aiomqtt.Client,
    item: Planned,
    window: asyncio.Semaphore,
    stats: Stats,
    broken: asyncio.Event,
) -> None:
    try:
        await client.publish(item.topic, item.payload, qos=1, timeout=PUBLISH_TIMEOUT_S)
        stats.sent += 1
    except aiomqtt.MqttError:
        stats.errors += 1
        broken.set()
    finally:
        window.release()


async def _report(stats: Stats, clock: Clock, out: TextIO) -> None:
    """One line a second at most, and only once a run has lasted that long."""
    last_sent, last_t = 0, clock.monotonic()
    while True:
        await asyncio.sleep(PROGRESS_EVERY_S)
        now = clock.monotonic()
        rate = (stats.sent - last_sent) / max(1e-9, now - last_t)
        last_sent, last_t = stats.sent, now
        sim = stats.sim_now.astimezone(OSLO).strftime("%Y-%m-%d %H:%M") if stats.sim_now else "-"
        line = (
            f"simulate: {stats.sent} sent, {rate:.0f}/s, {stats.errors} errors, "
            f"simulated time {sim} (Oslo)"
        )
        if stats.behind_s >= 1:
            line += f", {stats.behind_s:.0f} s behind the plan"
        print(line, file=out, flush=True)
