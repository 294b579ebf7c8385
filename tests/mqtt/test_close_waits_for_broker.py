"""A clean close right after a backlog's last acks: the next connection is sent none of it again.

Mosquitto reads a connection's packets one at a time and, with the production settings
(`autosave_on_changes true`, `autosave_interval 1`, as LocalBroker's), saves its store
after each: the 1,500 PUBACKs of a backlog took it about a second to read, well after
alarmhub had written them, its DISCONNECT and FIN. A connection with the same client id
arriving meanwhile (a daemon restarted at once) takes the session over; the broker then
closes the old connection unread, the kernel answers the unread bytes with a RST and
drops them, and every message whose PUBACK was among them is sent again
(docs/reliability.md, seventh session: 1,340-1,440 of 1,500).
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from alarmhub.dev.mosquitto import LocalBroker
from alarmhub.mqtt.client import MqttIngest
from alarmhub.settings import parse_mqtt_url
from tests.support.helpers import Publisher, settled_until

pytestmark = pytest.mark.broker

BACKLOG = 1500


@pytest.mark.parametrize("mode", ["raw", "paho"])
async def test_a_close_right_after_the_last_acks_leaves_nothing_to_redeliver(
    broker: LocalBroker, client_id: str, mode: str
) -> None:
    def ingest() -> MqttIngest:
        # A close's wait for the broker bounded far above what it needs here (about a
        # second on a 2-core machine): the verdict does not depend on the machine's speed.
        return MqttIngest(
            parse_mqtt_url(broker.url),
            client_id,
            ["backlog/#"],
            lambda: datetime.now(UTC),
            paho_internals=mode == "raw",
            close_wait_s=60.0,
        )

    async with ingest() as first:  # the persistent session and its subscription
        assert await first.wait_connected(10)
    pub = Publisher(broker.port, client_id=f"{client_id}-pub")
    try:
        await asyncio.to_thread(
            pub.publish_many, [("backlog/x", b"m%d" % i) for i in range(BACKLOG)]
        )
    finally:
        pub.close()

    async with ingest() as second:  # takes the backlog, acks every batch, closes at once
        got, acked = await settled_until(second, lambda got: len(got) >= BACKLOG)
    assert acked == len(got)
    assert got == [b"m%d" % i for i in range(BACKLOG)]

    async with ingest() as third:  # at once, as a restarted daemon would
        assert await third.wait_connected(10)
        again = await _until_sentinel(third, broker.port, client_id)
    assert again == 0, f"{again} of {BACKLOG} acknowledged messages were sent again"


async def _until_sentinel(ingest: MqttIngest, port: int, client_id: str) -> int:
    """How many messages the session holds ahead of one published now; each batch settled.

    The broker keeps a session's messages in order, so whatever it sends again comes
    before the sentinel: the count does not depend on how long anything takes.
    """
    pub = Publisher(port, client_id=f"{client_id}-sentinel")
    try:
        await asyncio.to_thread(pub.publish, "backlog/x", b"sentinel")
    finally:
        pub.close()
    payloads, _ = await settled_until(ingest, lambda got: b"sentinel" in got)
    return payloads.index(b"sentinel")
