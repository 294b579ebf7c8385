"""Deliver the outbox: escalation notices to MQTT topics and webhooks, until accepted.

A notification is recorded as sent only after the receiver accepted it: the
broker's PUBACK for MQTT, a 2xx for a webhook. So it is delivered at least once:
an owner that dies (or loses its lease) between the receiver's answer and the
mark leaves the row due, and the next owner sends it again — with the same
`notification_id` in the body (and the `Idempotency-Key` header on a webhook),
so the receiver can tell it has it already. Until then it is retried with
exponential backoff, and the failure is on the outbox row for operators to see.
A hanging receiver costs one bounded timeout per attempt and never touches the
ingest path: this task only reads and updates outbox rows.

Each address (a webhook URL, an MQTT topic) is its own lane: at most one send in
flight to it, in the outbox's order, and up to MAX_IN_FLIGHT lanes at once. Sent one
after another, a receiver that never answered cost its whole deadline for every row
queued for it, and every other receiver's notices — another municipality's
escalation to the nurse on call — waited behind it. The read leaves out the busy
addresses, so a backlog for one dead receiver never fills the page the others are
read in, and at most a page of rows is held in memory.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Protocol

import httpx
import orjson
import paho.mqtt.client as paho
import structlog

from alarmhub.clock import Clock
from alarmhub.daemon.waits import wait_set
from alarmhub.observability.logs import OncePer
from alarmhub.store.errors import StoreError
from alarmhub.store.ports import OutboxItem, OutboxReads, OutboxWrites

log = structlog.get_logger("alarmhub.notifier")
SEND_TIMEOUT_S = 5.0
PUBACK_POLL_S = 0.005  # a notification is rare: a short poll costs nothing
# Carries the notification's stable id (the body's `notification_id`) on a webhook.
IDEMPOTENCY_HEADER = "Idempotency-Key"
BACKOFF_MAX = timedelta(minutes=5)
# Lanes sending at once. Only this many receivers dead at the same moment, each with
# a backlog, can make a healthy one wait (for a lane to end a send: SEND_TIMEOUT_S).
MAX_IN_FLIGHT = 32
IDLE_S = 1.0  # the outbox is read again at least this often (rows due by backoff)
OUTBOX_PAGE = 100  # due rows read at once


def _notification_id(payload: bytes) -> str | None:
    """The stable id an escalation notice carries (rows written before it had none)."""
    try:
        body = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
    stable = body.get("notification_id") if isinstance(body, dict) else None
    return stable if isinstance(stable, str) else None


def backoff(attempts: int) -> timedelta:
    """1 s, 2 s, 4 s … capped at five minutes."""
    return min(BACKOFF_MAX, timedelta(seconds=2 ** min(attempts, 12)))


class Broker(Protocol):
    """The MQTT link notifications leave by; the PUBACK is the receiver's acceptance."""

    @property
    def connected(self) -> bool: ...
    def publish_tracked(self, topic: str, payload: bytes, qos: int = 1) -> paho.MQTTMessageInfo: ...


class Notifier:
    """The outbox's one consumer: reads due rows, sends, records the outcome under `lock`."""

    def __init__(
        self,
        reader: OutboxReads,
        writer: OutboxWrites,
        lock: asyncio.Lock,
        clock: Clock,
        broker: Broker | None,
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._lock = lock
        self._clock = clock
        self._broker = broker
        self._wake = asyncio.Event()
        self._busy: set[str] = set()  # addresses with a send in flight
        self._once = OncePer(60.0)
        self.sent = 0
        self.failed = 0

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        # The sends are this task group's: cancelling run() (stop, the term's end)
        # cancels and awaits them before the HTTP client they use is closed.
        async with httpx.AsyncClient(timeout=SEND_TIMEOUT_S) as http, asyncio.TaskGroup() as sends:
            while True:
                # Cleared before the read: a wake while it runs (a send ended, a new
                # escalation) is then not lost, and the loop reads again at once.
                self._wake.clear()
                # A database out of reach (a PostgreSQL restart) holds notifications
                # back until it returns; it must not end the daemon. A row sent but
                # not yet marked is sent again then: at least once, as after a crash.
                try:
                    await self._start_due(sends, http)
                except StoreError as exc:
                    self._store_failed(exc)
                await wait_set(self._wake, IDLE_S)

    async def _start_due(self, sends: asyncio.TaskGroup, http: httpx.AsyncClient) -> None:
        """Start the first due row of each idle address while lanes are free.

        Read again after a full page that started a lane: each read leaves out the busy
        addresses, so the rows of receivers beyond the first page are reached within
        MAX_IN_FLIGHT reads.
        """
        while len(self._busy) < MAX_IN_FLIGHT:
            due = await self._reader.due_outbox(
                self._clock.now(), OUTBOX_PAGE, busy=frozenset(self._busy)
            )
            started = False
            for item in due:
                if item.address in self._busy or len(self._busy) >= MAX_IN_FLIGHT:
                    continue  # a later row of a lane just started waits for its turn
                self._busy.add(item.address)
                sends.create_task(self._lane(item, http), name=f"notify:{item.target}")
                started = True
            if not started or len(due) < OUTBOX_PAGE:
                return  # a page not full held every due row: no other address waits

    async def _lane(self, item: OutboxItem, http: httpx.AsyncClient) -> None:
        """One send and its mark; the address is free again only after the mark."""
        try:
            await self._deliver(item, http)
        except StoreError as exc:
            self._store_failed(exc)
            return  # unmarked, so due: read again at the next idle round, not at once
        finally:
            self._busy.discard(item.address)
        self._wake.set()  # the lane's next row, if any, goes now

    def _store_failed(self, exc: StoreError) -> None:
        """The store refused a read or a mark: said once a minute, retried next turn."""
        self._once.warn(log, "notifier.store_failed", error=str(exc))

    async def _deliver(self, item: OutboxItem, http: httpx.AsyncClient) -> None:
        try:
            if item.channel == "mqtt":
                await self._send_mqtt(item)
            else:
                await self._send_webhook(item, http)
        except Exception as exc:  # any failure is retried later
            self.failed += 1
            error = f"{type(exc).__name__}: {exc}"
            next_at = self._clock.now() + backoff(item.attempts)
            async with self._lock:
                await self._writer.outbox_failed(item.id, next_at, error)
            should, suppressed = self._once.should_log(f"notify:{item.target}:{item.channel}")
            if should:
                log.warning(
                    "notification.failed",
                    target=item.target,
                    channel=item.channel,
                    alarm_id=item.alarm_id,
                    error=error,
                    attempts=item.attempts + 1,
                    similar_since_last_log=suppressed,
                )
            return
        self.sent += 1
        async with self._lock:
            await self._writer.outbox_sent(item.id, self._clock.now())
        log.info(
            "notification.sent", target=item.target, channel=item.channel, alarm_id=item.alarm_id
        )

    async def _send_webhook(self, item: OutboxItem, http: httpx.AsyncClient) -> None:
        headers = {"content-type": "application/json"}
        stable = _notification_id(item.payload)
        if stable is not None:  # the body's id again, where HTTP tooling looks for one
            headers[IDEMPOTENCY_HEADER] = stable
        # One deadline for the whole call, as _send_mqtt has: httpx's timeout bounds each
        # read, and a receiver dripping a byte every few seconds never tripped it, holding
        # its lane (before lanes: every later notification) for ever.
        async with asyncio.timeout(SEND_TIMEOUT_S):
            response = await http.post(item.address, content=item.payload, headers=headers)
        if not 200 <= response.status_code < 300:
            raise RuntimeError(f"webhook answered {response.status_code}")

    async def _send_mqtt(self, item: OutboxItem) -> None:
        ingest = self._broker
        if ingest is None or not ingest.connected:
            raise ConnectionError("not connected to the broker")
        info = ingest.publish_tracked(item.address, item.payload, qos=1)
        # The broker's PUBACK is the receiver's acceptance. Polled here rather than
        # waited for in a thread (wait_for_publish): a thread parked on a PUBACK that a
        # closing connection will never bring held up the loop's shutdown for the
        # whole timeout (5 s at every stop, seen as each test module's last teardown).
        try:
            async with asyncio.timeout(SEND_TIMEOUT_S):
                while not info.is_published():  # noqa: ASYNC110  paho sets it on its thread
                    await asyncio.sleep(PUBACK_POLL_S)
        except TimeoutError:
            raise TimeoutError("the broker did not confirm the notification in time") from None
