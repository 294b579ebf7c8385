"""The simulated SCAIP device's pure wire functions, as tables of plain values."""

from __future__ import annotations

import pytest
from sipmessage import AuthChallenge

from alarmhub.sim import scaip_wire as wire

# RFC 7616 §3.9.1: the worked example, with MD5 and SHA-256.
RFC_CHALLENGE = (
    'Digest realm="http-auth@example.org", qop="auth, auth-int", algorithm={alg}, '
    'nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", '
    'opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"'
)


@pytest.mark.parametrize(
    ("alg", "expected"),
    [
        ("MD5", "8ca523f5e9506fed4657c9700eebdbec"),
        ("SHA-256", "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"),
    ],
)
def test_digest_matches_the_rfc_7616_example(alg: str, expected: str) -> None:
    challenge = wire.parse_challenge(RFC_CHALLENGE.format(alg=alg))
    assert challenge is not None
    creds = wire.digest_response(
        challenge,
        "Mufasa",
        "Circle of Life",
        "GET",
        "/dir/index.html",
        nc=1,
        cnonce="f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
    )
    assert creds.parameters is not None
    assert creds.parameters["response"] == expected
    assert creds.parameters["qop"] == "auth"
    assert creds.parameters["nc"] == "00000001"
    assert creds.parameters["opaque"] == "FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"


@pytest.mark.parametrize(
    ("offered", "chosen"),
    [
        (["MD5", "SHA-256"], "SHA-256"),
        (["SHA-256", "MD5"], "SHA-256"),
        (["MD5"], "MD5"),
        ([None], "MD5"),  # no algorithm parameter: MD5 (RFC 2617)
        (["SHA-512-256"], None),  # nothing we support
    ],
)
def test_the_strongest_supported_challenge_is_chosen(offered, chosen) -> None:
    challenges = [
        AuthChallenge.parse(
            'Digest realm="r", nonce="n"' + ("" if a is None else f", algorithm={a}")
        )
        for a in offered
    ]
    got = wire.strongest(challenges)
    assert (None if got is None else got.parameters.get("algorithm", "MD5")) == chosen


def test_basic_is_never_answered() -> None:
    assert wire.strongest([AuthChallenge.parse('Basic realm="r"')]) is None


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"<mrs><ref>A1</ref><snu>0</snu></mrs>", ("A1", 0, None)),
        (b"<mrs><ref>A1</ref><snu>4</snu><ste>HOLD</ste></mrs>", ("A1", 4, None)),
        (b"<mrs><ref>A1</ref><snu>0</snu><hbi>060</hbi></mrs>", ("A1", 0, 60)),
        (b'<mrs xmlns="urn:x"><ref>B</ref><snu>5</snu></mrs>', ("B", 5, None)),
        (b"<mrs><ref>A1</ref></mrs>", None),  # no snu
        (b"<mrs><snu>10</snu></mrs>", ("", 10, None)),  # no ref: the answer to a ref-less mrq
        (b"<mrq><ref>A1</ref><snu>0</snu></mrq>", None),  # not an answer
        (b"<mrs><ref>A1</ref><snu>0</snu>", None),  # broken XML
        (
            (
                b'<!DOCTYPE m [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;">]>'
                b"<mrs><ref>&b;</ref><snu>0</snu></mrs>"
            ),
            None,
        ),  # entity expansion: refused, not expanded
    ],
)
def test_parse_mrs(body: bytes, expected) -> None:
    answer = wire.parse_mrs(body)
    assert (None if answer is None else (answer.ref, answer.snu, answer.hbi)) == expected


def test_mrq_body_orders_elements_as_the_schema_and_nests_lge() -> None:
    body = wire.mrq_body(
        {"stc": "0010", "cid": "47", "ref": "A1", "dty": "0003", "lge": {"geo": "59.9,10.7"}}
    )
    assert body.endswith(
        b"<mrq><ref>A1</ref><cid>47</cid><dty>0003</dty><stc>0010</stc>"
        b"<lge><geo>59.9,10.7</geo></lge></mrq>"
    )


def test_split_stream_cuts_whole_messages_and_keeps_the_rest() -> None:
    one = b"MESSAGE sip:a SIP/2.0\r\nContent-Length: 3\r\n\r\nabc"
    two = b"SIP/2.0 200 OK\r\nl: 0\r\n\r\n"
    buffer = bytearray(b"\r\n" + one + two + one[:10])
    assert wire.split_stream(buffer) == [one, two]
    assert bytes(buffer) == one[:10]


def test_split_stream_refuses_a_stream_it_cannot_frame() -> None:
    with pytest.raises(ValueError, match="Content-Length"):
        wire.split_stream(bytearray(b"MESSAGE sip:a SIP/2.0\r\nVia: x\r\n\r\nabc"))
    with pytest.raises(ValueError, match="too long"):
        wire.split_stream(bytearray(b"X" * (wire.MAX_HEADER_BYTES + 1)))
