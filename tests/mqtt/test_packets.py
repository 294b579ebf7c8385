"""The PUBACK and QoS 0 PUBLISH bytes alarmhub writes itself, against MQTT 3.1.1 and paho."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st
from paho.mqtt.packettypes import PacketTypes

from alarmhub.mqtt import packets


def decode_remaining_length(data: bytes) -> tuple[int, int]:
    """The standard's own decoding algorithm (MQTT 3.1.1, 2.2.3): value and bytes used."""
    multiplier, value = 1, 0
    for used, byte in enumerate(data, start=1):
        value += (byte & 0x7F) * multiplier
        if not byte & 0x80:
            return value, used
        multiplier *= 128
    raise AssertionError("truncated")


@pytest.mark.parametrize(
    ("n", "encoded"),
    [
        (0, b"\x00"),
        (127, b"\x7f"),
        (128, b"\x80\x01"),
        (16_383, b"\xff\x7f"),
        (16_384, b"\x80\x80\x01"),
        (2_097_151, b"\xff\xff\x7f"),
        (2_097_152, b"\x80\x80\x80\x01"),
        (268_435_455, b"\xff\xff\xff\x7f"),
    ],
)
def test_remaining_length_matches_the_standards_table(n: int, encoded: bytes) -> None:
    # The boundary values are the table in MQTT 3.1.1 section 2.2.3.
    assert packets.remaining_length(n) == encoded


def test_remaining_length_beyond_four_bytes_is_refused() -> None:
    with pytest.raises(ValueError, match="exceeds"):
        packets.remaining_length(268_435_456)
    with pytest.raises(ValueError, match="exceeds"):
        packets.remaining_length(-1)


@given(st.integers(min_value=0, max_value=268_435_455))
def test_remaining_length_round_trips(n: int) -> None:
    encoded = packets.remaining_length(n)
    assert decode_remaining_length(encoded) == (n, len(encoded))


def test_pubacks_are_four_bytes_each_in_the_given_order() -> None:
    assert packets.pubacks([1, 0x1234, 65535]) == b"\x40\x02\x00\x01@\x02\x124@\x02\xff\xff"
    assert packets.pubacks([]) == b""
    assert PacketTypes.PUBACK << 4 == packets.PUBACK  # paho's name for the same command


@pytest.mark.parametrize("mid", [0, 65_536, -1])
def test_a_packet_identifier_outside_16_bits_is_refused(mid: int) -> None:
    with pytest.raises(ValueError, match="packet identifier"):
        packets.pubacks([5, mid])


@given(
    st.text(
        st.characters(exclude_characters="+#\x00", exclude_categories=("Cs",)),  # type: ignore[arg-type]
        min_size=1,
        max_size=60,
    ),
    st.binary(max_size=20_000),
)
def test_publish_qos0_layout(topic: str, payload: bytes) -> None:
    data = packets.publish_qos0(topic, payload)
    assert data[0] == packets.PUBLISH  # QoS 0, no DUP, no RETAIN
    length, used = decode_remaining_length(data[1:])
    body = data[1 + used :]
    assert len(body) == length
    (topic_len,) = struct.unpack("!H", body[:2])
    assert body[2 : 2 + topic_len].decode("utf-8") == topic
    assert body[2 + topic_len :] == payload  # no packet identifier at QoS 0


@pytest.mark.parametrize("topic", ["", "a/+/b", "a/#", "nul\x00"])
def test_publish_refuses_what_is_not_a_topic_name(topic: str) -> None:
    with pytest.raises(ValueError, match="topic"):
        packets.publish_qos0(topic, b"x")


def test_publishes_concatenate_in_order() -> None:
    one = packets.publish_qos0("a/b", b"1")
    two = packets.publish_qos0("c", b"22")
    assert packets.publishes_qos0([("a/b", b"1"), ("c", b"22")]) == one + two
    assert one == b"\x30\x06\x00\x03a/b1"
