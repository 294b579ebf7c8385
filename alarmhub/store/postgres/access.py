"""Locking people out in PostgreSQL: disable and enable users, list and revoke API tokens.

The same functions as ``store/sqlite/access.py``. Every change writes its audit
entry in its own transaction. SQLite makes the check and the write one step by
taking its single write lock first (BEGIN IMMEDIATE); here several instances
may change the same user at once, so the check reads the row FOR UPDATE: a
second disable waits for the first, then finds it done and says so (False, no
second audit row), as it would have in SQLite.

Who may see or change whom is the caller's `visible`; a user or token outside it
is simply not found.
"""

from __future__ import annotations

from dataclasses import replace

import asyncpg

from alarmhub.core.people import AuditEntry
from alarmhub.store.accounts import TokenRow, UserRow, Visible
from alarmhub.store.errors import AccountError
from alarmhub.store.postgres.accounts import audit, user_from_record
from alarmhub.store.postgres.sql import Conn, storable, text_time

_USER_SELECT = "SELECT name, role, municipalities, active, created_at, hpr FROM users"


def _user_row(r: asyncpg.Record) -> UserRow:
    return UserRow(user_from_record(r[:4]), text_time(r[4]) or "", r[5])


async def list_users(conn: Conn, visible: Visible) -> list[UserRow]:
    rows = await conn.fetch(f'{_USER_SELECT} ORDER BY name COLLATE "C"')
    return [u for u in map(_user_row, rows) if visible(u.user)]


async def find_user(
    conn: Conn, visible: Visible, name: str, *, for_update: bool = False
) -> UserRow | None:
    if not storable(name):
        return None
    lock = " FOR UPDATE" if for_update else ""
    row = await conn.fetchrow(f"{_USER_SELECT} WHERE name = $1{lock}", name)
    found = _user_row(row) if row else None
    return found if found is not None and visible(found.user) else None


async def set_active(
    conn: Conn, visible: Visible, name: str, active: bool, entry: AuditEntry
) -> bool:
    """Disable or enable `name`; False when it already was. Raises if not found.

    Checked (the row locked), changed and audited in one transaction. Disabling
    also deletes the user's browser sessions, so enabling again does not bring
    an old session back.
    """
    async with conn.transaction():
        found = await find_user(conn, visible, name, for_update=True)
        if found is None:
            raise AccountError(f"no user {name!r}")
        if found.user.active == active:
            return False
        await conn.execute("UPDATE users SET active = $1 WHERE name = $2", active, name)
        if not active:
            await conn.execute("DELETE FROM sessions WHERE user_name = $1", name)
        await audit(conn, entry)
    return True


async def set_hpr(
    conn: Conn, visible: Visible, name: str, hpr: str | None, entry: AuditEntry
) -> bool:
    """Set or remove `name`'s HPR number; False when it already was. Raises if not found.

    The row locked, changed and audited in one transaction, like set_active: of two
    instances setting the same number at once, one writes and audits, the other
    finds it done.
    """
    async with conn.transaction():
        found = await find_user(conn, visible, name, for_update=True)
        if found is None:
            raise AccountError(f"no user {name!r}")
        if found.hpr == hpr:
            return False
        await conn.execute("UPDATE users SET hpr = $1 WHERE name = $2", hpr, name)
        await audit(conn, entry)
    return True


_TOKENS_SQL = (
    "SELECT t.id, t.user_name, t.created_at, t.expires_at, t.revoked_at, t.revoked_by, "
    "u.role, u.municipalities, u.active FROM api_tokens t JOIN users u ON u.name = t.user_name"
)
# SQLite orders by created_at as text, then id: the same order for ts() text.
_TOKENS_ORDER = ' ORDER BY t.created_at, t.id COLLATE "C"'


def _token_rows(rows: list[asyncpg.Record], visible: Visible) -> list[TokenRow]:
    out = []
    for r in rows:
        owner = user_from_record((r[1], r[6], r[7], r[8]))
        if visible(owner):
            out.append(
                TokenRow(r[0], r[1], text_time(r[2]) or "", text_time(r[3]), text_time(r[4]), r[5])
            )
    return out


async def list_tokens(conn: Conn, visible: Visible, user: str | None) -> list[TokenRow]:
    """Tokens (never the secrets), oldest first; of one user if `user` is given."""
    if not storable(user):
        return []
    if user is None:
        rows = await conn.fetch(_TOKENS_SQL + _TOKENS_ORDER)
    else:
        rows = await conn.fetch(f"{_TOKENS_SQL} WHERE t.user_name = $1{_TOKENS_ORDER}", user)
    return _token_rows(rows, visible)


async def find_token(
    conn: Conn, visible: Visible, token_id: str, *, for_update: bool = False
) -> TokenRow | None:
    if not storable(token_id):
        return None
    lock = " FOR UPDATE OF t" if for_update else ""
    rows = await conn.fetch(f"{_TOKENS_SQL} WHERE t.id = $1{lock}", token_id)
    found = _token_rows(rows, visible)
    return found[0] if found else None


async def revoke_token(conn: Conn, visible: Visible, token_id: str, entry: AuditEntry) -> TokenRow:
    """Revoke a token; the row stays (who revoked it, when). Idempotent: no second audit.

    The audit entry's detail gets the token id and its owner added.
    """
    async with conn.transaction():
        found = await find_token(conn, visible, token_id, for_update=True)
        if found is None:
            raise AccountError(f"no token {token_id!r}")
        if found.revoked_at is not None:
            return found
        await conn.execute(
            "UPDATE api_tokens SET revoked_at = $1, revoked_by = $2 WHERE id = $3",
            entry.at,
            entry.actor,
            token_id,
        )
        # Whose token it was, read in this transaction: the audit row names the owner.
        detail = {**(entry.detail or {}), "token_id": token_id, "user": found.user}
        await audit(conn, replace(entry, detail=detail))
    revoked = await find_token(conn, visible, token_id)
    assert revoked is not None
    return revoked
