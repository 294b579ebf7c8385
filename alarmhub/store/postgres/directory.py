"""The PostgreSQL :class:`~alarmhub.store.ports.Directory`: scoped reads, accounts and access.

Each method runs the matching function of ``tenancy.py``, ``accounts.py`` or
``access.py`` on a connection taken from the pool for that one call, never on
the ingest writer's: a stray statement cannot join or roll back its half-built
batch. asyncpg is asynchronous, so no worker thread is needed (SQLite's
directory runs each call in one). The behaviour is the SQLite directory's,
method by method (tests/store/test_directory_contract.py runs one suite over both).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any, TypeVar

import asyncpg

from alarmhub.core.digest import DeviceCredentials
from alarmhub.core.model import Alarm
from alarmhub.core.people import AuditEntry, Role, User
from alarmhub.core.reports import ResponseRow
from alarmhub.core.suppress import Silence
from alarmhub.core.tenancy import AlarmFilter, DeviceFilter, Scope
from alarmhub.store.accounts import SessionInfo, TokenRow, UserRow, Visible
from alarmhub.store.errors import StoreUnavailableError
from alarmhub.store.ports import Directory
from alarmhub.store.postgres import access, accounts, tenancy
from alarmhub.store.postgres import credentials as credentials_module
from alarmhub.store.postgres.migrations import migrate
from alarmhub.store.postgres.rows import UNAVAILABLE

T = TypeVar("T")


class PostgresDirectory:
    """One pool; every call takes a connection of its own from it and gives it back."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def _run(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        # A server out of reach is StoreUnavailableError (the web's 503), not a driver
        # error escaping as a 500; what the server refuses passes on unchanged.
        try:
            async with self.pool.acquire() as conn:
                return await fn(conn, *args)
        except (*UNAVAILABLE, asyncpg.TooManyConnectionsError) as exc:
            raise StoreUnavailableError(f"{type(exc).__name__}: {exc}") from exc

    # --- ScopedReads -----------------------------------------------------------

    async def list_alarms(self, scope: Scope, f: AlarmFilter) -> list[Alarm]:
        return await self._run(tenancy.list_alarms, scope, f)

    async def count_alarms(self, scope: Scope, f: AlarmFilter) -> int:
        return await self._run(tenancy.count_alarms, scope, f)

    async def get_alarm(self, scope: Scope, alarm_id: str) -> Alarm | None:
        return await self._run(tenancy.get_alarm, scope, alarm_id)

    async def timeline(self, scope: Scope, alarm_id: str) -> list[dict[str, Any]]:
        return await self._run(tenancy.timeline, scope, alarm_id)

    async def recent_events(
        self, scope: Scope, device_id: str, municipality: str, limit: int = 20
    ) -> list[dict[str, Any]]:
        return await self._run(tenancy.recent_events, scope, device_id, municipality, limit)

    async def page_devices(self, scope: Scope, f: DeviceFilter) -> list[dict[str, Any]]:
        return await self._run(tenancy.page_devices, scope, f)

    async def get_device(self, scope: Scope, device_id: str) -> dict[str, Any] | None:
        return await self._run(tenancy.get_device, scope, device_id)

    async def dead_letters(self, scope: Scope, limit: int) -> list[dict[str, Any]]:
        return await self._run(tenancy.dead_letters, scope, limit)

    async def list_silences(
        self, scope: Scope, now: datetime, include_ended: bool
    ) -> list[Silence]:
        return await self._run(tenancy.list_silences, scope, now, include_ended)

    async def get_silence(self, scope: Scope, silence_id: str) -> Silence | None:
        return await self._run(tenancy.get_silence, scope, silence_id)

    async def response_rows(
        self,
        scope: Scope,
        municipality: str | None,
        since: datetime | None,
        until: datetime | None,
    ) -> list[ResponseRow]:
        return await self._run(tenancy.response_rows, scope, municipality, since, until)

    # --- Accounts --------------------------------------------------------------

    async def create_user(
        self,
        name: str,
        role: Role,
        municipalities: list[str],
        password_hash: str,
        now: datetime,
        audit: Sequence[AuditEntry],
    ) -> User:
        return await self._run(
            accounts.create_user, name, role, municipalities, password_hash, now, audit
        )

    async def password_hash_of(self, name: str) -> tuple[User | None, str | None]:
        return await self._run(accounts.password_hash_of, name)

    async def create_token(
        self,
        user: str,
        now: datetime,
        expires_at: datetime | None,
        audit: Sequence[AuditEntry],
    ) -> str:
        return await self._run(accounts.create_token, user, now, expires_at, audit)

    async def user_for_token(self, token: str, now: datetime) -> User | None:
        return await self._run(accounts.user_for_token, token, now)

    async def create_session(
        self, user: str, now: datetime, expires_at: datetime, audit: Sequence[AuditEntry]
    ) -> tuple[str, str]:
        return await self._run(accounts.create_session, user, now, expires_at, audit)

    async def session(self, session_id: str, now: datetime) -> SessionInfo | None:
        return await self._run(accounts.session, session_id, now)

    async def delete_session(self, session_id: str, audit: Sequence[AuditEntry]) -> None:
        await self._run(accounts.delete_session, session_id, audit)

    async def audit(self, entry: AuditEntry) -> None:
        await self._run(accounts.audit, entry)

    async def list_audit(self, limit: int = 100) -> list[dict[str, Any]]:
        return await self._run(accounts.list_audit, limit)

    async def insert_silence(self, silence: Silence, audit: Sequence[AuditEntry]) -> None:
        await self._run(accounts.insert_silence, silence, audit)

    # --- DeviceSecrets -----------------------------------------------------------

    async def set_device_credentials(
        self,
        scope: Scope,
        credentials: DeviceCredentials,
        now: datetime,
        audit: Sequence[AuditEntry],
    ) -> bool:
        return await self._run(
            credentials_module.set_device_credentials, scope, credentials, now, audit
        )

    async def device_credentials(self, device_id: str) -> DeviceCredentials | None:
        return await self._run(credentials_module.device_credentials, device_id)

    # --- Access ----------------------------------------------------------------

    async def list_users(self, visible: Visible) -> list[UserRow]:
        return await self._run(access.list_users, visible)

    async def find_user(self, visible: Visible, name: str) -> UserRow | None:
        return await self._run(access.find_user, visible, name)

    async def set_active(
        self, visible: Visible, name: str, active: bool, entry: AuditEntry
    ) -> bool:
        return await self._run(access.set_active, visible, name, active, entry)

    async def set_hpr(
        self, visible: Visible, name: str, hpr: str | None, entry: AuditEntry
    ) -> bool:
        return await self._run(access.set_hpr, visible, name, hpr, entry)

    # --- Access (tokens) -----------------------------------------------------------

    async def list_tokens(self, visible: Visible, user: str | None) -> list[TokenRow]:
        return await self._run(access.list_tokens, visible, user)

    async def revoke_token(self, visible: Visible, token_id: str, entry: AuditEntry) -> TokenRow:
        return await self._run(access.revoke_token, visible, token_id, entry)


@asynccontextmanager
async def opened_directory(dsn: str, max_size: int = 2) -> AsyncIterator[PostgresDirectory]:
    """The database migrated, then a directory over a small pool of its own, closed after.

    For a short-lived user such as one CLI command: it needs a connection or two,
    not the daemon's pool, and must not leave connections open behind it.
    """
    conn = await asyncpg.connect(dsn)
    try:
        await migrate(conn)
    finally:
        await conn.close()
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=max_size)
    try:
        yield PostgresDirectory(pool)
    finally:
        await pool.close()


def _is_a_directory(d: PostgresDirectory) -> Directory:
    return d  # mypy checks here that the class implements every port
