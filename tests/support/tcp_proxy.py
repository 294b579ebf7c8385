"""A TCP proxy a test controls, between one client and a server on this machine.

`cut()` is a network partition, not a refused connection: bytes in flight stop
where they are, open connections stay open and silent, new connections are
accepted and then hang, so the client sees what a cut cable or a dropped route
gives it — nothing, until its own timeouts fire. `restore()` lets everything
through again (TCP would retransmit what was held), and `reset()` closes every
connection at once, as a crashed peer or a firewall's RST does. `swallow(marker)`
silences for good the next connection whose client sends `marker` (from that chunk on,
nothing of it is forwarded either way) while every other connection, and every new
one, goes through: a session lost in a failover or a dropped NAT entry. Loopback only.

For HTTP clients (the operator page in a browser): `silence(marker)` does the same to
connections already open whose client last sent `marker` (an event stream that was
answered and then went quiet: the NAT entry dropped mid-stream; a client closing it
then is not passed on either, so the server keeps it open); `truncate(marker)`
cuts the answer to the next request carrying `marker` one byte into its body and
resets the connection (a blip mid-response); with `bad_gateway` set, a connection
the server refuses is answered `502 Bad Gateway`, as nginx answers while the service
behind it restarts.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Self

BAD_GATEWAY = (
    b"HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/html\r\nContent-Length: 24\r\n"
    b"Connection: close\r\n\r\n<h1>502 Bad Gateway</h1>"
)


class TcpProxy:
    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self._target = (target_host, target_port)
        self._open = asyncio.Event()
        self._open.set()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.port = 0
        self._swallow: bytes | None = None
        self.swallowed = 0  # connections silenced by `swallow` or `silence`
        self._truncate: bytes | None = None
        self.truncated = 0  # answers cut by `truncate`
        self.bad_gateway = False
        self.bad_gateways = 0  # connections answered 502
        # Each open connection's last chunk from its client, and the event silencing it.
        self._last_sent: dict[asyncio.Event, bytes] = {}

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *_exc: object) -> None:
        assert self._server is not None
        self._server.close()
        self.reset()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    def url(self, database: str, user: str = "postgres") -> str:
        return f"postgresql://{user}@127.0.0.1:{self.port}/{database}"

    def cut(self) -> None:
        self._open.clear()

    def swallow(self, marker: bytes) -> None:
        self._swallow = marker

    def silence(self, marker: bytes) -> int:
        """Silence every open connection whose client's last chunk held `marker`; how many."""
        hit = [e for e, last in self._last_sent.items() if marker in last and not e.is_set()]
        for event in hit:
            event.set()
        self.swallowed += len(hit)
        return len(hit)

    def open_with(self, marker: bytes) -> int:
        """How many connections are open whose client's last chunk held `marker`."""
        return sum(marker in last for last in self._last_sent.values())

    def truncate(self, marker: bytes) -> None:
        self._truncate = marker

    def restore(self) -> None:
        self._open.set()

    @property
    def is_cut(self) -> bool:
        return not self._open.is_set()

    def reset(self) -> None:
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            await self._open.wait()  # a connection made during a cut hangs until restore
            up_reader, up_writer = await asyncio.open_connection(*self._target)
        except (OSError, asyncio.CancelledError):
            if self.bad_gateway:
                self.bad_gateways += 1
                writer.write(BAD_GATEWAY)
                with contextlib.suppress(OSError, ConnectionError):
                    await writer.drain()
            writer.transport.abort()
            self._writers.discard(writer)
            return
        self._writers.add(up_writer)
        silent = asyncio.Event()  # this connection swallowed: nothing more either way
        cut = asyncio.Event()  # the answer now coming is to be cut short
        self._last_sent[silent] = b""
        pumps = [
            asyncio.ensure_future(self._pump(reader, up_writer, silent, client=True, cut=cut)),
            asyncio.ensure_future(self._pump(up_reader, writer, silent, cut=cut)),
        ]
        self._tasks.update(pumps)
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self._last_sent.pop(silent, None)
            for p in pumps:
                p.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)
            self._tasks.difference_update(pumps)
            for w in (writer, up_writer):
                w.transport.abort()
                self._writers.discard(w)

    async def _pump(
        self,
        src: asyncio.StreamReader,
        dst: asyncio.StreamWriter,
        silent: asyncio.Event,
        *,
        client: bool = False,
        cut: asyncio.Event,
    ) -> None:
        with contextlib.suppress(OSError, ConnectionError):
            while True:
                await self._open.wait()
                data = await src.read(65536)
                if not data:
                    if silent.is_set():
                        # The client left a silenced connection: its peer never hears
                        # of it, as when a NAT entry was dropped mid-stream.
                        await asyncio.Event().wait()
                    return
                if client:
                    self._note_client_chunk(data, silent, cut)
                if silent.is_set():
                    await asyncio.Event().wait()  # never forwarded, never closed
                await self._open.wait()  # read before the cut: held, as the network holds it
                if not client and cut.is_set():
                    await self._cut_short(data, dst)
                    return
                dst.write(data)
                await dst.drain()

    def _note_client_chunk(self, data: bytes, silent: asyncio.Event, cut: asyncio.Event) -> None:
        if silent in self._last_sent:
            self._last_sent[silent] = data
        marker = self._swallow
        if marker is not None and marker in data:
            self._swallow = None  # one connection: its reconnect goes through
            self.swallowed += 1
            silent.set()
        marker = self._truncate
        if marker is not None and marker in data:
            self._truncate = None  # one answer
            cut.set()

    async def _cut_short(self, data: bytes, dst: asyncio.StreamWriter) -> None:
        """The answer's head and one byte of its body, then a reset (the head is in `data`:
        loopback answers of a few kilobytes arrive in one read)."""
        end = data.find(b"\r\n\r\n")
        assert end >= 0, "the answer's head did not arrive in one read"
        dst.write(data[: end + 5])
        await dst.drain()
        self.truncated += 1
        dst.transport.abort()
