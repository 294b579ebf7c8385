"""The MQTT edge: QoS 1 in, acknowledged only after the commit.

aiomqtt 2.x acknowledges each QoS 1 message as soon as it is queued, before
alarmhub has stored it, and offers no public way to defer that (upstream issue
#345); a crash between the two would lose the alarm. So ingest drops one level,
to paho-mqtt (which aiomqtt wraps): paho's own network thread receives with
`manual_ack_set(True)` set *before* connecting (set after, the messages queued
while offline are auto-acked during connect), hands messages to the event loop
in batches, and :meth:`MqttIngest.settle` sends the batch's PUBACKs (and its
QoS 0 receipts) after the batch committed, as one buffer that alarmhub encodes
itself (alarmhub/mqtt/packets.py says why), written by the settling thread itself
on a plain TCP connection (BufferedReadClient.write_now says why and when not).
paho's network loop also costs less per message than aiomqtt's (see
docs/performance.md), which matters on the hottest path alarmhub has.

Rules this module keeps (see NOTES.md, "ack after commit"):
- a persistent session: stable client id, MQTT 3.1.1 `clean_session=False`;
- acks go in arrival order, only on the connection the message came on: after a
  reconnect, pending acks of the old connection are dropped (the broker
  redelivers those messages and the store deduplicates them);
- no bounded local queue that could discard: the broker's in-flight window
  (`max_inflight_messages`) is the backpressure;
- a list of brokers (the nodes of one clustered broker that keeps sessions
  across its nodes) is tried round robin with the same client id and session:
  when a connection is lost or a connect fails, the next broker is tried after
  the minimum reconnect delay, and the Backoff grows only after a whole round
  failed. A dead node thus costs one short delay, not a growing backoff, and an
  outage of all of them backs off as one broker did (docs/scaling.md).
"""

from __future__ import annotations

import asyncio
import random
import socket
import ssl
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Any, Self

import paho.mqtt.client as paho
import structlog
from paho.mqtt import __version__ as paho_version
from paho.mqtt.enums import CallbackAPIVersion

from alarmhub.core.dedup import DEAD_LETTER_KEPT_BYTES, payload_digest
from alarmhub.core.model import PayloadCut, RawMessage
from alarmhub.core.pipeline import rejected_fingerprint
from alarmhub.mqtt import packets
from alarmhub.mqtt.closing import await_broker_close
from alarmhub.mqtt.paho_fast import BufferedReadClient, NoTopicCallbacks
from alarmhub.settings import MqttTarget

log = structlog.get_logger("alarmhub.ingest")


@dataclass(frozen=True, slots=True)
class Delivery:
    """A message as received, with what acknowledging it needs.

    It carries the core's RawMessage itself, built once on paho's thread, so the
    hot path does not copy every message into a second object.
    """

    raw: RawMessage
    mid: int
    qos: int
    generation: int  # which connection it came on: acks are valid only on that one


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with full jitter, so a fleet of clients does not reconnect in step."""

    minimum: float
    maximum: float

    def delay(self, attempt: int, rng: random.Random) -> float:
        ceiling = min(self.maximum, self.minimum * (2 ** min(attempt, 30)))
        return rng.uniform(self.minimum, max(self.minimum, ceiling))


def _cut(topic: str, payload: bytes, now: datetime, retained: bool) -> RawMessage:
    """An oversized message as its first bytes, with the size and hashes of the whole.

    It can only become a dead letter, stored as exactly this (issue 13 item 1).
    Cut here, on paho's thread, the whole payload is released when this callback
    returns instead of waiting in the batch until its commit: with the broker's
    in-flight window of 1,000 and max_packet_size of 1 MiB that was up to 1 GB.
    """
    cut = PayloadCut(len(payload), payload_digest(payload), rejected_fingerprint(topic, payload))
    return RawMessage(topic, payload[:DEAD_LETTER_KEPT_BYTES], now, cut=cut, retained=retained)


def _no_delay(_client: Any, _userdata: Any, sock: Any) -> None:
    """Send alarmhub's PUBACKs and receipts at once: TCP_NODELAY on the broker connection.

    paho leaves Nagle's algorithm on. alarmhub already writes each batch's PUBACKs
    and receipts as one buffer; Nagle could hold that buffer back while the previous
    one is unacknowledged, and the broker's kernel delays its ACK when it has nothing
    to send. (The broker's side: docs/performance.md, "eleventh part".)
    """
    if isinstance(sock, socket.socket):  # not a websocket wrapper; TLS sockets are sockets
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _paho_internals(*, wanted: bool) -> bool:
    """Whether to use paho's internals (warned once when wanted and missing).

    Four uses, all for the hot path and all optional: our own PUBACK/PUBLISH buffer
    goes on paho's internal queue, written by the thread that settles the batch on a
    plain TCP connection (by paho's over TLS), paho's per-message topic-callback walk
    is skipped, its reads are buffered and whole PUBLISH packets in the buffer are
    read in one pass (alarmhub/mqtt/paho_fast.py). Without them (the setting
    `mqtt_paho_internals`, or a paho without these attributes) paho's public API does
    all four. pyproject.toml bounds paho to the releases tested with both.
    """
    available = hasattr(paho, "time_func") and all(
        hasattr(paho.Client, name)
        for name in ("_packet_queue", "_sock_recv", "_sock_close", "_packet_read", "_packet_write")
    )
    if wanted and not available:
        log.warning("mqtt.paho_internals_unavailable", paho_version=paho_version)
    return wanted and available


class MqttIngest:
    def __init__(
        self,
        target: MqttTarget | Sequence[MqttTarget],
        client_id: str,
        subscriptions: Sequence[str],
        now: Callable[[], datetime],
        *,
        keepalive: int = 30,
        backoff: Backoff | None = None,
        on_connection_change: Callable[[bool, int], None] | None = None,
        on_link: Callable[[bool, bool], None] | None = None,
        paho_internals: bool = True,
        max_payload_bytes: int | None = None,
        close_wait_s: float = 5.0,
    ) -> None:
        self._targets = (target,) if isinstance(target, MqttTarget) else tuple(target)
        if not self._targets:
            raise ValueError("no broker to connect to")
        self._index = 0  # the broker connected to, or being tried: only paho's thread moves it
        # A payload above this can only be a dead letter: cut on arrival (_cut).
        self._max_payload = max_payload_bytes
        self._subscriptions = list(subscriptions)
        self._now = now
        self._backoff = backoff or Backoff(0.5, 30.0)
        self._rng = random.Random()  # noqa: S311 - jitter, not cryptography
        self._on_change = on_connection_change
        # Told on the loop at each CONNACK (True, whether the broker kept the session) and
        # each lost link (False, False): before any message of that connection is handed
        # over, which `on_connection_change` (at SUBACK) is not (daemon/backlog.py).
        self._on_link = on_link
        self._keepalive = keepalive
        # How long close() waits for the broker to have read our last acks (closing.py).
        self._close_wait_s = close_wait_s
        self._internals = _paho_internals(wanted=paho_internals)
        self._pending: deque[Delivery] = deque()
        # Lowered by batches() only while it waits for a message: the next one wakes it.
        self._signalled = False
        self._wakeup = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._generation = 0
        self._failures = 0  # failed connects and lost connections since the last CONNACK
        self._lock = threading.Lock()
        self._closing = False
        self.connected = False  # connected and subscribed: ready to receive
        self._link_up = False  # CONNACK seen, no disconnect since: acks may be sent
        self._session_present = False
        self._subscribe_mid = -1
        self.connections = 0
        self._first_connect = asyncio.Event()
        self._client = (BufferedReadClient if self._internals else paho.Client)(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=client_id,
            clean_session=False,
            protocol=paho.MQTTv311,
        )
        # Must precede connect(): otherwise messages queued while we were offline are
        # acknowledged by paho during the connect handshake, before we stored them.
        self._client.manual_ack_set(on=True)
        self._fast_path()
        self._client.max_queued_messages_set(0)
        self._credentials(self._targets[0])
        if self._targets[0].tls:  # one scheme for the whole list (settings.parse_mqtt_urls)
            self._client.tls_set_context(ssl.create_default_context())
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_connect_fail = self._on_connect_fail
        self._client.on_message = self._on_message
        self._client.on_subscribe = self._on_subscribe
        self._client.on_socket_open = _no_delay
        self._client.on_socket_close = self._on_socket_close
        # paho annotates the delays as int but sleeps on floats: sub-second jitter works.
        self._client.reconnect_delay_set(self._backoff.minimum, self._backoff.minimum)  # type: ignore[arg-type]

    def _fast_path(self) -> None:
        """paho's topic-callback walk skipped, whole PUBLISH packets read in bulk."""
        client = self._client
        if self._internals and hasattr(client, "_on_message_filtered"):  # an instance attr
            client._on_message_filtered = NoTopicCallbacks()  # noqa: SLF001
        if isinstance(client, BufferedReadClient):
            client.on_publishes = self._on_publishes
            if client.received_at_attribute is None:
                log.warning("mqtt.paho_bulk_read_unavailable", paho_version=paho_version)

    async def __aenter__(self) -> Self:
        self._loop = asyncio.get_running_loop()
        first = self._targets[0]
        self._client.connect_async(first.host, first.port, self._keepalive)
        self._client.loop_start()
        log.info(
            "mqtt.connecting",
            url=first.shown,  # the password redacted (issue 13 item 10)
            host=first.host,
            port=first.port,
            brokers=len(self._targets),
            paho_version=paho_version,
            paho_internals=self._internals,
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """DISCONNECT, and return once the broker has read it and the acks before it.

        paho's thread writes the DISCONNECT and then waits, before the socket closes,
        for the broker to close its side (_on_socket_close, bounded by `close_wait_s`).
        No ack is written after the DISCONNECT: the broker would not read it, and paho's
        close must stay on paho's thread (write_now could otherwise be the one to write
        the DISCONNECT, and wait on the event loop).
        """
        with self._lock:
            self._closing = True
            self._link_up = False
        self._client.disconnect()
        await asyncio.to_thread(self._client.loop_stop)
        self._set_connected(connected=False)

    @property
    def paho_internals(self) -> bool:
        """Whether the fast path on paho's internals is in use (asked for, and available)."""
        return self._internals

    @property
    def broker(self) -> MqttTarget:
        """The broker connected to, or being tried while not connected."""
        return self._targets[self._index]

    async def wait_connected(self, within_s: float) -> bool:
        try:
            await asyncio.wait_for(self._first_connect.wait(), within_s)
        except TimeoutError:
            return False
        return True

    # --- the event-loop side ---------------------------------------------

    async def batches(self, max_batch: int, coalesce_s: float) -> AsyncIterator[list[Delivery]]:
        """Yield deliveries in arrival order, a batch at a time.

        After the first message of a batch arrives, wait `coalesce_s` for more, so
        that one commit (one fsync) serves many messages; an alarm waits at most
        that long for its batch.

        paho's thread wakes the loop (a write to its self-pipe, a turn of the loop)
        only for a message that finds the loop waiting here for one, not once per
        batch besides: a message that arrives while a batch is coalescing or being
        committed is taken with the next batch without a wake-up of its own.
        """
        pending = self._pending
        while not self._closing:
            if not pending:
                self._wakeup.clear()
                # Asks _on_message for a wake-up. Checked again after: a message appended
                # before the flag fell found it raised and sent none.
                self._signalled = False
                if not pending:
                    await self._wakeup.wait()
                self._signalled = True
                if not pending:  # a wake-up sent for a message an earlier batch took
                    continue
                if coalesce_s > 0 and len(pending) < max_batch:
                    await asyncio.sleep(coalesce_s)
            batch: list[Delivery] = []
            while pending and len(batch) < max_batch:
                batch.append(pending.popleft())
            if batch:
                yield batch

    def ack(self, deliveries: Sequence[Delivery]) -> int:
        """Acknowledge committed deliveries that came on the current connection."""
        return self.settle(deliveries, ())

    def settle(self, deliveries: Sequence[Delivery], receipts: Sequence[tuple[str, bytes]]) -> int:
        """PUBACK committed deliveries, then send their QoS 0 receipts: one buffer, one write.

        Only deliveries that came on the current connection are acknowledged, in
        arrival order. The check, and the reading of that connection's socket, happen
        under the lock that the connect and disconnect callbacks take; the buffer is
        then written only while that socket is still paho's (write_now, under the lock
        paho's socket close takes). So a buffer never goes to a connection other than
        the one its packet identifiers belong to: once paho reports the connection
        lost, nothing more is queued until the next CONNACK, and what was queued
        before is discarded by paho's reconnect. Returns how many were acknowledged
        (0 when the connection closed before the write). A receipt that does not go
        out is answered again when the device resends.
        """
        client = self._client
        with self._lock:
            if not self._link_up:
                return 0
            generation = self._generation
            mids = [d.mid for d in deliveries if d.qos == 1 and d.generation == generation]
            if isinstance(client, BufferedReadClient):
                # The socket those mids belong to, read while the link is known up: the
                # write below goes out only on that one (BufferedReadClient.write_now).
                connection = client.connection
            else:
                for mid in mids:
                    client.ack(mid, 1)
        if isinstance(client, BufferedReadClient):
            buffer = packets.pubacks(mids) + packets.publishes_qos0(receipts)
            # A PUBACK command with QoS 0: paho's writer sends it and runs no publish
            # callback for it (see the module docstring). Written outside the lock:
            # paho calls _on_disconnect, which takes it, from inside its own writes.
            if buffer and not client.write_now(packets.PUBACK, buffer, connection):
                return 0
            return len(mids)
        for topic, payload in receipts:
            self._client.publish(topic, payload, qos=0)
        return len(mids)

    def publish(self, topic: str, payload: bytes, qos: int = 1) -> None:
        """Queue a publish on the ingest connection (paho is thread-safe for this)."""
        self._client.publish(topic, payload, qos=qos)

    def publish_tracked(self, topic: str, payload: bytes, qos: int = 1) -> paho.MQTTMessageInfo:
        """Publish and return paho's handle, whose wait_for_publish() waits for the PUBACK."""
        return self._client.publish(topic, payload, qos=qos)

    # --- paho's network thread ---------------------------------------------

    def _on_message(self, _client: Any, _userdata: Any, msg: paho.MQTTMessage) -> None:
        self._pending.append(
            Delivery(
                self._raw(msg.topic, bytes(msg.payload), msg.retain),
                msg.mid,
                msg.qos,
                self._generation,
            )
        )
        self._signal()

    def _on_publishes(self, found: list[packets.Publish]) -> None:
        """What `_on_message` does, for a run of PUBLISH packets read in one pass
        (BufferedReadClient.on_publishes): the same deliveries, in the same order."""
        append, raw, generation = self._pending.append, self._raw, self._generation
        for topic, payload, mid, qos, retain in found:
            append(Delivery(raw(topic, payload, retain), mid, qos, generation))
        self._signal()

    def _raw(self, topic: str, payload: bytes, retain: bool) -> RawMessage:
        if self._max_payload is not None and len(payload) > self._max_payload:
            return _cut(topic, payload, self._now(), retain)
        return RawMessage(topic, payload, self._now(), retained=retain)

    def _signal(self) -> None:
        # Appended first, then the flag read: batches() lowers the flag before it looks
        # at the queue a last time, so either it sees this message or this sees the flag.
        if not self._signalled and self._loop is not None:
            self._signalled = True
            self._loop.call_soon_threadsafe(self._wakeup.set)

    def _on_connect(
        self, client: Any, _userdata: Any, flags: Any, reason: Any, _props: Any
    ) -> None:
        if reason.is_failure:
            # paho reports the refused connection to _on_disconnect next, which moves on.
            log.warning("mqtt.connect_refused", reason=str(reason), url=self.broker.shown)
            return
        with self._lock:
            self._generation += 1
            self._failures = 0
            # Acks may flow from now on: a persistent session's queued messages
            # arrive right after CONNACK, before our SUBACK.
            self._link_up = True
        self.connections += 1
        self._session_present = bool(getattr(flags, "session_present", False))
        # Queued before this connection's first message is appended (paho handles the
        # CONNACK first), so the loop learns of the session before it takes that message.
        self._tell_link(up=True, session_present=self._session_present)
        # With clean_session=False the broker kept our subscriptions; subscribing again
        # is harmless and covers a broker that lost its state. Connected is reported
        # at SUBACK (_on_subscribe): until then a new session matches nothing, and a
        # message published in that gap is dropped by the broker, not queued for us.
        _rc, self._subscribe_mid = client.subscribe([(t, 1) for t in self._subscriptions])
        log.debug("mqtt.connack", session_present=self._session_present)

    def _on_subscribe(
        self, _client: Any, _userdata: Any, mid: int, reasons: Any, _props: Any
    ) -> None:
        if mid != self._subscribe_mid:
            return
        for topic, reason in zip(self._subscriptions, reasons, strict=False):
            if reason.is_failure:
                # Refused by the broker's ACL: what comes on that topic never reaches us.
                log.error("mqtt.subscribe_refused", topic=topic, reason=str(reason))
        log.info(
            "mqtt.connected",
            session_present=self._session_present,
            connection=self.connections,
            subscriptions=len(self._subscriptions),
            url=self.broker.shown,  # which one of the list, the password redacted
        )
        self._set_connected(connected=True)
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._first_connect.set)

    def _on_socket_close(self, _client: Any, _userdata: Any, sock: Any) -> None:
        # Our own close only (close() sets `_closing` before the DISCONNECT): a lost link
        # has nobody left to wait for. Not a websocket wrapper; TLS sockets are sockets.
        if self._closing and isinstance(sock, socket.socket):
            await_broker_close(sock, self._close_wait_s)

    def _on_disconnect(
        self, _client: Any, _userdata: Any, _flags: Any, reason: Any, _props: Any
    ) -> None:
        with self._lock:  # settle() checks `_link_up` under the same lock
            self._link_up = False
        self._tell_link(up=False, session_present=False)
        self._set_connected(connected=False)
        if not self._closing:
            log.warning("mqtt.disconnected", reason=str(reason), url=self.broker.shown)
            self._schedule_retry()

    def _on_connect_fail(self, _client: Any, _userdata: Any) -> None:
        target = self.broker
        log.warning("mqtt.connect_failed", host=target.host, port=target.port, url=target.shown)
        self._schedule_retry()

    def _schedule_retry(self) -> None:
        """Move to the next broker; back off only once a whole round of them failed.

        Runs on paho's thread, between a failure and paho's next reconnect(), which
        connects to whatever host and port the client holds then.
        """
        with self._lock:
            self._failures += 1
            rounds, within = divmod(self._failures, len(self._targets))
            # With one broker every failure ends a round: the backoff grows as it always did.
            delay = self._backoff.minimum if within else self._backoff.delay(rounds - 1, self._rng)
            if len(self._targets) > 1:
                self._index = (self._index + 1) % len(self._targets)
                self._switch(self._targets[self._index])
        # paho sleeps `min_delay` before its next attempt when the delay was just reset.
        self._client.reconnect_delay_set(delay, max(delay, self._backoff.maximum))  # type: ignore[arg-type]

    def _switch(self, target: MqttTarget) -> None:
        # connect_async only records where to connect (paho's public way to change the
        # host of a closed connection); paho's loop makes the attempt after the delay.
        # Same client id, clean_session=False: a cluster resumes the session on any node.
        self._credentials(target)
        self._client.connect_async(target.host, target.port, self._keepalive)

    def _credentials(self, target: MqttTarget) -> None:
        if target.username is not None:
            self._client.username_pw_set(target.username, target.password)
        else:
            self._client.username_pw_set(None)

    def _tell_link(self, *, up: bool, session_present: bool) -> None:
        loop = self._loop
        if self._on_link is not None and loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._on_link, up, session_present)

    def _set_connected(self, *, connected: bool) -> None:
        if connected == self.connected:
            return
        self.connected = connected
        if self._on_change is not None and self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._on_change, connected, self.connections)
