"""What the SIP layer hands the SCAIP receiver, and what it gets back.

The SIP layer (this package) authenticates the sender, absorbs retransmissions and
carries the answer; the SCAIP side (the codec, the pipeline) sees one
:class:`InboundMessage` per authenticated MESSAGE, whatever its Content-Type, and answers
one :class:`Reply`.
The handler is awaited before the final response is sent, so a reply built after
the commit is what the device gets: SCAIP's acknowledgement after commit.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from alarmhub.core.digest import DeviceCredentials
from alarmhub.core.scaip import CONTENT_TYPE

SCAIP_CONTENT_TYPE = CONTENT_TYPE


@dataclass(frozen=True, slots=True)
class InboundMessage:
    user: str  # the authenticated digest username (a SCAIP device's id = its cid)
    body: bytes  # the MESSAGE body, whatever its Content-Type
    contact: str | None  # the URI to send the answer MESSAGE to (Contact header, else From)
    source: tuple[str, int]  # peer address
    transport: str  # "udp" | "tcp" | "tls"
    call_id: str
    received_at: datetime  # from the injected Clock
    # The Content-Type's media type, lower-case ("" when none, or none readable). Handed
    # over whatever it is: the SCAIP side keeps a body under a type it refuses as a dead
    # letter before answering 415, so a refusal is never a body lost.
    content_type: str = SCAIP_CONTENT_TYPE


@dataclass(frozen=True, slots=True)
class Reply:
    status: int = 200  # SIP final response status (403 for a forged cid, etc.)
    reason: str | None = None  # reason phrase; default from status
    body: bytes | None = None  # an <mrs> answer (application/scaip+xml)
    # Headers of the final response: `Accept` with a 415, `Retry-After` with a 503.
    headers: tuple[tuple[str, str], ...] = ()
    # True: the body goes in the final response; False: send the final response
    # without body, then body as a NEW MESSAGE to `contact` (guideline §7.5).
    inline: bool = False


class MessageHandler(Protocol):
    async def __call__(self, message: InboundMessage) -> Reply: ...


# A device's stored digest credentials by username (the device id), or None.
CredentialsLookup = Callable[[str], Awaitable[DeviceCredentials | None]]
