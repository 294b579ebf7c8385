"""Digest authentication's decisions as tables of plain values (core/digest.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from alarmhub.core.digest import (
    MD5,
    NONCE_LIFETIME_S,
    SHA256,
    Challenge,
    DigestOutcome,
    NonceUse,
    check_nonce,
    check_response,
    credentials_for,
    digest_response,
    ha1,
    mint_nonce,
    nonce_age_s,
    read_authorization,
)

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
SECRET = b"s" * 32
REALM = "alarmhub"
CREDS = credentials_for("4790012345", REALM, "pw")


def test_ha1_matches_rfc_2617_example() -> None:
    # RFC 2617 §3.5: Mufasa / testrealm@host.com / Circle Of Life.
    assert ha1(MD5, "Mufasa", "testrealm@host.com", "Circle Of Life") == (
        "939e7578ed9e3c518a452acee763bce9"
    )
    # RFC 7616 §3.9.1: the SHA-256 response for the same user and realm http-auth@example.org.
    h = ha1(SHA256, "Mufasa", "http-auth@example.org", "Circle of Life")
    got = digest_response(
        SHA256,
        h,
        "GET",
        "/dir/index.html",
        "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
        qop="auth",
        nc="00000001",
        cnonce="f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
    )
    assert got == "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"


def test_nonce_is_ours_until_it_expires() -> None:
    nonce = mint_nonce(SECRET, NOW)
    assert nonce_age_s(SECRET, nonce, NOW) == 0
    assert nonce_age_s(SECRET, nonce, NOW + timedelta(seconds=10)) == pytest.approx(10)
    assert nonce_age_s(b"x" * 32, nonce, NOW) is None  # another process's secret
    assert nonce_age_s(SECRET, nonce[:-2] + "AA", NOW) is None  # forged
    assert nonce_age_s(SECRET, "not base64 !", NOW) is None
    assert nonce_age_s(SECRET, nonce, NOW - timedelta(minutes=5)) is None  # from the future


def _answer(algorithm: str = MD5, password: str = "pw", **over: object) -> dict[str, str]:
    nonce = str(over.pop("nonce", mint_nonce(SECRET, NOW)))
    params = {
        "username": "4790012345",
        "realm": REALM,
        "nonce": nonce,
        "uri": "sip:alarmhub@127.0.0.1",
        "algorithm": algorithm,
        "qop": "auth",
        "nc": "00000001",
        "cnonce": "abc",
    }
    h = ha1(algorithm, "4790012345", REALM, password)
    params["response"] = digest_response(
        algorithm, h, "MESSAGE", params["uri"], nonce, qop="auth", nc="00000001", cnonce="abc"
    )
    params.update({k: str(v) for k, v in over.items()})
    return params


def _judge(params: dict[str, str], stored=CREDS, now=NOW, scheme="Digest") -> DigestOutcome:
    answer = read_authorization(scheme, params)
    if isinstance(answer, DigestOutcome):
        return answer
    assert isinstance(answer, Challenge)
    outcome = check_nonce(answer, REALM, SECRET, now, NONCE_LIFETIME_S)
    if outcome is not DigestOutcome.OK:
        return outcome
    return check_response(answer, "MESSAGE", REALM, stored)


@pytest.mark.parametrize(
    ("case", "params", "stored", "now", "scheme", "expected"),
    [
        ("md5", _answer(MD5), CREDS, NOW, "Digest", DigestOutcome.OK),
        ("sha-256", _answer(SHA256), CREDS, NOW, "Digest", DigestOutcome.OK),
        (
            "wrong password",
            _answer(password="no"),
            CREDS,
            NOW,
            "Digest",
            DigestOutcome.WRONG_PASSWORD,
        ),
        ("unknown user", _answer(), None, NOW, "Digest", DigestOutcome.UNKNOWN_USER),
        ("basic", {"username": "x"}, CREDS, NOW, "Basic", DigestOutcome.UNSUPPORTED),
        (
            "no response",
            {"username": "x", "realm": REALM},
            CREDS,
            NOW,
            "Digest",
            DigestOutcome.MALFORMED,
        ),
        (
            "md5-sess",
            _answer(algorithm="MD5-sess"),
            CREDS,
            NOW,
            "Digest",
            DigestOutcome.UNSUPPORTED,
        ),
        ("auth-conf", _answer(qop="auth-conf"), CREDS, NOW, "Digest", DigestOutcome.UNSUPPORTED),
        ("qop without nc", _answer(nc=""), CREDS, NOW, "Digest", DigestOutcome.MALFORMED),
        (
            "other realm",
            _answer(realm="elsewhere"),
            CREDS,
            NOW,
            "Digest",
            DigestOutcome.WRONG_REALM,
        ),
        ("forged nonce", _answer(nonce="AAAA"), CREDS, NOW, "Digest", DigestOutcome.BAD_NONCE),
        (
            "expired nonce",
            _answer(),
            CREDS,
            NOW + timedelta(seconds=NONCE_LIFETIME_S + 1),
            "Digest",
            DigestOutcome.STALE,
        ),
        (
            "credentials of another realm",
            _answer(),
            credentials_for("4790012345", "old-realm", "pw"),
            NOW,
            "Digest",
            DigestOutcome.REALM_CHANGED,
        ),
    ],
)
def test_judging_an_authorization(case, params, stored, now, scheme, expected) -> None:
    assert _judge(params, stored, now, scheme) is expected, case


def test_no_qop_is_rfc_2069_compatible() -> None:
    nonce = mint_nonce(SECRET, NOW)
    h = ha1(MD5, "4790012345", REALM, "pw")
    params = {
        "username": "4790012345",
        "realm": REALM,
        "nonce": nonce,
        "uri": "sip:x",
        "response": digest_response(MD5, h, "MESSAGE", "sip:x", nonce),
    }
    assert _judge(params) is DigestOutcome.OK


# --- nonce counts (a captured header is used once) -----------------------------------


@pytest.mark.parametrize(
    ("uses", "verdicts"),
    [
        # (nonce, nc or None for no qop, monotonic time)
        ([("n", 1, 0), ("n", 1, 1)], [True, False]),  # the same count again: a replay
        ([("n", 1, 0), ("n", 2, 1), ("n", 3, 2)], [True, True, True]),  # a device counting
        ([("n", 3, 0), ("n", 2, 1), ("n", 2, 2)], [True, True, False]),  # out of order, once
        ([("n", 100, 0), ("n", 36, 1)], [True, False]),  # below the window: refused
        ([("n", None, 0), ("n", None, 1)], [True, False]),  # RFC 2069: one use per nonce
        ([("n", 1, 0), ("m", 1, 1)], [True, True]),  # counts are per nonce
        ([("n", 1, 0), ("n", 1, NONCE_LIFETIME_S + 1)], [True, True]),  # forgotten once stale
    ],
)
def test_nonce_use_refuses_a_count_already_used(uses, verdicts) -> None:
    table = NonceUse()
    assert [table.use(nonce, nc, now) for nonce, nc, now in uses] == verdicts


def test_nonce_use_is_bounded() -> None:
    table = NonceUse(limit=100)
    for i in range(1_000):
        table.use(f"n{i}", 1, 0.0)
    assert len(table) <= 100


@pytest.mark.parametrize(
    "params",
    [
        {"response": "\u00e9\u00e9"},  # non-ASCII: the comparison raised TypeError
        {"response": "zz"},
        {"nc": "1"},  # not 8 hex digits
        {"nc": "0000000g"},
    ],
)
def test_a_response_or_count_that_is_not_hex_is_malformed(params) -> None:
    base = {
        "username": "u", "realm": REALM, "nonce": "x", "uri": "sip:a", "response": "ab",
        "qop": "auth", "nc": "00000001", "cnonce": "c",
    }  # fmt: skip
    assert read_authorization("Digest", base | params) is DigestOutcome.MALFORMED


def test_auth_int_hashes_the_body() -> None:
    args = (MD5, CREDS.ha1_md5, "MESSAGE", "sip:a", "n")
    signed = digest_response(*args, qop="auth-int", nc="00000001", cnonce="c", body=b"<mrq/>")
    other = digest_response(*args, qop="auth-int", nc="00000001", cnonce="c", body=b"<mrq />")
    assert signed != other
    answer = read_authorization(
        "Digest",
        {"username": "4790012345", "realm": REALM, "nonce": "n", "uri": "sip:a",
         "response": signed, "qop": "auth-int", "nc": "00000001", "cnonce": "c"},
    )  # fmt: skip
    assert isinstance(answer, Challenge)
    assert check_response(answer, "MESSAGE", REALM, CREDS, b"<mrq/>") is DigestOutcome.OK
    assert check_response(answer, "MESSAGE", REALM, CREDS, b"<mrq />") is (
        DigestOutcome.WRONG_PASSWORD
    )
