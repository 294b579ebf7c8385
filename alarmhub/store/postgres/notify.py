"""Alarms changed by one instance, announced to the others: PostgreSQL LISTEN/NOTIFY.

The writer announces inside the transaction that changes the alarms (the
:func:`payloads`, sent by rows.py's upsert in its own statement, or by
:func:`notify_changed`): PostgreSQL delivers the notification at commit and never
for a rollback, so a listener never hears of a change it cannot read. Notifications
are not stored: a listener that was disconnected has missed some, so after every
(re)connect it calls `on_resync` and the consumer re-queries what it shows.

The listener has a dedicated connection (not from a pool: LISTEN belongs to one
session, and a pooled session may be handed to another user; for the same reason
it does not work through PgBouncer's transaction pooling, so point it at the
server or at a session-pooled port). A cut network is silent, so besides the
connection's own termination callback the listener pings the server and
reconnects when a ping does not come back in time; every statement on it (LISTEN
too, before the pings begin) is bounded by the same period.

Payload: a JSON object, ``{"ids": [...]}``, or ``{"resync": true}`` when the ids
would need more than :data:`MAX_NOTIFICATIONS` notifications of at most
:data:`MAX_PAYLOAD_BYTES` each (PostgreSQL's limit is 8000 bytes).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import asyncpg
import orjson
import structlog

from alarmhub.observability.logs import OncePer
from alarmhub.store.postgres.leases import Conn

log = structlog.get_logger("alarmhub.notify")

CHANNEL = "alarmhub_alarms"
MAX_PAYLOAD_BYTES = 7900  # under PostgreSQL's 8000, with room for the JSON frame
MAX_NOTIFICATIONS = 8  # beyond this a resync is cheaper for every listener
RESYNC = b'{"resync":true}'


def payloads(ids: Sequence[str]) -> list[bytes]:
    """The notifications announcing `ids`: batches under the size limit, or one resync."""
    empty = len(orjson.dumps({"ids": []}))
    out: list[bytes] = []
    batch: list[str] = []
    size = empty
    for alarm_id in dict.fromkeys(ids):
        item = len(orjson.dumps(alarm_id)) + 1  # the id and its comma
        if size + item > MAX_PAYLOAD_BYTES:
            if not batch:
                return [RESYNC]  # one id too long to announce: have everyone re-query
            out.append(orjson.dumps({"ids": batch}))
            batch, size = [], empty
            if len(out) >= MAX_NOTIFICATIONS:
                return [RESYNC]
        batch.append(alarm_id)
        size += item
    if batch:
        out.append(orjson.dumps({"ids": batch}))
    return out


async def notify_changed(conn: Conn, ids: Sequence[str], channel: str = CHANNEL) -> None:
    """Announce `ids` at the commit of the transaction `conn` is in (nothing if it rolls back)."""
    for payload in payloads(ids):
        await conn.execute("SELECT pg_notify($1, $2)", channel, payload.decode())


def parse(payload: str) -> list[str] | None:
    """The ids of a notification; None for a resync (or anything this version cannot read)."""
    try:
        value = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
    ids = value.get("ids") if isinstance(value, dict) else None
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        return None
    return ids


Item = list[str] | None  # changed ids, or None: resync


class PgAlarmChangeFeed:
    """The :class:`~alarmhub.store.cluster.AlarmChangeFeed` port on a dedicated connection."""

    def __init__(
        self,
        dsn: str,
        *,
        channel: str = CHANNEL,
        ping_s: float = 5.0,
        reconnect_min_s: float = 0.1,
        reconnect_max_s: float = 5.0,
    ) -> None:
        self._dsn = dsn
        self._channel = channel
        self._ping_s = ping_s
        self._min = reconnect_min_s
        self._max = reconnect_max_s
        self._once = OncePer(60.0)
        self.connected = asyncio.Event()  # for tests and /readyz: LISTEN is in place
        self.backend_pid: int | None = None

    async def listen(
        self,
        on_changed: Callable[[Sequence[str]], Awaitable[None]],
        on_resync: Callable[[], Awaitable[None]],
    ) -> None:
        """Listen, reconnecting with backoff, until cancelled; callbacks in arrival order."""
        items: asyncio.Queue[Item] = asyncio.Queue()
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._connect_loop(items), name="notify-listener")
            while True:
                item = await items.get()
                try:
                    await (on_resync() if item is None else on_changed(item))
                except Exception:
                    log.exception("notify.callback_failed")

    async def _connect_loop(self, items: asyncio.Queue[Item]) -> None:
        backoff = self._min
        while True:
            try:
                await self._session(items)
            except Exception as exc:
                should, suppressed = self._once.should_log("notify.disconnected")
                if should:
                    log.warning("notify.disconnected", error=repr(exc), since_last=suppressed)
            if self.connected.is_set():
                backoff = self._min  # it was listening: a fresh outage starts short
            self.connected.clear()
            self.backend_pid = None
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self._max)

    async def _session(self, items: asyncio.Queue[Item]) -> None:
        """One connection: LISTEN, resync, then ping until it fails or is closed."""
        # Every statement bounded, LISTEN too: the ping below starts only once LISTEN
        # is in place, and a connection gone silent before its answer waited for ever.
        conn = await asyncpg.connect(self._dsn, timeout=self._ping_s, command_timeout=self._ping_s)
        closed = asyncio.Event()

        def on_notify(_c: Any, _pid: int, _channel: str, payload: object) -> None:
            items.put_nowait(parse(str(payload)))

        conn.add_termination_listener(lambda _c: closed.set())
        try:
            await conn.add_listener(self._channel, on_notify)
            self.backend_pid = conn.get_server_pid()
            self.connected.set()
            # After LISTEN is in place: a change committed from now on is notified,
            # one committed before is found by the re-query.
            items.put_nowait(None)
            log.info("notify.listening", channel=self._channel)
            while not closed.is_set():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._ping_s):
                        await closed.wait()
                if closed.is_set():
                    break
                await conn.fetchval("SELECT 1", timeout=self._ping_s)
        finally:
            conn.terminate()
