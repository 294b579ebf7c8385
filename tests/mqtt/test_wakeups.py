"""How arrivals wake the batch loop: one wake-up per idle spell, not per message or batch.

Each wake-up is a turn of the loop for the waiting batches() (issue 18: the loop's own
wake-ups were ~13 % of the daemon at 2,000 msg/s). No broker: paho's callback is called
on the loop, as its reads are (alarmhub/mqtt/on_loop.py).
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import paho.mqtt.client as paho

from alarmhub.mqtt.client import Delivery, MqttIngest
from alarmhub.settings import parse_mqtt_url


class CountingEvent(asyncio.Event):
    """The batch loop's wake-up, counting the times an arrival sets it."""

    def __init__(self) -> None:
        super().__init__()
        self.wakeups = 0

    def set(self) -> None:
        self.wakeups += 1
        super().set()


def arrive(ingest: MqttIngest, mids: range) -> None:
    """Messages as paho's read hands them over."""
    for mid in mids:
        msg = paho.MQTTMessage(mid=mid, topic=b"alarmhub/v1/pend-1/events")
        msg.payload = b"{}"
        msg.qos = 1
        ingest._on_message(None, None, msg)


async def test_messages_arriving_while_a_batch_is_handled_wake_nobody() -> None:
    ingest = MqttIngest(
        parse_mqtt_url("mqtt://127.0.0.1:1"), "wakeups", ["x/#"], lambda: datetime.now(UTC)
    )
    wakeup = CountingEvent()
    ingest._wakeup = wakeup
    batches = ingest.batches(100, 0.002)
    taking = asyncio.ensure_future(anext(batches))
    await asyncio.sleep(0.01)  # waiting for a message
    arrive(ingest, range(1, 2))
    first: list[Delivery] = await taking
    assert [d.mid for d in first] == [1]
    assert wakeup.wakeups == 1
    # While that batch is decided and committed, more arrive: taken with the next batch,
    # which does not wait, and none of them woke the loop.
    arrive(ingest, range(2, 7))
    second = await anext(batches)
    assert [d.mid for d in second] == [2, 3, 4, 5, 6]
    assert wakeup.wakeups == 1
    # Idle again: the next message wakes the loop, once.
    taking = asyncio.ensure_future(anext(batches))
    await asyncio.sleep(0.01)
    arrive(ingest, range(7, 10))
    assert [d.mid for d in await taking] == [7, 8, 9]
    assert wakeup.wakeups == 2
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
