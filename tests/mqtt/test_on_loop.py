"""paho's network I/O on the event loop (alarmhub/mqtt/on_loop.py), against a real broker.

What the change must keep: messages arrive and are acknowledged with no paho network
thread; a batch held longer than the keep-alive does not cost the connection; a write
the kernel takes only in part is finished, in order; and close() ends at once when no
broker could be reached.
"""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import AsyncIterator
from datetime import UTC, datetime

from alarmhub.dev.mosquitto import LocalBroker
from alarmhub.mqtt.client import Delivery, MqttIngest
from alarmhub.settings import parse_mqtt_url
from tests.support.helpers import Publisher, async_wait_until


def _ingest(broker: LocalBroker, client_id: str, keepalive: int = 30) -> MqttIngest:
    return MqttIngest(
        parse_mqtt_url(broker.url),
        client_id,
        ["onloop/#"],
        lambda: datetime.now(UTC),
        keepalive=keepalive,
    )


def _registered_for_reading(ingest: MqttIngest) -> bool:
    loop = asyncio.get_running_loop()
    sock = ingest._client.socket()
    try:
        key = loop._selector.get_key(sock)  # type: ignore[attr-defined]
    except (KeyError, ValueError):
        return False
    return key.data[0] is not None  # asyncio keeps (reader, writer) handles


async def _next(batches: AsyncIterator[list[Delivery]]) -> list[Delivery]:
    return await asyncio.wait_for(anext(batches), 10)


async def test_messages_arrive_with_no_network_thread(broker: LocalBroker, client_id: str) -> None:
    pub = Publisher(broker.port, f"{client_id}-pub")
    before = set(threading.enumerate())  # the publisher's own paho thread among them
    async with _ingest(broker, client_id) as ingest:
        assert await ingest.wait_connected(10)
        # No thread of paho's: its loop thread is never started, the loop reads the socket.
        assert ingest._client._thread is None
        assert not [t for t in set(threading.enumerate()) - before if "paho" in t.name.lower()]
        assert _registered_for_reading(ingest)
        batches = ingest.batches(max_batch=100, coalesce_s=0.001)
        for payload in (b"first", b"second"):
            await asyncio.to_thread(pub.publish, "onloop/a", payload)
            batch = await _next(batches)
            assert [d.raw.payload for d in batch] == [payload]
            ingest.settle(batch, ())
    # Closed: DISCONNECT written, the socket closed and no longer watched.
    assert ingest._client.socket() is None
    assert ingest._running is not None
    assert ingest._running.done()
    pub.close()


async def test_a_batch_held_past_the_keepalive_keeps_the_connection(
    broker: LocalBroker, client_id: str
) -> None:
    """paho closes a link whose PINGRESP does not come within the keep-alive: the loop
    must go on reading and sending PINGREQs while a batch is in hand (a commit stalled
    that long would otherwise cost the connection, and a redelivery of the batch)."""
    pub = Publisher(broker.port, f"{client_id}-pub")
    async with _ingest(broker, client_id, keepalive=1) as ingest:
        assert await ingest.wait_connected(10)
        batches = ingest.batches(max_batch=100, coalesce_s=0.001)
        await asyncio.to_thread(pub.publish, "onloop/held", b"held")
        held = await _next(batches)
        # Several keep-alive periods with the batch in hand: paho sends a PINGREQ each
        # second and drops the link after a second without its PINGRESP. The broker
        # drops a silent client too: without PINGREQs, Mosquitto 2.0 here did so
        # 5-6 s after the connect (it checks keep-alives every few seconds).
        await asyncio.sleep(8)
        assert ingest.connected
        assert ingest.connections == 1
        ingest.settle(held, ())
    pub.close()


async def test_a_write_the_kernel_takes_in_part_is_finished_when_the_socket_drains(
    broker: LocalBroker, client_id: str
) -> None:
    """Writes go out on the loop's turn; what the kernel cannot take yet waits for the
    socket to become writable, and then goes out in order, whole. A stopped broker reads
    nothing, so a few MiB of publishes fill both sockets' buffers."""
    pub = Publisher(broker.port, f"{client_id}-pub")
    pub.subscribe("onloop/out")
    payloads = [bytes([i]) * 60_000 for i in range(80)]  # 4.8 MB against a few MiB of buffers
    assert broker.process is not None
    async with _ingest(broker, client_id) as ingest:
        assert await ingest.wait_connected(10)
        assert ingest._io is not None
        broker.process.send_signal(signal.SIGSTOP)
        try:
            for payload in payloads:
                ingest.publish("onloop/out", payload, qos=0)
            assert await async_wait_until(lambda: ingest._io is not None and ingest._io._writing)
            assert ingest._client.want_write()  # held by paho, not dropped
        finally:
            broker.process.send_signal(signal.SIGCONT)
        assert await async_wait_until(lambda: len(pub.received) == len(payloads), 30)
        assert [payload for _topic, payload in pub.received] == payloads
        assert not ingest._io._writing
        assert not ingest._client.want_write()
    pub.close()


async def test_close_ends_a_connection_that_was_never_made(client_id: str) -> None:
    """No broker at all: close() ends the retrying at once instead of waiting it out."""
    ingest = MqttIngest(
        parse_mqtt_url("mqtt://127.0.0.1:1"), client_id, ["onloop/#"], lambda: datetime.now(UTC)
    )
    async with ingest:
        assert not await ingest.wait_connected(1.0)
        running = ingest._running
    assert running is not None
    assert running.done()
    assert not running.cancelled()
