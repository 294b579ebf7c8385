"""The latency floor: a bare paho client that answers each message with a receipt at once.

    python -m bench.echo_consumer PORT CLIENT_ID TOPIC...

Run in its own process (as alarmhub is). Subscribes to the topics at QoS 1, and for
each native message (`alarmhub/v1/<device>/events` with a JSON `id`) publishes
`{"ref": id, "status": "accepted"}` on `alarmhub/v1/<device>/receipts` at QoS 0, as
alarmhub's `accepted` receipt is, straight from paho's callback: no database, no
batching, no coalescing delay. paho acknowledges each message when the callback
returns. Prints `ready` once the broker confirmed the subscription and runs until
stdin closes; then prints one JSON line with how many receipts it sent.

The latency phase times publish -> receipt through this client exactly as it times
alarmhub (`echo_p99_ms` beside `p99_ms`): the broker's two trips and a Python
client's own cost, which alarmhub cannot beat.
"""

from __future__ import annotations

import json
import socket
import sys
import threading

import orjson
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

PREFIX = "alarmhub/v1/"
EVENTS = "/events"


def _no_delay(_client: object, _userdata: object, sock: object) -> None:
    if isinstance(sock, socket.socket):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def main(port: int, client_id: str, topics: list[str]) -> dict[str, int]:
    sent = 0
    subscribed = threading.Event()
    client = paho.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=client_id,
        clean_session=True,
        protocol=paho.MQTTv311,
    )
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)

    def on_message(c: paho.Client, _u: object, msg: paho.MQTTMessage) -> None:
        nonlocal sent
        topic = msg.topic
        if not (topic.startswith(PREFIX) and topic.endswith(EVENTS)):
            return
        try:
            ref = orjson.loads(msg.payload).get("id")
        except (orjson.JSONDecodeError, AttributeError):
            return  # the mix has a few malformed payloads: alarmhub answers those, we skip
        if ref is None:
            return
        body = b'{"ref":' + orjson.dumps(ref) + b',"status":"accepted"}'
        c.publish(topic.removesuffix(EVENTS) + "/receipts", body, qos=0)
        sent += 1

    client.on_message = on_message
    client.on_subscribe = lambda *_a: subscribed.set()
    # As alarmhub's own connection (alarmhub/mqtt/client.py): the floor with the same socket.
    client.on_socket_open = _no_delay
    client.connect("127.0.0.1", port)
    client.loop_start()
    client.subscribe([(t, 1) for t in topics])
    if not subscribed.wait(10):
        raise TimeoutError("the broker did not confirm the subscription")
    print("ready", flush=True)
    sys.stdin.read()  # the bench closes stdin when the phase is over
    client.disconnect()
    client.loop_stop()
    return {"receipts_sent": sent}


if __name__ == "__main__":
    print(json.dumps(main(int(sys.argv[1]), sys.argv[2], sys.argv[3:])), flush=True)
