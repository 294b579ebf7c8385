"""SIP digest authentication (RFC 3261 §22, RFC 7616, RFC 8760), as pure decisions.

A SCAIP device proves who it is with HTTP digest: alarmhub challenges with a nonce,
the device answers with `H(HA1:nonce:nc:cnonce:qop:H(method:uri))`, and alarmhub,
which stores only `HA1 = H(username:realm:password)` per algorithm (never the
clear password), computes the same and compares. Two algorithms: SHA-256 (RFC
8760, offered first) and MD5 (what every SIP device speaks). Basic is never
accepted.

Nonces are stateless: the time they were minted and an HMAC over it with a
per-process secret, so any nonce this process minted can be checked without a
table, and one older than the lifetime is answered `stale=true` (the device
answers the new challenge without asking its user again). A restart changes the
secret: the devices' next request is challenged afresh, which they handle anyway.
Replays inside a nonce's lifetime are not refused here (no `nc` table): a replay
can only repeat a message the device sent, which the receiver's dedup by
(cid, ref) treats as a redelivery.

Every decision returns a named outcome, never a bool: the shell turns it into the
SIP answer, the `alarmhub_scaip_digest_failures_total{reason}` label and the log.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

MD5 = "MD5"
SHA256 = "SHA-256"
# Offered in this order (RFC 8760: the preferred algorithm's challenge first).
ALGORITHMS = (SHA256, MD5)
NONCE_LIFETIME_S = 300.0
# A nonce minted up to this far "in the future" (the wall clock stepped back) is still ours.
NONCE_FUTURE_SLACK_S = 5.0
_NONCE_MAC_BYTES = 16


class DigestOutcome(StrEnum):
    """What one request's Authorization header came to."""

    OK = "ok"
    MISSING = "missing"  # no digest credentials: challenge (the usual first step, not a failure)
    MALFORMED = "malformed"  # a parameter missing or unparseable
    UNSUPPORTED = "unsupported"  # an algorithm or qop alarmhub does not offer (Basic included)
    WRONG_REALM = "wrong_realm"  # answered a challenge of another realm
    BAD_NONCE = "bad_nonce"  # a nonce this process did not mint
    STALE = "stale"  # our nonce, past its lifetime: challenge again with stale=true
    UNKNOWN_USER = "unknown_user"  # no credentials stored for the username
    REALM_CHANGED = "realm_changed"  # credentials stored for another realm: set them again
    WRONG_PASSWORD = "wrong_password"  # the response does not match  # noqa: S105


# The outcomes counted as failures (alarmhub_scaip_digest_failures_total{reason}).
FAILURES = tuple(o for o in DigestOutcome if o not in (DigestOutcome.OK, DigestOutcome.MISSING))
# Answered 403, all alike, so an answer never tells whether a username exists.
REFUSED = frozenset(
    {DigestOutcome.UNKNOWN_USER, DigestOutcome.REALM_CHANGED, DigestOutcome.WRONG_PASSWORD}
)


@dataclass(frozen=True, slots=True)
class DeviceCredentials:
    """What digest needs of one device: HA1 per algorithm, and the realm they were made in."""

    device_id: str
    realm: str
    ha1_md5: str
    ha1_sha256: str

    def ha1(self, algorithm: str) -> str:
        return self.ha1_sha256 if algorithm == SHA256 else self.ha1_md5


def _h(algorithm: str, text: str) -> str:
    data = text.encode()
    if algorithm == SHA256:
        return hashlib.sha256(data).hexdigest()
    return hashlib.md5(data, usedforsecurity=False).hexdigest()  # the protocol's own choice


def ha1(algorithm: str, username: str, realm: str, password: str) -> str:
    return _h(algorithm, f"{username}:{realm}:{password}")


MIN_PASSWORD = 8
MAX_PASSWORD = 256


def password_problem(password: str) -> str | None:
    """Why `password` cannot be a device's digest password, or None."""
    if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        return f"the password must be {MIN_PASSWORD} to {MAX_PASSWORD} characters"
    if any(ord(c) < 32 or ord(c) == 127 for c in password):
        return "the password may not contain control characters (a tab, a newline)"
    return None


def credentials_for(device_id: str, realm: str, password: str) -> DeviceCredentials:
    """The stored form of a device's password: HA1 for both algorithms; the password is gone."""
    return DeviceCredentials(
        device_id,
        realm,
        ha1(MD5, device_id, realm, password),
        ha1(SHA256, device_id, realm, password),
    )


def digest_response(
    algorithm: str,
    ha1_hex: str,
    method: str,
    uri: str,
    nonce: str,
    *,
    qop: str | None = None,
    nc: str = "",
    cnonce: str = "",
) -> str:
    """The `response` a client computes (RFC 7616 §3.4.1), for `qop=auth` or none."""
    ha2 = _h(algorithm, f"{method}:{uri}")
    if qop is None:
        return _h(algorithm, f"{ha1_hex}:{nonce}:{ha2}")
    return _h(algorithm, f"{ha1_hex}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")


# --- nonces -----------------------------------------------------------------------


def _mac(secret: bytes, stamp: bytes) -> bytes:
    return hmac.new(secret, stamp, hashlib.sha256).digest()[:_NONCE_MAC_BYTES]


def mint_nonce(secret: bytes, now: datetime) -> str:
    """A nonce carrying the time it was minted (ms since the epoch) and its HMAC."""
    stamp = int(now.timestamp() * 1000).to_bytes(8, "big")
    return base64.urlsafe_b64encode(stamp + _mac(secret, stamp)).decode().rstrip("=")


def nonce_age_s(secret: bytes, nonce: str, now: datetime) -> float | None:
    """Seconds since `nonce` was minted by the holder of `secret`; None if it is not ours."""
    try:
        raw = base64.urlsafe_b64decode(nonce + "=" * (-len(nonce) % 4))
    except (ValueError, TypeError):
        return None
    if len(raw) != 8 + _NONCE_MAC_BYTES:
        return None
    stamp, mac = raw[:8], raw[8:]
    if not hmac.compare_digest(mac, _mac(secret, stamp)):
        return None
    age = now.timestamp() - int.from_bytes(stamp, "big") / 1000
    return None if age < -NONCE_FUTURE_SLACK_S else max(age, 0.0)


# --- the decision -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Challenge:
    """What the request's Authorization header says, before the credentials are looked up."""

    username: str
    realm: str
    nonce: str
    uri: str
    response: str
    algorithm: str
    qop: str | None
    nc: str
    cnonce: str


def read_authorization(
    scheme: str, params: Mapping[str, str], offered: tuple[str, ...] = ALGORITHMS
) -> Challenge | DigestOutcome:
    """The digest parameters of an Authorization header, or why they cannot be used.

    Only an algorithm alarmhub `offered` is accepted.
    """
    if scheme.lower() != "digest":
        return DigestOutcome.UNSUPPORTED  # Basic and anything else: never accepted
    try:
        username, realm, nonce = params["username"], params["realm"], params["nonce"]
        uri, response = params["uri"], params["response"]
    except KeyError:
        return DigestOutcome.MALFORMED
    algorithm = params.get("algorithm", MD5)
    algorithm = {"md5": MD5, "sha-256": SHA256}.get(algorithm.lower(), algorithm)
    qop = params.get("qop")
    if algorithm not in offered or qop not in (None, "auth"):
        return DigestOutcome.UNSUPPORTED
    nc, cnonce = params.get("nc", ""), params.get("cnonce", "")
    if qop is not None and (not nc or not cnonce):
        return DigestOutcome.MALFORMED
    if not username:
        return DigestOutcome.MALFORMED
    return Challenge(username, realm, nonce, uri, response.lower(), algorithm, qop, nc, cnonce)


def check_nonce(
    answer: Challenge, realm: str, secret: bytes, now: datetime, lifetime_s: float
) -> DigestOutcome:
    """The parts that need no stored credentials: realm and nonce. OK means look them up."""
    if answer.realm != realm:
        return DigestOutcome.WRONG_REALM
    age = nonce_age_s(secret, answer.nonce, now)
    if age is None:
        return DigestOutcome.BAD_NONCE
    if age > lifetime_s:
        return DigestOutcome.STALE
    return DigestOutcome.OK


# A stand-in HA1 for an unknown username, so that the comparison runs all the same.
_NOBODY = credentials_for("nobody", "nowhere", "nothing")


def check_response(
    answer: Challenge, method: str, realm: str, stored: DeviceCredentials | None
) -> DigestOutcome:
    """The response against the stored HA1 (after :func:`check_nonce` said OK)."""
    creds = stored if stored is not None else _NOBODY
    expected = digest_response(
        answer.algorithm,
        creds.ha1(answer.algorithm),
        method,
        answer.uri,
        answer.nonce,
        qop=answer.qop,
        nc=answer.nc,
        cnonce=answer.cnonce,
    )
    matches = hmac.compare_digest(expected, answer.response)
    if stored is None:
        return DigestOutcome.UNKNOWN_USER
    if stored.realm != realm:
        return DigestOutcome.REALM_CHANGED
    return DigestOutcome.OK if matches else DigestOutcome.WRONG_PASSWORD
