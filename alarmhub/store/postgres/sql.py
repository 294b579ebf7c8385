"""What the directory's PostgreSQL modules share: the connection type, numbered
parameters, the scope's WHERE, and time as the ports print it.

SQLite keeps times as ``ts()`` text and the ports hand some of them on as that
text (a token's ``expires_at``, a timeline entry's ``at``, a device's
``registered_at``); PostgreSQL keeps ``timestamptz``, so :func:`text_time` turns
each back into exactly the string SQLite would have returned. Text keys are
compared and ordered ``COLLATE "C"`` (byte order, as SQLite's BINARY): a database
created with another locale must not reorder the keyset pages or change where a
cursor continues.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, TypeAlias

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from alarmhub.core.tenancy import Scope
from alarmhub.store.accounts import ts

Conn: TypeAlias = asyncpg.Connection | PoolConnectionProxy


def storable(*values: object) -> bool:
    """False when a text value holds NUL: PostgreSQL text cannot (SQLite's can).

    No row can match such a value, and asyncpg would refuse to send it
    (CharacterNotInRepertoireError), so each read answers as for an unknown id
    (None, empty, "no user") instead of a database error a client could cause
    with `%00` in a path. A cursor holding NUL, which this API never makes, is
    taken as past the last page.
    """
    return not any(isinstance(v, str) and "\x00" in v for v in values)


def text_time(value: datetime | None) -> str | None:
    """A `timestamptz` read back as the ports' time text (UTC, microseconds)."""
    return ts(value)


class Params:
    """Positional parameters for asyncpg: `add` returns the next `$n` for the value."""

    def __init__(self) -> None:
        self.values: list[Any] = []

    def add(self, value: Any) -> str:
        self.values.append(value)
        return f"${len(self.values)}"


def scope_where(scope: Scope, params: Params, column: str = "municipality") -> str:
    """The scope as an SQL condition (column names are constants, never input)."""
    if scope.municipalities is None:
        return "true"
    ms = sorted(scope.municipalities)
    if not ms:
        return "false"
    return f"{column} = ANY({params.add(ms)}::text[])"


def where(scope: Scope, params: Params, column: str, extra: list[tuple[str, Any]]) -> str:
    """The scope and each `(clause with one {}, value)`: `("id = {}", x)` → `id = $3`."""
    parts = [scope_where(scope, params, column)]
    parts += [clause.format(params.add(value)) for clause, value in extra]
    return " AND ".join(parts)
