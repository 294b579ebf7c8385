"""Which receipt a native device gets, on which topic; vendor topics get none."""

from __future__ import annotations

import orjson
import pytest

from alarmhub.core.model import Rejected, RejectReason, Verdict
from alarmhub.core.receipts import handled_receipt, stored_receipt


@pytest.mark.parametrize(
    ("rejected", "verdict", "body"),
    [
        (None, Verdict.LOGGED, {"ref": "m1", "status": "accepted"}),
        (None, Verdict.REDELIVERY, {"ref": "m1", "status": "accepted", "duplicate": True}),
        (
            Rejected(RejectReason.FUTURE_TIMESTAMP, "ahead"),
            Verdict.REJECTED,
            {"ref": "m1", "status": "rejected", "reason": "future_timestamp"},
        ),
    ],
)
def test_stored_receipts(rejected: Rejected | None, verdict: Verdict, body: dict) -> None:
    topic, payload = stored_receipt("alarmhub/v1/pend-1/events", "m1", rejected, verdict) or (
        "",
        b"",
    )
    assert topic == "alarmhub/v1/pend-1/receipts"
    assert orjson.loads(payload) == body


@pytest.mark.parametrize(
    "topic", ["zigbee2mqtt/z2m-0301-a/hall-door", "owntracks/ola/phone", "alarmhub/v1/x/other"]
)
def test_no_receipt_off_the_native_events_topic(topic: str) -> None:
    assert stored_receipt(topic, "m1", None, Verdict.LOGGED) is None
    assert handled_receipt(topic, "m1", "a1") is None


def test_no_receipt_without_a_readable_id() -> None:
    assert stored_receipt("alarmhub/v1/pend-1/events", None, None, Verdict.REJECTED) is None


def test_handled() -> None:
    topic, payload = handled_receipt("alarmhub/v1/pend-1/events", "m1", "a1") or ("", b"")
    assert topic == "alarmhub/v1/pend-1/receipts"
    assert orjson.loads(payload) == {"ref": "m1", "status": "handled", "alarm": "a1"}


@pytest.mark.parametrize("msg_id", ["m1", 'quote"and\\back', "æøå-id", "x" * 128])
@pytest.mark.parametrize(
    ("rejected", "verdict", "extra"),
    [
        (None, Verdict.LOGGED, {}),
        (None, Verdict.REDELIVERY, {"duplicate": True}),
        (
            Rejected(RejectReason.MALFORMED_JSON, "bad"),
            Verdict.REJECTED,
            {"reason": "malformed_json"},
        ),
    ],
)
def test_spliced_receipt_bytes_equal_orjson_of_the_dict(
    msg_id: str, rejected: Rejected | None, verdict: Verdict, extra: dict
) -> None:
    status = "rejected" if rejected else "accepted"
    _topic, payload = stored_receipt("alarmhub/v1/p/events", msg_id, rejected, verdict) or ("", b"")
    assert payload == orjson.dumps({"ref": msg_id, "status": status, **extra})
