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
A nonce is stateless but its use is not: :class:`NonceUse` remembers the nonce
counts (`nc`) already accepted for each nonce, so a captured Authorization header
cannot be presented again (a replay is answered `stale=true`, which a genuine device
answers with a fresh nonce); a nonce without `qop` (RFC 2069, no `nc`) is good for
one request. The digest `uri` must be the request's own URI. With `qop=auth-int`
the body is hashed into the response, so a captured header cannot carry another
body; with `qop=auth` only the method and URI are covered, and TLS is what keeps
the header from being captured in the first place.

Every decision returns a named outcome, never a bool: the shell turns it into the
SIP answer, the `alarmhub_scaip_digest_failures_total{reason}` label and the log.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

MD5 = "MD5"
SHA256 = "SHA-256"
# Offered in this order (RFC 8760: the preferred algorithm's challenge first).
ALGORITHMS = (SHA256, MD5)
NONCE_LIFETIME_S = 300.0
AUTH = "auth"
AUTH_INT = "auth-int"
# The qop values a challenge offers. `auth` is what deployed SIP stacks are known to
# parse: a quoted list trips some (sipmessage 0.7 splits it at the comma), and a device
# that cannot read its challenge cannot send an alarm. `auth-int` (the body signed
# too) is offered where the devices are known to take it (ALARMHUB_SCAIP_DIGEST_AUTH_INT).
QOP_WITH_AUTH_INT = f"{AUTH},{AUTH_INT}"
# A nonce minted up to this far "in the future" (the wall clock stepped back) is still ours.
NONCE_FUTURE_SLACK_S = 5.0
_NONCE_MAC_BYTES = 16
_NONCE_MAX_UNIQUE = 16


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
    REPLAYED = "replayed"  # a nonce count already used with this nonce: challenge again
    URI_MISMATCH = "uri_mismatch"  # the digest `uri` is not the request's URI: 400


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


def _h(algorithm: str, text: str | bytes) -> str:
    data = text.encode() if isinstance(text, str) else text
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
    body: bytes = b"",
) -> str:
    """The `response` a client computes (RFC 7616 §3.4.1): `qop` auth, auth-int or none.

    Only `auth-int` covers the body (HA2 = H(method:uri:H(body))).
    """
    covered = f"{method}:{uri}:{_h(algorithm, body)}" if qop == AUTH_INT else f"{method}:{uri}"
    ha2 = _h(algorithm, covered)
    if qop is None:
        return _h(algorithm, f"{ha1_hex}:{nonce}:{ha2}")
    return _h(algorithm, f"{ha1_hex}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")


# --- nonces -----------------------------------------------------------------------


def _mac(secret: bytes, stamp: bytes) -> bytes:
    return hmac.new(secret, stamp, hashlib.sha256).digest()[:_NONCE_MAC_BYTES]


def mint_nonce(secret: bytes, now: datetime, unique: bytes = b"") -> str:
    """A nonce carrying the time it was minted (ms since the epoch), `unique`, and an HMAC.

    `unique` (random bytes from the shell) tells apart the nonces minted in the same
    millisecond: a burst of devices challenged at once got the same nonce, and the
    nonce-count table (:class:`NonceUse`) then took the second device's first count
    for a replay.
    """
    body = int(now.timestamp() * 1000).to_bytes(8, "big") + unique
    return base64.urlsafe_b64encode(body + _mac(secret, body)).decode().rstrip("=")


def nonce_age_s(secret: bytes, nonce: str, now: datetime) -> float | None:
    """Seconds since `nonce` was minted by the holder of `secret`; None if it is not ours."""
    try:
        raw = base64.urlsafe_b64decode(nonce + "=" * (-len(nonce) % 4))
    except (ValueError, TypeError):
        return None
    if not 8 + _NONCE_MAC_BYTES <= len(raw) <= 8 + _NONCE_MAX_UNIQUE + _NONCE_MAC_BYTES:
        return None
    body, mac = raw[:-_NONCE_MAC_BYTES], raw[-_NONCE_MAC_BYTES:]
    if not hmac.compare_digest(mac, _mac(secret, body)):
        return None
    age = now.timestamp() - int.from_bytes(body[:8], "big") / 1000
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
    qop = qop.lower() if qop is not None else None
    if algorithm not in offered or qop not in (None, AUTH, AUTH_INT):
        return DigestOutcome.UNSUPPORTED
    nc, cnonce = params.get("nc", ""), params.get("cnonce", "")
    if qop is not None and (nonce_count(nc) is None or not cnonce):
        return DigestOutcome.MALFORMED
    # A hash is hex digits: anything else (a non-ASCII `response`) can never match, and
    # would make the constant-time comparison raise instead of answer.
    if not username or not _is_hex(response):
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
    answer: Challenge,
    method: str,
    realm: str,
    stored: DeviceCredentials | None,
    body: bytes = b"",
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
        body=body,
    )
    matches = hmac.compare_digest(expected, answer.response)
    if stored is None:
        return DigestOutcome.UNKNOWN_USER
    if stored.realm != realm:
        return DigestOutcome.REALM_CHANGED
    return DigestOutcome.OK if matches else DigestOutcome.WRONG_PASSWORD


def _is_hex(text: str) -> bool:
    return bool(text) and text.isascii() and all(c in "0123456789abcdefABCDEF" for c in text)


def nonce_count(nc: str) -> int | None:
    """The `nc` parameter as a number (8 hex digits, RFC 7616 §3.4), or None."""
    return int(nc, 16) if len(nc) == 8 and _is_hex(nc) else None


# How far below the highest nonce count of a nonce a count not yet seen is still taken:
# a device's requests sent together may arrive out of order over UDP.
NC_WINDOW = 64


class NonceUse:
    """The nonce counts accepted per nonce, so a captured Authorization header is used once.

    Bounded: a nonce is remembered for the nonce lifetime after its first use, at most
    `limit` of them (past it the oldest is forgotten: its next use is taken as new,
    which only the nonce's expiry then bounds). Per nonce, the highest count and a
    bitmask of the `NC_WINDOW` counts below it, as IPsec's anti-replay window.
    """

    def __init__(self, lifetime_s: float = NONCE_LIFETIME_S, limit: int = 100_000) -> None:
        self._lifetime = lifetime_s
        self._limit = limit
        # nonce -> (first use, highest nc, bitmask of the window below and at it)
        self._seen: OrderedDict[str, tuple[float, int, int]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._seen)

    def use(self, nonce: str, nc: int | None, now: float) -> bool:
        """Record one use of `nonce` with count `nc` (None: no qop); False if already used."""
        self._forget(now)
        count = 1 if nc is None else nc
        first = self._seen.get(nonce)
        if first is None:
            self._seen[nonce] = (now, count, 1)
            return True
        since, top, mask = first
        if nc is None or count <= top - NC_WINDOW:
            return False
        if count > top:
            shift = count - top
            mask = ((mask << shift) | 1) & ((1 << NC_WINDOW) - 1)
            self._seen[nonce] = (since, count, mask)
            return True
        bit = 1 << (top - count)
        if mask & bit:
            return False
        self._seen[nonce] = (since, top, mask | bit)
        return True

    def _forget(self, now: float) -> None:
        # Insertion order is first-use order: the expired are at the front.
        while self._seen:
            nonce, (since, _, _) = next(iter(self._seen.items()))
            if since + self._lifetime > now and len(self._seen) < self._limit:
                return
            del self._seen[nonce]
