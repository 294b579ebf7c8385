"""The ceiling: a bare paho-mqtt subscriber, QoS 1, `json.loads` of each payload, nothing else.

    python -m bench.baseline_consumer PORT CLIENT_ID N TIMEOUT_S

Run in its own process (as alarmhub is) on a persistent session that already
holds N queued messages; prints one JSON line: messages and seconds from the
first message to the last. MQTT 3.1.1 with clean_session=False, like alarmhub's
ingest. paho acknowledges each message itself when the callback returns.
"""

from __future__ import annotations

import contextlib
import json
import sys
import threading
import time

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion


def main(port: int, client_id: str, n: int, timeout_s: float) -> dict[str, float | int]:
    count = 0
    first = last = 0.0
    done = threading.Event()

    def on_message(_c: object, _u: object, msg: paho.MQTTMessage) -> None:
        nonlocal count, first, last
        with contextlib.suppress(ValueError):  # the mix has a few malformed payloads
            json.loads(msg.payload)
        now = time.perf_counter()
        if count == 0:
            first = now
        count += 1
        last = now
        if count >= n:
            done.set()

    client = paho.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=client_id,
        clean_session=False,
        protocol=paho.MQTTv311,
    )
    client.on_message = on_message
    client.connect("127.0.0.1", port)
    client.loop_start()
    done.wait(timeout_s)
    client.disconnect()
    client.loop_stop()
    elapsed = last - first
    return {
        "messages": count,
        "seconds": elapsed,
        "msgs_per_s": (count - 1) / elapsed if count > 1 and elapsed > 0 else 0.0,
    }


if __name__ == "__main__":
    port, client_id, n, timeout_s = sys.argv[1:5]
    print(json.dumps(main(int(port), client_id, int(n), float(timeout_s))))
