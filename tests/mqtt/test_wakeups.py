"""How paho's thread hands messages to the loop: one wake-up per idle spell, not per batch.

Each wake-up is a write to the loop's self-pipe and a turn of the loop (issue 18: the
loop's own wake-ups were ~13 % of the daemon at 2,000 msg/s). No broker: paho's
callback is called from a thread of the test's own, as paho's network thread would.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import paho.mqtt.client as paho

from alarmhub.mqtt.client import Delivery, MqttIngest
from alarmhub.settings import parse_mqtt_url


class CountingLoop:
    """The running loop, counting the wake-ups paho's thread asks of it."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.wakeups = 0

    def call_soon_threadsafe(self, fn: Callable[..., Any], *args: Any) -> asyncio.Handle:
        self.wakeups += 1
        return self._loop.call_soon_threadsafe(fn, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loop, name)


def arrive(ingest: MqttIngest, mids: range) -> None:
    """Messages as paho's network thread delivers them."""

    def deliver() -> None:
        for mid in mids:
            msg = paho.MQTTMessage(mid=mid, topic=b"alarmhub/v1/pend-1/events")
            msg.payload = b"{}"
            msg.qos = 1
            ingest._on_message(None, None, msg)

    thread = threading.Thread(target=deliver)
    thread.start()
    thread.join()


async def test_messages_arriving_while_a_batch_is_handled_wake_nobody() -> None:
    ingest = MqttIngest(
        parse_mqtt_url("mqtt://127.0.0.1:1"), "wakeups", ["x/#"], lambda: datetime.now(UTC)
    )
    loop = CountingLoop(asyncio.get_running_loop())
    ingest._loop = loop  # type: ignore[assignment]
    batches = ingest.batches(100, 0.002)
    taking = asyncio.ensure_future(anext(batches))
    await asyncio.sleep(0.01)  # waiting for a message
    arrive(ingest, range(1, 2))
    first: list[Delivery] = await taking
    assert [d.mid for d in first] == [1]
    assert loop.wakeups == 1
    # While that batch is decided and committed, more arrive: taken with the next batch,
    # which does not wait, and none of them woke the loop.
    arrive(ingest, range(2, 7))
    second = await anext(batches)
    assert [d.mid for d in second] == [2, 3, 4, 5, 6]
    assert loop.wakeups == 1
    # Idle again: the next message wakes the loop, once.
    taking = asyncio.ensure_future(anext(batches))
    await asyncio.sleep(0.01)
    arrive(ingest, range(7, 10))
    assert [d.mid for d in await taking] == [7, 8, 9]
    assert loop.wakeups == 2
    await batches.aclose()  # type: ignore[attr-defined]  # an async generator


def test_the_retain_flag_reaches_dedup_on_every_path() -> None:
    """A retained copy (re-sent at each subscription) is told apart by dedup (core/dedup.py)."""
    ingest = MqttIngest(
        parse_mqtt_url("mqtt://127.0.0.1:1"), "retained", ["x/#"], lambda: datetime.now(UTC)
    )
    ingest._max_payload = 8
    for mid, (payload, retain) in enumerate(
        [(b"{}", True), (b"{}", False), (b"x" * 9, True), (b"x" * 9, False)], start=1
    ):
        msg = paho.MQTTMessage(mid=mid, topic=b"owntracks/res1/phone")
        msg.payload, msg.qos, msg.retain = payload, 1, retain
        ingest._on_message(None, None, msg)
    raws = [d.raw for d in ingest._pending]
    assert [(r.retained, r.cut is not None) for r in raws] == [
        (True, False),
        (False, False),
        (True, True),
        (False, True),
    ]
