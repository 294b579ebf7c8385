"""A local HelseID token endpoint and a DPoP-checking resource guard that really check.

Real HTTP on loopback (a ThreadingHTTPServer in a thread), real signatures (PyJWT with
cryptography). What they refuse is what HelseID and a DPoP resource server refuse:

- :class:`DpopVerifier` checks one DPoP proof (RFC 9449 4.3): `typ: dpop+jwt`, an
  asymmetric alg, a public `jwk` that verifies the signature, `htm`/`htu` of this request,
  `iat` within the window, a `jti` never seen before, the server's current nonce (it
  demands one from the first request on, to exercise that path), and `ath` when a token
  comes with it. It returns the key's RFC 7638 thumbprint.
- :class:`HelseIdServer` is a token endpoint for the client credentials grant with a
  private_key_jwt assertion (RFC 7523: signature by the client's registered public key,
  iss = sub = client id, aud = this endpoint, not expired, jti not reused) and a DPoP
  proof; the token it issues is a JWT it signs, bound to the proof's key (`cnf.jkt`).
- :class:`ResourceGuard` (``server.guard()``) is what a journal server runs before it takes
  a request: `Authorization: DPoP <token>` issued by that server and not expired, and a
  proof for this request by the very key the token is bound to.
- :class:`ProtectedServer` is a resource server that answers 202 to whatever the guard lets
  through: the journal test server's stand-in here.

Time is the injected clock's wall time (`now`), the same FakeClock the client reads.
Nothing here logs a token or a key.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jwt
import orjson
from cryptography.hazmat.primitives.asymmetric import ec
from jwt import PyJWK
from jwt.types import Options

from alarmhub.settings.helseid import (
    b64url,
    jwk_thumbprint,
    load_signing_key,
    new_private_key,
    private_pem,
)

ASYMMETRIC = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384"})
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
# Claims are checked here, against the injected clock, not by PyJWT against the real one.
NO_TIME_CHECKS: Options = {
    "verify_exp": False,
    "verify_iat": False,
    "verify_nbf": False,
    "verify_aud": False,
}
Now = Callable[[], datetime]
Answer = tuple[int, dict[str, str], bytes]


class RefusedError(Exception):
    """Why a request was refused: the OAuth/DPoP error code and a description."""

    def __init__(self, error: str, description: str) -> None:
        super().__init__(f"{error}: {description}")
        self.error = error
        self.description = description


def _epoch(now: Now) -> int:
    return int(now().timestamp())


class DpopVerifier:
    """One server's DPoP proof checks, with its own nonce and its own memory of jtis."""

    def __init__(self, now: Now, *, demand_nonce: bool = True, window_s: int = 60) -> None:
        self._now = now
        self._window_s = window_s
        self._lock = threading.Lock()
        self._seen: set[str] = set()
        self.demand_nonce = demand_nonce
        self.nonce = secrets.token_urlsafe(12)
        self.nonces_demanded = 0

    def check(self, proof: str | None, method: str, url: str, token: str | None = None) -> str:
        """The proof's key thumbprint; RefusedError when the proof does not hold."""
        if not proof:
            raise RefusedError("invalid_dpop_proof", "no DPoP proof")
        try:
            header = jwt.get_unverified_header(proof)
            jwk = header.get("jwk")
            if header.get("typ") != "dpop+jwt" or header.get("alg") not in ASYMMETRIC:
                raise RefusedError("invalid_dpop_proof", "typ or alg")
            if not isinstance(jwk, dict) or "d" in jwk:
                raise RefusedError("invalid_dpop_proof", "no public jwk")
            claims = jwt.decode(
                proof, PyJWK(jwk).key, algorithms=[header["alg"]], options=NO_TIME_CHECKS
            )
        except (jwt.PyJWTError, ValueError, KeyError, TypeError) as exc:
            raise RefusedError("invalid_dpop_proof", f"signature: {type(exc).__name__}") from None
        self._claims(claims, method, url, token)
        with self._lock:
            if claims["jti"] in self._seen:
                raise RefusedError("invalid_dpop_proof", "replayed: jti seen before")
            self._seen.add(claims["jti"])
        return jwk_thumbprint(jwk)

    def _claims(self, claims: dict[str, Any], method: str, url: str, token: str | None) -> None:
        if not all(isinstance(claims.get(c), str | int) for c in ("jti", "htm", "htu", "iat")):
            raise RefusedError("invalid_dpop_proof", "missing claims")
        if claims["htm"] != method or claims["htu"] != url:
            raise RefusedError("invalid_dpop_proof", "htm/htu are not this request's")
        if abs(_epoch(self._now) - int(claims["iat"])) > self._window_s:
            raise RefusedError("invalid_dpop_proof", "iat outside the window")
        if token is not None:
            ath = b64url(hashlib.sha256(token.encode("ascii")).digest())
            if claims.get("ath") != ath:
                raise RefusedError("invalid_dpop_proof", "ath is not this token's hash")
        if self.demand_nonce and claims.get("nonce") != self.nonce:
            self.nonces_demanded += 1
            raise RefusedError("use_dpop_nonce", "a nonce is required")


@dataclass
class Client:
    client_id: str
    public_jwk: dict[str, str]
    scopes: frozenset[str] = frozenset({"nhn:jft/api"})


@dataclass
class TokenLog:
    """What the token endpoint did, for the tests to assert on."""

    issued: list[dict[str, Any]] = field(default_factory=list)  # the tokens' claims
    refusals: list[str] = field(default_factory=list)  # error codes, in order


class _Http:
    """A loopback HTTP server whose requests go to `serve(method, url, headers, body)`."""

    def __init__(self, serve: Callable[[str, str, dict[str, str], bytes], Answer]) -> None:
        class Handler(BaseHTTPRequestHandler):
            def _any(self) -> None:
                size = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(size) if size else b""
                path = urlsplit(self.path).path
                url = f"http://127.0.0.1:{port}{path}"
                status, headers, out = serve(self.command, url, dict(self.headers), body)
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            do_GET = do_POST = do_PUT = _any  # noqa: N815

            def log_message(self, *_args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = port = int(self.server.server_address[1])
        # A short poll: close() waits for serve_forever to notice, up to one interval.
        self._thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(5)


def _json(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> Answer:
    return status, {"Content-Type": "application/json", **(headers or {})}, orjson.dumps(body)


class HelseIdServer:
    """A HelseID-like token endpoint at ``token_endpoint``: client credentials + DPoP."""

    def __init__(self, now: Now, *, lifetime_s: int = 300, demand_nonce: bool = True) -> None:
        self._now = now
        self.lifetime_s = lifetime_s
        self.clients: dict[str, Client] = {}
        self.log = TokenLog()
        self.dpop = DpopVerifier(now, demand_nonce=demand_nonce)
        self._assertion_jtis: set[str] = set()
        self._lock = threading.Lock()
        self._signer = ec.generate_private_key(ec.SECP256R1())
        self._http = _Http(self._serve)
        self.token_endpoint = f"http://127.0.0.1:{self._http.port}/connect/token"
        self.issuer = f"http://127.0.0.1:{self._http.port}"

    def register(self, client_id: str, jwk: dict[str, str]) -> None:
        """Register a client under its public JWK, as HelseID's self-service does."""
        self.clients[client_id] = Client(client_id, {k: jwk[k] for k in jwk if k != "d"})

    def guard(self, *, demand_nonce: bool = True) -> ResourceGuard:
        return ResourceGuard(self, DpopVerifier(self._now, demand_nonce=demand_nonce))

    def close(self) -> None:
        self._http.close()

    def _serve(self, method: str, url: str, headers: dict[str, str], body: bytes) -> Answer:
        try:
            client, scope, jkt = self._grant(method, url, headers, body)
        except RefusedError as no:
            self.log.refusals.append(no.error)
            status = 401 if no.error == "invalid_client" else 400
            return _json(status, {"error": no.error}, {"DPoP-Nonce": self.dpop.nonce})
        now = _epoch(self._now)
        claims = {
            "iss": self.issuer,
            "client_id": client.client_id,
            "scope": scope,
            "iat": now,
            "exp": now + self.lifetime_s,
            "jti": secrets.token_urlsafe(12),
            "cnf": {"jkt": jkt},
        }
        token = jwt.encode(claims, self._signer, "ES256", headers={"typ": "at+jwt"})
        self.log.issued.append(claims)
        answer = {"access_token": token, "token_type": "DPoP", "expires_in": self.lifetime_s}
        return _json(200, answer, {"DPoP-Nonce": self.dpop.nonce, "Cache-Control": "no-store"})

    def _grant(
        self, method: str, url: str, headers: dict[str, str], body: bytes
    ) -> tuple[Client, str, str]:
        """The client, the scope and the proof key's thumbprint; RefusedError otherwise."""
        if method != "POST" or url != self.token_endpoint:
            raise RefusedError("invalid_request", "POST to the token endpoint only")
        form = {k: v[0] for k, v in parse_qs(body.decode("ascii")).items()}
        if form.get("grant_type") != "client_credentials":
            raise RefusedError("unsupported_grant_type", "client_credentials only")
        # The proof first: a nonce demand must not burn the assertion's jti.
        jkt = self.dpop.check(_header(headers, "DPoP"), method, url)
        client = self._client(form)
        scope = form.get("scope", "")
        if not set(scope.split()) <= client.scopes:
            raise RefusedError("invalid_scope", scope)
        return client, scope, jkt

    def _client(self, form: dict[str, str]) -> Client:
        assertion = form.get("client_assertion", "")
        if form.get("client_assertion_type") != ASSERTION_TYPE or not assertion:
            raise RefusedError("invalid_client", "a private_key_jwt client assertion is required")
        try:
            unverified = jwt.decode(assertion, options={"verify_signature": False})
            client = self.clients[unverified["iss"]]
            key = PyJWK(client.public_jwk)
            # Only the registered key's own algorithm: no RSA-signed assertion for an EC key.
            algorithms = [key.algorithm_name] if key.key_type == "EC" else ["RS256", "PS256"]
            claims = jwt.decode(assertion, key.key, algorithms=algorithms, options=NO_TIME_CHECKS)
        except (jwt.PyJWTError, KeyError, ValueError, TypeError) as exc:
            raise RefusedError("invalid_client", f"assertion: {type(exc).__name__}") from None
        if claims.get("sub") != client.client_id or form.get("client_id") != client.client_id:
            raise RefusedError("invalid_client", "iss, sub and client_id differ")
        if claims.get("aud") != self.token_endpoint:
            raise RefusedError("invalid_client", "aud is not this token endpoint")
        exp = claims.get("exp")
        if not isinstance(exp, int) or exp <= _epoch(self._now):
            raise RefusedError("invalid_client", "assertion expired")
        with self._lock:
            if claims.get("jti") in self._assertion_jtis or not claims.get("jti"):
                raise RefusedError("invalid_client", "assertion jti reused")
            self._assertion_jtis.add(claims["jti"])
        return client

    def verify_token(self, token: str) -> dict[str, Any]:
        """The claims of a token this server issued and that has not expired."""
        try:
            claims: dict[str, Any] = jwt.decode(
                token, self._signer.public_key(), algorithms=["ES256"], options=NO_TIME_CHECKS
            )
        except jwt.PyJWTError:
            raise RefusedError("invalid_token", "not a token of this issuer") from None
        if claims["exp"] <= _epoch(self._now):
            raise RefusedError("invalid_token", "expired")
        return claims


def _header(headers: dict[str, str], name: str) -> str | None:
    found = [v for k, v in headers.items() if k.lower() == name.lower()]
    return found[0] if len(found) == 1 else None


class ResourceGuard:
    """The checks a journal server makes before it takes a request (RFC 9449 7.1)."""

    def __init__(self, issuer: HelseIdServer, dpop: DpopVerifier) -> None:
        self._issuer = issuer
        self.dpop = dpop
        self.refusals: list[str] = []  # "error: description", in order
        self.accepted = 0

    def check(self, method: str, url: str, headers: dict[str, str]) -> Answer | None:
        """None: let it through; otherwise the 401 to answer (with a challenge and nonce)."""
        try:
            self._verify(method, url, headers)
        except RefusedError as no:
            self.refusals.append(f"{no.error}: {no.description}")
            challenge = f'DPoP error="{no.error}", algs="ES256 RS256 PS256"'
            return 401, {"WWW-Authenticate": challenge, "DPoP-Nonce": self.dpop.nonce}, b""
        self.accepted += 1
        return None

    def _verify(self, method: str, url: str, headers: dict[str, str]) -> None:
        scheme, _, token = (_header(headers, "Authorization") or "").partition(" ")
        if scheme.lower() != "dpop" or not token:
            raise RefusedError("invalid_token", "no DPoP access token")
        claims = self._issuer.verify_token(token)
        jkt = self.dpop.check(_header(headers, "DPoP"), method, url, token)
        if claims.get("cnf", {}).get("jkt") != jkt:
            raise RefusedError(
                "invalid_token", "the proof's key is not the one the token is bound to"
            )


class ProtectedServer:
    """A resource server on loopback: 202 for each request the guard lets through."""

    def __init__(self, guard: ResourceGuard) -> None:
        self.guard = guard
        self._http = _Http(self._serve)
        self.url = f"http://127.0.0.1:{self._http.port}"

    def _serve(self, method: str, url: str, headers: dict[str, str], body: bytes) -> Answer:
        refused = self.guard.check(method, url, headers)
        if refused is not None:
            return refused
        return 202, {"Location": f"{self.url}/status/{secrets.token_hex(4)}"}, b""

    def close(self) -> None:
        self._http.close()


def registered_client(server: HelseIdServer, key_dir: Path, municipality: str) -> dict[str, str]:
    """A municipality's HelseID client, its key made as `alarmhub journal keygen` makes it.

    The private key goes to a 0600 PEM file in `key_dir`, the public JWK is registered
    with `server` (as the municipality does in HelseID's self-service); the result is
    the `journal_helseid` entry alarmhub is configured with.
    """
    key = new_private_key("ec")
    path = key_dir / f"helseid-{municipality}.pem"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(private_pem(key))
    client_id = f"alarmhub-{municipality}"
    server.register(client_id, load_signing_key(path).public_jwk)
    return {"token_endpoint": server.token_endpoint, "client_id": client_id, "key_file": str(path)}
