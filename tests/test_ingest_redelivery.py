"""The MQTT adapter's own guarantee: what was not acknowledged comes back after a crash."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import orjson
import pytest

from alarmhub.mosquitto import LocalBroker
from tests.support import REPO, Publisher

pytestmark = pytest.mark.broker

# Receive `expect` messages, acknowledge the first `ack_first`, then die without a
# DISCONNECT (os._exit), as a kill -9 would. Prints the payloads it received.
CONSUMER = textwrap.dedent(
    """
    import asyncio, os, sys, time
    from datetime import UTC, datetime
    from alarmhub.ingest.mqtt import MqttIngest
    from alarmhub.settings import parse_mqtt_url
    from alarmhub.logs import configure_logging
    configure_logging("warning", "json", sys.stderr)

    async def main(url, client_id, expect, ack_first):
        ingest = MqttIngest(parse_mqtt_url(url), client_id, ["redelivery/#"], lambda: datetime.now(UTC))
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
        ingest.ack(got[:ack_first])
        time.sleep(0.5)  # let paho's network thread write the PUBACKs
        print(" ".join(d.payload.decode() for d in got), flush=True)
        os._exit(0)

    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])))
    """
)


def consume(url: str, client_id: str, expect: int, ack_first: int) -> list[str]:
    out = subprocess.run(
        [sys.executable, "-c", CONSUMER, url, client_id, str(expect), str(ack_first)],
        capture_output=True, text=True, timeout=60, cwd=REPO, check=False,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


def test_unacknowledged_messages_are_redelivered_to_the_persistent_session(
    broker: LocalBroker, client_id: str, tmp_path: Path
) -> None:
    # First run establishes the persistent session and its subscription.
    pub = Publisher(broker.port)
    try:
        pub.publish("redelivery/x", b"warmup")
        assert consume(broker.url, client_id, 0, 0) == []
        for i in range(10):
            pub.publish("redelivery/x", f"m{i}".encode())
        first = consume(broker.url, client_id, 10, 4)
        assert first == [f"m{i}" for i in range(10)]
        # Published while no consumer is connected: queued for the session.
        pub.publish("redelivery/x", b"offline")
    finally:
        pub.close()
    # The six unacknowledged come back (in order), and the offline one; the four acked do not.
    second = consume(broker.url, client_id, 7, 7)
    assert second == [f"m{i}" for i in range(4, 10)] + ["offline"]
    third = consume(broker.url, client_id, 0, 0)
    assert third == []
    assert orjson.dumps(second)  # the payloads are intact text
