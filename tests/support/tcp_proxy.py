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
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Self


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
        self.swallowed = 0  # connections silenced by `swallow`

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
            writer.transport.abort()
            self._writers.discard(writer)
            return
        self._writers.add(up_writer)
        silent = asyncio.Event()  # this connection swallowed: nothing more either way
        pumps = [
            asyncio.ensure_future(self._pump(reader, up_writer, silent, client=True)),
            asyncio.ensure_future(self._pump(up_reader, writer, silent)),
        ]
        self._tasks.update(pumps)
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
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
    ) -> None:
        with contextlib.suppress(OSError, ConnectionError):
            while True:
                await self._open.wait()
                data = await src.read(65536)
                if not data:
                    return
                marker = self._swallow
                if client and marker is not None and marker in data:
                    self._swallow = None  # one connection: its reconnect goes through
                    self.swallowed += 1
                    silent.set()
                if silent.is_set():
                    await asyncio.Event().wait()  # never forwarded, never closed
                await self._open.wait()  # read before the cut: held, as the network holds it
                dst.write(data)
                await dst.drain()
