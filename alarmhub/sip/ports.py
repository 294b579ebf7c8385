"""What the SIP layer hands the application, and what it gets back."""
from __future__ import annotations
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

@dataclass(frozen=True, slots=True)
class InboundMessage:
    user: str                 # the authenticated digest username (a SCAIP device's id = its cid)
    body: bytes               # the MESSAGE body (application/scaip+xml)
    contact: str | None       # the URI to send the answer MESSAGE to (Contact header, else From)
    source: tuple[str, int]   # peer address
    transport: str            # "udp" | "tcp" | "tls"
    call_id: str
    received_at: datetime     # from the injected Clock

@dataclass(frozen=True, slots=True)
class Reply:
    status: int = 200               # SIP final response status (403 for a forged cid, etc.)
    reason: str | None = None       # reason phrase; default from status
    body: bytes | None = None       # an <mrs> answer (application/scaip+xml)
    inline: bool = False            # True: the body goes in the final response; False: send the
                                    # final response without body, then body as a NEW MESSAGE to
                                    # `contact` (the standard's way, guideline §7.5)

class MessageHandler(Protocol):
    async def __call__(self, message: InboundMessage) -> Reply: ...
