"""Both stores behind one fixture, so one suite of behaviour tests holds each to the ports."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from alarmhub.store.ports import AlarmStore, SupervisionHistory
from alarmhub.store.postgres.reads import PostgresHistory
from alarmhub.store.postgres.reads import last_received as pg_last_received
from alarmhub.store.postgres.residents import PostgresResidentRows
from alarmhub.store.postgres.store import PostgresStore
from alarmhub.store.residents import ResidentRows
from alarmhub.store.sqlite.backlog_rows import last_received as sqlite_last_received
from alarmhub.store.sqlite.residents import SqliteResidentRows
from alarmhub.store.sqlite.store import SqliteStore
from alarmhub.store.sqlite.supervision_rows import SqliteHistory
from tests.store.directory_backends import (
    Backend,
    norwegian_database,
    postgres_backend,
    sqlite_backend,
)
from tests.support.postgres import scratch_database


@dataclass
class OpenedStore:
    """A store under test, plus a side door to count its rows (SQL with `?` marks)."""

    kind: str
    store: AlarmStore
    path: Path | None = None
    url: str | None = None

    @property
    def history(self) -> SupervisionHistory:
        if self.path is not None:
            return SqliteHistory(self.path)
        assert isinstance(self.store, PostgresStore)
        return PostgresHistory(self.store.pool)

    @property
    def residents(self) -> ResidentRows:
        """The resident register's rows on the same database, as the daemon opens them."""
        if self.path is not None:
            return SqliteResidentRows(self.path)
        assert isinstance(self.store, PostgresStore)
        return PostgresResidentRows(self.store.pool)

    async def last_received(self) -> datetime | None:
        if self.path is not None:
            return await sqlite_last_received(self.path)
        assert isinstance(self.store, PostgresStore)
        return await pg_last_received(self.store.pool)

    async def rows(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        if self.path is not None:
            conn = sqlite3.connect(self.path, timeout=10)
            try:
                rows = [tuple(r) for r in conn.execute(sql, params).fetchall()]
                conn.commit()
                return rows
            finally:
                conn.close()
        assert self.url is not None
        marks = sql.split("?")
        pg_sql = marks[0] + "".join(f"${i}{part}" for i, part in enumerate(marks[1:], start=1))
        conn2 = await asyncpg.connect(self.url)
        try:
            return [tuple(r) for r in await conn2.fetch(pg_sql, *params)]
        finally:
            await conn2.close()

    async def count(self, sql: str, *params: Any) -> int:
        return int((await self.rows(sql, *params))[0][0])


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def opened(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[OpenedStore]:
    """The same empty store, once SQLite, once PostgreSQL (a database of this test's own)."""
    if request.param == "sqlite":
        path = tmp_path / "alarmhub.db"
        sqlite_store = await SqliteStore.open(path)
        try:
            yield OpenedStore("sqlite", sqlite_store, path=path)
        finally:
            await sqlite_store.close()
        return
    async with scratch_database() as url:
        pg_store = await PostgresStore.open(url)
        try:
            yield OpenedStore("postgres", pg_store, url=url)
        finally:
            await pg_store.close()


@pytest.fixture
def alarm_store(opened: OpenedStore) -> AlarmStore:
    return opened.store


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param("postgres", marks=pytest.mark.postgres),
        pytest.param("postgres-nb", marks=pytest.mark.postgres),
    ]
)
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    """The directory on each store; postgres-nb is a database that sorts text as nb_NO."""
    if request.param == "sqlite":
        async with sqlite_backend(tmp_path) as b:
            yield b
        return
    database = scratch_database() if request.param == "postgres" else norwegian_database()
    async with database as url, postgres_backend(url) as b:
        yield b
