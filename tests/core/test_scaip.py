"""The SCAIP codec as tables: real-shaped bodies in, typed requests or answer codes out."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from alarmhub.config.profiles import load_catalog
from alarmhub.config.rules import RulesError, parse_rules
from alarmhub.core.decode import DecodeLimits, decode
from alarmhub.core.device_settings import (
    SettingsInvalidError,
    parse_settings,
    settings_json,
)
from alarmhub.core.model import (
    Decoded,
    Device,
    DeviceKind,
    EventType,
    RawMessage,
    Rejected,
    RejectReason,
    ScaipVoice,
)
from alarmhub.core.scaip import (
    MAX_BODY_BYTES,
    Answer,
    AnswerMode,
    MessageType,
    Request,
    ScaipPolicy,
    ScaipRejected,
    Snu,
    answer_for,
    build_answer,
    hbi_minutes,
    parse_answer,
    parse_request,
)
from alarmhub.core.scaip_decode import scaip_payload

CID = "4790012345"


def mrq(inner: str, root: str = "mrq", attrs: str = "") -> bytes:
    return f'<?xml version="1.0" encoding="UTF-8"?><{root}{attrs}>{inner}</{root}>'.encode()


BASE = f"<ref>R1</ref><cid>{CID}</cid>"

# (what, body, stc, dty, mty) — the same request as vendors pad and namespace it.
GOOD = [
    ("four digits", mrq(BASE + "<dty>0003</dty><stc>0010</stc>"), 10, 3, MessageType.MESSAGE),
    ("three digits", mrq(BASE + "<dty>003</dty><stc>010</stc>"), 10, 3, MessageType.MESSAGE),
    ("no padding", mrq(BASE + "<dty>3</dty><stc>10</stc>"), 10, 3, MessageType.MESSAGE),
    (
        "default namespace, whitespace",
        mrq(f"\n <ref> R1 </ref>\n <cid>{CID}</cid>\n <dty>2</dty>\n", attrs=' xmlns="urn:x"'),
        None,
        2,
        MessageType.MESSAGE,
    ),
    (
        "prefixed namespace",
        f'<s:mrq xmlns:s="urn:y"><s:ref>R1</s:ref><s:cid>{CID}</s:cid><s:dty>05</s:dty>'
        "<s:mty>PI</s:mty></s:mrq>".encode(),
        None,
        5,
        MessageType.HEARTBEAT,
    ),
    ("lower-case mty", mrq(BASE + "<dty>1</dty><mty>re</mty>"), None, 1, MessageType.RESET),
    ("vendor status code", mrq(BASE + "<dty>3</dty><stc>0950</stc>"), 950, 3, MessageType.MESSAGE),
    (
        "unknown element ignored",
        mrq(BASE + "<dty>3</dty><xyz>1</xyz>"),
        None,
        3,
        MessageType.MESSAGE,
    ),
]


@pytest.mark.parametrize(("what", "body", "stc", "dty", "mty"), GOOD, ids=[g[0] for g in GOOD])
def test_codes_are_normalised_whatever_the_padding(
    what: str, body: bytes, stc: int | None, dty: int, mty: MessageType
) -> None:
    request = parse_request(body)
    assert isinstance(request, Request), (what, request)
    assert (request.ref, request.cid, request.stc, request.dty, request.mty) == (
        "R1", CID, stc, dty, mty
    )  # fmt: skip


LAUGHS = (
    b'<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaaaaaaaa">'
    b'<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;"><!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;">'
    b'<!ENTITY d "&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;">]><mrq><ref>&d;</ref></mrq>'
)
EXTERNAL = (
    b'<?xml version="1.0"?><!DOCTYPE mrq [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
    b"<mrq><ref>1</ref><cid>1</cid><dty>1</dty><stt>&x;</stt></mrq>"
)
PARAMETER = (
    b'<?xml version="1.0"?><!DOCTYPE mrq [<!ENTITY % p SYSTEM "http://127.0.0.1:9/x"> %p;]><mrq/>'
)

# (what, body, answer code, the words the detail holds)
BAD = [
    ("empty", b"", Snu.INVALID_FORMAT, "not XML"),
    ("not XML", b"ref=1;stc=10", Snu.INVALID_FORMAT, "not XML"),
    ("JSON", b'{"ref": "1"}', Snu.INVALID_FORMAT, "not XML"),
    ("an answer, not a request", mrq("<ref>1</ref><snu>0</snu>", root="mrs"), Snu.INVALID_FORMAT, "<mrs>"),
    ("truncated", mrq(BASE + "<dty>3</dty>")[:-4], Snu.INVALID_FORMAT, "not XML"),
    ("billion laughs", LAUGHS, Snu.INVALID_FORMAT, "refused"),
    ("external entity", EXTERNAL, Snu.INVALID_FORMAT, "refused"),
    ("parameter entity", PARAMETER, Snu.INVALID_FORMAT, "refused"),
    ("huge", mrq(BASE + "<dty>3</dty><stt>" + "x" * MAX_BODY_BYTES + "</stt>"), Snu.TOO_LONG, "limit"),
    ("no ref", mrq(f"<cid>{CID}</cid><dty>3</dty>"), Snu.REFERENCE_MISSING, "<ref>"),
    ("empty ref", mrq(f"<ref></ref><cid>{CID}</cid><dty>3</dty>"), Snu.REFERENCE_MISSING, "<ref>"),
    ("no cid", mrq("<ref>1</ref><dty>3</dty>"), Snu.MANDATORY_MISSING, "<cid>"),
    ("no dty", mrq(f"<ref>1</ref><cid>{CID}</cid>"), Snu.MANDATORY_MISSING, "<dty>"),
    ("ref too long", mrq(f"<ref>{'A' * 17}</ref><cid>{CID}</cid><dty>3</dty>"), Snu.WRONG_DATA, "<ref>"),
    ("ref not alphanumeric", mrq(f"<ref>a-b</ref><cid>{CID}</cid><dty>3</dty>"), Snu.WRONG_DATA, "<ref>"),
    ("cid not digits", mrq("<ref>1</ref><cid>abc</cid><dty>3</dty>"), Snu.WRONG_DATA, "<cid>"),
    ("dty not a code", mrq(BASE + "<dty>pendant</dty>"), Snu.WRONG_DATA, "<dty>"),
    ("two refs", mrq(BASE + "<ref>R2</ref><dty>3</dty>"), Snu.WRONG_DATA, "<ref> appears more"),
    ("two cids", mrq(BASE + "<cid>1</cid><dty>3</dty>"), Snu.WRONG_DATA, "<cid> appears more"),
    ("ref and REF", mrq(BASE + "<REF>R2</REF><dty>3</dty>"), Snu.WRONG_DATA, "<ref> appears more"),
]  # fmt: skip


@pytest.mark.parametrize(("what", "body", "snu", "words"), BAD, ids=[b[0] for b in BAD])
def test_bad_bodies_are_rejections_with_their_answer_code(
    what: str, body: bytes, snu: Snu, words: str
) -> None:
    result = parse_request(body)
    assert isinstance(result, ScaipRejected), what
    assert result.snu is snu, result
    assert words in result.detail


# A genuine request with one bad optional element: the element is left out (or made
# printable, or cut) and named in `dropped`; the request, its alarm, is kept.
# (what, the elements after ref/cid, what the request holds, the dropped fields)
KEPT: list[tuple[str, str, dict[str, object], list[str]]] = [
    ("newline in lte", "<lte>Bathroom\nfloor</lte>", {"lte": "Bathroom floor"}, []),
    ("tab in stt", "<stt>Manual\talarm</stt>", {"stt": "Manual alarm"}, []),
    ("no-break space in ite", "<ite>Key\u00a0box</ite>", {"ite": "Key box"}, []),
    ("zero-width space in lte", "<lte>Hall\u200bway</lte>", {"lte": "Hall way"}, ["lte"]),
    ("text over 256", "<lte>" + "x" * 300 + "</lte>", {"lte": "x" * 256}, ["lte"]),
    ("pri 10", "<pri>10</pri>", {"pri": None}, ["pri"]),
    ("lco 053", "<lco>053</lco>", {"lco": None}, ["lco"]),
    ("cha 2", "<cha>2</cha>", {"cha": None}, ["cha"]),
    ("dco not a code", "<dco>x</dco>", {"dco": None}, ["dco"]),
    ("hbo yes", "<hbo>yes</hbo>", {"hbo": False}, ["hbo"]),
    ("nine crd", "<crd>gsm:+4791234567</crd>" * 9, {"crd": ("gsm:+4791234567",) * 8}, ["crd"]),
    ("a crd too long", f"<crd>sip:{'a' * 300}</crd><crd>no-voice:</crd>", {"crd": ("no-voice:",)},
     ["crd"]),
    ("two lge", "<lge><geo>59.9,10.7</geo></lge><lge><geo>1,2</geo></lge>",
     {"lge": (("geo", "59.9,10.7"),)}, ["lge"]),
    ("two stc", "<stc>10</stc><stc>19</stc>", {"stc": 10}, ["stc"]),
    ("stc and STC", "<stc>10</stc><STC>19</STC>", {"stc": 10}, ["stc"]),
    # Status codes and device types the tables do not list are kept: the profile maps
    # them (an unknown stc raises the button alarm, an unknown dty is "any device").
    ("stc 0500", "<stc>0500</stc>", {"stc": 500}, []),
    ("stc 00010", "<stc>00010</stc>", {"stc": 10}, []),
    ("stc not a code", "<stc>ten</stc>", {"stc": None}, ["stc"]),
    ("unknown mty", "<mty>XX</mty>", {"mty": MessageType.MESSAGE}, ["mty"]),
]  # fmt: skip


@pytest.mark.parametrize(("what", "inner", "held", "dropped"), KEPT, ids=[k[0] for k in KEPT])
def test_a_bad_optional_element_is_dropped_and_the_request_kept(
    what: str, inner: str, held: dict[str, object], dropped: list[str]
) -> None:
    request = parse_request(mrq(BASE + "<dty>0003</dty>" + inner))
    assert isinstance(request, Request), (what, request)
    assert {name: getattr(request, name) for name in held} == held
    assert [d.field for d in request.dropped] == dropped
    assert all(d.reason is RejectReason.BAD_VALUE for d in request.dropped)


def test_an_unlisted_device_type_is_kept() -> None:
    request = parse_request(mrq(BASE + "<dty>0052</dty><stc>0010</stc>"))
    assert isinstance(request, Request)
    assert (request.dty, request.stc, request.dropped) == (52, 10, ())


def test_a_rejection_echoes_a_readable_ref() -> None:
    result = parse_request(mrq(BASE + "<stc>10</stc>"))
    assert isinstance(result, ScaipRejected)
    assert (result.snu, result.ref) == (Snu.MANDATORY_MISSING, "R1")


# Element names as some devices send them: the standard's, in upper or mixed case. XML
# names are case-sensitive, but no two of SCAIP's differ only by case, so each is read as
# the standard's (docs/scaip.md, "Element names").
INNER = (
    f"<ref>U1</ref><cid>{CID}</cid><dty>0005</dty><mty>IN</mty><stc>0009</stc><stt>Fall</stt>"
    "<crd>gsm:+4791234567</crd><lge><geo>59.91,10.75</geo><tim>12:00</tim></lge><pri>2</pri>"
)


def named(inner: str, rename: Callable[[str], str]) -> str:
    """`inner` with each element's name (not its text) changed by `rename`."""
    return re.sub(r"(</?)(\w+)", lambda m: m[1] + rename(m[2]), inner)


UPPER = [
    ("all upper-case", named(f"<mrq>{INNER}</mrq>", str.upper)),
    ("upper-case root only", f"<MRQ>{INNER}</MRQ>"),
    ("upper-case elements in <mrq>",
     "<mrq>" + named(INNER, lambda n: n.upper() if n in {"mty", "stc", "lge", "geo"} else n)
     + "</mrq>"),
    ("mixed case, namespaced",
     '<s:Mrq xmlns:s="urn:y">' + named(INNER, lambda n: "s:" + n.capitalize()) + "</s:Mrq>"),
]  # fmt: skip


@pytest.mark.parametrize(("what", "body"), UPPER, ids=[u[0] for u in UPPER])
def test_element_names_are_read_whatever_their_case(what: str, body: str) -> None:
    """An upper-case `<MRQ>` was refused `snu=2` with an empty `ref`: the device could not
    match the answer and resent for up to 30 minutes, and every alarm of such a device was
    a dead letter. An upper-case element inside `<mrq>` (`<STC>`) was ignored unrecorded:
    a fall read as a button press, an update as a new alarm, nothing said so."""
    request = parse_request(f'<?xml version="1.0"?>{body}'.encode())
    assert request == parse_request(mrq(INNER)), what
    assert isinstance(request, Request)
    assert (request.ref, request.mty, request.stc, request.pri, request.dropped) == (
        "U1", MessageType.INFORMATION, 9, 2, ()
    )  # fmt: skip
    assert request.lge == (("geo", "59.91,10.75"), ("tim", "12:00"))


# (what, body, answer code): bodies still refused, whose upper-case <REF> is echoed.
REFUSED_UPPER = [
    ("too long", f"<MRQ><REF>U2</REF><CID>{CID}</CID><STT>{'x' * MAX_BODY_BYTES}</STT></MRQ>",
     Snu.TOO_LONG),
    ("truncated", f"<MRQ><REF>U2</REF><CID>{CID}</CID><DTY>3</DT", Snu.INVALID_FORMAT),
    ("an answer, not a request", "<MRS><REF>U2</REF><SNU>0</SNU></MRS>", Snu.INVALID_FORMAT),
    ("prefixed", f'<S:MRQ xmlns:S="urn:y"><S:REF> U2 </S:REF><S:CID>{CID}', Snu.INVALID_FORMAT),
]  # fmt: skip


@pytest.mark.parametrize(("what", "body", "snu"), REFUSED_UPPER, ids=[r[0] for r in REFUSED_UPPER])
def test_a_refused_body_echoes_its_ref_whatever_its_case(what: str, body: str, snu: Snu) -> None:
    """The answer carries the device's `ref`, so it ends the session instead of resending;
    the dead letter is found by it (its msg_id), with its reason."""
    result = parse_request(body.encode())
    assert isinstance(result, ScaipRejected), what
    assert (result.snu, result.ref) == (snu, "U2")
    dead = scaip_payload(body.encode(), CID, 65536)
    assert isinstance(dead, Rejected)
    assert dead.msg_id == "U2"
    assert dead.reason in {RejectReason.OVERSIZED, RejectReason.MALFORMED_XML}


def test_details_keep_what_an_operator_needs() -> None:
    body = mrq(
        BASE + "<dty>3</dty><stc>10</stc><stt>Manual alarm</stt><crd>gsm:+4791234567</crd>"
        "<crd>no-voice:</crd><lge><geo>59.91,10.75</geo><tim>12:00</tim></lge>"
        "<lte>Kitchen</lte><ite>Pendant</ite><hbo>001</hbo>"
    )
    request = parse_request(body)
    assert isinstance(request, Request)
    assert request.hbo
    assert request.details() == {
        "ref": "R1", "mty": "ME", "dty": 3, "stc": 10, "stt": "Manual alarm",
        "crd": ["gsm:+4791234567", "no-voice:"], "lge": {"geo": "59.91,10.75", "tim": "12:00"},
        "lte": "Kitchen", "ite": "Pendant",
    }  # fmt: skip


@pytest.mark.parametrize(
    ("mty", "msg_id"),
    [("ME", "R1"), ("IN", "R1:IN"), ("RE", "R1:RE"), ("PI", "R1:PI")],
)
def test_message_ids_keep_reset_and_update_apart_from_their_alarm(mty: str, msg_id: str) -> None:
    request = parse_request(mrq(BASE + f"<dty>3</dty><mty>{mty}</mty>"))
    assert isinstance(request, Request)
    assert request.msg_id == msg_id


def test_answers_round_trip() -> None:
    body = build_answer(Answer("R1", Snu.HANDLED, ste="ok <&>", mre=1, cre=62, tnu="+4722", hbi=60))
    assert parse_answer(body) == {
        "ref": "R1", "snu": "0", "ste": "ok <&>", "mre": "1", "cre": "62", "tnu": "+4722", "hbi": "60"
    }  # fmt: skip
    assert parse_answer(build_answer(Answer("R2", Snu.HOLD))) == {"ref": "R2", "snu": "4"}


@pytest.mark.parametrize(
    ("seconds", "minutes"), [(1, 1), (60, 1), (61, 2), (3600, 60), (10**7, 1440)]
)
def test_hbi_is_whole_minutes_within_the_standard(seconds: int, minutes: int) -> None:
    assert hbi_minutes(seconds) == minutes


def test_payload_refuses_a_body_naming_another_device() -> None:
    body = mrq("<ref>R1</ref><cid>111</cid><dty>3</dty>")
    result = scaip_payload(body, "222", 65536)
    assert isinstance(result, Rejected)
    assert result.reason is RejectReason.DEVICE_MISMATCH
    assert "111" in result.detail
    assert "222" in result.detail


def test_payload_rejections_name_the_answer_code() -> None:
    result = scaip_payload(mrq(f"<cid>{CID}</cid><dty>3</dty>"), CID, 65536)
    assert isinstance(result, Rejected)
    assert result.reason is RejectReason.MISSING_FIELD
    assert result.detail.startswith("scaip 10:")


@pytest.mark.parametrize(
    ("label", "refused"),
    [
        (None, False),  # a transport without labels
        ("application/scaip+xml", False),
        ("application/xml", False),
        ("text/xml", False),
        ("text/plain", True),
        ("application/scaip+json", True),
        ("", True),  # a SIP request without a Content-Type
    ],
)
def test_payload_under_another_label_is_refused_unread(label: str | None, refused: bool) -> None:
    """A well-formed press under a label other than SCAIP's or XML's raises nothing: the
    device is told 415, and it is a dead letter naming the label and the ref."""
    result = scaip_payload(mrq(f"<ref>R1</ref><cid>{CID}</cid><dty>3</dty>"), CID, 65536, label)
    if not refused:
        assert not isinstance(result, Rejected)
        return
    assert isinstance(result, Rejected)
    assert result.reason is RejectReason.UNSUPPORTED_CONTENT_TYPE
    assert (result.device_id, result.msg_id) == (CID, "R1")
    assert f"Content-Type {label or '(none)'} is not a SCAIP body" in result.detail


# ---- the answer policy and its settings -----------------------------------------------

RULES = (Path(__file__).resolve().parents[2] / "config" / "rules.toml").read_text()
PRESS = Request("R1", CID, 3, stc=10)
VOICE = ScaipVoice(1, 62, "+4722000000")
HOLDING = ScaipPolicy(AnswerMode.HOLD_UNTIL_TAKEN, ScaipVoice(mre=1, cre=61))

# (what, alarm waiting, policy, device voice, hbi, expected answer)
ANSWERS = [
    ("no alarm", None, HOLDING, None, 60, Answer("R1", Snu.HANDLED, hbi=60)),
    ("immediate", True, ScaipPolicy(), None, None, Answer("R1", Snu.HANDLED)),
    ("immediate with municipality voice", True, ScaipPolicy(voice=VOICE), None, None,
     Answer("R1", Snu.HANDLED, mre=1, cre=62, tnu="+4722000000")),
    ("device voice wins", True, HOLDING, VOICE, None,
     Answer("R1", Snu.HOLD, ste="waiting for an operator")),
    ("held until taken", True, HOLDING, None, None,
     Answer("R1", Snu.HOLD, ste="waiting for an operator")),
    ("taken", False, HOLDING, None, None, Answer("R1", Snu.HANDLED, mre=1, cre=61)),
    ("taken, device voice", False, HOLDING, VOICE, None,
     Answer("R1", Snu.HANDLED, mre=1, cre=62, tnu="+4722000000")),
]  # fmt: skip


@pytest.mark.parametrize(
    ("what", "waiting", "policy", "voice", "hbi", "expected"), ANSWERS, ids=[a[0] for a in ANSWERS]
)
def test_answer_policy(
    what: str,
    waiting: bool | None,
    policy: ScaipPolicy,
    voice: ScaipVoice | None,
    hbi: int | None,
    expected: Answer,
) -> None:
    got = answer_for(PRESS, alarm_waiting=waiting, policy=policy, voice=voice, hbi=hbi)
    assert got == expected, what


def test_rules_file_sets_the_policy_per_municipality() -> None:
    rules = parse_rules(
        RULES.replace('answer = "immediate"', 'answer = "immediate"\nmre = 1\ntnu = "+4722"')
        + '\n[municipalities.0301.scaip]\nanswer = "hold_until_taken"\ncre = 61\n'
    )
    assert rules.scaip_policy("4601") == ScaipPolicy(voice=ScaipVoice(1, None, "+4722"))
    # What the municipality does not name is the global one's.
    assert rules.scaip_policy("0301") == ScaipPolicy(
        AnswerMode.HOLD_UNTIL_TAKEN, ScaipVoice(1, 61, "+4722")
    )


@pytest.mark.parametrize(
    ("snippet", "words"),
    [
        ('answer = "sometimes"', "answer"),
        ("mre = 4", "mre"),
        ("cre = 63", "cre"),
        ('tnu = "call me"', "tnu"),
        ("colour = 1", "colour"),
    ],
)
def test_rules_file_refuses_a_bad_scaip_policy(snippet: str, words: str) -> None:
    with pytest.raises(RulesError, match=words):
        parse_rules(RULES.replace('answer = "immediate"', snippet))


def test_device_settings_round_trip_and_refuse_bad_values() -> None:
    data = {"scaip": {"mre": 1, "cre": 62, "tnu": "+4722000000", "inline": True}}
    settings = parse_settings(data)
    assert settings.scaip_voice == VOICE
    assert settings.scaip_inline
    assert settings_json(settings) == data
    with pytest.raises(SettingsInvalidError, match=r"scaip\.cre"):
        parse_settings({"scaip": {"cre": 0}})


# ---- through the decoder and the shipped profile ---------------------------------------

CATALOG = load_catalog(Path(__file__).resolve().parents[2] / "devices")
PENDANT = Device(CID, DeviceKind.SAFETY_ALARM, "0301", profile="scaip")
AT = datetime(2026, 12, 6, 10, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("inner", "event", "note", "dropped"),
    [
        ("<stc>0010</stc><lte>Bathroom\nfloor</lte><pri>10</pri>", EventType.BUTTON_PRESSED,
         None, ["pri"]),
        ("<stc>0500</stc>", EventType.BUTTON_PRESSED, "unrecognised button action: 500", []),
        ("<stc>ten</stc>", EventType.BUTTON_PRESSED, None, ["stc"]),
        ("<mty>PI</mty><stc>0500</stc><hbo>yes</hbo>", EventType.HEARTBEAT, None, ["hbo"]),
    ],
)  # fmt: skip
def test_a_partial_request_is_its_event_with_what_was_dropped(
    inner: str, event: EventType, note: str | None, dropped: list[str]
) -> None:
    """The profile's rule "better a spurious alarm than a call for help taken for a
    status" holds for SCAIP too: a request with a bad optional element, or a status code
    the tables do not list, is the alarm, and what was left out is on the message."""
    body = mrq(BASE + "<dty>0003</dty>" + inner)
    decoded = decode(RawMessage(f"scaip/{CID}", body, AT), {CID: PENDANT}, CATALOG, DecodeLimits())
    assert isinstance(decoded, Decoded), decoded
    [got] = decoded.events
    assert got.type is event
    assert got.fields.get("note") == note
    assert [d.field for d in decoded.dropped] == dropped
