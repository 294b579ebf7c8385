"""People and their traces in PostgreSQL: users, API tokens, browser sessions, audit, silences.

The same functions as ``store/sqlite/accounts.py``, on an asyncpg connection
from the directory's pool. Every change takes the audit entries that record it
and writes them in the change's own transaction (issue 13 item 4); the audit
table refuses UPDATE, DELETE and TRUNCATE itself (a trigger, schema.py).

Secrets are stored as sha256 digests, made by the same functions as SQLite's, so
a token issued by one store's code is recognised by the other's. Where SQLite
checks and then writes under its single write lock (BEGIN IMMEDIATE), several
instances may write here at once: a user is created by an insert that a
concurrent one cannot duplicate (the primary key), and a token names its user
under a foreign key, so a check that went stale still gives the same AccountError.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import asyncpg

from alarmhub.core.people import AuditEntry, Role, User
from alarmhub.core.suppress import Silence
from alarmhub.store.accounts import TOKEN_PREFIX, SessionInfo, digest, new_token_id
from alarmhub.store.columns import AUDIT_KEYS, SILENCE_KEYS
from alarmhub.store.errors import AccountError
from alarmhub.store.postgres.sql import Conn, storable, text_time

# --- users -------------------------------------------------------------------


def user_from_record(r: asyncpg.Record | Sequence[Any]) -> User:
    """(name, role, municipalities as JSON text, active) as the one User type."""
    return User(r[0], Role(r[1]), tuple(json.loads(r[2])), bool(r[3]))


async def create_user(
    conn: Conn,
    name: str,
    role: Role,
    municipalities: list[str],
    password_hash: str,
    now: datetime,
    audit: Sequence[AuditEntry],
) -> User:
    """Create a user and append `audit` in the same transaction (both or neither)."""
    async with conn.transaction():
        created = await conn.fetchval(
            "INSERT INTO users (name, role, municipalities, password_hash, created_at) "
            "VALUES ($1, $2, $3, $4, $5) ON CONFLICT (name) DO NOTHING RETURNING name",
            name,
            role.value,
            json.dumps(municipalities),
            password_hash,
            now,
        )
        if created is None:
            raise AccountError(f"user {name!r} already exists")
        await append_audit(conn, audit)
    return User(name, role, tuple(municipalities))


async def password_hash_of(conn: Conn, name: str) -> tuple[User | None, str | None]:
    if not storable(name):
        return None, None
    row = await conn.fetchrow(
        "SELECT name, role, municipalities, active, password_hash FROM users WHERE name = $1",
        name,
    )
    if row is None or not row[3]:
        return None, None
    return user_from_record(row[:4]), str(row[4])


# --- API tokens ----------------------------------------------------------------


async def create_token(
    conn: Conn,
    user: str,
    now: datetime,
    expires_at: datetime | None,
    audit: Sequence[AuditEntry],
) -> str:
    """Return the bearer token; only its digest is kept. `audit` commits with it."""
    if not storable(user):
        raise AccountError(f"no user {user!r}")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    try:
        async with conn.transaction():
            await conn.execute(
                "INSERT INTO api_tokens (token_hash, id, user_name, created_at, expires_at) "
                "VALUES ($1, $2, $3, $4, $5)",
                digest(token),
                new_token_id(),
                user,
                now,
                expires_at,
            )
            await append_audit(conn, audit)
    except asyncpg.ForeignKeyViolationError:
        raise AccountError(f"no user {user!r}") from None
    return token


async def user_for_token(conn: Conn, token: str, now: datetime) -> User | None:
    row = await conn.fetchrow(
        "SELECT u.name, u.role, u.municipalities, u.active FROM api_tokens t "
        "JOIN users u ON u.name = t.user_name "
        "WHERE t.token_hash = $1 AND u.active AND t.revoked_at IS NULL "
        "AND (t.expires_at IS NULL OR t.expires_at > $2)",
        digest(token),
        now,
    )
    return user_from_record(row) if row else None


# --- browser sessions ------------------------------------------------------------


async def create_session(
    conn: Conn, user: str, now: datetime, expires_at: datetime, audit: Sequence[AuditEntry]
) -> tuple[str, str]:
    """Return (session id, CSRF token). Expired sessions are swept on the way.

    The login's audit rows commit with the session: no session without its `login` row.
    """
    session_id = secrets.token_urlsafe(32)
    csrf = secrets.token_urlsafe(32)
    async with conn.transaction():
        await conn.execute("DELETE FROM sessions WHERE expires_at <= $1", now)
        await conn.execute(
            "INSERT INTO sessions (id_hash, user_name, csrf, created_at, expires_at) "
            "VALUES ($1, $2, $3, $4, $5)",
            digest(session_id),
            user,
            csrf,
            now,
            expires_at,
        )
        await append_audit(conn, audit)
    return session_id, csrf


async def session(conn: Conn, session_id: str, now: datetime) -> SessionInfo | None:
    row = await conn.fetchrow(
        "SELECT u.name, u.role, u.municipalities, u.active, s.csrf, s.expires_at "
        "FROM sessions s JOIN users u ON u.name = s.user_name "
        "WHERE s.id_hash = $1 AND u.active AND s.expires_at > $2",
        digest(session_id),
        now,
    )
    if row is None:
        return None
    return SessionInfo(user_from_record(row[:4]), str(row[4]), row[5])


async def delete_session(conn: Conn, session_id: str, audit: Sequence[AuditEntry]) -> None:
    """End a session with its audit rows in one transaction: no logout left unrecorded."""
    async with conn.transaction():
        await conn.execute("DELETE FROM sessions WHERE id_hash = $1", digest(session_id))
        await append_audit(conn, audit)


# --- the audit log ---------------------------------------------------------------

INSERT_AUDIT = (
    "INSERT INTO audit (at, actor, action, alarm_id, device_id, municipality, address, "
    "detail) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
)


def audit_row(entry: AuditEntry) -> tuple[Any, ...]:
    return (
        entry.at,
        entry.actor,
        entry.action,
        entry.alarm_id,
        entry.device_id,
        entry.municipality,
        entry.address,
        json.dumps(entry.detail or {}, ensure_ascii=False),
    )


async def audit(conn: Conn, entry: AuditEntry) -> None:
    """Append one entry that records no change of its own (login, logout, a view).

    A change is audited by the function that makes it, in the change's transaction.
    """
    await conn.execute(INSERT_AUDIT, *audit_row(entry))


async def append_audit(conn: Conn, entries: Sequence[AuditEntry]) -> None:
    """Append entries inside the caller's open transaction (the change's own)."""
    if entries:
        await conn.executemany(INSERT_AUDIT, [audit_row(e) for e in entries])


async def list_audit(conn: Conn, limit: int = 100) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        f"SELECT {', '.join(AUDIT_KEYS)} FROM audit ORDER BY id DESC LIMIT $1", limit
    )
    out = []
    for r in rows:
        item = {k: r[k] for k in AUDIT_KEYS}
        item["at"] = text_time(item["at"])
        item["detail"] = json.loads(item["detail"])
        out.append(item)
    return out


# --- silences ----------------------------------------------------------------------

SILENCE_SELECT = f"SELECT {', '.join(SILENCE_KEYS)} FROM silences"


def silence_from_record(r: asyncpg.Record) -> Silence:
    """A row of SILENCE_KEYS as the one Silence type the pipeline and the API share."""
    return Silence(
        r["id"],
        r["municipality"],
        r["starts_at"],
        r["ends_at"],
        device_id=r["device_id"],
        reason=r["reason"],
        include_priority_1=r["include_priority_1"],
        created_by=r["created_by"],
        created_at=r["created_at"],
    )


async def insert_silence(conn: Conn, s: Silence, audit: Sequence[AuditEntry]) -> None:
    """Store a silence and its audit entries in one transaction."""
    async with conn.transaction():
        await conn.execute(
            f"INSERT INTO silences ({', '.join(SILENCE_KEYS)}) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            s.id,
            s.municipality,
            s.device_id,
            s.starts_at,
            s.ends_at,
            s.reason,
            s.created_by,
            s.created_at,
            s.include_priority_1,
        )
        await append_audit(conn, audit)
