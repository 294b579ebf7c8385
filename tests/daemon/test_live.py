"""The live fan-out: bounded, resumable, and a burst does not cut off a healthy listener."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from alarmhub.daemon.fanout import QUEUE_SIZE, RING_SIZE, Broadcaster, first_sequence


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


def test_a_stream_resumed_across_a_restart_or_instances_is_told_to_resync() -> None:
    """Every process counted from 0: after a restart an id above the new count got
    nothing, and one below it the wrong changes, both without `resync` (found in
    review, 2026-12-06). Each process now starts its count at first_sequence."""
    started = datetime(2026, 12, 6, 1, 0, tzinfo=UTC)
    before = Broadcaster(start=first_sequence(started))
    for i in range(5):
        before.publish("alarm", {"n": i})
    last_seen = before.seq
    # Restarted a few seconds later: five changes made at start-up (the backlog).
    after = Broadcaster(start=first_sequence(started + timedelta(seconds=3)))
    assert after.seq > last_seen
    for i in range(5):
        after.publish("alarm", {"n": 100 + i})
    assert after.missed_since(last_seen) is None  # resync: reload, then go on
    # Another instance (its clock a little behind) has its own numbers: resync too.
    other = Broadcaster(start=first_sequence(started + timedelta(seconds=2)))
    other.publish("alarm", {"n": 200})
    assert other.missed_since(after.seq) is None
    # Within one process nothing changed: a resumed stream is replayed what it missed.
    assert [c.data["n"] for c in after.missed_since(after.seq - 2) or []] == [103, 104]
    assert after.missed_since(after.seq) == []


async def test_an_id_of_an_earlier_process_is_answered_with_resync_at_once() -> None:
    hub = Broadcaster(start=first_sequence(datetime(2026, 12, 6, tzinfo=UTC)))
    with hub.listening(last_seq=17) as listener:  # an id of an earlier process
        [change] = await listener.next_batch(0, 10)
    assert change.kind == "resync"
    assert first_sequence(datetime(2255, 1, 1, tzinfo=UTC)) < 2**53
