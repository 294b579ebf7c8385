"""A database out of reach answers 503 with Retry-After, on either store (issue 15 item 5).

Each directory is the real one, pointed at a database that cannot be used: a
PostgreSQL port that refuses connections, a SQLite file in a directory that is
not there. The app is served over HTTP on loopback with the web's real error
handlers; a driver error must not escape as a 500.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from alarmhub.core.tenancy import AlarmFilter, Scope
from alarmhub.store.errors import StoreUnavailableError
from alarmhub.store.ports import Directory
from alarmhub.store.postgres.directory import PostgresDirectory
from alarmhub.store.sqlite.directory import SqliteDirectory
from alarmhub.web.errors import STORE_RETRY_AFTER_S, install

EVERYTHING = Scope.everything("root")


def refused_port() -> int:
    """A loopback port nobody listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@asynccontextmanager
async def served(directory: Directory) -> AsyncIterator[str]:
    app = FastAPI()
    install(app)

    @app.get("/alarms")
    async def alarms() -> list[str]:
        return [a.id for a in await directory.list_alarms(EVERYTHING, AlarmFilter())]

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="error"))
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            assert not task.done(), "the server did not start"
            await asyncio.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


async def assert_503(directory: Directory) -> None:
    async with served(directory) as base, httpx.AsyncClient() as http:
        answer = await http.get(f"{base}/alarms")
    assert answer.status_code == 503, answer.text
    assert answer.headers["retry-after"] == str(STORE_RETRY_AFTER_S)
    assert answer.json()["error"]["code"] == "store_unavailable"


async def test_postgresql_refusing_connections_is_503_with_retry_after() -> None:
    pool = await asyncpg.create_pool(
        f"postgresql://postgres@127.0.0.1:{refused_port()}/postgres", min_size=0
    )
    try:
        directory = PostgresDirectory(pool)
        with pytest.raises(StoreUnavailableError):  # the store's error, not the driver's
            await directory.list_alarms(EVERYTHING, AlarmFilter())
        await assert_503(directory)
    finally:
        pool.terminate()


async def test_sqlite_file_out_of_reach_is_503_with_retry_after(tmp_path: Path) -> None:
    directory = SqliteDirectory(tmp_path / "gone" / "alarmhub.db")
    with pytest.raises(StoreUnavailableError):
        await directory.list_alarms(EVERYTHING, AlarmFilter())
    await assert_503(directory)
