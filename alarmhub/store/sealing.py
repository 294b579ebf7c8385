"""Sealing national identity numbers for the resident register: AES-256-GCM, keys by id.

Each number is sealed under the current key with a fresh 96-bit nonce, and the
(municipality, resident) it belongs to as associated data: a sealed value copied
onto another resident's row (or another municipality's) fails to open rather
than showing the wrong person's number. Each row keeps the id of the key that
sealed it (:func:`key_id`: a digest of the key, not the key), so a key can be
rotated: the new one seals, the old ones still open (settings
`resident_old_keys`) until `alarmhub residents rekey` has resealed every sealed
number: the register's rows, and the numbers held journal notes were released for
(on their export rows; store/residents.py `ResidentRegister.rekey`).

This runs in the shell, on the values the stores read and write as bytes: no
database sees a number in clear (nor any SQL decrypts one).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

_AAD = b"alarmhub/resident-national-id/v1"
NONCE_BYTES = 12


class SealingError(Exception):
    """A number that cannot be sealed or opened; the message never holds the number."""


class KeyMissingError(SealingError):
    """No resident key configured."""

    def __init__(self) -> None:
        super().__init__(
            "no resident key is configured: set ALARMHUB_RESIDENT_KEY to a base64 32-byte "
            "key (make one with `alarmhub residents new-key`; docs/journal.md)"
        )


@dataclass(frozen=True, slots=True)
class Sealed:
    key_id: str
    nonce: bytes
    sealed: bytes


def key_id(key: bytes) -> str:
    """A short public name for a key: shows which key sealed a row, reveals nothing."""
    return hashlib.sha256(b"alarmhub resident key id\0" + key).hexdigest()[:12]


def _aad(municipality: str, resident: str) -> bytes:
    return b"\0".join((_AAD, municipality.encode(), resident.encode()))


class Keyring:
    """The current key, which seals, and every key that may still open."""

    def __init__(self, keys: tuple[bytes, ...]) -> None:
        self._keys = {key_id(k): AESGCM(k) for k in keys}
        self.current = key_id(keys[0]) if keys else None

    def __repr__(self) -> str:
        return f"Keyring(current={self.current}, keys={len(self._keys)})"

    def seal(self, municipality: str, resident: str, number: str) -> Sealed:
        if self.current is None:
            raise KeyMissingError
        nonce = os.urandom(NONCE_BYTES)
        out = self._keys[self.current].encrypt(nonce, number.encode(), _aad(municipality, resident))
        return Sealed(self.current, nonce, out)

    def open(self, municipality: str, resident: str, row: Sealed) -> str:
        if self.current is None:
            raise KeyMissingError
        aead = self._keys.get(row.key_id)
        if aead is None:
            raise SealingError(
                f"the resident key {row.key_id} that sealed this number is not configured "
                "(ALARMHUB_RESIDENT_OLD_KEYS)"
            )
        try:
            return aead.decrypt(row.nonce, row.sealed, _aad(municipality, resident)).decode()
        except InvalidTag:
            raise SealingError(
                "a sealed national identity number does not open: it was altered, or "
                "belongs to another resident"
            ) from None
