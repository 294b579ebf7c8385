"""HelseID client credentials with private_key_jwt and DPoP, against servers that really check.

The token endpoint and the journal stand-in run on loopback (tests/support/helseid_server.py)
and verify every signature, claim, nonce and jti; the client is alarmhub's own HelseIdAuth
with a real key file. `send` does what the delivery worker does with a RequestAuth: ask for
the headers, send, tell it the answer, and repeat once when it says so.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from structlog.testing import capture_logs

from alarmhub.clock import FakeClock
from alarmhub.journal.helseid import TOKEN_RETRY_AFTER_S, HelseIdAuth, HelseIdError, htu
from alarmhub.settings.helseid import (
    HelseIdClient,
    SigningKey,
    load_signing_key,
    new_private_key,
    private_pem,
)
from tests.support.helseid_server import HelseIdServer, ProtectedServer

START = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)
MARGIN_S = 60.0


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(START)


@pytest.fixture
def helseid(clock: FakeClock) -> Iterator[HelseIdServer]:
    server = HelseIdServer(clock.now, lifetime_s=300)
    yield server
    server.close()


@pytest.fixture
def journal(helseid: HelseIdServer) -> Iterator[ProtectedServer]:
    server = ProtectedServer(helseid.guard())
    yield server
    server.close()


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10) as client:
        yield client


def key_file(tmp_path: Path, name: str, kind: str = "ec") -> Path:
    """A private key in a PEM file: EC P-256, or RSA 2048 (keygen's 4096 takes a second)."""
    key = new_private_key("ec") if kind == "ec" else rsa.generate_private_key(65537, 2048)
    path = tmp_path / f"{name}.pem"
    path.write_bytes(private_pem(key))
    return path


def client_of(helseid: HelseIdServer, key: Path, client_id: str = "alarmhub-0301") -> HelseIdClient:
    return HelseIdClient(token_endpoint=helseid.token_endpoint, client_id=client_id, key_file=key)


def auth_of(
    helseid: HelseIdServer, key: Path, http: httpx.AsyncClient, clock: FakeClock
) -> HelseIdAuth:
    client = client_of(helseid, key)
    return HelseIdAuth("0301", client, client.signing_key(), http, clock, margin_s=MARGIN_S)


def registered(
    tmp_path: Path, helseid: HelseIdServer, http: httpx.AsyncClient, clock: FakeClock
) -> tuple[HelseIdAuth, SigningKey]:
    path = key_file(tmp_path, "municipality-0301")
    key = load_signing_key(path)
    helseid.register("alarmhub-0301", key.public_jwk)
    return auth_of(helseid, path, http, clock), key


async def send(auth: HelseIdAuth, http: httpx.AsyncClient, url: str) -> httpx.Response:
    async def once() -> httpx.Response:
        return await http.post(url, content=b"{}", headers=await auth.headers("POST", url))

    answer = await once()
    if auth.observe(answer.status_code, dict(answer.headers)):
        answer = await once()
        auth.observe(answer.status_code, dict(answer.headers))
    return answer


async def test_one_token_for_many_requests_and_both_nonces_honoured(
    tmp_path, helseid, journal, http, clock
) -> None:
    auth, key = registered(tmp_path, helseid, http, clock)
    url = f"{journal.url}/v1/Bundle?_format=json"
    answers = [await send(auth, http, url) for _ in range(3)]
    assert [a.status_code for a in answers] == [202, 202, 202]
    # One token request got through; before it, the endpoint demanded its nonce once.
    assert len(helseid.log.issued) == 1
    assert helseid.log.refusals == ["use_dpop_nonce"]
    assert helseid.dpop.nonces_demanded == 1
    token = helseid.log.issued[0]
    assert token["cnf"] == {"jkt": key.thumbprint}
    assert token["client_id"] == "alarmhub-0301"
    assert token["scope"] == "nhn:jft/api"
    # The journal demanded its own nonce on the first request; the retry carried it.
    assert [r.split(":")[0] for r in journal.guard.refusals] == ["use_dpop_nonce"]
    assert journal.guard.accepted == 3


async def test_a_new_token_shortly_before_expiry(tmp_path, helseid, journal, http, clock) -> None:
    auth, _ = registered(tmp_path, helseid, http, clock)
    url = f"{journal.url}/v1/Bundle"
    assert (await send(auth, http, url)).status_code == 202
    clock.advance(timedelta(seconds=helseid.lifetime_s - MARGIN_S - 1))
    assert (await send(auth, http, url)).status_code == 202
    assert len(helseid.log.issued) == 1  # still well before expiry: cached
    clock.advance(timedelta(seconds=2))  # within the margin: renewed before it expires
    assert (await send(auth, http, url)).status_code == 202
    assert len(helseid.log.issued) == 2
    assert journal.guard.refusals[1:] == []  # no request went out with a stale token


async def test_a_replayed_proof_is_refused(tmp_path, helseid, journal, http, clock) -> None:
    auth, _ = registered(tmp_path, helseid, http, clock)
    url = f"{journal.url}/v1/Bundle"
    await send(auth, http, url)  # learns both nonces
    headers = await auth.headers("POST", url)
    first = await http.post(url, content=b"{}", headers=headers)
    again = await http.post(url, content=b"{}", headers=headers)
    assert first.status_code == 202
    assert again.status_code == 401
    assert 'error="invalid_dpop_proof"' in again.headers["WWW-Authenticate"]
    assert journal.guard.refusals[-1] == "invalid_dpop_proof: replayed: jti seen before"


async def test_a_token_used_with_another_keys_proof_is_refused(
    tmp_path, helseid, journal, http, clock
) -> None:
    auth, _ = registered(tmp_path, helseid, http, clock)
    url = f"{journal.url}/v1/Bundle"
    await send(auth, http, url)
    stolen = (await auth.headers("POST", url))["Authorization"].removeprefix("DPoP ")
    # A thief's own key makes a proof that is valid in itself (its jwk, this request, the
    # journal's nonce, the token's ath) but is not the key the token is bound to.
    thief = auth_of(helseid, key_file(tmp_path, "thief"), http, clock)
    proof = thief.proof("POST", url, journal.guard.dpop.nonce, stolen)
    answer = await http.post(
        url, content=b"{}", headers={"Authorization": f"DPoP {stolen}", "DPoP": proof}
    )
    assert answer.status_code == 401
    assert 'error="invalid_token"' in answer.headers["WWW-Authenticate"]
    assert journal.guard.refusals[-1].endswith("not the one the token is bound to")
    assert journal.guard.accepted == 1


async def test_a_client_key_not_registered_is_refused_at_the_token_endpoint(
    tmp_path, helseid, journal, http, clock
) -> None:
    registered(tmp_path, helseid, http, clock)  # the client exists, under another key
    wrong = auth_of(helseid, key_file(tmp_path, "not-registered", "rsa"), http, clock)
    with capture_logs() as logs, pytest.raises(HelseIdError) as failed:
        await send(wrong, http, f"{journal.url}/v1/Bundle")
    assert (failed.value.status, failed.value.error) == (401, "invalid_client")
    assert isinstance(failed.value, httpx.HTTPError)  # retried like a network failure
    assert helseid.log.refusals == ["use_dpop_nonce", "invalid_client"]
    assert helseid.log.issued == []
    assert journal.guard.refusals == []  # nothing reached the journal
    assert [e["event"] for e in logs] == ["journal.token_request_failed"]


async def test_a_refused_token_request_is_not_repeated_for_every_note(
    tmp_path, helseid, journal, http, clock
) -> None:
    """The worker tries each due note in turn: during a refusal (or an outage) each one
    asked HelseID again and logged again, a thousand pending notes a thousand requests
    a round. The failure is given again for TOKEN_RETRY_AFTER_S, then HelseID is asked."""
    registered(tmp_path, helseid, http, clock)
    wrong = auth_of(helseid, key_file(tmp_path, "not-registered", "rsa"), http, clock)
    url = f"{journal.url}/v1/Bundle"
    with capture_logs() as logs:
        for _ in range(5):
            with pytest.raises(HelseIdError):
                await send(wrong, http, url)
    assert helseid.log.refusals == ["use_dpop_nonce", "invalid_client"]  # one request
    assert [e["event"] for e in logs] == ["journal.token_request_failed"]
    clock.advance(timedelta(seconds=TOKEN_RETRY_AFTER_S))
    with pytest.raises(HelseIdError):
        await send(wrong, http, url)
    assert helseid.log.refusals.count("invalid_client") == 2  # asked again, once


async def test_an_expired_token_is_fetched_again(tmp_path, helseid, journal, http, clock) -> None:
    auth, _ = registered(tmp_path, helseid, http, clock)
    url = f"{journal.url}/v1/Bundle"
    assert (await send(auth, http, url)).status_code == 202
    # The wall clock steps past the token's expiry while the monotonic clock, which the
    # cache goes by, does not (an NTP step): the journal refuses the token as expired.
    clock.jump(timedelta(seconds=helseid.lifetime_s + 5))
    assert (await send(auth, http, url)).status_code == 202
    assert "invalid_token: expired" in journal.guard.refusals
    assert len(helseid.log.issued) == 2


async def test_the_assertion_and_the_proofs_carry_what_the_rfcs_ask(
    tmp_path, helseid, http, clock
) -> None:
    auth, key = registered(tmp_path, helseid, http, clock)
    assertion = jwt.decode(auth.client_assertion(), options={"verify_signature": False})
    assert assertion["iss"] == assertion["sub"] == "alarmhub-0301"
    assert assertion["aud"] == helseid.token_endpoint
    assert assertion["exp"] - assertion["iat"] == 60
    assert assertion["iat"] == int(START.timestamp())
    proof = auth.proof("post", "https://jft.example/api/v1/Bundle?x=1#f", "n-1", "tok")
    header = jwt.get_unverified_header(proof)
    claims = jwt.decode(proof, options={"verify_signature": False})
    assert header["typ"] == "dpop+jwt"
    assert header["jwk"] == key.public_jwk
    assert "d" not in header["jwk"]
    assert claims["htm"] == "POST"
    assert claims["htu"] == "https://jft.example/api/v1/Bundle"
    assert claims["nonce"] == "n-1"
    # RFC 9449 section 4.2's ath, computed by hand.
    expected = base64.urlsafe_b64encode(__import__("hashlib").sha256(b"tok").digest())
    assert claims["ath"] == expected.rstrip(b"=").decode()
    assert auth.proof("GET", "https://a.example/x", None)  # no nonce, no token: still a proof


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://jft.example/v1/Bundle", "https://jft.example/v1/Bundle"),
        ("https://jft.example:8443/v1/Bundle?a=1&b=2", "https://jft.example:8443/v1/Bundle"),
        ("http://127.0.0.1:9/x#frag", "http://127.0.0.1:9/x"),
    ],
)
def test_htu_drops_query_and_fragment(url: str, expected: str) -> None:
    assert htu(url) == expected


async def test_no_token_assertion_or_key_in_the_logs(
    tmp_path, helseid, journal, http, clock
) -> None:
    auth, _ = registered(tmp_path, helseid, http, clock)
    url = f"{journal.url}/v1/Bundle"
    with capture_logs() as logs:
        await send(auth, http, url)
        clock.jump(timedelta(seconds=helseid.lifetime_s + 5))
        sent = await auth.headers("POST", url)
        await send(auth, http, url)
    events = [e["event"] for e in logs]
    assert events == ["journal.token_fetched", "journal.token_refused", "journal.token_fetched"]
    text = json.dumps(logs, default=str)
    token = sent["Authorization"].removeprefix("DPoP ")
    assert token not in text
    assert "eyJ" not in text  # no JWT at all: no token, assertion or proof
    assert (tmp_path / "municipality-0301.pem").read_text().splitlines()[1] not in text
