"""PUBLISH packets read in bulk (packets.read_publishes) against paho's own decoding.

The bulk read replaces paho's per-packet read on the hot path; what it takes must
be exactly what paho would have handed `on_message`, and what it does not take
must be left, byte for byte, for paho.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from paho.mqtt import _packet
from paho.mqtt.client import MQTTv311

from alarmhub.mqtt import packets


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
