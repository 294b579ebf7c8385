"""The simulated SCAIP device's wire: `<mrq>` bodies, `<mrs>` answers, digest, SIP framing.

Pure functions and values, no I/O, so the device (`scaip_device.py`) stays the shell and the
tests can check each piece with plain values. SIP messages are parsed and built with
`sipmessage`; it does not compute digests or cut a TCP stream into messages, so those two
are here (RFC 7616 / RFC 8760 for the digest, RFC 3261 §18.3 for the framing).

Written against the protocol (docs/scaip.md, SS 91100 as summarised there), not against
alarmhub's receiver, so that the tests drive the receiver the way a real device would.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import xml.etree.ElementTree as ET  # building only: answers are parsed with defusedxml
from dataclasses import dataclass
from enum import StrEnum

from defusedxml import DefusedXmlException
from defusedxml import ElementTree as SafeET
from sipmessage import (
    URI,
    Address,
    AuthChallenge,
    AuthCredentials,
    AuthParameters,
    CSeq,
    Message,
    Request,
    Response,
    Via,
)

SCAIP_CONTENT_TYPE = "application/scaip+xml"
# The elements of an <mrq> in the order the standard's schema lists them; a device sends
# them in this order, extra ones (if a test adds any) after these.
MRQ_ORDER = (
    "ref", "ver", "sco", "cha", "mty", "hbo", "cid", "dty", "did", "dco", "dte", "crd",
    "stc", "stt", "pri", "lco", "lva", "lge", "lte", "ico", "ite", "ame",
)  # fmt: skip
# A digest algorithm's strength when a receiver offers several challenges (RFC 8760 §2.4:
# the client uses the first one it supports of those it prefers; we prefer the strongest).
ALGORITHMS = {"SHA-256": hashlib.sha256, "MD5": hashlib.md5}
STRENGTH = {"MD5": 1, "SHA-256": 2}
AUTH_PARAM = re.compile(
    r'(?P<key>[\w-]+)\s*=\s*(?:"(?P<quoted>(?:[^"\\]|\\.)*)"|(?P<token>[^\s,]+))'
)
MAX_HEADER_BYTES = 16_384  # a TCP peer that never ends its headers is cut off here


class MessageType(StrEnum):
    """`mty`: what an `<mrq>` is (omitted means ME)."""

    ALARM = "ME"
    RESET = "RE"
    UPDATE = "IN"
    HEARTBEAT = "PI"


@dataclass(frozen=True)
class Answer:
    """One `<mrs>` as the device read it; `via` says how it travelled."""

    ref: str
    snu: int
    ste: str | None = None
    mre: int | None = None
    cre: int | None = None
    tnu: str | None = None
    hbi: int | None = None
    via: str = "message"  # "message" (a new MESSAGE to the contact) or "inline" (200 OK body)


def mrq_body(fields: dict[str, str | dict[str, str]]) -> bytes:
    """An `<mrq>` document; a dict value is a nested element (`lge` with `geo`, `tim`)."""
    root = ET.Element("mrq")
    order = [k for k in MRQ_ORDER if k in fields] + [k for k in fields if k not in MRQ_ORDER]
    for name in order:
        value = fields[name]
        child = ET.SubElement(root, name)
        if isinstance(value, dict):
            for sub, text in value.items():
                ET.SubElement(child, sub).text = text
        else:
            child.text = value
    return b'<?xml version="1.0" encoding="UTF-8"?>' + bytes(ET.tostring(root))


def _local(tag: str) -> str:
    """An element's name without its namespace: the standard's XSD and devices disagree."""
    return tag.rsplit("}", 1)[-1]


def _int(text: str | None) -> int | None:
    return int(text) if text is not None and text.strip().isdigit() else None


def parse_mrs(body: bytes, via: str = "message") -> Answer | None:
    """The answer in `body`, or None when it is not a well-formed `<mrs>` with a snu.

    The ref may be empty: the answer to a request without one (`snu=10`) cannot name it.

    defusedxml refuses entity declarations and external references: the body comes from
    the network, and a hostile receiver is no reason for the simulated device to blow up.
    """
    try:
        root = SafeET.fromstring(body)
    except (ET.ParseError, ValueError, DefusedXmlException):
        return None
    if _local(root.tag) != "mrs":
        return None
    values = {_local(child.tag): (child.text or "").strip() for child in root}
    ref, snu = values.get("ref", ""), _int(values.get("snu"))
    if snu is None:
        return None
    return Answer(
        ref=ref,
        snu=snu,
        ste=values.get("ste"),
        mre=_int(values.get("mre")),
        cre=_int(values.get("cre")),
        tnu=values.get("tnu"),
        hbi=_int(values.get("hbi")),
        via=via,
    )


# --- digest ------------------------------------------------------------------------------


def _algorithm(challenge: AuthChallenge) -> str:
    return challenge.parameters.get("algorithm", "MD5").upper()


def strongest(challenges: list[AuthChallenge]) -> AuthChallenge | None:
    """The digest challenge with the strongest algorithm we support, or None (Basic, unknown)."""
    usable = [c for c in challenges if c.scheme.lower() == "digest" and _algorithm(c) in ALGORITHMS]
    return max(usable, key=lambda c: STRENGTH[_algorithm(c)], default=None)


def digest_response(
    challenge: AuthChallenge,
    username: str,
    password: str,
    method: str,
    uri: str,
    nc: int = 1,
    cnonce: str | None = None,
) -> AuthCredentials:
    """The Authorization header answering `challenge` (qop=auth when offered, else RFC 2069)."""
    algorithm = _algorithm(challenge)
    h = ALGORITHMS[algorithm]

    def hx(text: str) -> str:
        return h(text.encode()).hexdigest()

    realm, nonce = challenge.parameters["realm"], challenge.parameters["nonce"]
    ha1 = hx(f"{username}:{realm}:{password}")
    ha2 = hx(f"{method}:{uri}")
    qops = [q.strip() for q in challenge.parameters.get("qop", "").split(",") if q.strip()]
    params = {"username": username, "realm": realm, "nonce": nonce, "uri": uri}
    if "auth" in qops:
        cnonce = cnonce or secrets.token_hex(8)
        params |= {"qop": "auth", "nc": f"{nc:08x}", "cnonce": cnonce}
        params["response"] = hx(f"{ha1}:{nonce}:{nc:08x}:{cnonce}:auth:{ha2}")
    else:
        params["response"] = hx(f"{ha1}:{nonce}:{ha2}")
    params["algorithm"] = algorithm
    if "opaque" in challenge.parameters:
        params["opaque"] = challenge.parameters["opaque"]
    return AuthCredentials(scheme="Digest", parameters=AuthParameters(**params))


def parse_challenge(value: str) -> AuthChallenge | None:
    """One WWW-Authenticate value, or None.

    sipmessage 0.7 splits the parameters at every comma, also inside a quoted string, so
    it refuses the common `qop="auth,auth-int"`; such a value is read here instead.
    """
    try:
        return AuthChallenge.parse(value)
    except ValueError:
        pass
    scheme, _, rest = value.strip().partition(" ")
    params = {m["key"]: m["quoted"] if m["quoted"] is not None else m["token"]
              for m in AUTH_PARAM.finditer(rest)}  # fmt: skip
    if not scheme or "nonce" not in params:
        return None
    quoted = {k: v.replace('\\"', '"') for k, v in params.items()}
    return AuthChallenge(scheme=scheme, parameters=AuthParameters(**quoted))


def challenges_of(response: Response) -> list[AuthChallenge]:
    """Every WWW-Authenticate challenge of a 401 (sipmessage's property gives only the first)."""
    found = (parse_challenge(v) for v in response.headers.getlist("WWW-Authenticate"))
    return [c for c in found if c is not None]


def is_stale(challenge: AuthChallenge) -> bool:
    return challenge.parameters.get("stale", "").lower() == "true"


# --- SIP messages --------------------------------------------------------------------------


@dataclass(frozen=True)
class Endpoint:
    """Where the device sends (the receiver) and where it is reached (its contact)."""

    transport: str  # "UDP" or "TCP"
    target_host: str
    target_port: int
    local_host: str
    local_port: int


def new_branch() -> str:
    return "z9hG4bK" + secrets.token_hex(8)


def message_request(
    ep: Endpoint,
    cid: str,
    body: bytes,
    *,
    call_id: str,
    cseq: int,
    from_tag: str,
    branch: str,
    authorization: AuthCredentials | None = None,
) -> Request:
    """A SIP MESSAGE carrying one `<mrq>`, its Contact the device's own listening port."""
    uri = URI(scheme="sip", host=ep.target_host, port=ep.target_port)
    req = Request("MESSAGE", uri, body)
    via = f"SIP/2.0/{ep.transport} {ep.local_host}:{ep.local_port};branch={branch};rport"
    req.headers.add("Via", via)
    req.headers.add("Max-Forwards", "70")
    req.headers.add("From", f"<sip:{cid}@{ep.local_host}>;tag={from_tag}")
    req.headers.add("To", f"<sip:{ep.target_host}:{ep.target_port}>")
    req.headers.add("Call-ID", call_id)
    req.cseq = CSeq(cseq, "MESSAGE")
    contact = URI(
        scheme="sip",
        user=cid,
        host=ep.local_host,
        port=ep.local_port,
    )
    req.contact = [Address(uri=contact)]
    req.headers.add("Content-Type", SCAIP_CONTENT_TYPE)
    if authorization is not None:
        req.authorization = authorization
    req.headers.add("Content-Length", str(len(body)))
    return req


def response_to(req: Request, code: int, phrase: str, body: bytes = b"") -> Response:
    """A response to `req`: its Via, From, Call-ID and CSeq copied, a tag on To."""
    resp = Response(code, phrase, body)
    for name in ("Via", "From", "To", "Call-ID", "CSeq"):
        for value in req.headers.getlist(name):
            if name == "To" and ";tag=" not in value:
                value = f"{value};tag={secrets.token_hex(4)}"  # noqa: PLW2901
            resp.headers.add(name, value)
    if body:
        resp.headers.add("Content-Type", SCAIP_CONTENT_TYPE)
    resp.headers.add("Content-Length", str(len(body)))
    return resp


def branch_of(message: Message) -> str | None:
    """The transaction id RFC 3261 §17.1.3 matches a response by: the top Via's branch."""
    top = message.headers.get("Via")
    if top is None:
        return None
    try:
        return Via.parse_many(top)[0].parameters.get("branch")
    except (ValueError, IndexError):
        return None


def parse(data: bytes) -> Request | Response | None:
    """One SIP message, or None when it is not one (noise on the port is not a crash)."""
    try:
        return Message.parse(data)
    except (ValueError, UnicodeDecodeError, KeyError):
        return None


def split_stream(buffer: bytearray) -> list[bytes]:
    """Cut whole SIP messages off the front of a TCP stream buffer, by Content-Length.

    Leaves an incomplete message in `buffer`; raises ValueError when the stream cannot be
    framed (no Content-Length, or headers longer than MAX_HEADER_BYTES): on TCP that means
    the connection has lost its place and must be closed.
    """
    out: list[bytes] = []
    while True:
        while buffer.startswith(b"\r\n"):  # keep-alive CRLFs between messages (RFC 5626)
            del buffer[:2]
        end = buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(buffer) > MAX_HEADER_BYTES:
                raise ValueError("SIP headers too long")
            return out
        length = _content_length(bytes(buffer[:end]))
        total = end + 4 + length
        if len(buffer) < total:
            return out
        out.append(bytes(buffer[:total]))
        del buffer[:total]


def _content_length(head: bytes) -> int:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() in (b"content-length", b"l"):
            return int(value.strip())
    raise ValueError("a SIP message on TCP without Content-Length")
