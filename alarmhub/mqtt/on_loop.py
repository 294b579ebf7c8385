"""paho's network I/O on the asyncio loop: reads, writes and keep-alive, no network thread.

paho's own network thread (`loop_start`) costs each burst it reads a thread wake-up
and a hand-over of the GIL, and a wake-up of the loop (a write to its self-pipe) to
hand the messages over; each buffer of acks the loop queues costs a byte on paho's
socket pair and one more wake-up of that thread to write it. paho supports an
external event loop through its socket callbacks and `loop_read`/`loop_write`/
`loop_misc`; this module drives them from asyncio (docs/performance.md, "twelfth
part", has what it changed):

- the socket's reads run as an asyncio reader callback on the loop;
- writes queued on the loop (acks, receipts, publishes, SUBSCRIBE) are written once
  per turn of the loop, and only a write the kernel would not take whole waits for
  the socket to become writable;
- `loop_misc` runs once a second for the keep-alive;
- the one blocking call, paho's `reconnect()` (TCP connect, TLS handshake), runs in a
  worker thread, with the loop's reader and writer registered only after it returns.
  While it runs nothing on the loop writes to the client: the caller sends nothing
  until the next CONNACK (`MqttIngest.settle`, `connected`).

paho's reconnect loop is not used either: `MqttLoopIO.run` connects, waits for the
socket to close, asks the caller for the delay and connects again.

What this asks of the rest of the daemon: nothing on the loop may block it for long
(a PINGREQ not answered within 1.5 x the keep-alive, 45 s by default, costs the
connection), and nothing may wait for a PUBACK by blocking (`wait_for_publish()`):
the loop it would block is the one that reads the PUBACK.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as paho

MISC_INTERVAL_S = 1.0  # paho's own loop runs loop_misc once per second


class MqttLoopIO:
    """Runs one paho client's network on the running asyncio loop (see the module docstring).

    The client must be made with `reconnect_on_failure=False`: otherwise a CONNACK
    asking for a protocol downgrade makes paho reconnect inside its read, a blocking
    connect on the loop; without, the connection ends and `run` tries again.
    `connect_failed` is told of a connect that raised OSError (paho's `on_connect_fail`)
    and returns the delay before the next attempt; `retry_delay` gives the delay after
    a connection that was made and then lost (set by the caller's `on_disconnect`).
    """

    def __init__(
        self,
        client: paho.Client,
        loop: asyncio.AbstractEventLoop,
        *,
        connect_failed: Callable[[], float],
        retry_delay: Callable[[], float],
    ) -> None:
        self._client = client
        self._loop = loop
        self._loop_thread = threading.get_ident()
        self._connect_failed = connect_failed
        self._retry_delay = retry_delay
        self._sock: Any = None  # the socket registered with the loop, if any
        self._writing = False  # a writer registered: the kernel refused part of a write
        self._flush_due = False
        self._closed = asyncio.Event()  # the registered socket closed: connect again
        self._stopping = asyncio.Event()
        client.on_socket_register_write = self._want_write
        client.on_socket_unregister_write = self._wrote
        client.on_socket_close = self._socket_closed

    def on_loop(self) -> bool:
        return threading.get_ident() == self._loop_thread

    async def run(self) -> None:
        """Connect, serve the connection until its socket closes, wait, connect again."""
        misc = asyncio.create_task(self._misc(), name="mqtt-keepalive")
        try:
            delay = 0.0
            while not self._stopping.is_set():
                if delay > 0 and await self._stopped_within(delay):
                    break
                try:
                    # A worker thread: a TCP connect (and a TLS handshake) blocks.
                    await asyncio.to_thread(self._client.reconnect)
                except (OSError, ValueError):  # refused, unreachable, TLS; a bad host
                    delay = self._connect_failed()
                    continue
                self._attach()
                await self._closed.wait()
                self._closed.clear()
                delay = self._retry_delay()
        finally:
            misc.cancel()
            self._detach()
            sock = self._client.socket()
            if sock is not None:  # stopped before DISCONNECT could be written whole
                sock.close()

    def stop(self) -> None:
        """Send DISCONNECT if connected and end `run` (after a connect in progress ends).

        paho closes the socket once DISCONNECT is written, which ends `run`'s wait. A
        connect in progress on the worker thread is left alone (it shares paho's
        state): `_attach` sends the DISCONNECT when it returns.
        """
        self._stopping.set()
        if self._sock is not None:
            self._client.disconnect()
            self._flush()
        else:
            self._closed.set()

    async def _stopped_within(self, delay: float) -> bool:
        try:
            await asyncio.wait_for(self._stopping.wait(), delay)
        except TimeoutError:
            return False
        return True

    async def _misc(self) -> None:
        while True:
            await asyncio.sleep(MISC_INTERVAL_S)
            if self._sock is not None:
                self._client.loop_misc()  # keep-alive PINGREQ, or the link declared dead

    def _attach(self) -> None:
        sock = self._client.socket()
        if sock is None:  # closed again before this turn of the loop
            self._closed.set()
            return
        if self._stopping.is_set():
            self._client.disconnect()
        self._sock = sock
        self._loop.add_reader(sock, self._read)
        self._flush()  # the CONNECT that reconnect() queued

    def _detach(self) -> None:
        sock, self._sock = self._sock, None
        self._writing = False
        if sock is not None:
            self._loop.remove_reader(sock)
            self._loop.remove_writer(sock)

    def _read(self) -> None:
        client = self._client
        client.loop_read()
        sock = self._sock
        # TLS: bytes already decrypted inside the SSL object do not make the fd readable.
        while sock is not None and sock is client.socket() and _pending(sock):
            client.loop_read()

    def _flush(self) -> None:
        """Write what paho holds; wait for the socket only for what the kernel refused."""
        self._flush_due = False
        client = self._client
        if self._sock is None:
            return
        client.loop_write()
        if client.want_write() and self._sock is not None and not self._writing:
            self._loop.add_writer(self._sock, self._flush)
            self._writing = True

    # --- paho's socket callbacks ---------------------------------------------

    def _want_write(self, _client: Any, _userdata: Any, _sock: Any) -> None:
        # Called by paho for each first packet queued. On a worker thread (the CONNECT
        # of a reconnect) nothing is registered yet: _attach writes it.
        if self._flush_due or not self.on_loop():
            return
        self._flush_due = True
        self._loop.call_soon(self._flush)

    def _wrote(self, _client: Any, _userdata: Any, sock: Any) -> None:
        # Called after every write that left nothing queued: usually no writer to remove.
        if self._writing and sock is self._sock and self.on_loop():
            self._loop.remove_writer(sock)
            self._writing = False

    def _socket_closed(self, _client: Any, _userdata: Any, sock: Any) -> None:
        # paho closes the socket right after this: unregistered first, on the loop. A
        # socket closed on the worker thread (reconnect's own clean-up) was never attached.
        if self.on_loop() and sock is self._sock:
            self._detach()
            self._closed.set()


def _pending(sock: Any) -> bool:
    pending = getattr(sock, "pending", None)  # ssl.SSLSocket's; a plain socket has none
    return pending is not None and bool(pending())


def no_delay(_client: Any, _userdata: Any, sock: Any) -> None:
    """Send alarmhub's PUBACKs and receipts at once: TCP_NODELAY on the broker connection.

    paho leaves Nagle's algorithm on. alarmhub already writes each batch's PUBACKs
    and receipts as one buffer; Nagle could hold that buffer back while the previous
    one is unacknowledged, and the broker's kernel delays its ACK when it has nothing
    to send. (The broker's side: docs/performance.md, "eleventh part".)
    """
    if isinstance(sock, socket.socket):  # not a websocket wrapper; TLS sockets are sockets
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
