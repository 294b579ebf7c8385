"""alarmhub's side of the broker connection sends without delay (TCP_NODELAY).

alarmhub writes each batch's PUBACKs and receipts as one buffer after the commit;
with Nagle's algorithm on, that buffer could wait for the broker's (delayed) ACK of
the previous one. The broker's side of the same interaction, and why it is left as
it is, is in docs/performance.md ("eleventh part"). Checked as the socket option,
which is what decides it; what it costs or gains is `make bench`'s to measure.
"""

from __future__ import annotations

import socket
from datetime import UTC, datetime

from alarmhub.dev.mosquitto import LocalBroker
from alarmhub.mqtt.client import MqttIngest
from alarmhub.settings import parse_mqtt_url


async def test_alarmhubs_broker_socket_sends_without_delay(
    broker: LocalBroker, client_id: str
) -> None:
    ingest = MqttIngest(parse_mqtt_url(broker.url), client_id, ["x/#"], lambda: datetime.now(UTC))
    async with ingest:
        assert await ingest.wait_connected(10)
        sock = ingest._client.socket()
        assert isinstance(sock, socket.socket)
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
