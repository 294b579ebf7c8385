"""The simulated SCAIP devices' SIP transport: client transactions over UDP or TCP.

One UDP socket serves a whole fleet both ways (requests out, answers to the contact in);
on TCP the fleet keeps one connection to the receiver and listens on its contact port for
the receiver's connections. Responses find their transaction by the top Via's branch
(RFC 3261 §17.1.3); requests (the receiver's answer MESSAGEs) go to `on_request`.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable, Coroutine
from typing import Any, cast
from urllib.parse import urlsplit

from sipmessage import Request, Response

from alarmhub.sim import scaip_wire as wire
from alarmhub.sim.scaip_wire import Endpoint

UDP_BUFFER_BYTES = 4 * 1024 * 1024  # the kernel caps it at net.core.rmem_max
Reply = Callable[[bytes], None]
OnRequest = Callable[[Request, Reply], None]
Spawn = Callable[[Coroutine[Any, Any, None], str], object]


class SipTransport:
    """Send a request and get its final response, or None when none came (Timer F)."""

    def __init__(
        self,
        target: str,
        on_request: OnRequest,
        spawn: Spawn,
        *,
        local_host: str = "127.0.0.1",
        t1_s: float = 0.5,
        t2_s: float = 4.0,
    ) -> None:
        url = urlsplit(target)
        if url.scheme not in ("udp", "tcp") or url.hostname is None or url.port is None:
            raise ValueError(f"target must be udp://HOST:PORT or tcp://HOST:PORT, not {target!r}")
        self.kind = url.scheme.upper()
        self.target = (url.hostname, url.port)
        self.local_host = local_host
        self.contact_port = 0
        self.t1_s, self.t2_s = t1_s, t2_s
        self._on_request = on_request
        self._spawn = spawn
        self._pending: dict[str, asyncio.Future[Response]] = {}
        self._provisional: set[str] = set()
        self._udp: asyncio.DatagramTransport | None = None
        self._server: asyncio.Server | None = None
        self._tcp: asyncio.StreamWriter | None = None
        self._tcp_lock = asyncio.Lock()
        self._streams: set[asyncio.StreamWriter] = set()

    @property
    def endpoint(self) -> Endpoint:
        return Endpoint(self.kind, *self.target, self.local_host, self.contact_port)

    async def open(self) -> None:
        if self.kind == "UDP":
            loop = asyncio.get_running_loop()
            transport, _ = await loop.create_datagram_endpoint(
                lambda: _Datagrams(self), local_addr=(self.local_host, 0)
            )
            self._udp = transport
            self.contact_port = transport.get_extra_info("sockname")[1]
            sock = transport.get_extra_info("socket")
            with contextlib.suppress(OSError):  # a fleet's answers arrive in bursts
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, UDP_BUFFER_BYTES)
        else:
            self._server = await asyncio.start_server(self._read_stream, self.local_host, 0)
            self.contact_port = self._server.sockets[0].getsockname()[1]

    def close(self) -> None:
        for writer in list(self._streams):
            writer.close()
        if self._server is not None:
            self._server.close()
        if self._udp is not None:
            self._udp.close()

    def send_datagram(self, data: bytes) -> None:
        """Raw bytes to the receiver over UDP (hostile tests: oversized, not SIP at all)."""
        assert self._udp is not None, "send_datagram needs a udp:// target"
        self._udp.sendto(data, self.target)

    async def send(self, req: Request) -> Response | None:
        """A non-INVITE client transaction (RFC 3261 §17.1.2): Timer E retransmits on UDP
        from T1 doubling to T2 (T2 at once after a provisional response), Timer F ends it."""
        branch = wire.branch_of(req) or ""
        future: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
        self._pending[branch] = future
        data = bytes(req)
        loop = asyncio.get_running_loop()
        timer_f = loop.time() + 64 * self.t1_s
        try:
            if self._udp is not None:
                interval = self.t1_s
                while (left := timer_f - loop.time()) > 0:
                    self._udp.sendto(data, self.target)
                    with contextlib.suppress(TimeoutError):
                        return await asyncio.wait_for(asyncio.shield(future), min(interval, left))
                    interval = min(interval * 2, self.t2_s)
                    if branch in self._provisional:
                        interval = self.t2_s
                return None
            if not await self._tcp_send(data):
                return None
            with contextlib.suppress(TimeoutError, ConnectionError):
                return await asyncio.wait_for(future, max(0.0, timer_f - loop.time()))
            return None
        finally:
            self._pending.pop(branch, None)
            self._provisional.discard(branch)

    async def _tcp_send(self, data: bytes) -> bool:
        async with self._tcp_lock:
            if self._tcp is None or self._tcp.is_closing():
                try:
                    reader, writer = await asyncio.open_connection(*self.target)
                except OSError:
                    return False  # the receiver is down: like Timer F, the session resends
                self._tcp = writer
                self._spawn(self._read_stream(reader, writer), "scaip-tcp-out")
            try:
                self._tcp.write(data)
                await self._tcp.drain()
            except OSError:
                self._tcp.close()
                return False
            return True

    async def _read_stream(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        buffer = bytearray()
        self._streams.add(writer)
        try:
            while chunk := await reader.read(65536):
                buffer += chunk
                for message in wire.split_stream(buffer):
                    self.on_data(message, writer.write)
        except (OSError, ValueError):
            pass  # a reset connection, or a stream that lost its framing: drop it
        finally:
            self._streams.discard(writer)
            writer.close()
            if writer is self._tcp:  # its transactions will get no response now
                for future in self._pending.values():
                    if not future.done():
                        future.set_exception(ConnectionResetError("the connection closed"))

    def on_data(self, data: bytes, reply: Reply) -> None:
        """One SIP message from the network: a response to a transaction, or a request."""
        message = wire.parse(data)
        if isinstance(message, Response):
            branch = wire.branch_of(message) or ""
            future = self._pending.get(branch)
            if message.code < 200:
                self._provisional.add(branch)
            elif future is not None and not future.done():
                future.set_result(message)
        elif isinstance(message, Request):
            self._on_request(message, reply)


class _Datagrams(asyncio.DatagramProtocol):
    def __init__(self, sip: SipTransport) -> None:
        self.sip = sip
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A datagram endpoint's transport (3.11's selector transport does not subclass
        # asyncio.DatagramTransport, so no isinstance check).
        self.transport = cast("asyncio.DatagramTransport", transport)

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        transport = self.transport
        assert transport is not None
        self.sip.on_data(data, lambda out: transport.sendto(out, addr))

    def error_received(self, exc: Exception) -> None:
        """ICMP port unreachable while the receiver is down: Timer E/F and resends cover it."""
