"""The ceiling: a bare paho-mqtt subscriber, QoS 1, `json.loads` of each payload, nothing else.

    python -m bench.baseline_consumer PORT CLIENT_ID N TIMEOUT_S

Run in its own process (as alarmhub is) on a persistent session that already
holds N queued messages; prints one JSON line: messages and seconds from the
first message to the last, and the process's CPU per message over the same span
(`cpu_us_per_msg`: what the bare client itself costs at full drain, beside
alarmhub's `cpu_us_per_msg_at_drain`). MQTT 3.1.1 with clean_session=False, like
alarmhub's ingest. paho acknowledges each message itself when the callback returns.
"""

from __future__ import annotations

import contextlib
import json
import sys
import threading
import time

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion


def main(port: int, client_id: str, n: int, timeout_s: float) -> dict[str, float | int | None]:
    count = 0
    first = last = 0.0
    cpu_first = cpu_last = 0.0  # process CPU (all threads) at the first and last message
    done = threading.Event()

    def on_message(_c: object, _u: object, msg: paho.MQTTMessage) -> None:
        nonlocal count, first, last, cpu_first, cpu_last
        with contextlib.suppress(ValueError):  # the mix has a few malformed payloads
            json.loads(msg.payload)
        now = time.perf_counter()
        if count == 0:
            first, cpu_first = now, time.process_time()
        count += 1
        last = now
        if count >= n:
            cpu_last = time.process_time()
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
        "cpu_us_per_msg": (cpu_last - cpu_first) / (count - 1) * 1e6 if cpu_last else None,
    }


if __name__ == "__main__":
    port, client_id, n, timeout_s = sys.argv[1:5]
    print(json.dumps(main(int(port), client_id, int(n), float(timeout_s))))
