"""The SIP layer's bounded vocabularies: the metric labels of the SCAIP receiver's transport.

Plain enums, so that `observability/metrics.py` can pre-create every series at zero
and `alarmhub/sip/` can only count what is listed here.
"""

from __future__ import annotations

from enum import StrEnum

# The final responses alarmhub's SIP server sends; any other status a handler picks is
# counted as "other" (alarmhub_sip_responses_total{status}).
RESPONSE_STATUSES = (200, 400, 401, 403, 404, 405, 413, 415, 420, 481, 500, 503, 513)
OTHER_STATUS = "other"


def status_label(status: int) -> str:
    return str(status) if status in RESPONSE_STATUSES else OTHER_STATUS


class SipDrop(StrEnum):
    """Why bytes that arrived were dropped without any SIP answer."""

    UNPARSEABLE = "unparseable"  # not a SIP message at all: nothing to answer to
    RESPONSE = "response"  # a response no outgoing transaction waits for
    OVERSIZED = "oversized"  # a TCP/TLS message or header block over the limit: connection closed
    CONNECTIONS = "connections"  # a TCP/TLS connection over the limit: closed at once
    IDLE = "idle"  # a TCP/TLS connection closed after the idle timeout


class AnswerOutcome(StrEnum):
    """What became of one answer MESSAGE sent to a device's contact (Reply.inline False)."""

    DELIVERED = "delivered"  # a 2xx final response
    REFUSED = "refused"  # a final response of 300 or more
    TIMEOUT = "timeout"  # no final response within Timer F (32 s)
    UNREACHABLE = "unreachable"  # the contact could not be reached (connect, send)
    NO_CONTACT = "no_contact"  # neither Contact, From nor a registration gives an address
