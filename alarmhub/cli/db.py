"""How a command reaches the database: the store opened (and migrated) for one command.

Every command except `run` and `simulate` works on the database file directly,
beside a running daemon or without one (SQLite in WAL mode with a busy timeout).
"""

from __future__ import annotations

import asyncio
import getpass
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from alarmhub.cli.output import CommandError
from alarmhub.settings import Settings
from alarmhub.store.sqlite import accounts
from alarmhub.store.sqlite.store import SqliteStore

T = TypeVar("T")
CLI_ACTOR_PREFIX = "cli:"


def actor() -> str:
    """The audit actor of a CLI change: `cli:` and the operating-system user."""
    try:
        return CLI_ACTOR_PREFIX + getpass.getuser()
    except (KeyError, OSError):
        return CLI_ACTOR_PREFIX + "unknown"


def with_store(settings: Settings, work: Callable[[SqliteStore], Coroutine[Any, Any, int]]) -> int:
    """Open the store (migrating it), run `work` on it, close it; `work`'s exit status."""
    db = settings.database
    if db.kind != "sqlite" or db.path is None:
        raise CommandError("only sqlite:/// databases are supported so far")

    async def go() -> int:
        store = await SqliteStore.open(db.path, synchronous=settings.sqlite_synchronous)  # type: ignore[arg-type]
        try:
            return await work(store)
        finally:
            await store.close()

    return asyncio.run(go())


def on_connection(settings: Settings, fn: Callable[..., T], *args: Any) -> T:
    """Run a store function on the database, migrated first (a fresh file works too)."""

    async def migrate(_store: SqliteStore) -> int:
        return 0

    with_store(settings, migrate)
    path = settings.database.path
    assert path is not None  # with_store refused anything but sqlite
    with accounts.connect(path) as conn:
        return fn(conn, *args)
