"""How a command reaches the database: the store opened (and migrated) for one command.

Every command except `run` and `simulate` works on the database directly, beside
a running daemon or without one (SQLite in WAL mode with a busy timeout, or the
PostgreSQL server the daemons share).

This module is the CLI's composition root, as app.py is the daemon's: the only
one in cli/ that reaches a store (an import-linter contract says so); which store
a URL names is store/opening.py's choice. The
command modules are handed the ports of store/ports.py — an
:class:`~alarmhub.store.ports.AlarmStore` or a
:class:`~alarmhub.store.ports.Directory` — so a second store changes this file only.
"""

from __future__ import annotations

import asyncio
import getpass
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from alarmhub.cli.output import CommandError
from alarmhub.settings import Settings
from alarmhub.store import opening as store_opening
from alarmhub.store.errors import StoreUnavailableError
from alarmhub.store.ports import AlarmStore, Directory
from alarmhub.store.sqlite.directory import SqliteDirectory

T = TypeVar("T")
CLI_ACTOR_PREFIX = "cli:"


def actor() -> str:
    """The audit actor of a CLI change: `cli:` and the operating-system user."""
    try:
        return CLI_ACTOR_PREFIX + getpass.getuser()
    except (KeyError, OSError):
        return CLI_ACTOR_PREFIX + "unknown"


@asynccontextmanager
async def opened_store(settings: Settings) -> AsyncIterator[AlarmStore]:
    """The store opened (and migrated) inside a running loop, closed on the way out."""
    async with store_opening.opened_store(settings) as store:
        yield store


def with_store(settings: Settings, work: Callable[[AlarmStore], Coroutine[Any, Any, int]]) -> int:
    """Open the store (migrating it), run `work` on it, close it; `work`'s exit status."""

    async def go() -> int:
        try:
            async with opened_store(settings) as store:
                return await work(store)
        except StoreUnavailableError as exc:  # one line, not a driver's traceback
            raise CommandError(f"the database is out of reach: {exc}") from exc

    return asyncio.run(go())


def with_directory(settings: Settings, work: Callable[[Directory], Coroutine[Any, Any, T]]) -> T:
    """Run `work` on the accounts, access and scoped-read ports; the database migrated first.

    Each call runs on a short-lived connection of its own (a fresh file works too).
    """

    async def migrate(_store: AlarmStore) -> int:
        return 0

    with_store(settings, migrate)
    path = settings.database.path
    assert path is not None  # with_store refused anything but sqlite
    return asyncio.run(work(SqliteDirectory(path)))
