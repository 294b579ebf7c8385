"""Locking people out: disable and enable users, list and revoke API tokens (issue 13 #6).

Plain `sqlite3` functions on an open connection, like `store.sqlite.accounts`. Every
change takes the audit entry that records it and writes both in one
transaction: there is no disabled user without the row saying who did it, and
no audit row for a change that rolled back.

Who may see or change whom is the caller's business (`core.tenancy.Scope.manages`
for the API, everyone for the CLI, which holds the database file anyway); it is
passed in as `visible`, and a user or token outside it is simply not found.

Authentication re-reads `users.active` and `api_tokens.revoked_at` on every
request (`accounts.user_for_token`, `accounts.session`), so a change here
takes effect on the next request; disabling also deletes the user's browser
sessions, so enabling again does not bring an old session back.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import replace
from typing import Any

from alarmhub.core.people import AuditEntry, Role, User
from alarmhub.store.accounts import TokenRow, UserRow, Visible, everyone, ts
from alarmhub.store.errors import AccountError
from alarmhub.store.sqlite.accounts import audit, transaction

__all__ = ["TokenRow", "UserRow", "Visible", "everyone"]

_USER_SELECT = "SELECT name, role, municipalities, active, created_at, hpr FROM users"


def _user_row(row: tuple[Any, ...]) -> UserRow:
    user = User(row[0], Role(row[1]), tuple(json.loads(row[2])), bool(row[3]))
    return UserRow(user, str(row[4]), row[5])


def list_users(conn: sqlite3.Connection, visible: Visible) -> list[UserRow]:
    rows = conn.execute(f"{_USER_SELECT} ORDER BY name").fetchall()
    return [u for u in map(_user_row, rows) if visible(u.user)]


def find_user(conn: sqlite3.Connection, visible: Visible, name: str) -> UserRow | None:
    row = conn.execute(f"{_USER_SELECT} WHERE name = ?", (name,)).fetchone()
    found = _user_row(row) if row else None
    return found if found is not None and visible(found.user) else None


def set_active(
    conn: sqlite3.Connection, visible: Visible, name: str, active: bool, entry: AuditEntry
) -> bool:
    """Disable or enable `name`; False when it already was. Raises if not found.

    Checked, changed and audited in one IMMEDIATE transaction, so the check
    cannot go stale before the write.
    """
    with transaction(conn):
        found = find_user(conn, visible, name)
        if found is None:
            raise AccountError(f"no user {name!r}")
        if found.user.active == active:
            return False
        conn.execute("UPDATE users SET active = ? WHERE name = ?", (int(active), name))
        if not active:
            conn.execute("DELETE FROM sessions WHERE user_name = ?", (name,))
        audit(conn, entry)
    return True


def set_hpr(
    conn: sqlite3.Connection, visible: Visible, name: str, hpr: str | None, entry: AuditEntry
) -> bool:
    """Set or remove `name`'s HPR number; False when it already was. Raises if not found.

    Checked, changed and audited in one IMMEDIATE transaction, like set_active.
    """
    with transaction(conn):
        found = find_user(conn, visible, name)
        if found is None:
            raise AccountError(f"no user {name!r}")
        if found.hpr == hpr:
            return False
        conn.execute("UPDATE users SET hpr = ? WHERE name = ?", (hpr, name))
        audit(conn, entry)
    return True


_TOKENS_SQL = (
    "SELECT t.id, t.user_name, t.created_at, t.expires_at, t.revoked_at, t.revoked_by, "
    "u.role, u.municipalities, u.active FROM api_tokens t JOIN users u ON u.name = t.user_name"
)


def _token_rows(rows: list[tuple[Any, ...]], visible: Visible) -> list[TokenRow]:
    out = []
    for r in rows:
        owner = User(r[1], Role(r[6]), tuple(json.loads(r[7])), bool(r[8]))
        if visible(owner):
            out.append(TokenRow(r[0], r[1], r[2], r[3], r[4], r[5]))
    return out


def list_tokens(conn: sqlite3.Connection, visible: Visible, user: str | None) -> list[TokenRow]:
    """Tokens (never the secrets), oldest first; of one user if `user` is given."""
    if user is None:
        rows = conn.execute(f"{_TOKENS_SQL} ORDER BY t.created_at, t.id").fetchall()
    else:
        rows = conn.execute(
            f"{_TOKENS_SQL} WHERE t.user_name = ? ORDER BY t.created_at, t.id", (user,)
        ).fetchall()
    return _token_rows(rows, visible)


def find_token(conn: sqlite3.Connection, visible: Visible, token_id: str) -> TokenRow | None:
    rows = conn.execute(f"{_TOKENS_SQL} WHERE t.id = ?", (token_id,)).fetchall()
    found = _token_rows(rows, visible)
    return found[0] if found else None


def revoke_token(
    conn: sqlite3.Connection, visible: Visible, token_id: str, entry: AuditEntry
) -> TokenRow:
    """Revoke a token; the row stays (who revoked it, when). Idempotent: no second audit.

    The audit entry's detail gets the token id and its owner added.
    """
    with transaction(conn):
        found = find_token(conn, visible, token_id)
        if found is None:
            raise AccountError(f"no token {token_id!r}")
        if found.revoked_at is not None:
            return found
        conn.execute(
            "UPDATE api_tokens SET revoked_at = ?, revoked_by = ? WHERE id = ?",
            (ts(entry.at), entry.actor, token_id),
        )
        # Whose token it was, read in this transaction: the audit row names the owner.
        detail = {**(entry.detail or {}), "token_id": token_id, "user": found.user}
        audit(conn, replace(entry, detail=detail))
    revoked = find_token(conn, visible, token_id)
    assert revoked is not None
    return revoked
