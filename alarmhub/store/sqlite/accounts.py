"""People and their traces: users, API tokens, browser sessions, the audit log, silences.

Plain `sqlite3` functions, each given an open connection. The web layer runs
them in a worker thread on a connection of its own (:func:`run`), the CLI calls
them directly: neither ever shares the ingest writer's connection, whose
half-built batch a stray statement could join or roll back.

The values they pass and the checks before a write (names, passwords) are in
``store/accounts.py``, the same for any store; they are imported here too, so the
old names keep working.

Secrets are stored as sha256 digests: a token or session id is random with 256
bits of entropy, so a plain digest is enough (a slow hash is for passwords,
which people choose).
"""

from __future__ import annotations

import asyncio
import json
import secrets
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from alarmhub.core.people import AuditEntry, Role, User
from alarmhub.core.suppress import Silence
from alarmhub.store.accounts import (
    MUNICIPALITY_RE,
    NAME_RE,
    TOKEN_ID_PREFIX,
    TOKEN_PREFIX,
    SessionInfo,
    digest,
    generate_password,
    hash_password,
    new_token_id,
    ts,
    validate_user,
    verify_password,
)
from alarmhub.store.columns import AUDIT_KEYS, SILENCE_KEYS
from alarmhub.store.errors import AccountError, StoreUnavailableError
from alarmhub.store.sqlite.rows import parse_ts

__all__ = [
    "AUDIT_KEYS",
    "MUNICIPALITY_RE",
    "NAME_RE",
    "SILENCE_KEYS",
    "TOKEN_ID_PREFIX",
    "TOKEN_PREFIX",
    "AccountError",
    "SessionInfo",
    "digest",
    "generate_password",
    "hash_password",
    "new_token_id",
    "ts",
    "validate_user",
    "verify_password",
]

T = TypeVar("T")
# What sqlite3 says when the file cannot be used for now, rather than about the statement.
_UNAVAILABLE = ("database is locked", "unable to open database file", "disk I/O error")


# --- connections -----------------------------------------------------------


@contextmanager
def connect(path: Path) -> Iterator[sqlite3.Connection]:
    """A short-lived connection in autocommit mode; writers use :func:`transaction`."""
    conn = sqlite3.connect(path, timeout=10, isolation_level=None)
    try:
        conn.execute("PRAGMA busy_timeout=10000")
        conn.execute("PRAGMA foreign_keys=ON")
        yield conn
    finally:
        conn.close()


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    # IMMEDIATE takes the write lock up front: no upgrade deadlock with the ingest writer.
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


async def run(path: Path, fn: Callable[..., T], *args: Any) -> T:
    """Run `fn(conn, *args)` in a worker thread on a connection of its own."""

    def work() -> T:
        with connect(path) as conn:
            return fn(conn, *args)

    try:
        return await asyncio.to_thread(work)
    except sqlite3.OperationalError as exc:
        # Locked past the busy timeout, the file gone or unreadable: the store is out of
        # reach for now (the web answers 503 with Retry-After), not a bug to answer 500 for.
        if any(s in str(exc) for s in _UNAVAILABLE):
            raise StoreUnavailableError(f"{path.name}: {exc}") from exc
        raise


# --- users -------------------------------------------------------------------


def create_user(
    conn: sqlite3.Connection,
    name: str,
    role: Role,
    municipalities: list[str],
    password_hash: str,
    now: datetime,
    audit: Sequence[AuditEntry],
) -> User:
    """Create a user and append `audit` in the same transaction (both or neither)."""
    with transaction(conn):
        if conn.execute("SELECT 1 FROM users WHERE name = ?", (name,)).fetchone():
            raise AccountError(f"user {name!r} already exists")
        conn.execute(
            "INSERT INTO users (name, role, municipalities, password_hash, created_at) "
            "VALUES (?,?,?,?,?)",
            (name, role.value, json.dumps(municipalities), password_hash, ts(now)),
        )
        append_audit(conn, audit)
    return User(name, role, tuple(municipalities))


def _user(row: tuple[Any, ...]) -> User:
    return User(row[0], Role(row[1]), tuple(json.loads(row[2])), bool(row[3]))


def password_hash_of(conn: sqlite3.Connection, name: str) -> tuple[User | None, str | None]:
    row = conn.execute(
        "SELECT name, role, municipalities, active, password_hash FROM users WHERE name = ?",
        (name,),
    ).fetchone()
    if row is None or not row[3]:
        return None, None
    return _user(row[:4]), str(row[4])


def get_user(conn: sqlite3.Connection, name: str) -> User | None:
    row = conn.execute(
        "SELECT name, role, municipalities, active FROM users WHERE name = ?", (name,)
    ).fetchone()
    return _user(row) if row else None


# --- API tokens ----------------------------------------------------------------


def create_token(
    conn: sqlite3.Connection,
    user: str,
    now: datetime,
    expires_at: datetime | None,
    audit: Sequence[AuditEntry],
) -> str:
    """Return the bearer token; only its digest is kept. `audit` commits with it."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    with transaction(conn):
        if get_user(conn, user) is None:
            raise AccountError(f"no user {user!r}")
        conn.execute(
            "INSERT INTO api_tokens (token_hash, id, user_name, created_at, expires_at) "
            "VALUES (?,?,?,?,?)",
            (digest(token), new_token_id(), user, ts(now), ts(expires_at)),
        )
        append_audit(conn, audit)
    return token


def user_for_token(conn: sqlite3.Connection, token: str, now: datetime) -> User | None:
    row = conn.execute(
        "SELECT u.name, u.role, u.municipalities, u.active FROM api_tokens t "
        "JOIN users u ON u.name = t.user_name "
        "WHERE t.token_hash = ? AND u.active = 1 AND t.revoked_at IS NULL "
        "AND (t.expires_at IS NULL OR t.expires_at > ?)",
        (digest(token), ts(now)),
    ).fetchone()
    return _user(row) if row else None


# --- browser sessions ------------------------------------------------------------


def create_session(
    conn: sqlite3.Connection,
    user: str,
    now: datetime,
    expires_at: datetime,
    audit: Sequence[AuditEntry],
) -> tuple[str, str]:
    """Return (session id, CSRF token). Expired sessions are swept on the way.

    The login's audit rows commit with the session: no session without its `login` row.
    """
    session_id = secrets.token_urlsafe(32)
    csrf = secrets.token_urlsafe(32)
    with transaction(conn):
        conn.execute("DELETE FROM sessions WHERE expires_at <= ?", (ts(now),))
        conn.execute(
            "INSERT INTO sessions (id_hash, user_name, csrf, created_at, expires_at) "
            "VALUES (?,?,?,?,?)",
            (digest(session_id), user, csrf, ts(now), ts(expires_at)),
        )
        append_audit(conn, audit)
    return session_id, csrf


def session(conn: sqlite3.Connection, session_id: str, now: datetime) -> SessionInfo | None:
    row = conn.execute(
        "SELECT u.name, u.role, u.municipalities, u.active, s.csrf, s.expires_at "
        "FROM sessions s JOIN users u ON u.name = s.user_name "
        "WHERE s.id_hash = ? AND u.active = 1 AND s.expires_at > ?",
        (digest(session_id), ts(now)),
    ).fetchone()
    if row is None:
        return None
    return SessionInfo(_user(row[:4]), str(row[4]), datetime.fromisoformat(row[5]))


def delete_session(conn: sqlite3.Connection, session_id: str, audit: Sequence[AuditEntry]) -> None:
    """End a session with its audit rows in one transaction: no logout left unrecorded."""
    with transaction(conn):
        conn.execute("DELETE FROM sessions WHERE id_hash = ?", (digest(session_id),))
        append_audit(conn, audit)


# --- the audit log ---------------------------------------------------------------


INSERT_AUDIT = (
    "INSERT INTO audit (at, actor, action, alarm_id, device_id, municipality, address, "
    "detail) VALUES (?,?,?,?,?,?,?,?)"
)


def audit_row(entry: AuditEntry) -> tuple[Any, ...]:
    return (
        ts(entry.at),
        entry.actor,
        entry.action,
        entry.alarm_id,
        entry.device_id,
        entry.municipality,
        entry.address,
        json.dumps(entry.detail or {}, ensure_ascii=False),
    )


def audit_all(conn: sqlite3.Connection, entries: Sequence[AuditEntry]) -> None:
    """Append entries in one transaction of their own, one statement each (a replay)."""
    with transaction(conn):
        for entry in entries:
            audit(conn, entry)


def audit(conn: sqlite3.Connection, entry: AuditEntry) -> None:
    """Append one entry that records no change of its own (login, logout, a view).

    A change is audited by the store function that makes it: every one of them
    takes its audit entries as a required argument and writes them in the
    change's transaction, so a crash leaves both or neither (issue 13 item 4).
    The table itself refuses UPDATE and DELETE (a trigger, store/sqlite/schema.py).
    """
    conn.execute(INSERT_AUDIT, audit_row(entry))


def append_audit(conn: sqlite3.Connection, entries: Sequence[AuditEntry]) -> None:
    """Append entries inside the caller's open transaction (the change's own)."""
    if entries:
        conn.executemany(INSERT_AUDIT, [audit_row(e) for e in entries])


def list_audit(conn: sqlite3.Connection, limit: int = 100) -> list[dict[str, Any]]:
    rows = conn.execute(
        f"SELECT {', '.join(AUDIT_KEYS)} FROM audit ORDER BY id DESC LIMIT ?", (limit,)
    ).fetchall()
    out = []
    for r in rows:
        item = dict(zip(AUDIT_KEYS, r, strict=True))
        item["detail"] = json.loads(item["detail"])
        out.append(item)
    return out


# --- silences ----------------------------------------------------------------------


def silence_from_row(row: Sequence[Any]) -> Silence:
    """A row of SILENCE_KEYS as the one Silence type the pipeline and the API share."""
    starts, ends, created = parse_ts(row[3]), parse_ts(row[4]), parse_ts(row[7])
    assert starts is not None
    assert ends is not None
    return Silence(
        row[0],
        row[1],
        starts,
        ends,
        device_id=row[2],
        reason=row[5],
        include_priority_1=bool(row[8]),
        created_by=row[6],
        created_at=created,
    )


def insert_silence(conn: sqlite3.Connection, s: Silence, audit: Sequence[AuditEntry]) -> None:
    """Store a silence and its audit entries in one transaction."""
    with transaction(conn):
        _insert_silence(conn, s)
        append_audit(conn, audit)


def _insert_silence(conn: sqlite3.Connection, s: Silence) -> None:
    conn.execute(
        f"INSERT INTO silences ({', '.join(SILENCE_KEYS)}) VALUES (?,?,?,?,?,?,?,?,?)",
        (
            s.id,
            s.municipality,
            s.device_id,
            ts(s.starts_at),
            ts(s.ends_at),
            s.reason,
            s.created_by,
            ts(s.created_at),
            int(s.include_priority_1),
        ),
    )
