"""What crosses the account ports (store/ports.py): people as rows, and the checks before a write.

Everything here is the same whichever store keeps the rows, so it lives beside the
ports and not in ``store/sqlite/``: the web and the CLI validate a name, hash a
password or print a token's state without importing a database driver.

Passwords use argon2id; hashing takes ~200 ms, so async callers run it in a thread.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from alarmhub.core.people import Role, User
from alarmhub.store.errors import AccountError

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
MUNICIPALITY_RE = re.compile(r"^[0-9]{4}$")
_HASHER = PasswordHasher()
# Verified when the user does not exist, so a wrong name costs as long as a wrong password.
_DUMMY_HASH = _HASHER.hash(secrets.token_urlsafe(16))

# Who may see or change whom, passed into the access port (`core.tenancy.Scope.manages`
# for the API, :func:`everyone` for the CLI, which holds the database file anyway).
Visible = Callable[[User], bool]


def everyone(_user: User) -> bool:
    return True


# ts's recent answers for UTC times. A storm's batch formats each message's
# received time ~7 times (inbox, the alarm's raised/last seen, timeline, the decided
# step, last seen): 74 % of the calls were a time formatted before. Keyed by value
# only for tzinfo UTC, where equal means the same instant and so the same text (two
# Oslo times one hour apart can compare equal across fold). Bounded by clearing;
# dict operations are atomic under the GIL, so threads may share it.
_TEXT: dict[datetime, str] = {}
_TEXT_MAX = 4096


def ts(value: datetime | None) -> str | None:
    """The store's time format (UTC, microseconds), so times sort as text.

    One definition for every store row and every time the API prints.
    """
    if value is None:
        return None
    if value.tzinfo is UTC:
        text = _TEXT.get(value)
        if text is None:
            text = _utc_text(value)
            if len(_TEXT) >= _TEXT_MAX:
                _TEXT.clear()
            _TEXT[value] = text
        return text
    return _utc_text(value.astimezone(UTC))


def _utc_text(value: datetime) -> str:
    # The same text: isoformat() leaves the fraction out only when it is zero, and
    # without the keyword it costs half (0.9 against 1.9 us here; tests/store/test_rows.py
    # holds it to the keyword's text).
    if value.microsecond:
        return value.isoformat()
    return value.isoformat(timespec="microseconds")


@dataclass(frozen=True, slots=True)
class SessionInfo:
    user: User
    csrf: str
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class UserRow:
    user: User
    created_at: str
    # The user's HPR number (core/hpr.py), the journal note's author; None: not known.
    hpr: str | None = None

    def json(self) -> dict[str, Any]:
        return {
            "name": self.user.name,
            "role": self.user.role.value,
            "municipalities": list(self.user.municipalities),
            "active": self.user.active,
            "created_at": self.created_at,
            "hpr": self.hpr,
        }


@dataclass(frozen=True, slots=True)
class TokenRow:
    id: str
    user: str
    created_at: str
    expires_at: str | None
    revoked_at: str | None
    revoked_by: str | None

    def state(self, now: datetime) -> str:
        """`revoked`, `expired` or `active`: what the next request with it gets."""
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= (ts(now) or ""):
            return "expired"
        return "active"

    def json(self, now: datetime) -> dict[str, Any]:
        return {
            "id": self.id,
            "user": self.user,
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            "revoked_at": self.revoked_at,
            "revoked_by": self.revoked_by,
            "state": self.state(now),
        }


# --- passwords ---------------------------------------------------------------


def hash_password(password: str) -> str:
    if len(password) < 12:
        raise AccountError("a password has at least 12 characters")
    return _HASHER.hash(password)


def verify_password(stored_hash: str | None, password: str) -> bool:
    """Constant work whether or not the user exists."""
    try:
        return _HASHER.verify(stored_hash or _DUMMY_HASH, password) and stored_hash is not None
    except (VerificationError, InvalidHashError):
        return False


def generate_password() -> str:
    return secrets.token_urlsafe(18)


# --- users -------------------------------------------------------------------


def validate_user(name: str, role: str, municipalities: list[str]) -> tuple[Role, list[str]]:
    if not NAME_RE.match(name):
        raise AccountError(f"user name {name!r} is not valid: 1-64 of letters, digits and . _ @ -")
    try:
        checked = Role(role)
    except ValueError:
        raise AccountError(f"role {role!r} is not one of: {', '.join(Role)}") from None
    for m in municipalities:
        if not MUNICIPALITY_RE.match(m):
            raise AccountError(f"municipality {m!r} must be a four-digit kommunenummer")
    if checked is not Role.ADMIN and not municipalities:
        raise AccountError(f"a {checked} needs at least one --municipality")
    return checked, sorted(set(municipalities))


# --- API tokens: the same in every store -------------------------------------

TOKEN_PREFIX = "ahk_"  # noqa: S105 - a prefix that makes leaked tokens greppable
TOKEN_ID_PREFIX = "tok_"  # noqa: S105 - a token's public id, never the token


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def new_token_id() -> str:
    """The printable id `tokens list` shows and `tokens revoke` takes; not a secret."""
    return TOKEN_ID_PREFIX + secrets.token_hex(8)
