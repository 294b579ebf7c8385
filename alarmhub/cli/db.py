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
from alarmhub.clock import SystemClock
from alarmhub.redact import redact_url
from alarmhub.settings import Settings
from alarmhub.store import opening as store_opening
from alarmhub.store import versions
from alarmhub.store.cluster import ClusterView
from alarmhub.store.errors import StoreError, StoreUnavailableError
from alarmhub.store.ports import AlarmStore, Directory
from alarmhub.store.postgres.coordination import read_cluster
from alarmhub.store.postgres.directory import opened_directory
from alarmhub.store.residents import ResidentRegister
from alarmhub.store.schema_state import SchemaStatus
from alarmhub.store.sealing import Keyring
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


def with_store(settings: Settings, work: Callable[[AlarmStore], Coroutine[Any, Any, T]]) -> T:
    """Open the store (migrating it), run `work` on it, close it; `work`'s exit status."""

    async def go() -> T:
        try:
            async with opened_store(settings) as store:
                return await work(store)
        except StoreUnavailableError as exc:  # one line, not a driver's traceback
            raise CommandError(f"the database is out of reach: {exc}") from exc

    return asyncio.run(go())


def with_directory(settings: Settings, work: Callable[[Directory], Coroutine[Any, Any, T]]) -> T:
    """Run `work` on the accounts, access and scoped-read ports; the database migrated first.

    Each call runs on a short-lived connection of its own (a fresh file works too);
    on PostgreSQL, on a small pool opened for this command and closed after it.
    """
    if settings.database.kind == "postgresql":
        dsn = settings.database.dsn
        assert dsn is not None  # parse_database_url sets it for postgresql://

        async def on_postgres() -> T:
            async with opened_directory(dsn) as directory:
                return await work(directory)

        return asyncio.run(on_postgres())

    async def migrate(_store: AlarmStore) -> int:
        return 0

    with_store(settings, migrate)
    path = settings.database.path
    assert path is not None  # with_store refused anything but sqlite
    return asyncio.run(work(SqliteDirectory(path)))


def with_residents(
    settings: Settings, work: Callable[[ResidentRegister], Coroutine[Any, Any, T]]
) -> T:
    """Run `work` on the resident register, sealing with the settings' keys (issue 17)."""

    async def go() -> T:
        try:
            async with store_opening.opened_residents(settings) as rows:
                keyring = Keyring(settings.resident_keys)
                return await work(ResidentRegister(rows, keyring, SystemClock()))
        except StoreUnavailableError as exc:
            raise CommandError(f"the database is out of reach: {exc}") from exc

    return asyncio.run(go())


def schema_status(settings: Settings) -> SchemaStatus:
    """The database's schema version against this alarmhub's (store/versions.py); writes nothing."""
    return asyncio.run(versions.status(settings.database))


def migrate_schema(settings: Settings, progress: Callable[[int], None]) -> list[int]:
    """Bring the schema up to date; the versions applied. SchemaVersionError when it is newer."""
    return asyncio.run(versions.migrate(settings.database, progress))


def cluster_view(settings: Settings) -> ClusterView | None:
    """Instances and leases as the shared database records them; None for SQLite (one owner)."""
    db = settings.database
    if db.kind != "postgresql" or db.dsn is None:
        return None
    dsn = db.dsn
    try:
        return asyncio.run(read_cluster(dsn))
    except StoreError as exc:
        raise CommandError(f"{redact_url(dsn)}: {exc}") from exc
