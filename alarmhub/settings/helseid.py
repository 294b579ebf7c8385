"""One HelseID client per municipality (issue 17): its settings and its signing key.

A municipality's journal notes are sent as that municipality's own HelseID client,
registered with NHN under its public key; alarmhub holds the private key in a file
(PEM, or a private JWK as HelseID's self-service hands out). The key is read and
checked when the settings are read, so a missing or wrong key stops alarmhub at start
with the setting named, not at the first answered alarm. Nothing here prints a key:
the values hold key objects and the file's path, never the key's text.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt import PyJWK
from jwt.exceptions import PyJWKError
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from alarmhub.settings.targets import is_loopback

# JFT's scope (docs/journal.md); a client NHN approved for other APIs may need another.
DEFAULT_SCOPE = "nhn:jft/api"
Algorithm = Literal["RS256", "PS256", "ES256"]
PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
MIN_RSA_BITS = 2048


class HelseIdClient(BaseModel):
    """`[journal_helseid."0301"]`: the municipality's HelseID client (docs/journal.md)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    token_endpoint: str
    client_id: str = Field(min_length=1, max_length=200)
    # RS256 or PS256 for an RSA key (default RS256), ES256 for a P-256 key. Declared
    # before key_file, whose check reads it.
    algorithm: Algorithm | None = None
    key_file: Path
    scope: str = Field(default=DEFAULT_SCOPE, min_length=1, max_length=500)
    # The client assertion's `aud`; unset: the token endpoint (RFC 7523). HelseID's own
    # documentation names its issuer here: set it if NHN's test environment asks for that.
    audience: str | None = Field(default=None, min_length=1)

    @field_validator("token_endpoint")
    @classmethod
    def _endpoint(cls, v: str) -> str:
        return https_url(v)

    @field_validator("key_file")
    @classmethod
    def _key(cls, v: Path, info: ValidationInfo) -> Path:
        load_signing_key(v, info.data.get("algorithm"))
        return v

    def signing_key(self) -> SigningKey:
        return load_signing_key(self.key_file, self.algorithm)


def https_url(v: str) -> str:
    """An https:// URL, or http:// to this machine (the tests' servers)."""
    parts = urlsplit(v)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ValueError(f"expected an https:// URL, got {v!r}")
    if parts.scheme == "http" and not is_loopback(parts.hostname):
        raise ValueError(f"{v} is plain HTTP to another machine: use https://")
    return v


@dataclass(frozen=True, slots=True)
class SigningKey:
    """A private key, the algorithm it signs with, and its public JWK (RFC 7517)."""

    private: PrivateKey = field(repr=False)
    algorithm: Algorithm
    public_jwk: dict[str, str]

    @property
    def thumbprint(self) -> str:
        return jwk_thumbprint(self.public_jwk)


def load_signing_key(path: Path, algorithm: Algorithm | None = None) -> SigningKey:
    """The key in `path` (PEM, or a private JWK); ValueError says what is wrong, never the key."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ValueError(f"{path} cannot be read: {exc.strerror or exc}") from None
    return signing_key_from(parse_private_key(data, path), algorithm, path)


def parse_private_key(data: bytes, path: Path) -> PrivateKey:
    key: object
    if data.lstrip().startswith(b"{"):
        try:
            jwk = PyJWK(json.loads(data))
        except (ValueError, PyJWKError):
            raise ValueError(f"{path} is not a valid JWK") from None
        key = jwk.key
    else:
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError):
            raise ValueError(
                f"{path} is not an unencrypted PEM private key (or a private JWK)"
            ) from None
    if isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        return key
    raise ValueError(f"{path} holds no private key (a public key cannot sign)")


def signing_key_from(key: PrivateKey, algorithm: Algorithm | None, path: Path) -> SigningKey:
    if isinstance(key, rsa.RSAPrivateKey):
        if key.key_size < MIN_RSA_BITS:
            raise ValueError(f"{path}: an RSA key of {key.key_size} bits; at least 2048")
        if algorithm not in (None, "RS256", "PS256"):
            raise ValueError(f"{path} is an RSA key: RS256 or PS256, not {algorithm}")
        return SigningKey(key, algorithm or "RS256", public_jwk(key))
    if key.curve.name != ec.SECP256R1.name:
        raise ValueError(f"{path}: an EC key on {key.curve.name}; ES256 needs P-256")
    if algorithm not in (None, "ES256"):
        raise ValueError(f"{path} is a P-256 key: ES256, not {algorithm}")
    return SigningKey(key, "ES256", public_jwk(key))


def _b64(n: int) -> str:
    raw = n.to_bytes(max(1, (n.bit_length() + 7) // 8), "big")
    return b64url(raw)


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def public_jwk(key: PrivateKey) -> dict[str, str]:
    """The public half as a minimal JWK: the members RFC 7638 hashes, nothing private."""
    if isinstance(key, rsa.RSAPrivateKey):
        numbers = key.public_key().public_numbers()
        return {"kty": "RSA", "n": _b64(numbers.n), "e": _b64(numbers.e)}
    point = key.public_key().public_numbers()
    return {
        "kty": "EC",
        "crv": "P-256",
        "x": b64url(point.x.to_bytes(32, "big")),
        "y": b64url(point.y.to_bytes(32, "big")),
    }


REQUIRED_MEMBERS = {"RSA": ("e", "kty", "n"), "EC": ("crv", "kty", "x", "y")}


def jwk_thumbprint(jwk: dict[str, Any]) -> str:
    """RFC 7638: SHA-256 over the required members, sorted, without whitespace."""
    members = REQUIRED_MEMBERS.get(str(jwk.get("kty")))
    if members is None:
        raise ValueError(f"no thumbprint for key type {jwk.get('kty')!r}")
    canonical = json.dumps({m: jwk[m] for m in members}, separators=(",", ":"), sort_keys=True)
    return b64url(hashlib.sha256(canonical.encode("utf-8")).digest())


def new_private_key(kind: Literal["rsa", "ec"]) -> PrivateKey:
    """A fresh key for `alarmhub journal keygen`: RSA 4096 or EC P-256."""
    if kind == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    return rsa.generate_private_key(public_exponent=65537, key_size=4096)


def private_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
