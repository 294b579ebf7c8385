"""A SCAIP request as the decoder (core/decode.py) takes it: its label, its body, and each
refusal as a dead-letter reason.

Pure, like the codec it calls (core/scaip.py). Kept apart from the codec because it speaks
the pipeline's language (:class:`Rejected`, :class:`RejectReason`, the profile's values),
where the codec speaks SCAIP's (`snu`).
"""

from __future__ import annotations

from typing import Any

from alarmhub.core.model import Dropped, Rejected, RejectReason
from alarmhub.core.scaip import (
    CONTENT_TYPES,
    MAX_BODY_BYTES,
    ScaipRejected,
    Snu,
    parse_request,
    salvaged_ref,
)

# The dead-letter reason of each rejection (a bounded metric label, core/model.py).
_REASONS = {
    Snu.TOO_LONG: RejectReason.OVERSIZED,
    Snu.INVALID_FORMAT: RejectReason.MALFORMED_XML,
    Snu.WRONG_DATA: RejectReason.BAD_VALUE,
    Snu.MANDATORY_MISSING: RejectReason.MISSING_FIELD,
    Snu.REFERENCE_MISSING: RejectReason.MISSING_FIELD,
}
# Characters of a refused label quoted in the dead letter: the header is the sender's
# text, bounded only by the SIP header block (8 KiB).
_MAX_SHOWN_TYPE = 64


def scaip_payload(
    body: bytes, device_id: str, max_bytes: int, content_type: str | None = None
) -> tuple[dict[str, Any], dict[str, Any], tuple[Dropped, ...]] | Rejected:
    """For the decoder: the values the profile maps, the details kept on the events, and
    the elements left out (the message is stored "partial", like an MQTT one).

    `device_id` is who sent the body (the authenticated SIP user, as the topic
    `scaip/<cid>` names it): a body naming another `cid` is not believed.

    `content_type` is the label the body came under (None: a transport without labels).
    A label other than CONTENT_TYPES is refused before the body is parsed, whatever the
    body holds: the device is answered 415 (daemon/scaip.py), and an `<mrq>` sent under
    a wrong label must not raise an alarm the device was told was refused.
    """
    if content_type is not None and content_type not in CONTENT_TYPES:
        shown = content_type[:_MAX_SHOWN_TYPE] or "(none)"
        return Rejected(
            RejectReason.UNSUPPORTED_CONTENT_TYPE,
            f"Content-Type {shown} is not a SCAIP body; accepted: {', '.join(CONTENT_TYPES)}",
            device_id,
            salvaged_ref(body),
        )
    request = parse_request(body, min(max_bytes, MAX_BODY_BYTES))
    if isinstance(request, ScaipRejected):
        reason = _REASONS.get(request.snu, RejectReason.BAD_VALUE)
        detail = f"scaip {int(request.snu)}: {request.detail}"
        return Rejected(reason, detail, device_id, request.ref)
    if request.cid != device_id:
        return Rejected(
            RejectReason.DEVICE_MISMATCH,
            f"<cid> {request.cid} is not the sending device {device_id}",
            device_id,
            request.msg_id,
        )
    return request.fields(), request.details(), request.dropped
