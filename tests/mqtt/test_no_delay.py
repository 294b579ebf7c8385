"""Nagle's algorithm off on both ends of alarmhub's broker connection.

alarmhub acknowledges after the commit, so the broker connection carries a small
segment each way per batch with nothing else to carry the ACKs: with Nagle on, the
broker held the messages after the first until alarmhub's last batch's PUBACKs
came back, and they arrived in bursts of a batch cycle (docs/performance.md,
"eleventh part"). Checked as the socket option and the brokers' settings, which
is what decides it; the latency it costs is `make bench`'s to measure.
"""

from __future__ import annotations

import socket
from datetime import UTC, datetime

from alarmhub.dev.mosquitto import LocalBroker
from alarmhub.mqtt.client import MqttIngest
from alarmhub.settings import parse_mqtt_url
from tests.deploy.test_deploy_mosquitto import DEPLOY, directives


async def test_alarmhubs_broker_socket_sends_without_delay(
    broker: LocalBroker, client_id: str
) -> None:
    ingest = MqttIngest(parse_mqtt_url(broker.url), client_id, ["x/#"], lambda: datetime.now(UTC))
    async with ingest:
        assert await ingest.wait_connected(10)
        sock = ingest._client.socket()
        assert isinstance(sock, socket.socket)
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0


def test_the_brokers_alarmhub_ships_and_tests_with_send_without_delay(broker: LocalBroker) -> None:
    assert directives((DEPLOY / "mosquitto.conf").read_text())["set_tcp_nodelay"] == ["true"]
    assert directives((broker.data_dir / "mosquitto.conf").read_text())["set_tcp_nodelay"] == [
        "true"
    ]
