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
