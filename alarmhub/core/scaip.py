"""SCAIP (SS 91100, CLC/TS 50134-9) bodies: read a request `<mrq>`, write an answer `<mrs>`.

Pure: bytes in, a typed value or a rejection out; an answer value in, bytes out. The
request is XML from a device on the network, so it is parsed with defusedxml: a DTD,
an entity declaration or an external reference is refused (a "billion laughs" body is a
rejection, never a hung or crashed daemon), and the body's size is bounded before it is
parsed at all.

The standard's informative XSD contradicts its normative code tables in places (patterns,
lengths, a target namespace), and devices disagree on padding (`stc` as `10`, `010` or
`0010`): so elements are found by their local name whatever their namespace and case,
codes are read as integers and checked against the tables' ranges, not against the XSD.

A rejection names the answer code the device is sent (:class:`Snu`), so the device learns
what was wrong with the request (docs/scaip.md, "Answer codes").
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from typing import Any
from xml.etree.ElementTree import Element, ParseError
from xml.sax.saxutils import escape

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring

from alarmhub.core.model import Dropped, RejectReason, ScaipVoice

# The profile format whose messages are SCAIP requests (devices/scaip/profile.toml).
SCAIP_FORMAT = "scaip"
# The media types a request is taken under: SCAIP's registered type, and the generic XML
# types (RFC 7303) some devices label it with; the body is then judged by its root
# (`<mrq>`, else `snu=2`). A body under any other label is refused unread (SIP 415) and
# kept as a dead letter (`unsupported_content_type`).
CONTENT_TYPE = "application/scaip+xml"
CONTENT_TYPES = (CONTENT_TYPE, "application/xml", "text/xml")
# A request is small (a few hundred bytes; a long `lte`/`ite` a few kB). Anything much
# larger is not a request: refused before it is parsed.
MAX_BODY_BYTES = 16 * 1024
CRE_CALL_TNU = 62  # `cre`: call the number in `tnu`
MAX_TEXT = 256  # characters of a free text (`stt`, `lte`, `ite`, a `crd`)
MAX_CALLBACKS = 8  # `crd` elements kept
# The key of an event's fields that holds what the operator is shown of the request.
DETAILS = "scaip"


class Snu(IntEnum):
    """The status number (`snu`) of an answer: what the device is told."""

    HANDLED = 0
    TOO_LONG = 1
    INVALID_FORMAT = 2
    WRONG_DATA = 3
    HOLD = 4
    NOT_TREATED = 5
    BUSY = 6
    MANDATORY_MISSING = 7
    REFERENCE_MISSING = 10
    UNDEFINED = 99


class MessageType(StrEnum):
    """`mty`: what the request is. Omitted means a message (an alarm or a status)."""

    MESSAGE = "ME"
    INFORMATION = "IN"  # updates the alarm of the same `ref`
    RESET = "RE"  # aborts the alarm of the same `ref`
    HEARTBEAT = "PI"


@dataclass(frozen=True, slots=True)
class Request:
    """A SCAIP request, validated, with its codes as integers."""

    ref: str
    cid: str
    dty: int
    mty: MessageType = MessageType.MESSAGE
    stc: int | None = None  # None: no status code, which the standard reads as an alarm
    stt: str | None = None
    pri: int | None = None
    hbo: bool = False  # the device accepts a heartbeat interval (`hbi`) in the answer
    did: str | None = None
    dco: int | None = None
    dte: str | None = None
    crd: tuple[str, ...] = ()  # callback addresses: `gsm:+47…`, `sip:…`, `no-voice:`
    lco: int | None = None
    lva: str | None = None
    lge: tuple[tuple[str, str], ...] = ()  # (geo|tim|gga, text) as sent
    lte: str | None = None
    ico: int | None = None
    ite: str | None = None
    cha: int | None = None
    ver: str | None = None
    # Elements left out (bad, or a second copy) or changed (cut, made printable), each
    # with its reason: recorded on the inbox row like an MQTT message's dropped fields.
    dropped: tuple[Dropped, ...] = ()

    @property
    def msg_id(self) -> str:
        """The message id alarmhub deduplicates by: the `ref`, apart per message type.

        A reset and an information update carry the `ref` of the alarm they are about,
        so `ref` alone would make them redeliveries of that alarm.
        """
        if self.mty is MessageType.MESSAGE:
            return self.ref
        return f"{self.ref}:{self.mty.value}"

    def fields(self) -> dict[str, Any]:
        """The request as the flat values a profile's `[[map]]` rules match on."""
        out: dict[str, Any] = {
            "ref": self.ref,
            "cid": self.cid,
            "dty": self.dty,
            "mty": self.mty.value,
            "msg_id": self.msg_id,
            "hbo": self.hbo,
        }
        for name in ("stc", "pri", "dco", "lco", "ico", "cha"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        return out

    def details(self) -> dict[str, Any]:
        """What an operator is shown: the callbacks, the position and the device's texts."""
        out: dict[str, Any] = {"ref": self.ref, "mty": self.mty.value, "dty": self.dty}
        if self.stc is not None:
            out["stc"] = self.stc
        if self.crd:
            out["crd"] = list(self.crd)
        if self.lge:
            out["lge"] = dict(self.lge)
        for name in ("stt", "lte", "ite", "lva", "did", "pri", "lco", "ico", "cha"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        return out


@dataclass(frozen=True, slots=True)
class ScaipRejected:
    """A body that is no usable request, with the answer code that says why."""

    snu: Snu
    detail: str
    ref: str | None = None  # echoed in the answer when the body had a readable one
    cid: str | None = None


@dataclass(frozen=True, slots=True)
class Answer:
    """An `<mrs>`: the status of the request `ref`, and what the device should do next."""

    ref: str
    snu: Snu
    ste: str | None = None
    mre: int | None = None  # voice mode: 0 none, 1 duplex, 2/3 simplex
    cre: int | None = None  # callback: 1-60 minutes' window, 61 predefined, 62 call `tnu`
    tnu: str | None = None
    hbi: int | None = None  # heartbeat interval, minutes


class AnswerMode(StrEnum):
    """When an alarm's request is answered `snu=0` (per municipality, the rules file)."""

    IMMEDIATE = "immediate"  # as soon as the alarm is committed
    # HOLD (`snu=4`) at every resend until an operator acknowledged the alarm: the device
    # keeps polling and calls (per the voice parameters) only once somebody has it.
    HOLD_UNTIL_TAKEN = "hold_until_taken"


@dataclass(frozen=True, slots=True)
class ScaipPolicy:
    answer: AnswerMode = AnswerMode.IMMEDIATE
    voice: ScaipVoice = field(default_factory=ScaipVoice)


def answer_for(
    request: Request,
    *,
    alarm_waiting: bool | None,
    policy: ScaipPolicy,
    voice: ScaipVoice | None,
    hbi: int | None,
) -> Answer:
    """The answer to a committed request.

    `alarm_waiting`: None when the request raised or joined no alarm (a heartbeat, a
    status); else whether that alarm still waits for an operator. `voice`: the device's
    own voice parameters, which override the municipality's.
    """
    if alarm_waiting is None:
        return Answer(request.ref, Snu.HANDLED, hbi=hbi)
    if alarm_waiting and policy.answer is AnswerMode.HOLD_UNTIL_TAKEN:
        return Answer(request.ref, Snu.HOLD, ste="waiting for an operator", hbi=hbi)
    v = voice if voice is not None else policy.voice
    return Answer(request.ref, Snu.HANDLED, mre=v.mre, cre=v.cre, tnu=v.tnu, hbi=hbi)


# (lowest, highest) of each code, from the code tables; the vendors' own 0900-0999
# are allowed where the tables reserve them.
# `dty` and `stc` are kept whatever their value (a device type or status code the tables
# do not list is still a device's request: the profile maps it); the others, shown to the
# operator only, are left out when outside their table.
_RANGES: dict[str, tuple[tuple[int, int], ...]] = {
    "pri": ((0, 9),),
    "dco": ((0, 29),),
    "lco": ((0, 52),),
    "ico": ((0, 999),),
    "cha": ((0, 1),),
}
_MAX_DIGITS = 4  # significant digits of a code (any number of leading zeros)
_IDENTITY = ("ref", "cid", "dty")  # twice is refused: which request is it?
# Elements a request holds once; a second copy of one is left out (recorded).
_SINGLE = (
    "mty", "stc", "stt", "pri", "hbo", "did", "dco", "dte",
    "lco", "lva", "lte", "ico", "ite", "cha", "ver", "lge",
)  # fmt: skip
_MESSAGE_TYPES = {t.value: t for t in MessageType}
_MAX_CID = 32
_MAX_REF = 16


def _local(tag: object) -> str:
    """An element's name without its namespace (`{urn:…}stc` → `stc`)."""
    text = tag if isinstance(tag, str) else ""
    return text.rsplit("}", 1)[-1]


def _name(tag: object) -> str:
    """The standard's name of an element: its local name, ASCII letters in lower case.

    XML names are case-sensitive and the standard's are lower-case, but some devices send
    them upper-case (`<MRQ>`, `<STC>`). No two of the standard's names differ only by
    case, so reading them whatever their case misreads nothing; refusing `<MRQ>` lost
    every alarm of such a device, and ignoring an `<STC>` read a fall as a press.
    """
    local = _local(tag)
    return local.lower() if local.isascii() else local


# A well-formed `<ref>` in a body that is not (too long, broken XML, a DTD): echoed in the
# answer so the device can match it to its request and end the session, instead of
# resending a request that can never succeed for up to 30 minutes. Only a valid ref
# (1-16 letters and digits) is salvaged; anything else is answered with an empty ref.
# Whatever its case (`<REF>`), as the parser reads names (`_name`).
_SALVAGE_REF = re.compile(rb"<(?:\w+:)?ref>\s*([A-Za-z0-9]{1,16})\s*</(?:\w+:)?ref>", re.IGNORECASE)
_SALVAGE_WITHIN = 4096  # bytes from the start: the ref comes first in real devices' bodies


def salvaged_ref(body: bytes) -> str | None:
    """The request's reference read without parsing the XML, when it is plainly there."""
    found = _SALVAGE_REF.search(body[:_SALVAGE_WITHIN])
    return found.group(1).decode("ascii") if found else None


def _parse_xml(body: bytes, max_bytes: int) -> Element | ScaipRejected:
    if len(body) > max_bytes:
        return ScaipRejected(
            Snu.TOO_LONG,
            f"body is {len(body)} bytes; the limit is {max_bytes}",
            salvaged_ref(body),
        )
    try:
        root = fromstring(body, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except DefusedXmlException as exc:
        # A DTD, an entity or an external reference: refused, never expanded or fetched.
        return ScaipRejected(
            Snu.INVALID_FORMAT, f"body refused: {type(exc).__name__}", salvaged_ref(body)
        )
    except (ParseError, ValueError) as exc:
        return ScaipRejected(
            Snu.INVALID_FORMAT, f"body is not XML: {str(exc)[:120]}", salvaged_ref(body)
        )
    if _name(root.tag) != "mrq":
        return ScaipRejected(
            Snu.INVALID_FORMAT,
            f"root element is <{_local(root.tag)[:32]}>, not <mrq>",
            salvaged_ref(body),
        )
    return root


def _texts(root: Element) -> dict[str, list[str]]:
    values: dict[str, list[str]] = {}
    for child in root:
        name = _name(child.tag)
        if name == "lge":
            inner = ";".join(f"{_name(c.tag)}={(c.text or '').strip()}" for c in child)
            values.setdefault(name, []).append(inner)
            continue
        values.setdefault(name, []).append((child.text or "").strip())
    return values


def parse_request(body: bytes, max_bytes: int = MAX_BODY_BYTES) -> Request | ScaipRejected:
    """The request in a body, or the rejection (with its answer code) that says why not.

    Only what identifies the request is checked strictly, in this order, so the code is
    the first thing wrong: size (1), XML and root element (2), reference (10), mandatory
    `cid`/`dty` (7), the identity's form (3). Every other element that is bad is left
    out and named in `Request.dropped`, and the request is kept: one unreadable optional
    element must not throw away a call for help (docs/scaip.md, "Partial requests").
    """
    root = _parse_xml(body, max_bytes)
    if isinstance(root, ScaipRejected):
        return root
    values = _texts(root)
    one = {name: texts[0] for name, texts in values.items()}
    ref = one.get("ref", "")
    if not ref:
        return ScaipRejected(Snu.REFERENCE_MISSING, "missing element <ref>", cid=one.get("cid"))
    shown_ref = ref[: _MAX_REF * 2]
    for name in ("cid", "dty"):
        if not one.get(name):
            return ScaipRejected(Snu.MANDATORY_MISSING, f"missing element <{name}>", shown_ref)
    problem = _check_identity(ref, one["cid"], one["dty"], values)
    if problem is not None:
        return ScaipRejected(Snu.WRONG_DATA, problem, shown_ref, one["cid"][:_MAX_CID])
    return _request(ref, one, values)


def _check_identity(ref: str, cid: str, dty: str, values: dict[str, list[str]]) -> str | None:
    """What makes the request the device's and this one: checked strictly."""
    if len(ref) > _MAX_REF or not (ref.isascii() and ref.isalnum()):
        return "<ref> must be 1-16 letters or digits"
    if len(cid) > _MAX_CID or not (cid.isascii() and cid.isdigit()):
        return f"<cid> must be 1-{_MAX_CID} digits"
    if _digits(dty) is None:
        return f"<dty> must be a code of at most {_MAX_DIGITS} digits"
    for name in _IDENTITY:
        if len(values.get(name, ())) > 1:
            return f"element <{name}> appears more than once"
    return None


def _request(ref: str, one: dict[str, str], values: dict[str, list[str]]) -> Request:
    dropped = [
        _drop(name, f"element <{name}> appears more than once", "the first is kept")
        for name in _SINGLE
        if len(values.get(name, ())) > 1
    ]
    dty = _digits(one["dty"])
    assert dty is not None  # checked with the identity
    stc = _status_code(one.get("stc"), dropped)
    codes: dict[str, Any] = {name: _code(name, one.get(name), dropped) for name in _RANGES}
    mty_text = one.get("mty", "") or MessageType.MESSAGE.value
    mty = _MESSAGE_TYPES.get(mty_text.upper())
    if mty is None:
        dropped.append(
            _drop("mty", f"<mty> {mty_text[:8]!r} is not ME, IN, RE or PI", "read as ME")
        )
        mty = MessageType.MESSAGE
    hbo_text = one.get("hbo", "")
    hbo = _digits(hbo_text) if hbo_text else 0
    if hbo is None:
        dropped.append(_drop("hbo", f"<hbo> {hbo_text[:8]!r} is not digits", "read as no offer"))
    texts = _free_texts(one, values, dropped)
    return Request(
        ref=ref, cid=one["cid"], dty=dty, mty=mty, hbo=hbo == 1, stc=stc, **codes, **texts,
        dropped=tuple(dropped),
    )  # fmt: skip


def _digits(text: str) -> int | None:
    """A code as an integer whatever its padding (`10`, `010`, `00010`), or None."""
    if not (text.isascii() and text.isdigit()) or len(text.lstrip("0")) > _MAX_DIGITS:
        return None
    return int(text)


def _drop(name: str, problem: str, instead: str) -> Dropped:
    """An element left out of the request (or changed): recorded on its inbox row."""
    return Dropped(name, RejectReason.BAD_VALUE, f"{problem}; {instead}")


def _status_code(text: str | None, dropped: list[Dropped]) -> int | None:
    """`stc` as an integer. A code outside the tables is kept: the profile raises the
    button alarm for a code it does not name (better a spurious alarm than a call for
    help taken for a status). An unreadable one is no status code: the standard's alarm."""
    if text is None or text == "":
        return None
    value = _digits(text)
    if value is None:
        dropped.append(_drop("stc", f"<stc> {text[:8]!r} is not a code", "read as none (an alarm)"))
    return value


def _code(name: str, text: str | None, dropped: list[Dropped]) -> int | None:
    """An optional code within its table, or None (recorded) when it is not one."""
    if text is None or text == "":
        return None
    value = _digits(text)
    if value is None:
        dropped.append(_drop(name, f"<{name}> {text[:8]!r} is not a code", "left out"))
    elif not any(lo <= value <= hi for lo, hi in _RANGES[name]):
        ranges = ", ".join(f"{lo}-{hi}" for lo, hi in _RANGES[name])
        problem = f"<{name}> {value} is outside the code table ({ranges})"
        dropped.append(_drop(name, problem, "left out"))
        value = None
    return value


def _text(name: str, text: str, dropped: list[Dropped]) -> str:
    """A free text made printable and at most MAX_TEXT long.

    Whitespace of any kind (a newline, a tab, a no-break space) is a space: a location
    text over two lines is the same text, so that is not recorded. Other characters that
    cannot be shown (control or format characters) become a space, and a text cut to
    MAX_TEXT, are recorded: something the device sent is not shown as sent.
    """
    spaced = " ".join(text.split())
    shown = "".join(c if c.isprintable() else " " for c in spaced)
    if shown != spaced:
        dropped.append(_drop(name, f"<{name}> holds unprintable characters", "each made a space"))
    if len(shown) > MAX_TEXT:
        dropped.append(_drop(name, f"<{name}> is {len(shown)} characters", f"cut to {MAX_TEXT}"))
        shown = shown[:MAX_TEXT]
    return shown


def _free_texts(
    one: dict[str, str], values: dict[str, list[str]], dropped: list[Dropped]
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in ("stt", "did", "dte", "lva", "lte", "ite", "ver"):
        text = _text(name, one.get(name) or "", dropped)
        if text:
            out[name] = text
    crd = [" ".join(c.split()) for c in values.get("crd", ()) if c.strip()]
    kept = tuple(c for c in crd if len(c) <= MAX_TEXT and c.isprintable())
    if len(kept) < len(crd):
        dropped.append(_drop("crd", "a <crd> is unprintable or too long", "that one left out"))
    if len(kept) > MAX_CALLBACKS:
        dropped.append(
            _drop("crd", f"{len(kept)} <crd> elements", f"the first {MAX_CALLBACKS} kept")
        )
    out["crd"] = kept[:MAX_CALLBACKS]
    lge = one.get("lge")
    if lge:
        parts = tuple(tuple(p.split("=", 1)) for p in lge.split(";") if "=" in p)
        out["lge"] = tuple(
            (k, _text(f"lge/{k}", v, dropped)) for k, v in parts if k in {"geo", "tim", "gga"} and v
        )
    return out


def build_answer(answer: Answer) -> bytes:
    """The `<mrs>` body of an answer (application/scaip+xml)."""
    parts = [f"<ref>{escape(answer.ref)}</ref>", f"<snu>{int(answer.snu)}</snu>"]
    if answer.ste:
        parts.append(f"<ste>{escape(answer.ste[:MAX_TEXT])}</ste>")
    if answer.mre is not None:
        parts.append(f"<mre>{answer.mre}</mre>")
    if answer.cre is not None:
        parts.append(f"<cre>{answer.cre:02d}</cre>")
    if answer.tnu:
        parts.append(f"<tnu>{escape(answer.tnu)}</tnu>")
    if answer.hbi is not None:
        parts.append(f"<hbi>{answer.hbi}</hbi>")
    return ('<?xml version="1.0" encoding="UTF-8"?><mrs>' + "".join(parts) + "</mrs>").encode()


def parse_answer(body: bytes) -> dict[str, str]:
    """An `<mrs>`'s elements by name (for tests and tools that read answers)."""
    root = fromstring(body, forbid_dtd=True)
    return {_local(c.tag): (c.text or "").strip() for c in root}


def hbi_minutes(interval_s: int) -> int:
    """A heartbeat interval as `hbi` minutes: rounded up, within the standard's 1-1440."""
    return max(1, min(1440, -(-interval_s // 60)))
