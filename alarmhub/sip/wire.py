"""SIP on the wire: the limits, framing a byte stream, parsing, and building responses.

Parsing and serialising are sipmessage's (a maintained, typed, pure-Python library);
what is here is what it leaves to the transport: where one message ends in a TCP or
TLS stream (RFC 3261 §18.3: the header block, then `Content-Length` bytes of body),
how much alarmhub reads before it gives up on a sender, and the headers a response
copies from its request (§8.2.6.2).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from sipmessage import Message, Request, Response

# The largest body alarmhub accepts: a SCAIP request is a few hundred bytes; 16 KiB is
# plenty for the longest texts and positions, and bounds what one sender can make it hold.
MAX_BODY = 16 * 1024
MAX_HEADERS = 8 * 1024  # the header block, start line included
MAX_MESSAGE = MAX_HEADERS + MAX_BODY
ALLOW = "MESSAGE, REGISTER, OPTIONS"
SERVER = "alarmhub"
REASONS = {
    100: "Trying",
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    413: "Request Entity Too Large",
    415: "Unsupported Media Type",
    420: "Bad Extension",
    481: "Call/Transaction Does Not Exist",
    500: "Server Internal Error",
    503: "Service Unavailable",
    513: "Message Too Large",
}
_REQUIRED = ("Via", "From", "To", "Call-ID", "CSeq")


class FramingError(Exception):
    """A stream that cannot be framed any further: the connection is closed."""


class TooLargeError(FramingError):
    """A message over the limits; `head` is its header block when it could be read."""

    def __init__(self, head: bytes | None) -> None:
        super().__init__("SIP message over the size limit")
        self.head = head


def new_token(nbytes: int = 8) -> str:
    return secrets.token_hex(nbytes)


def new_branch() -> str:
    return "z9hG4bK" + new_token()  # RFC 3261's magic cookie, then a unique part


@dataclass
class StreamFramer:
    """Cuts a TCP/TLS byte stream into SIP messages by their Content-Length.

    Bounded: a header block over MAX_HEADERS or a declared body over MAX_BODY is an
    error (the caller answers if it can, and closes), so a sender cannot make
    alarmhub buffer more than one message's worth. CRLF keep-alives between
    messages (RFC 5626 §4.4.1) are skipped.
    """

    buffer: bytearray

    def __init__(self) -> None:
        self.buffer = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        self.buffer += data
        out: list[bytes] = []
        while True:
            while self.buffer[:2] == b"\r\n":
                del self.buffer[:2]
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buffer) > MAX_HEADERS:
                    raise TooLargeError(None)
                return out
            head = bytes(self.buffer[: end + 4])
            if len(head) > MAX_HEADERS:
                raise TooLargeError(None)
            length = content_length(head)
            if length is None:
                raise FramingError("no usable Content-Length on a stream")
            if length > MAX_BODY:
                raise TooLargeError(head)
            total = end + 4 + length
            if len(self.buffer) < total:
                return out
            out.append(bytes(self.buffer[:total]))
            del self.buffer[:total]


def content_length(head: bytes) -> int | None:
    """The Content-Length of a header block (`l:` compact form too); 0 when absent."""
    for line in head.split(b"\r\n")[1:]:
        name, sep, value = line.partition(b":")
        if sep and name.strip().lower() in (b"content-length", b"l"):
            text = value.strip()
            return int(text) if text.isdigit() else None
    return 0


def parse(data: bytes) -> Request | Response:
    """One SIP message; ValueError when sipmessage cannot read it or a header it needs.

    The body is cut to Content-Length (a datagram may carry padding); a body shorter
    than declared is an error (RFC 3261 §18.3: 400).
    """
    message = Message.parse(data)
    for name in _REQUIRED:
        if message.headers.get(name) is None:
            raise ValueError(f"no {name} header")
    message.cseq  # noqa: B018 - parsed here so that a broken CSeq is a ValueError now
    declared = message.content_length
    if declared is not None:
        if declared > len(message.body):
            raise ValueError("body shorter than Content-Length")
        message.body = message.body[:declared]
    return message


def header_block_of(data: bytes) -> bytes | None:
    """The header block of an oversized datagram, with an empty body, to answer it."""
    end = data.find(b"\r\n\r\n")
    if end < 0 or end + 4 > MAX_HEADERS:
        return None
    return data[: end + 4]


def response_to(
    request: Request,
    status: int,
    reason: str | None = None,
    *,
    headers: list[tuple[str, str]] | None = None,
    body: bytes = b"",
    content_type: str | None = None,
    source: tuple[str, int] | None = None,
) -> bytes:
    """The final (or provisional) response to `request`, per RFC 3261 §8.2.6.2.

    With the `source` the request came from, its top Via gets `received` and `rport`
    (RFC 3261 §18.2.1, RFC 3581 §4): a device behind NAT learns the address it is
    seen from, as it asked with an empty `rport`.
    """
    response = Response(status, reason or REASONS.get(status, "Unknown"), body)
    for i, via in enumerate(request.headers.getlist("Via")):
        response.headers.add("Via", via_received(via, source) if i == 0 and source else via)
    response.headers.add("From", request.headers["From"])
    to = request.headers["To"]
    if status > 100 and ";tag=" not in to.replace(" ", ""):
        to += f";tag={new_token(4)}"
    response.headers.add("To", to)
    response.headers.add("Call-ID", request.headers["Call-ID"])
    response.headers.add("CSeq", request.headers["CSeq"])
    response.headers.add("Server", SERVER)
    for name, value in headers or []:
        response.headers.add(name, value)
    if content_type is not None:
        response.headers.add("Content-Type", content_type)
    response.headers.add("Content-Length", str(len(body)))
    return bytes(response)


def via_received(via: str, source: tuple[str, int]) -> str:
    """The top Via with `received` (when the source is not its sent-by host) and `rport`."""
    first, comma, rest = via.partition(",")
    sent_by, *params = first.split(";")
    host = sent_by.strip().rpartition(" ")[2]
    host = host.rsplit("]", 1)[0].lstrip("[") if host.startswith("[") else host.split(":")[0]
    kept: list[str] = []
    rport = False
    for param in params:
        name = param.split("=", 1)[0].strip().lower()
        if name == "rport":
            rport = True
            param = f"rport={source[1]}"  # noqa: PLW2901 - the one rewritten
        elif name == "received":
            continue
        kept.append(param)
    if rport or host != source[0]:
        kept.append(f"received={source[0]}")
    return ";".join([sent_by, *kept]) + comma + rest


def response_from_head(
    head: bytes, status: int, source: tuple[str, int] | None = None
) -> bytes | None:
    """An answer to a message known only by its header block (oversized); None if unusable."""
    try:
        request = Message.parse(head)  # only the headers a response copies, unchecked
    except ValueError:
        return None
    if not isinstance(request, Request) or any(request.headers.get(h) is None for h in _REQUIRED):
        return None
    return response_to(request, status, source=source)


def branch_of(message: Request | Response) -> str | None:
    """The top Via's branch: the transaction a response belongs to (RFC 3261 §17.1.3)."""
    try:
        vias = message.via
    except ValueError:
        return None
    return vias[0].parameters.get("branch") if vias else None
