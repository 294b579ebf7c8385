"""HelseID client credentials with a private-key JWT and DPoP: one municipality's journal auth.

The flow (docs/journal.md, "Connecting a municipality: HelseID and DPoP"):

1. The token request is a client credentials grant whose client is authenticated by a
   client assertion (RFC 7523: iss = sub = client id, aud = the token endpoint, a fresh
   jti, valid for a minute) signed with the municipality's private key, and carries a
   DPoP proof (RFC 9449) made with the same key, so the token is bound to that key
   (`token_type: DPoP`).
2. Each journal request carries `Authorization: DPoP <token>` and a fresh proof for its
   method and URL, with `ath`, the token's hash: a stolen token is useless without the
   key, and a proof cannot be replayed (the server remembers its jti).
3. A server may demand a nonce it chose (`DPoP-Nonce`): the token endpoint with error
   `use_dpop_nonce` (400), the journal with a 401 challenge of that error. The request is
   made again once with the nonce; later proofs keep using it until the server sends
   another.

The token is kept until `margin_s` before it expires, measured on the monotonic clock (an
NTP step does not make it look fresh or stale). A 401 `invalid_token` drops it and the
request is retried once with a new one. Tokens, assertions, proofs and keys are never
logged nor put in an error message.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import secrets
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import jwt
import structlog

from alarmhub.clock import Clock
from alarmhub.journal.auth import RequestAuth
from alarmhub.settings import Settings
from alarmhub.settings.helseid import HelseIdClient, SigningKey, b64url

log = structlog.get_logger("alarmhub.journal")

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ASSERTION_LIFETIME_S = 60
# Renew a token this long before it expires: a request in flight must not arrive with a
# token that expired on the way, and clocks differ by a few seconds.
DEFAULT_MARGIN_S = 60.0
# After a failed token request, the same failure is given again for this long without
# asking HelseID: the worker tries every due note each round, and during an outage or
# a refused client each would otherwise make its own request and log line.
TOKEN_RETRY_AFTER_S = 30.0
_CHALLENGE_ERROR = re.compile(r'error="([^"]*)"')


class HelseIdError(httpx.HTTPError):
    """The token endpoint refused or answered nonsense: a failed attempt, retried later.

    A subclass of httpx.HTTPError so that whoever retries a journal request that failed
    on the network retries this too (a HelseID outage is one). Carries the municipality,
    the HTTP status and OAuth's error code; never a token or an assertion.
    """

    def __init__(self, municipality: str, status: int | None, error: str) -> None:
        super().__init__(f"HelseID token request for {municipality}: {status} {error}")
        self.municipality = municipality
        self.status = status
        self.error = error


@dataclass(frozen=True, slots=True)
class _Token:
    value: str = field(repr=False)
    renew_at: float  # on the monotonic clock


def htu(url: str) -> str:
    """The proof's `htu`: the request URL without its query and fragment (RFC 9449 4.2)."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


def token_hash(token: str) -> str:
    """`ath`: base64url of the SHA-256 of the access token's ASCII bytes."""
    return b64url(hashlib.sha256(token.encode("ascii")).digest())


class HelseIdAuth:
    """:class:`RequestAuth` for one municipality's HelseID client, bound to its key by DPoP."""

    def __init__(
        self,
        municipality: str,
        client: HelseIdClient,
        key: SigningKey,
        http: httpx.AsyncClient,
        clock: Clock,
        margin_s: float = DEFAULT_MARGIN_S,
    ) -> None:
        self.municipality = municipality
        self._client = client
        self._key = key
        self._http = http
        self._clock = clock
        self._margin_s = margin_s
        self._token: _Token | None = None
        self._failed: tuple[float, httpx.HTTPError] | None = None  # (monotonic, error)
        self._lock = asyncio.Lock()  # concurrent requests share one token request
        self._token_nonce: str | None = None  # the token endpoint's
        self._resource_nonce: str | None = None  # the journal's

    async def headers(self, method: str, url: str) -> dict[str, str]:
        token = await self._access_token()
        proof = self.proof(method, url, self._resource_nonce, token)
        return {"Authorization": f"DPoP {token}", "DPoP": proof}

    def observe(self, status: int, headers: dict[str, str]) -> bool:
        lower = {k.lower(): v for k, v in headers.items()}
        nonce = lower.get("dpop-nonce")
        if nonce:
            self._resource_nonce = nonce
        if status != 401:
            return False
        match = _CHALLENGE_ERROR.search(lower.get("www-authenticate", ""))
        error = match.group(1) if match else ""
        if error == "use_dpop_nonce":
            return nonce is not None
        # The token is not taken (expired early, revoked, or the server's clock is ahead):
        # the next request fetches another.
        self._token = None
        log.warning("journal.token_refused", municipality=self.municipality, error=error)
        return error == "invalid_token"

    def proof(self, method: str, url: str, nonce: str | None, token: str | None = None) -> str:
        """A DPoP proof JWT for one request: a fresh jti, signed by the key it names."""
        claims: dict[str, Any] = {
            "jti": secrets.token_urlsafe(16),
            "htm": method.upper(),
            "htu": htu(url),
            "iat": int(self._clock.now().timestamp()),
        }
        if nonce is not None:
            claims["nonce"] = nonce
        if token is not None:
            claims["ath"] = token_hash(token)
        header = {"typ": "dpop+jwt", "jwk": self._key.public_jwk}
        return jwt.encode(claims, self._key.private, self._key.algorithm, headers=header)

    def client_assertion(self) -> str:
        """RFC 7523 private_key_jwt: the client authenticates as itself, for a minute."""
        now = int(self._clock.now().timestamp())
        claims = {
            "iss": self._client.client_id,
            "sub": self._client.client_id,
            "aud": self._client.audience or self._client.token_endpoint,
            "jti": secrets.token_urlsafe(16),
            "iat": now,
            "nbf": now,
            "exp": now + ASSERTION_LIFETIME_S,
        }
        header = {"typ": "JWT", "kid": self._key.thumbprint}
        return jwt.encode(claims, self._key.private, self._key.algorithm, headers=header)

    async def _access_token(self) -> str:
        async with self._lock:
            token = self._token
            now = self._clock.monotonic()
            if token is None or now >= token.renew_at:
                failed = self._failed
                if failed is not None and now - failed[0] < TOKEN_RETRY_AFTER_S:
                    raise failed[1]  # said and logged once; HelseID is asked again later
                try:
                    token = self._token = await self._fetch()
                except httpx.HTTPError as exc:  # refused, or HelseID out of reach
                    self._failed = (now, exc)
                    raise
                self._failed = None
            return token.value

    async def _fetch(self) -> _Token:
        endpoint = self._client.token_endpoint
        for attempt in (1, 2):
            # A fresh assertion each attempt: the server refuses a jti it has seen.
            form = {
                "grant_type": "client_credentials",
                "client_id": self._client.client_id,
                "client_assertion_type": ASSERTION_TYPE,
                "client_assertion": self.client_assertion(),
                "scope": self._client.scope,
            }
            proof = self.proof("POST", endpoint, self._token_nonce)
            answer = await self._http.post(endpoint, data=form, headers={"DPoP": proof})
            nonce = answer.headers.get("DPoP-Nonce")
            if nonce:
                self._token_nonce = nonce
            if answer.status_code == 200:
                return self._accept(answer)
            error = _oauth_error(answer)
            if error == "use_dpop_nonce" and nonce and attempt == 1:
                continue
            log.warning(
                "journal.token_request_failed",
                municipality=self.municipality,
                status=answer.status_code,
                error=error,
            )
            raise HelseIdError(self.municipality, answer.status_code, error)
        raise AssertionError("unreachable: the second attempt returns or raises")

    def _accept(self, answer: httpx.Response) -> _Token:
        try:
            body = answer.json()
            value, kind, lifetime = body["access_token"], body["token_type"], body["expires_in"]
        except (ValueError, KeyError, TypeError):
            raise HelseIdError(self.municipality, 200, "malformed token response") from None
        if not isinstance(value, str) or not value or not isinstance(lifetime, int | float):
            raise HelseIdError(self.municipality, 200, "malformed token response")
        if str(kind).lower() != "dpop":
            # A bearer token would work for anyone who sees it: refuse to use one.
            raise HelseIdError(self.municipality, 200, f"token_type {kind!r}, not DPoP")
        # A token shorter-lived than twice the margin is still used for half its life.
        renew_in = max(0.0, float(lifetime) - min(self._margin_s, float(lifetime) / 2))
        log.info(
            "journal.token_fetched",
            municipality=self.municipality,
            client_id=self._client.client_id,
            expires_in=lifetime,
        )
        return _Token(value, self._clock.monotonic() + renew_in)


def _oauth_error(answer: httpx.Response) -> str:
    try:
        body = answer.json()
    except ValueError:
        return "no error code"
    error = body.get("error") if isinstance(body, dict) else None
    return error if isinstance(error, str) and len(error) <= 64 else "no error code"


def auth_for(
    settings: Settings, municipality: str, client: httpx.AsyncClient, clock: Clock
) -> RequestAuth:
    """The journal auth of a municipality whose HelseID client is configured.

    LookupError for any other: export is off there (Settings.journal_exporting), and a
    note for it must never be sent unauthenticated.
    """
    config = settings.journal_helseid.get(municipality)
    if config is None:
        raise LookupError(f"municipality {municipality} has no HelseID client: export is off")
    return HelseIdAuth(municipality, config, config.signing_key(), client, clock)
