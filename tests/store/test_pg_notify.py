"""Cross-instance change notifications: LISTEN/NOTIFY, with a resync after every connect."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence

import asyncpg
import orjson
import pytest

from alarmhub.store.postgres.notify import (
    MAX_NOTIFICATIONS,
    MAX_PAYLOAD_BYTES,
    RESYNC,
    PgAlarmChangeFeed,
    notify_changed,
    parse,
    payloads,
)
from tests.support.helpers import async_wait_until
from tests.support.tcp_proxy import TcpProxy

WAIT = 60.0


def test_payloads_batch_under_the_limit_and_fall_back_to_resync() -> None:
    assert payloads([]) == []
    assert payloads(["a", "b", "a"]) == [b'{"ids":["a","b"]}']
    ids = [f"alarm-{n:06d}" for n in range(1500)]
    batches = payloads(ids)
    assert 1 < len(batches) <= MAX_NOTIFICATIONS
    assert all(len(b) <= MAX_PAYLOAD_BYTES for b in batches)
    assert [i for b in batches for i in orjson.loads(b)["ids"]] == ids
    assert payloads([f"alarm-{n:06d}" for n in range(20_000)]) == [RESYNC]
    assert payloads(["x" * 9000]) == [RESYNC]
    assert parse(RESYNC.decode()) is None
    assert parse("not json") is None
    assert parse('{"ids": ["a"]}') == ["a"]


async def _changed(url: str, ids: Sequence[str], *, commit: bool = True) -> None:
    conn = await asyncpg.connect(url)
    try:
        tx = conn.transaction()
        await tx.start()
        await notify_changed(conn, ids)
        await (tx.commit() if commit else tx.rollback())
    finally:
        await conn.close()


@pytest.mark.postgres
async def test_listener_hears_commits_only_and_resyncs_after_its_connection_is_killed(
    pg_url: str,
) -> None:
    changed: list[list[str]] = []
    resyncs: list[int] = []

    async def on_changed(ids: Sequence[str]) -> None:
        changed.append(list(ids))

    async def on_resync() -> None:
        resyncs.append(len(changed))

    feed = PgAlarmChangeFeed(pg_url, ping_s=1.0, reconnect_min_s=0.05, reconnect_max_s=0.5)
    task = asyncio.ensure_future(feed.listen(on_changed, on_resync))
    try:
        assert await async_wait_until(lambda: len(resyncs) == 1, WAIT)
        await _changed(pg_url, ["rolled-back"], commit=False)
        await _changed(pg_url, ["a1", "a2"])
        assert await async_wait_until(lambda: bool(changed), WAIT)
        assert changed == [["a1", "a2"]]  # the rolled-back change was never announced

        first_pid = feed.backend_pid
        admin = await asyncpg.connect(pg_url)
        try:
            assert await admin.fetchval("SELECT pg_terminate_backend($1)", first_pid)
        finally:
            await admin.close()
        # Reconnected on a new session, and told the consumer to re-query.
        assert await async_wait_until(lambda: len(resyncs) == 2, WAIT)
        assert feed.backend_pid not in (None, first_pid)
        await _changed(pg_url, ["a3"])
        assert await async_wait_until(lambda: len(changed) == 2, WAIT)
        assert changed[1] == ["a3"]
        assert resyncs == [0, 1]  # each resync came before what followed it
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@pytest.mark.postgres
async def test_listener_behind_a_silent_network_notices_by_ping_and_resyncs(pg_url: str) -> None:
    changed: list[list[str]] = []
    resyncs: list[int] = []

    async def on_changed(ids: Sequence[str]) -> None:
        changed.append(list(ids))

    async def on_resync() -> None:
        resyncs.append(len(changed))

    port = int(pg_url.rsplit(":", 1)[1].split("/", 1)[0])
    async with TcpProxy(port) as proxy:
        feed = PgAlarmChangeFeed(
            proxy.url(pg_url.rsplit("/", 1)[1]),
            ping_s=0.5,
            reconnect_min_s=0.05,
            reconnect_max_s=0.5,
        )
        task = asyncio.ensure_future(feed.listen(on_changed, on_resync))
        try:
            assert await async_wait_until(lambda: len(resyncs) == 1, WAIT)
            proxy.cut()
            # No error comes through a cut: only the unanswered ping tells.
            assert await async_wait_until(lambda: not feed.connected.is_set(), WAIT)
            await _changed(pg_url, ["missed"])  # committed while it could not hear
            proxy.reset()
            proxy.restore()
            assert await async_wait_until(lambda: len(resyncs) == 2, WAIT)
            assert "missed" not in {i for ids in changed for i in ids}  # hence the resync
            await _changed(pg_url, ["after"])
            assert await async_wait_until(lambda: ["after"] in changed, WAIT)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


@pytest.mark.postgres
async def test_listener_whose_listen_goes_unanswered_connects_again(pg_url: str) -> None:
    """The connection goes silent after the handshake, before LISTEN is answered.

    The ping that would notice starts only once LISTEN is in place, and LISTEN had
    no bound of its own (the connection had no command timeout), so the listener
    waited for ever: no change was heard again, and a standby's page stood still.
    """
    changed: list[list[str]] = []
    resyncs: list[int] = []

    async def on_changed(ids: Sequence[str]) -> None:
        changed.append(list(ids))

    async def on_resync() -> None:
        resyncs.append(len(changed))

    port = int(pg_url.rsplit(":", 1)[1].split("/", 1)[0])
    async with TcpProxy(port) as proxy:
        proxy.swallow(b"LISTEN")  # the first LISTEN sent, and its connection, go silent
        feed = PgAlarmChangeFeed(
            proxy.url(pg_url.rsplit("/", 1)[1]),
            ping_s=0.5,
            reconnect_min_s=0.05,
            reconnect_max_s=0.5,
        )
        task = asyncio.ensure_future(feed.listen(on_changed, on_resync))
        try:
            assert await async_wait_until(lambda: proxy.swallowed == 1, WAIT)
            # It gives that connection up and listens on a new one.
            assert await async_wait_until(lambda: len(resyncs) == 1, WAIT)
            await _changed(pg_url, ["after"])
            assert await async_wait_until(lambda: ["after"] in changed, WAIT)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
