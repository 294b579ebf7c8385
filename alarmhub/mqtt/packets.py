"""The two MQTT 3.1.1 packets alarmhub encodes itself: PUBACK and QoS 0 PUBLISH.

Why by hand: after each commit alarmhub sends one PUBACK per message and one
`accepted` receipt per native message. Through paho's public `ack()` and
`publish()` each of those is its own queue entry, `MQTTMessageInfo` (with a
`threading.Condition`), wake-up byte and `send()` syscall: a quarter of the
daemon's time at full drain (docs/performance.md). Encoded here, a batch's
acks and receipts are one buffer and one write. Both packets are fixed by the
MQTT 3.1.1 standard (sections 3.4 and 3.3) and carry no state of the session,
so nothing here can drift from what paho would have sent.

Pure: bytes in, bytes out.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence

PUBACK = 0x40
PUBLISH = 0x30
MAX_REMAINING_LENGTH = 268_435_455  # four bytes of variable-length integer
MAX_TOPIC_BYTES = 65_535


def pubacks(mids: Sequence[int]) -> bytes:
    """PUBACKs for `mids`, in that order: each is 0x40, length 2, the 16-bit id."""
    if not mids:
        return b""
    # One PUBACK is exactly one big-endian 32-bit word: 0x4002 << 16 | mid.
    # An identifier outside 16 bits would corrupt the word: refuse (min/max run in C).
    if min(mids) < 1 or max(mids) > 0xFFFF:
        bad = next(mid for mid in mids if not 0 < mid <= 0xFFFF)
        msg = f"packet identifier {bad} outside 1..65535"
        raise ValueError(msg)
    return struct.pack(f"!{len(mids)}I", *[0x4002_0000 | mid for mid in mids])


def remaining_length(n: int) -> bytes:
    """MQTT's variable-length integer: 7 bits per byte, high bit = more follow."""
    if not 0 <= n <= MAX_REMAINING_LENGTH:
        msg = f"packet of {n} bytes exceeds MQTT's limit of {MAX_REMAINING_LENGTH}"
        raise ValueError(msg)
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def publish_qos0(topic: str, payload: bytes) -> bytes:
    """A QoS 0, non-retained PUBLISH: no packet identifier, nothing to track."""
    name = topic.encode("utf-8")
    if not name or len(name) > MAX_TOPIC_BYTES:
        msg = f"topic name of {len(name)} bytes: MQTT allows 1..{MAX_TOPIC_BYTES}"
        raise ValueError(msg)
    if "+" in topic or "#" in topic or "\x00" in topic:
        msg = f"{topic!r} is not a topic name one may publish to"
        raise ValueError(msg)
    size = 2 + len(name) + len(payload)
    return b"".join(
        (bytes((PUBLISH,)), remaining_length(size), len(name).to_bytes(2, "big"), name, payload)
    )


def publishes_qos0(messages: Iterable[tuple[str, bytes]]) -> bytes:
    return b"".join(publish_qos0(topic, payload) for topic, payload in messages)


# One PUBLISH as read_publishes hands it over: topic, payload, packet id (0 at QoS 0),
# QoS and the retain flag.
Publish = tuple[str, bytes, int, int, bool]
_QOS_BITS = 0x06


def read_publishes(buf: bytes, pos: int) -> tuple[list[Publish], int]:
    """The whole QoS 0 and 1 PUBLISH packets at `buf[pos:]`, and the position after them.

    Why by hand: paho reads each incoming packet in a dozen steps (the command byte, the
    length byte by byte, the body, a `struct` format built per call, an `MQTTMessage`
    whose topic is decoded again at each use, two callback locks): at full drain its
    thread held a third of the daemon's GIL (docs/performance.md, issue 18). A PUBLISH
    of MQTT 3.1.1 (section 3.3) is a fixed layout with no session state to keep at QoS
    0 and 1 under manual acks, so these are read here in one pass over the buffer.

    It stops at the first packet it does not take, and paho reads that one as before:
    any other packet type, QoS 2 (paho keeps its state), a packet not wholly in `buf`,
    an empty or non-UTF-8 topic, a malformed length. Nothing paho would refuse is
    taken here: what it refuses it still refuses. Pure: bytes in, values out.
    """
    out: list[Publish] = []
    end = len(buf)
    while pos < end:
        head = buf[pos]
        qos_bits = head & _QOS_BITS
        if head & 0xF0 != PUBLISH or qos_bits > 0x02:
            break
        length, start = _length_at(buf, pos + 1, end)
        stop = start + length
        if length < 0 or stop > end or length < 2:
            break
        topic_end = start + 2 + (buf[start] << 8 | buf[start + 1])
        body = topic_end + 2 if qos_bits else topic_end
        if topic_end == start + 2 or body > stop:
            break
        try:
            topic = buf[start + 2 : topic_end].decode("utf-8")
        except UnicodeDecodeError:
            break
        mid = buf[topic_end] << 8 | buf[topic_end + 1] if qos_bits else 0
        out.append((topic, buf[body:stop], mid, qos_bits >> 1, bool(head & 0x01)))
        pos = stop
    return out, pos


def _length_at(buf: bytes, i: int, end: int) -> tuple[int, int]:
    """The remaining length starting at `buf[i]` and where the body starts; -1 when
    it is not wholly in the buffer or longer than the standard's four bytes."""
    value, shift, last = 0, 0, min(end, i + 4)
    while i < last:
        byte = buf[i]
        i += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, i
        shift += 7
    return -1, i
