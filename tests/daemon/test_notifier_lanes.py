"""A receiver that never answers holds back only its own notices (found in review,
2026-12-06). The notifier sent the outbox one row after another: each row for a dead
webhook cost the whole send deadline, and every other receiver's notices — another
municipality's escalation — waited behind all of them. No daemon: the Notifier with a
real SQLite store, real HTTP servers on 127.0.0.1 and a real Mosquitto for the
MQTT notice."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

import alarmhub.daemon.notifier as notifier_module
from alarmhub.clock import FakeClock
from alarmhub.daemon.notifier import Notifier
from alarmhub.dev.mosquitto import LocalBroker
from alarmhub.store.ports import Notification
from alarmhub.store.sqlite.store import SqliteStore
from tests.support.helpers import NoticeLink, async_wait_until, db_rows

T0 = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
CEILING_S = 60.0  # a ceiling only: each verdict is whether it happens at all
DEAD_BACKLOG = 150  # more than a page of due rows (100): all read before the others'


class _Receiver:
    """A webhook receiver on 127.0.0.1: records each body; `answer` decides when and how.

    It counts the requests it holds at once, so a test can tell whether one address
    was sent to more than one at a time.
    """

    def __init__(self, hold: asyncio.Event | None, status: int) -> None:
        self.hold = hold  # None: answer at once; else answer once it is set
        self.status = status
        self.bodies: list[dict[str, Any]] = []
        self.open_now = 0
        self.most_open = 0
        self._handlers: list[asyncio.Task[Any]] = []
        self._server: asyncio.Server | None = None

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}/"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._handlers.append(asyncio.current_task())  # type: ignore[arg-type]
        try:
            while True:  # keep-alive: httpx sends the next request on this connection
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                self.bodies.append(orjson.loads(await reader.readexactly(length)))
                self.open_now += 1
                self.most_open = max(self.most_open, self.open_now)
                if self.hold is not None:
                    await self.hold.wait()
                self.open_now -= 1
                writer.write(f"HTTP/1.1 {self.status} X\r\ncontent-length: 0\r\n\r\n".encode())
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()  # on this loop: one left to the collector warned in a later test

    async def close(self) -> None:
        assert self._server is not None
        self._server.close()
        for handler in self._handlers:
            handler.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        await self._server.wait_closed()


async def test_a_receiver_that_never_answers_holds_back_only_its_own_notices(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, broker: LocalBroker, client_id: str
) -> None:
    # Only the test ends the hang: every verdict below is taken while the dead
    # receiver still holds its first request, whatever this machine's speed.
    monkeypatch.setattr(notifier_module, "SEND_TIMEOUT_S", 3600.0)
    release = asyncio.Event()
    dead, healthy = _Receiver(release, 503), _Receiver(None, 204)
    dead_url, healthy_url = await dead.start(), await healthy.start()
    path = tmp_path / "a.db"
    store = await SqliteStore.open(path)
    link = NoticeLink(broker.port, client_id)
    task: asyncio.Task[None] | None = None
    try:
        # The dead receiver's backlog first, so the old loop reached it first.
        for n in range(DEAD_BACKLOG):
            await store.queue_outbox(
                f"d-{n}", Notification("dead", "webhook", dead_url, {"n": n}), T0
            )
        for n in range(3):
            note = Notification("nurse", "webhook", healthy_url, {"n": n})
            await store.queue_outbox(f"h-{n}", note, T0)
        await store.queue_outbox("m-0", Notification("l2", "mqtt", "notify/l2", {"n": 0}), T0)
        notifier = Notifier(store, store, asyncio.Lock(), FakeClock(T0), link)
        task = asyncio.create_task(notifier.run())

        def others_done() -> bool:  # and the dead receiver holding its first request
            held = dead.open_now == 1
            return held and len(healthy.bodies) == 3 and link.topics == ["notify/l2"]

        assert await async_wait_until(lambda: others_done() or task.done(), CEILING_S)
        assert not task.done(), task.exception()
        # Delivered in their order, while the dead receiver holds its first request.
        assert [b["n"] for b in healthy.bodies] == [0, 1, 2]
        assert dead.bodies == [{"n": 0}]
        assert dead.open_now == 1
        assert await async_wait_until(lambda: _all_sent(path, "h-", 3, task), CEILING_S)

        # The dead receiver answers 503 from now on: each of its rows is tried once,
        # in order, never two at a time, and recorded as failed (at least once).
        release.set()
        assert await async_wait_until(
            lambda: len(dead.bodies) == DEAD_BACKLOG or task.done(), CEILING_S
        )
        assert not task.done(), task.exception()
        assert [b["n"] for b in dead.bodies] == list(range(DEAD_BACKLOG))
        assert dead.most_open == 1
        assert await async_wait_until(lambda: _failed_once(path, task), CEILING_S)
    finally:
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await dead.close()
        await healthy.close()
        link.close()
        await store.close()


def _all_sent(path: Path, prefix: str, count: int, task: asyncio.Task[None]) -> bool:
    rows = _outbox(path, prefix)
    return task.done() or (len(rows) == count and all(r[1] is not None for r in rows))


def _failed_once(path: Path, task: asyncio.Task[None]) -> bool:
    rows = _outbox(path, "d-")
    return task.done() or (
        len(rows) == DEAD_BACKLOG
        and all(
            r[1] is None and r[2] == 1 and r[3] == "RuntimeError: webhook answered 503"
            for r in rows
        )
    )


def _outbox(path: Path, prefix: str) -> list[tuple[Any, ...]]:
    sql = "SELECT alarm_id, sent_at, attempts, last_error FROM outbox WHERE alarm_id LIKE ?"
    return db_rows(path, sql, (prefix + "%",))
