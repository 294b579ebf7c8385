"""The MQTT adapter's own guarantee: what was not acknowledged comes back after a crash."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import textwrap
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import orjson
import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from structlog.testing import capture_logs

from alarmhub.dev.mosquitto import LocalBroker
from alarmhub.mqtt.client import MqttIngest
from alarmhub.mqtt.paho_fast import BufferedReadClient, NoTopicCallbacks
from alarmhub.settings import parse_mqtt_url
from tests.support.helpers import REPO, Publisher

pytestmark = pytest.mark.broker

# Receive `expect` messages, acknowledge the first `ack_first`, then die without a
# DISCONNECT (os._exit), as a kill -9 would. Prints the payloads it received.
CONSUMER = textwrap.dedent(
    """
    import asyncio, os, sys, time
    from datetime import UTC, datetime
    from alarmhub.mqtt.client import MqttIngest
    from alarmhub.settings import parse_mqtt_url
    from alarmhub.observability.logs import configure_logging
    configure_logging("warning", "json", sys.stderr)

    async def main(url, client_id, expect, ack_first, raw):
        ingest = MqttIngest(
            parse_mqtt_url(url), client_id, ["redelivery/#"], lambda: datetime.now(UTC),
            paho_internals=raw == "raw",
        )
        assert ingest.paho_internals is (raw == "raw")  # the path asked for is the one taken
        await ingest.__aenter__()
        assert await ingest.wait_connected(10)
        got = []
        async def collect():
            async for batch in ingest.batches(max_batch=1000, coalesce_s=0.001):
                got.extend(batch)
                if len(got) >= expect:
                    return
        if expect:
            await asyncio.wait_for(collect(), 20)
        else:
            await asyncio.sleep(1.0)  # anything queued for the session would arrive now
            got = list(ingest._pending)
        ingest.settle(got[:ack_first], [("redelivery-receipts/x", b"r%d" % i) for i in range(ack_first)])
        # A fence: settle() queued the PUBACKs and receipts on paho's outgoing queue, which
        # is written in order on one connection, so once the broker has acknowledged a QoS 1
        # publish queued after them, it has every one of them. (A fixed sleep here left
        # them unwritten on a busy machine.) The wait has a ceiling against a hang.
        fence = ingest.publish_tracked("redelivery-fence/x", b"fence", qos=1)
        fence.wait_for_publish(10)
        if not fence.is_published():
            sys.exit("the broker did not acknowledge the fence within 10 s")
        print(" ".join(d.raw.payload.decode() for d in got), flush=True)
        os._exit(0)

    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]))
    """
)


def consume(url: str, client_id: str, expect: int, ack_first: int, mode: str) -> list[str]:
    out = subprocess.run(
        [sys.executable, "-c", CONSUMER, url, client_id, str(expect), str(ack_first), mode],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


class Listener:
    """A subscriber that is subscribed (SUBACK seen) before the constructor returns."""

    def __init__(self, port: int, topic: str) -> None:
        self.received: list[str] = []
        self._subscribed = threading.Event()
        self._client = paho.Client(callback_api_version=CallbackAPIVersion.VERSION2)
        self._client.on_message = lambda _c, _u, m: self.received.append(m.payload.decode())
        self._client.on_subscribe = lambda *_a: self._subscribed.set()
        self._client.connect("127.0.0.1", port)
        self._client.loop_start()
        self._client.subscribe(topic, qos=1)
        assert self._subscribed.wait(10), "no SUBACK within 10 s"

    def wait_for(self, n: int, within_s: float) -> list[str]:
        deadline = time.monotonic() + within_s
        while len(self.received) < n and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.2)  # and nothing more than expected follows
        self._client.disconnect()
        self._client.loop_stop()
        return list(self.received)


# "raw": alarmhub's own PUBACK/PUBLISH buffer (alarmhub/mqtt/packets.py);
# "paho": the public ack()/publish() fallback for a paho without its internal queue.
@pytest.mark.parametrize("mode", ["raw", "paho"])
def test_unacknowledged_messages_are_redelivered_to_the_persistent_session(
    broker: LocalBroker, client_id: str, tmp_path: Path, mode: str
) -> None:
    # First run establishes the persistent session and its subscription.
    pub = Publisher(broker.port)
    receipts = Listener(broker.port, "redelivery-receipts/#")
    try:
        pub.publish("redelivery/x", b"warmup")
        assert consume(broker.url, client_id, 0, 0, mode) == []
        for i in range(10):
            pub.publish("redelivery/x", f"m{i}".encode())
        first = consume(broker.url, client_id, 10, 4, mode)
        assert first == [f"m{i}" for i in range(10)]
        # Published while no consumer is connected: queued for the session.
        pub.publish("redelivery/x", b"offline")
    finally:
        pub.close()
    # The six unacknowledged come back (in order), and the offline one; the four acked do not.
    second = consume(broker.url, client_id, 7, 7, mode)
    assert second == [f"m{i}" for i in range(4, 10)] + ["offline"]
    third = consume(broker.url, client_id, 0, 0, mode)
    assert third == []
    # The receipts sent with the acks arrived whole and in order: 4, then 7.
    got = receipts.wait_for(11, within_s=10)
    assert got == [f"r{i}" for i in range(4)] + [f"r{i}" for i in range(7)]
    assert orjson.dumps(second)  # the payloads are intact text


async def test_connected_means_subscribed_so_the_first_message_is_not_dropped(
    broker: LocalBroker, client_id: str
) -> None:
    """wait_connected() returns at SUBACK, not CONNACK.

    On a fresh session the broker drops what matches no subscription yet: when
    "connected" was reported at CONNACK, publishing at once lost about 8 in 100
    first messages on this machine.
    """
    pub = Publisher(broker.port, client_id=f"{client_id}-pub")
    lost = []
    try:
        for round_ in range(30):
            ingest = MqttIngest(
                parse_mqtt_url(broker.url),
                f"{client_id}-{round_}",  # a fresh session: no stored subscription
                ["first/#"],
                lambda: datetime.now(UTC),
            )
            async with ingest:
                assert await ingest.wait_connected(10)
                pub.publish("first/x", f"r{round_}".encode())
                got: list[bytes] = []

                async def first(ingest: MqttIngest = ingest, got: list[bytes] = got) -> None:
                    async for batch in ingest.batches(max_batch=10, coalesce_s=0):
                        got.extend(d.raw.payload for d in batch)
                        ingest.ack(batch)
                        return

                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(first(), 3)
                if got != [f"r{round_}".encode()]:
                    lost.append((round_, got))
    finally:
        pub.close()
    assert lost == []


@pytest.mark.parametrize("mode", ["raw", "paho"])
async def test_packets_larger_than_the_read_buffer_and_bursts_arrive_whole(
    broker: LocalBroker, client_id: str, mode: str
) -> None:
    """The buffered reader (one recv() of up to 64 KiB serving many packets, whole
    PUBLISH packets in it read in one pass).

    A 200 KiB payload spans several buffer fills, and small packets before and
    after it share fills with its head and tail: every byte must arrive, in order.
    """
    sizes = [10, 300, 200 * 1024, 5, 70_000, *([150] * 500), 65_536, 1]
    payloads = [bytes([i % 251]) * n for i, n in enumerate(sizes)]
    ingest = MqttIngest(
        parse_mqtt_url(broker.url),
        client_id,
        ["burst/#"],
        lambda: datetime.now(UTC),
        paho_internals=mode == "raw",
    )
    assert ingest.paho_internals is (mode == "raw")
    pub = Publisher(broker.port, client_id=f"{client_id}-pub")
    got: list[bytes] = []
    try:
        async with ingest:
            assert await ingest.wait_connected(10)
            await asyncio.to_thread(pub.publish_many, [("burst/x", p) for p in payloads])

            async def collect() -> None:
                async for batch in ingest.batches(max_batch=1000, coalesce_s=0.001):
                    got.extend(d.raw.payload for d in batch)
                    ingest.ack(batch)
                    if len(got) >= len(payloads):
                        return

            await asyncio.wait_for(collect(), 20)
    finally:
        pub.close()
    assert [len(p) for p in got] == sizes
    assert got == payloads
    # The small packets went through the bulk read (paho_fast), the large ones through
    # paho's own: both paths took part, in one stream, in order.
    bulk = getattr(ingest._client, "bulk_reads", 0)
    assert (bulk > 0) is (mode == "raw")


@pytest.mark.parametrize("internals", [True, False])
def test_paho_internals_are_in_use_exactly_when_asked(internals: bool) -> None:
    """The fast path must not silently fall back: `make bench` once measured 0.36
    instead of 0.6 because a feature check looked for an instance attribute on
    the class and turned all three off."""
    ingest = MqttIngest(
        parse_mqtt_url("mqtt://127.0.0.1:1"),
        "t-internals",
        ["x/#"],
        lambda: datetime.now(UTC),
        paho_internals=internals,
    )
    client = ingest._client
    assert isinstance(client, BufferedReadClient) is internals
    assert isinstance(client._on_message_filtered, NoTopicCallbacks) is internals
    # and the acks are written by the settling thread, not queued for paho's (write_now)
    assert getattr(client, "_can_write", False) is internals
    assert ingest._internals is internals


def test_a_paho_without_the_private_parts_falls_back_and_says_so(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A paho release that renamed one of the private parts gets the public API, and a warning."""
    monkeypatch.delattr(paho.Client, "_sock_close")
    with capture_logs() as logs:
        ingest = MqttIngest(
            parse_mqtt_url("mqtt://127.0.0.1:1"),
            "t-no-internals",
            ["x/#"],
            lambda: datetime.now(UTC),
        )
    assert ingest.paho_internals is False
    assert not isinstance(ingest._client, BufferedReadClient)
    assert [e["event"] for e in logs if e["log_level"] == "warning"] == [
        "mqtt.paho_internals_unavailable"
    ]
