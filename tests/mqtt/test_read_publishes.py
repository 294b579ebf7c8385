"""PUBLISH packets read in bulk (packets.read_publishes) against paho's own decoding.

The bulk read replaces paho's per-packet read on the hot path; what it takes must
be exactly what paho would have handed `on_message`, and what it does not take
must be left, byte for byte, for paho.
"""

from __future__ import annotations

import socket
from datetime import UTC, datetime
from typing import Any

import paho.mqtt.client as paho
import pytest
from hypothesis import given
from hypothesis import strategies as st
from paho.mqtt import _packet
from paho.mqtt.client import MQTTv311
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from structlog.testing import capture_logs

from alarmhub.mqtt import packets
from alarmhub.mqtt.client import MqttIngest
from alarmhub.mqtt.paho_fast import BufferedReadClient
from alarmhub.settings import parse_mqtt_url


def publish(topic: bytes, payload: bytes, *, qos: int, mid: int = 1, retain: bool = False) -> bytes:
    """A PUBLISH as a broker sends it (MQTT 3.1.1 section 3.3)."""
    body = len(topic).to_bytes(2, "big") + topic
    if qos:
        body += mid.to_bytes(2, "big")
    body += payload
    head = packets.PUBLISH | qos << 1 | int(retain)
    return bytes((head,)) + packets.remaining_length(len(body)) + body


def paho_reads(packet: bytes) -> packets.Publish:
    """What paho's decoder makes of one whole packet."""
    _value, used = _length(packet)
    got = _packet.decode_publish(packet[0], packet[1 + used :], MQTTv311)
    return (got.topic.decode("utf-8"), bytes(got.payload), got.mid, got.qos, got.retain)


def _length(packet: bytes) -> tuple[int, int]:
    value, shift = 0, 0
    for used, byte in enumerate(packet[1:5], start=1):
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, used
        shift += 7
    raise AssertionError("no length")


topics = st.text(
    alphabet=st.characters(exclude_categories=["Cs"], exclude_characters="\x00"),
    min_size=1,
    max_size=40,
).map(lambda t: t.encode("utf-8"))
one_publish = st.builds(
    publish,
    topics,
    st.binary(max_size=300),
    qos=st.sampled_from([0, 1]),
    mid=st.integers(1, 0xFFFF),
    retain=st.booleans(),
)


@given(st.lists(one_publish, min_size=1, max_size=20))
def test_whole_packets_are_read_as_paho_reads_them(run: list[bytes]) -> None:
    buf = b"".join(run)
    found, pos = packets.read_publishes(buf, 0)
    assert found == [paho_reads(p) for p in run]
    assert pos == len(buf)


@given(st.lists(one_publish, min_size=1, max_size=8), st.data())
def test_a_packet_cut_by_the_buffer_is_left_whole_for_paho(
    run: list[bytes], data: st.DataObject
) -> None:
    buf = b"".join(run)
    cut = data.draw(st.integers(0, len(buf) - 1))
    found, pos = packets.read_publishes(buf[:cut], 0)
    # Exactly the packets wholly before the cut, and the position at a packet's start.
    whole, edge = 0, 0
    for p in run:
        if edge + len(p) > cut:
            break
        whole, edge = whole + 1, edge + len(p)
    assert found == [paho_reads(p) for p in run[:whole]]
    assert pos == edge


def test_it_starts_where_it_is_told_and_stops_at_any_other_packet() -> None:
    pingresp = b"\xd0\x00"
    suback = b"\x90\x03\x00\x01\x01"
    a = publish(b"alarmhub/v1/a/events", b"{}", qos=1, mid=7)
    b = publish(b"alarmhub/v1/b/events", b"[]", qos=0)
    buf = pingresp + a + suback + b
    assert packets.read_publishes(buf, 0) == ([], 0)
    found, pos = packets.read_publishes(buf, len(pingresp))
    assert found == [("alarmhub/v1/a/events", b"{}", 7, 1, False)]
    assert pos == len(pingresp) + len(a)
    assert packets.read_publishes(buf, pos + len(suback)) == (
        [("alarmhub/v1/b/events", b"[]", 0, 0, False)],
        len(buf),
    )


def test_what_paho_must_judge_is_left_to_paho() -> None:
    """QoS 2 (paho keeps its state), an empty or non-UTF-8 topic (paho refuses or
    reports it), a body shorter than its topic, a length of five bytes."""
    good = publish(b"t", b"x", qos=1)
    refused = [
        publish(b"t", b"x", qos=2),
        publish(b"", b"x", qos=1),
        publish(b"\xff\xfe", b"x", qos=0),
        bytes((0x32, 0x03, 0x00, 0x09, 0x74)),  # topic of 9 bytes in a body of 3
        bytes((0x32, 0x01, 0x00)),  # a body too short for a topic length
        bytes((0x30, 0x80, 0x80, 0x80, 0x80, 0x01)) + b"\x00" * 8,  # 5-byte length
        bytes((0x36,)) + publish(b"t", b"x", qos=1)[1:],  # QoS bits 3: malformed
    ]
    for bad in refused:
        assert packets.read_publishes(good + bad + good, 0) == (
            [("t", b"x", 1, 1, False)],
            len(good),
        ), bad


def buffered_client(buffer: bytes) -> tuple[BufferedReadClient, list[packets.Publish]]:
    """A client whose read buffer holds `buffer`, as if one recv() had returned it."""
    client = BufferedReadClient(callback_api_version=CallbackAPIVersion.VERSION2, client_id="t")
    client._rbuf, client._rpos = buffer, 0
    taken: list[packets.Publish] = []
    client.on_publishes = taken.extend
    return client, taken


def test_a_bulk_read_notes_the_time_paho_s_keep_alive_reads() -> None:
    """paho pings and then drops a link it has heard nothing on for a keep-alive: a run
    of publishes read in bulk must count as heard, as paho's own read does."""
    run = publish(b"a/b", b"1", qos=1, mid=3) + publish(b"a/c", b"2", qos=0)
    client, taken = buffered_client(run)
    attribute = client.received_at_attribute
    assert attribute is not None
    setattr(client, attribute, 0.0)
    assert client._packet_read() == MQTTErrorCode.MQTT_ERR_SUCCESS
    assert taken == [("a/b", b"1", 3, 1, False), ("a/c", b"2", 0, 0, False)]
    assert getattr(client, attribute) > 0.0
    assert client._rpos == len(run)
    assert client.bulk_reads == 1


def test_a_packet_paho_must_read_is_left_to_paho_between_two_bulk_runs() -> None:
    """A QoS 2 publish between two QoS 1 ones: paho reads it (and keeps its state), in
    stream order, and the bulk read takes up again after it."""
    q2 = publish(b"q/2", b"two", qos=2, mid=9)
    client, _taken = buffered_client(
        publish(b"q/1", b"one", qos=1, mid=8) + q2 + publish(b"q/3", b"three", qos=1, mid=10)
    )
    order: list[str] = []

    def bulk(found: list[packets.Publish]) -> None:
        order.extend(topic for topic, *_ in found)

    client.on_publishes = bulk
    client.on_message = lambda _c, _u, msg: order.append(msg.topic)
    client._send_pubrec = lambda mid: MQTTErrorCode.MQTT_ERR_SUCCESS  # type: ignore[method-assign]
    while client._rpos < len(client._rbuf):
        assert client._packet_read() == MQTTErrorCode.MQTT_ERR_SUCCESS
    assert order == ["q/1", "q/3"]  # q/2 waits for PUBREL in paho, as before
    assert 9 in client._in_messages
    assert client.bulk_reads == 2


def test_without_the_keep_alive_time_every_packet_is_paho_s(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A paho that keeps the receive time under another name: no bulk read, and a warning."""
    monkeypatch.setattr(BufferedReadClient, "__init__", _init_without_receive_time)
    with capture_logs() as logs:
        ingest = MqttIngest(
            parse_mqtt_url("mqtt://127.0.0.1:1"), "t-bulk", ["x/#"], lambda: datetime.now(UTC)
        )
    client = ingest._client
    assert isinstance(client, BufferedReadClient)
    assert client.received_at_attribute is None
    client._rbuf, client._rpos = publish(b"x/y", b"1", qos=1), 0
    got: list[paho.MQTTMessage] = []
    client.on_message = lambda _c, _u, msg: got.append(msg)
    client._packet_read()
    assert [m.topic for m in got] == ["x/y"]
    assert client.bulk_reads == 0
    assert "mqtt.paho_bulk_read_unavailable" in [e["event"] for e in logs]


_original_init = BufferedReadClient.__init__


def _init_without_receive_time(self: BufferedReadClient, *args: Any, **kwargs: Any) -> None:
    _original_init(self, *args, **kwargs)
    self.received_at_attribute = None


def socket_client() -> tuple[BufferedReadClient, socket.socket, list[packets.Publish]]:
    """A client reading from one end of a socket pair; the test writes the other."""
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    client, taken = buffered_client(b"")
    client._sock = ours
    return client, theirs, taken


def test_the_first_packet_of_a_burst_is_read_in_bulk_too() -> None:
    """At 2,000 msg/s most reads find one packet: with an empty buffer the bulk read
    fills it first, instead of leaving the burst's first packet to paho's read."""
    client, peer, taken = socket_client()
    try:
        heard: list[str] = []
        client.on_message = lambda _c, _u, msg: heard.append(msg.topic)
        peer.sendall(publish(b"one/by/one", b"1", qos=1, mid=1))
        assert client._packet_read() == MQTTErrorCode.MQTT_ERR_SUCCESS
        assert taken == [("one/by/one", b"1", 1, 1, False)]
        assert heard == []
        assert client.bulk_reads == 1
    finally:
        peer.close()
        client._sock_close()


def test_an_empty_socket_and_a_closed_one_answer_as_paho_s_read_does() -> None:
    client, peer, taken = socket_client()
    try:
        assert client._packet_read() == MQTTErrorCode.MQTT_ERR_AGAIN  # nothing yet
        peer.sendall(b"\xd0\x00")  # a PINGRESP: paho's to read
        assert client._packet_read() == MQTTErrorCode.MQTT_ERR_SUCCESS
        assert taken == []
        peer.close()
        assert client._packet_read() == MQTTErrorCode.MQTT_ERR_CONN_LOST
    finally:
        client._sock_close()
