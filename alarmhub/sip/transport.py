"""The SIP sockets: UDP endpoints, TCP and TLS listeners, and the connections they carry.

asyncio protocols, no task per connection: bytes in are framed (a datagram is one
message; a stream is cut by :class:`~alarmhub.sip.wire.StreamFramer`) and each
message is handed to `deliver` with its :class:`Origin` (where it came from, how
to answer). The server decides what to do with it in tasks of its own TaskGroup.

The limits a stranger meets before authentication: at most `max_connections`
accepted connections, and a connection that has not authenticated a request gives
its slot up to a newcomer when they are all taken, or is closed `auth_deadline_s`
after it opened (slots.py says who gives way, and why not per address); a
connection idle for `idle_timeout_s` is closed, a message must be complete within
`message_deadline_s` of its first byte (and an accepted connection's first message
within that of the accept), so a peer trickling a byte at a time (slowloris) no
longer holds a slot by looking active: CRLF keep-alives keep an idle connection
open (RFC 5626) but neither start nor extend a message's deadline. A stream that
cannot be framed within the size limits is answered if possible (413/513) and
closed. Every drop is counted (`alarmhub_sip_dropped_total{reason}`).

TLS is accepted as TCP and the handshake run here (`loop.start_tls`), not by
`create_server(ssl=...)`: asyncio tells the protocol nothing of a connection until
its handshake succeeded, so a slot taken at accept was never given back by one that
failed (a scanner, plain SIP on the TLS port), and a connection still in its
handshake could be neither evicted nor closed. Now the connection has its slot, its
peer address and its transport from the TCP accept on.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, cast

import structlog

from alarmhub.core.sipcodes import SipDrop
from alarmhub.observability.logs import OncePer
from alarmhub.observability.metrics import Metrics
from alarmhub.sip.slots import Slots
from alarmhub.sip.wire import FramingError, StreamFramer, TooLargeError, response_from_head

log = structlog.get_logger("alarmhub.sip")
Address = tuple[str, int]


@dataclass(eq=False)
class Origin:
    """Where a message came from, and the way back on the same socket or connection."""

    transport: str  # "udp" | "tcp" | "tls"
    peer: Address
    send: Callable[[bytes], None]
    local: Address
    conn: StreamConnection | None = None


Deliver = Callable[[bytes, Origin], None]
# Runs a coroutine in the server's TaskGroup, with a task name; False when it is not running.
Spawn = Callable[[Coroutine[Any, Any, None], str], bool]


class UdpEndpoint(asyncio.DatagramProtocol):
    def __init__(self, deliver: Deliver) -> None:
        self._deliver = deliver
        self.transport: asyncio.DatagramTransport | None = None
        self.local: Address = ("", 0)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Not an isinstance check: asyncio's selector datagram transport does not
        # derive from asyncio.DatagramTransport, though it implements it.
        self.transport = cast("asyncio.DatagramTransport", transport)
        self.local = transport.get_extra_info("sockname")[:2]

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        peer: Address = (str(addr[0]), int(addr[1]))
        if data.strip(b"\r\n") == b"":
            return  # a keep-alive
        self._deliver(data, Origin("udp", peer, lambda out: self.sendto(out, peer), self.local))

    def sendto(self, data: bytes, peer: Address) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.sendto(data, peer)


@dataclass(eq=False)
class StreamConnection(asyncio.Protocol):
    """One TCP or TLS connection, accepted or our own; framed by Content-Length."""

    kind: str
    deliver: Deliver
    metrics: Metrics
    monotonic: Callable[[], float]
    on_close: Callable[[StreamConnection], None]
    # An accepted connection asks for its slot once its peer is known; False: closed at once.
    on_open: Callable[[StreamConnection], bool] = lambda _: True
    # Told of a connection refused for what it sent (the pool logs it once a minute per
    # address: a flood of oversized or unparseable connections logged a line each).
    on_refused: Callable[[StreamConnection, SipDrop], None] = lambda _c, _r: None
    # Since when a complete message is due (None: none is); set at accept for ours to wait on.
    due: float | None = None
    accepted: bool = False
    handshaking: bool = False  # TLS not yet up: nothing may be sent or read
    transport: asyncio.Transport | None = None
    peer: Address = ("", 0)
    local: Address = ("", 0)
    last_active: float = 0.0
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    framer: StreamFramer = field(default_factory=StreamFramer)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        peer = transport.get_extra_info("peername")
        self.peer = (str(peer[0]), int(peer[1])) if peer else ("", 0)
        self.local = transport.get_extra_info("sockname")[:2]
        self.last_active = self.monotonic()
        self.due = self.last_active if self.accepted else None
        self.transport = transport
        if not self.on_open(self):  # every slot is a device's
            self.transport = None
            transport.abort()
            self.closed.set()
            return
        self.metrics.sip_connections.labels(self.kind).inc()

    def data_received(self, data: bytes) -> None:
        now = self.last_active = self.monotonic()
        try:
            messages = self.framer.feed(data)
        except TooLargeError as exc:
            self._refuse(exc.head, SipDrop.OVERSIZED)
            return
        except FramingError:
            self._refuse(None, SipDrop.UNPARSEABLE)
            return
        if messages:  # the deadline restarts only with a message's first byte
            self.due = now if self.framer.buffer else None
        elif self.framer.buffer and self.due is None:
            self.due = now
        for message in messages:
            self.deliver(message, Origin(self.kind, self.peer, self.send, self.local, self))

    def _refuse(self, head: bytes | None, reason: SipDrop) -> None:
        answer = response_from_head(head, 413) if head is not None else None
        if answer is not None:
            self.send(answer)
            self.metrics.sip_responses.labels("413").inc()
        self.metrics.sip_dropped.labels(reason.value).inc()
        self.on_refused(self, reason)
        self.close()

    def send(self, data: bytes) -> None:
        if self.open:
            assert self.transport is not None
            self.transport.write(data)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        """Close at once: no TLS close_notify to wait 30 s for, nothing left to flush."""
        if self.transport is not None:
            self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:  # noqa: ARG002 - asyncio's
        # Called by asyncio, and by the handshake when it failed (asyncio does not call it
        # for a connection lost during its TLS handshake): once.
        if not self.closed.is_set() and self.transport is not None:
            self.closed.set()
            self.metrics.sip_connections.labels(self.kind).dec()
            self.on_close(self)

    @property
    def open(self) -> bool:
        return (
            self.transport is not None and not self.transport.is_closing() and not self.handshaking
        )


class Connections:
    """The open TCP/TLS connections: their slots (slots.py), the sweep, the way to a peer."""

    def __init__(
        self,
        metrics: Metrics,
        monotonic: Callable[[], float],
        *,
        max_connections: int,
        idle_timeout_s: float,
        message_deadline_s: float = 30.0,
        auth_deadline_s: float = 30.0,
        per_device: int = 4,
        spawn: Spawn | None = None,
    ) -> None:
        self._metrics = metrics
        self._now = monotonic
        self.idle_timeout_s = idle_timeout_s
        self.message_deadline_s = message_deadline_s
        self.auth_deadline_s = auth_deadline_s
        self._per_device = per_device
        self._spawn = spawn
        self._open: set[StreamConnection] = set()  # with those closing but not yet closed
        self._slots: Slots[StreamConnection] = Slots(max_connections, per_device=per_device)
        self._said = OncePer(60.0)

    def __len__(self) -> int:
        """The slots held (a connection being closed holds none)."""
        return len(self._slots)

    def accepted(
        self, kind: str, deliver: Deliver, tls: ssl.SSLContext | None = None
    ) -> StreamConnection:
        """The protocol for a connection a listener accepted; `tls`: ours to handshake."""
        conn = self._new(kind, deliver)
        conn.accepted = True
        conn.on_open = lambda c: self._admit(c, tls)
        return conn

    def _new(self, kind: str, deliver: Deliver) -> StreamConnection:
        conn = StreamConnection(kind, deliver, self._metrics, self._now, self._closed)
        conn.on_refused = self._refused
        return conn

    def _refused(self, conn: StreamConnection, reason: SipDrop) -> None:
        self._say("sip.connection_refused", conn, reason=reason.value, level=logging.INFO)

    def _closed(self, conn: StreamConnection) -> None:
        self._open.discard(conn)
        self._slots.release(conn)

    def _admit(self, conn: StreamConnection, tls: ssl.SSLContext | None) -> bool:
        """A slot for a connection just accepted, a stranger's if need be; or refuse it."""
        admission = self._slots.admit(conn, conn.peer[0], self._now())
        if not admission.admitted:
            self._metrics.sip_dropped.labels(SipDrop.CONNECTIONS.value).inc()
            self._say("sip.connections_full", conn, held=len(self._slots))
            return False
        if admission.evicted is not None:
            self._drop(admission.evicted, SipDrop.EVICTED)
        self._open.add(conn)
        if tls is None or self._handshake(conn, tls):
            return True
        self._closed(conn)
        return False

    def _handshake(self, conn: StreamConnection, tls: ssl.SSLContext) -> bool:
        assert conn.transport is not None
        conn.transport.pause_reading()  # the ClientHello is start_tls's, not the framer's
        conn.handshaking = True
        spawn = self._spawn
        return spawn is not None and spawn(self._upgrade(conn, tls), "sip-tls-handshake")

    async def _upgrade(self, conn: StreamConnection, tls: ssl.SSLContext) -> None:
        """The TLS handshake of an accepted connection, bounded by the message deadline."""
        raw = conn.transport
        if raw is None or raw.is_closing():
            return  # evicted or closed before its turn: asyncio tells the protocol
        loop = asyncio.get_running_loop()
        try:
            upgraded = await loop.start_tls(
                raw, conn, tls, server_side=True, ssl_handshake_timeout=self.message_deadline_s
            )
        except OSError:  # ssl.SSLError, a reset, the handshake timeout
            upgraded = None
        if upgraded is None or conn.closed.is_set():
            raw.abort()
            conn.connection_lost(None)  # asyncio does not, for a handshake that failed
            return
        conn.transport = upgraded
        conn.handshaking = False

    async def connect(
        self, kind: str, deliver: Deliver, peer: Address, tls: ssl.SSLContext | None
    ) -> StreamConnection:
        """Our own connection to `peer` (an answer to a device whose connection is gone)."""
        loop = asyncio.get_running_loop()
        conn = self._new(kind, deliver)
        await loop.create_connection(lambda: conn, peer[0], peer[1], ssl=tls)
        if not conn.closed.is_set():
            self._open.add(conn)
            self._slots.own(conn, peer[0], self._now())
        return conn

    def authenticated(self, conn: StreamConnection, device: str) -> None:
        """`device` authenticated a request on `conn`: a device's connection from now on."""
        demoted = self._slots.authenticated(conn, device, self._now())
        if demoted is not None:
            say, suppressed = self._said.should_log(f"device:{device}")
            if say:
                log.warning(
                    "sip.device_connections_exceeded",
                    device=device,
                    most=self._per_device,
                    peer=demoted.conn.peer[0],
                    unprotected=demoted.stranger,
                    suppressed=suppressed,
                )

    def find(self, kind: str, peer: Address) -> StreamConnection | None:
        for conn in self._open:
            if conn.kind == kind and conn.peer == peer and conn.open:
                return conn
        return None

    def sweep(self) -> None:
        """Close the connections idle past the timeout, slow past the message deadline, or
        unauthenticated past theirs."""
        now = self._now()
        idle, slow = now - self.idle_timeout_s, now - self.message_deadline_s
        for conn in list(self._open):
            if conn not in self._slots:
                continue  # being closed already: not counted twice
            if conn.due is not None and conn.due < slow:
                reason = SipDrop.SLOW
            elif conn.last_active < idle:
                reason = SipDrop.IDLE
            else:
                continue
            self._metrics.sip_dropped.labels(reason.value).inc()
            self._slots.release(conn)
            conn.close()
        for conn in self._slots.overdue(now, self.auth_deadline_s):
            self._drop(conn, SipDrop.UNAUTHENTICATED)

    def _drop(self, conn: StreamConnection, reason: SipDrop) -> None:
        """Close a connection that never authenticated, at once; its slot is free now."""
        self._metrics.sip_dropped.labels(reason.value).inc()
        self._slots.release(conn)
        strangers = self._slots.strangers(conn.peer[0])
        self._say("sip.unauthenticated_closed", conn, reason=reason.value, strangers=strangers)
        conn.abort()

    def _say(
        self, event: str, conn: StreamConnection, level: int = logging.WARNING, **fields: object
    ) -> None:
        """`event` about a peer address, once a minute per address and event."""
        say, suppressed = self._said.should_log(f"{event}:{conn.peer[0]}")
        if say:
            log.log(
                level,
                event,
                peer=conn.peer[0],
                transport=conn.kind,
                suppressed=suppressed,
                **fields,
            )

    async def close_all(self) -> None:
        conns = list(self._open)
        for conn in conns:
            conn.close()
        for conn in conns:
            try:
                await asyncio.wait_for(conn.closed.wait(), 2.0)
            except TimeoutError:
                if conn.transport is not None:
                    conn.transport.abort()
