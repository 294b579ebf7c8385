"""The answers alarmhub gives native devices on `alarmhub/v1/<device>/receipts`.

Pure: which receipt, on which topic, for a message's outcome. Vendor formats
(Zigbee2MQTT, OwnTracks) listen to nothing, so only native topics get one.
See docs/protocol.md.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import orjson

from alarmhub.core.model import Rejected, Verdict

if TYPE_CHECKING:
    from alarmhub.core.pipeline import MessageOutcome

NATIVE_PREFIX = "alarmhub/v1/"
EVENTS = "/events"


def _receipt_topic(events_topic: str) -> str | None:
    if not events_topic.startswith(NATIVE_PREFIX) or not events_topic.endswith(EVENTS):
        return None
    return events_topic.removesuffix(EVENTS) + "/receipts"


def stored_receipt(
    topic: str, msg_id: str | None, rejected: Rejected | None, verdict: Verdict
) -> tuple[str, bytes] | None:
    """`accepted` (with `duplicate` for a redelivery) or `rejected` with its reason."""
    target = _receipt_topic(topic)
    if target is None or msg_id is None:
        return None
    # Spliced, not a dict through orjson.dumps: one per native message on the hot
    # path. The bytes are what orjson.dumps of the same dict gives (tests/core/test_receipts.py).
    ref = orjson.dumps(msg_id)
    if rejected is not None:
        reason = orjson.dumps(rejected.reason.value)
        return target, b'{"ref":' + ref + b',"status":"rejected","reason":' + reason + b"}"
    if verdict is Verdict.REDELIVERY:
        return target, b'{"ref":' + ref + b',"status":"accepted","duplicate":true}'
    return target, b'{"ref":' + ref + b',"status":"accepted"}'


def stored_receipts(messages: Iterable[MessageOutcome]) -> list[tuple[str, bytes]]:
    """What to tell native devices of a committed batch: stored (or why not). Sent at QoS 0.

    A lost receipt is answered again when the device resends (docs/protocol.md).
    """
    receipts = []
    for msg in messages:
        receipt = stored_receipt(msg.raw.topic, msg.msg_id, msg.rejected, msg.verdict)
        if receipt is not None:
            receipts.append(receipt)
    return receipts


def handled_receipt(topic: str, msg_id: str, alarm_id: str) -> tuple[str, bytes] | None:
    """SCAIP's "handled": a person has taken the alarm this message raised."""
    target = _receipt_topic(topic)
    if target is None:
        return None
    return target, orjson.dumps({"ref": msg_id, "status": "handled", "alarm": alarm_id})
