"""A batch's PUBACKs and receipts are written by the thread that settles it (plain TCP).

BufferedReadClient.write_now says why: paho's thread no longer has to wake and take the
GIL from the event loop for each batch's acks. What it must keep is what paho's own
writer keeps: bytes leave whole and in order, a remainder the kernel did not take is
finished by paho's thread, and acks of a connection that closed go nowhere.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from datetime import UTC, datetime

import pytest
from paho.mqtt.enums import CallbackAPIVersion

from alarmhub.dev.mosquitto import LocalBroker
from alarmhub.mqtt import packets
from alarmhub.mqtt.client import MqttIngest
from alarmhub.mqtt.paho_fast import BufferedReadClient
from alarmhub.settings import parse_mqtt_url
from tests.support.helpers import Publisher

pytestmark = pytest.mark.broker

TIMEOUT_S = 20.0


async def test_a_batch_is_acknowledged_by_the_settling_thread_and_the_broker_has_it(
    broker: LocalBroker, client_id: str
) -> None:
    """Settled batches are written by write_now (counted), and the broker took the acks:
    a message published while the session was away is the first thing the next
    connection gets, where an unacknowledged one would have come back before it."""

    def ingest() -> MqttIngest:
        return MqttIngest(
            parse_mqtt_url(broker.url), client_id, ["wn/#"], lambda: datetime.now(UTC)
        )

    pub = Publisher(broker.port)
    try:
        async with ingest() as first:
            assert await first.wait_connected(TIMEOUT_S)
            client = first._client
            assert isinstance(client, BufferedReadClient)
            for i in range(20):
                pub.publish("wn/x", f"m{i}".encode())
            got: list[bytes] = []
            settles = 0
            batches = first.batches(max_batch=7, coalesce_s=0.001)
            while len(got) < 20:
                batch = await anext(batches)
                got.extend(d.raw.payload for d in batch)
                assert first.settle(batch, [("wn-receipts/x", b"r")]) == len(batch)
                settles += 1
            assert got == [f"m{i}".encode() for i in range(20)]
            assert client.direct_writes == settles
            # A QoS 1 publish queued after the acks: once the broker has acknowledged it,
            # it has read every byte written before it on this connection.
            fence = first.publish_tracked("wn-fence/x", b"fence", qos=1)
            deadline = time.monotonic() + TIMEOUT_S
            while not fence.is_published() and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            assert fence.is_published()
        pub.publish("wn/x", b"offline")
        async with ingest() as second:
            assert await second.wait_connected(TIMEOUT_S)
            batch = await anext(second.batches(max_batch=100, coalesce_s=0.001))
            assert [d.raw.payload for d in batch] == [b"offline"]
            second.settle(batch, ())
    finally:
        pub.close()


class SilentBroker:
    """A TCP server that answers CONNECT with CONNACK, then reads nothing until told to.

    Its receive buffer and the client's send buffer are small, so a write of a few
    hundred KiB is taken by the kernel only in part while it does not read.
    """

    def __init__(self) -> None:
        self._server = socket.socket()
        self._server.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self._server.bind(("127.0.0.1", 0))
        self._server.listen(1)
        self.port = self._server.getsockname()[1]
        self.read = threading.Event()
        self.received = bytearray()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        conn, _ = self._server.accept()
        conn.settimeout(TIMEOUT_S)
        with conn:
            connect = conn.recv(4096)  # paho's CONNECT: one small packet
            assert connect[:1] == b"\x10", connect
            conn.sendall(b"\x20\x02\x00\x00")  # CONNACK, accepted, no session
            self.read.wait(TIMEOUT_S)
            while chunk := conn.recv(65536):
                self.received += chunk

    def close(self) -> None:
        self._server.close()


def _connected_client(port: int) -> BufferedReadClient:
    client = BufferedReadClient(callback_api_version=CallbackAPIVersion.VERSION2, client_id="wn")
    up = threading.Event()
    client.on_connect = lambda *_a: up.set()
    client.connect("127.0.0.1", port, keepalive=60)
    client.loop_start()
    assert up.wait(TIMEOUT_S), "no CONNACK"
    return client


def test_a_write_the_kernel_takes_in_part_is_finished_by_pahos_thread_in_order() -> None:
    peer = SilentBroker()
    client = _connected_client(peer.port)
    try:
        sock = client.connection
        assert isinstance(sock, socket.socket)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        # Each buffer its own byte, so order and wholeness are both visible at the peer.
        buffers = [bytes([i]) * 200_000 for i in range(1, 6)]
        assert client.write_now(packets.PUBACK, buffers[0], sock)
        # The peer reads nothing: most of the first buffer is still queued, and write_now
        # returned anyway (it never blocks the thread that settles).
        assert client.want_write()
        for buf in buffers[1:]:
            assert client.write_now(packets.PUBACK, buf, sock)
        peer.read.set()
        expected = b"".join(buffers)
        # No more write_now calls: what is left can only be paho's thread's to write.
        deadline = time.monotonic() + TIMEOUT_S
        while len(peer.received) < len(expected) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert bytes(peer.received) == expected
        assert not client.want_write()
    finally:
        client.disconnect()
        client.loop_stop()
        peer.close()


def test_acks_of_a_connection_that_is_gone_are_not_written() -> None:
    peer = SilentBroker()
    client = _connected_client(peer.port)
    try:
        stale = socket.socket()  # stands for the socket of a connection since closed
        try:
            assert client.write_now(packets.PUBACK, b"\x40\x02\x00\x01", stale) is False
            assert client.write_now(packets.PUBACK, b"\x40\x02\x00\x01", None) is False
        finally:
            stale.close()
        assert not client.want_write()
        assert client.direct_writes == 0
    finally:
        client.disconnect()
        client.loop_stop()
        peer.close()
