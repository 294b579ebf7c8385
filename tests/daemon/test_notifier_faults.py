"""The notifier against faults of its own: a locked database while a row is marked, a
receiver that answers a byte at a time. Each used to stop every notification (found in
review, 2026-12-06). No daemon: the Notifier with a real SQLite store, a real socket."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

import alarmhub.daemon.notifier as notifier_module
from alarmhub.clock import FakeClock
from alarmhub.daemon.notifier import Notifier
from alarmhub.dev.mosquitto import LocalBroker
from alarmhub.store.ports import Notification
from alarmhub.store.sqlite.store import SqliteStore
from tests.support.helpers import NoticeLink, async_wait_until

T0 = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
CEILING_S = 60.0  # a ceiling only: each verdict is whether it happens at all


async def _stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def test_a_locked_database_while_a_notice_is_marked_delays_it_and_ends_nothing(
    tmp_path: Path, broker: LocalBroker, client_id: str
) -> None:
    """A raw sqlite3 error out of the outbox mark ended Notifier.run(), and with it
    the daemon's task group: the documented lock fault was to recover by itself."""
    path = tmp_path / "a.db"
    store = await SqliteStore.open(path)
    other = sqlite3.connect(path, isolation_level=None)
    link = NoticeLink(broker.port, client_id)
    try:
        await store.queue_outbox("a-1", Notification("device", "mqtt", "t/x", {"x": 1}), T0)
        await store._conn.execute("PRAGMA busy_timeout=100")
        other.execute("BEGIN EXCLUSIVE")  # another process holds the file
        notifier = Notifier(store, store, asyncio.Lock(), FakeClock(T0), link)
        task = asyncio.create_task(notifier.run())
        # Sent, then refused at the mark, at least twice: the loop came round again.
        assert await async_wait_until(lambda: notifier.sent >= 2 or task.done(), CEILING_S)
        assert not task.done(), task.exception()
        other.execute("ROLLBACK")
        assert await async_wait_until(lambda: task.done() or _marked(path), CEILING_S)
        assert not task.done(), task.exception()
        await _stop(task)
    finally:
        other.close()
        link.close()
        await store.close()


def _failed(path: Path) -> bool:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        sql = "SELECT last_error IS NOT NULL FROM outbox WHERE alarm_id = 'a-1'"
        return conn.execute(sql).fetchone() == (1,)


def _marked(path: Path) -> bool:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return conn.execute("SELECT sent_at IS NOT NULL FROM outbox").fetchone() == (1,)


async def test_a_receiver_that_drips_its_answer_holds_back_no_other_notice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, broker: LocalBroker, client_id: str
) -> None:
    """httpx's timeout bounds each read; one byte every 0.3 s never tripped it, and the
    level-2 notice queued behind the webhook waited for ever."""
    monkeypatch.setattr(notifier_module, "SEND_TIMEOUT_S", 0.5)

    handlers: list[asyncio.Task[Any]] = []

    async def drip(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        handlers.append(asyncio.current_task())  # type: ignore[arg-type]
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\n")
            for _ in range(1000):  # ends by itself (5 min), long after any verdict
                writer.write(b"X")
                await writer.drain()
                await asyncio.sleep(0.3)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            # Closed here, on this loop: a writer left to the garbage collector warned
            # (ResourceWarning) inside whichever test ran next, and failed it.
            writer.close()

    server = await asyncio.start_server(drip, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    store = await SqliteStore.open(tmp_path / "a.db")
    link = NoticeLink(broker.port, client_id)
    try:
        hook = Notification("hook", "webhook", f"http://127.0.0.1:{port}/", {"n": 1})
        await store.queue_outbox("a-1", hook, T0)
        await store.queue_outbox("a-2", Notification("level-2", "mqtt", "notify/l2", {"n": 2}), T0)
        notifier = Notifier(store, store, asyncio.Lock(), FakeClock(T0), link)
        task = asyncio.create_task(notifier.run())
        assert await async_wait_until(lambda: link.topics == ["notify/l2"], CEILING_S)
        # The whole-call deadline still ends the dripping answer (each address is its
        # own lane now, so the level-2 notice no longer waits for it to get through).
        assert await async_wait_until(lambda: _failed(tmp_path / "a.db"), CEILING_S)
        [row] = await store.outbox_for("a-1")
        assert row["sent_at"] is None  # the webhook's notice waits for its retry
        await _stop(task)
    finally:
        server.close()
        for handler in handlers:
            handler.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)
        await server.wait_closed()
        link.close()
        await store.close()
