"""The live fan-out: bounded, resumable, and a burst does not cut off a healthy listener."""

from __future__ import annotations

import asyncio

from alarmhub.daemon.fanout import QUEUE_SIZE, RING_SIZE, Broadcaster


async def test_a_burst_of_an_outage_reaches_a_listener_that_reads_afterwards() -> None:
    hub = Broadcaster()
    stream = hub.listen()
    first = asyncio.ensure_future(anext(stream))
    await asyncio.sleep(0)  # the listener is registered
    for i in range(5000):  # one batch of a mains outage: thousands of changes at once
        hub.publish("alarm", {"n": i})
    got = [(await first).data["n"]]
    while len(got) < 5000:
        got.append((await anext(stream)).data["n"])
    assert got == list(range(5000))
    assert hub.dropped_listeners == 0
    await stream.aclose()  # type: ignore[attr-defined]  # listen() is an async generator


async def test_a_listener_that_never_reads_is_cut_off_and_memory_stays_bounded() -> None:
    hub = Broadcaster()
    stalled = hub.listen(name="10.0.0.1:4000")
    task = asyncio.ensure_future(anext(stalled))
    reading = hub.listen(name="10.0.0.2:5000")
    first = asyncio.ensure_future(anext(reading))
    await asyncio.sleep(0)
    got = 0
    for i in range(QUEUE_SIZE + 10):
        hub.publish("alarm", {"n": i})
        if i == 0:
            await first
            got = 1
        elif i % 1000 == 0:  # the reading listener keeps up, in its own time
            while got <= i:
                await anext(reading)
                got += 1
    assert hub.dropped_listeners == 1
    assert list(hub.cut_off) == ["10.0.0.1:4000"]  # exactly the one that stopped reading
    assert hub.listeners == 1
    task.cancel()
    await reading.aclose()  # type: ignore[attr-defined]  # listen() is an async generator


def test_resume_replays_from_the_ring_or_asks_for_a_resync() -> None:
    hub = Broadcaster(ring_size=100)
    for i in range(150):
        hub.publish("alarm", {"n": i})
    assert [c.data["n"] for c in hub.missed_since(140) or []] == list(range(140, 150))
    assert hub.missed_since(150) == []
    assert hub.missed_since(10) is None  # rolled out of the ring: the client must reload
    assert RING_SIZE >= QUEUE_SIZE


async def test_resuming_too_far_back_yields_resync_first() -> None:
    hub = Broadcaster(ring_size=10)
    for i in range(30):
        hub.publish("alarm", {"n": i})
    stream = hub.listen(last_seq=2)
    first = await anext(stream)
    assert first.kind == "resync"
    await stream.aclose()  # type: ignore[attr-defined]  # listen() is an async generator
