"""paho's client with alarmhub's hot path: buffered reads, PUBLISH read in bulk, no topic walk.

These reach into paho's private parts (`_sock_recv`, `_sock_close`, `_packet_read`,
`_packet_write`, `_in_packet`, `_out_packet`, `_sock`, `_sockpairW`, `_msgtime_mutex`
and the keep-alive's receive time, `_on_message_filtered`): pyproject.toml bounds paho
to the releases tested with them, and MqttIngest uses plain paho when they are missing
or the setting `mqtt_paho_internals` is off (alarmhub/mqtt/client.py,
docs/operations.md).
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.matcher import MQTTMatcher

from alarmhub.mqtt import packets


class NoTopicCallbacks(MQTTMatcher):
    """alarmhub registers no per-topic callbacks (message_callback_add).

    paho still walks its topic trie for every message to find none: a few
    percent of the daemon at full drain. This matcher answers "none" at once.
    """

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]  # paho's matcher is untyped

    def iter_match(self, topic: str) -> Iterator[Any]:
        del topic
        return iter(())


class BufferedReadClient(paho.Client):
    """paho with one recv() per burst of packets instead of three or more per packet.

    paho reads each packet as the command byte, the length byte by byte, then
    the body, each a recv() call, and handles one packet per select() wake-up:
    most of its thread's cost at full drain (docs/performance.md). Here a
    recv() takes up to 64 KiB into a buffer that serves those small reads, and
    loop_read() goes on while the buffer holds bytes, so select() only ever
    waits when the buffer is empty and the socket is the only source. The
    buffer belongs to one socket: it is dropped when paho closes the socket.

    Whole QoS 0/1 PUBLISH packets in the buffer are read in one pass and handed to
    `on_publishes` (packets.read_publishes says why); paho reads everything else.
    """

    _CHUNK = 65536

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._rbuf = b""
        self._rpos = 0
        # Given each run of whole QoS 0/1 PUBLISH packets found in the buffer, in order,
        # instead of paho's per-packet reading and `on_message` (packets.read_publishes).
        # None: every packet goes through paho.
        self.on_publishes: Callable[[list[packets.Publish]], None] | None = None
        # Where paho notes the time bytes last came in, for its keep-alive check:
        # `_last_bytes_received` in 2.2, `_last_msg_in` in 2.1. Without either, no bulk
        # read (a paho that keeps that time elsewhere would see the link as silent).
        self.received_at_attribute = next(
            (name for name in ("_last_bytes_received", "_last_msg_in") if hasattr(self, name)),
            None,
        )
        self.bulk_reads = 0  # runs taken by on_publishes (tests/mqtt: the path is used)
        # One writer at a time on the socket: paho's thread, or `write_now` on the
        # caller's. Reentrant: paho's write of a DISCONNECT closes the socket inside it.
        self._write_lock = threading.RLock()
        self.direct_writes = 0  # buffers written by write_now itself (tests/mqtt)
        # paho's instance attributes write_now needs; without one it queues as paho does.
        self._can_write = all(hasattr(self, n) for n in ("_out_packet", "_sock", "_sockpairW"))

    def _packet_read(self) -> MQTTErrorCode:
        """Whole PUBLISH packets at the buffer's head in one pass, between two packets
        only (paho has none half-read); anything else, and any packet not wholly in the
        buffer, is paho's own read. paho notes bytes received, as for any packet: its
        keep-alive check reads that time."""
        take, noted = self.on_publishes, self.received_at_attribute
        if take is None or noted is None or self._in_packet["command"] != 0:
            return self._paho_read()
        if self._rpos >= len(self._rbuf):
            failed = self._fill()
            if failed is not None:
                return failed
        found, pos = packets.read_publishes(self._rbuf, self._rpos)
        if not found:
            return self._paho_read()
        self._rpos = pos
        with self._msgtime_mutex:
            setattr(self, noted, paho.time_func())
        self.bulk_reads += 1
        take(found)
        return MQTTErrorCode.MQTT_ERR_SUCCESS

    def _paho_read(self) -> MQTTErrorCode:
        rc: MQTTErrorCode = super()._packet_read()
        return rc

    def _fill(self) -> MQTTErrorCode | None:
        """Up to 64 KiB into the empty buffer before a packet's first byte; None once
        bytes came, else what paho's own read of that byte returns (and logs).

        So that the first packet of a burst is read in bulk too: at 2,000 msg/s most
        bursts are one packet, and paho would read nearly every one.
        """
        try:
            data = super()._sock_recv(self._CHUNK)
        except BlockingIOError:
            return MQTTErrorCode.MQTT_ERR_AGAIN
        except TimeoutError as err:
            self._easy_log(paho.MQTT_LOG_ERR, "timeout on socket: %s", err)
            return MQTTErrorCode.MQTT_ERR_CONN_LOST
        except OSError as err:
            self._easy_log(paho.MQTT_LOG_ERR, "failed to receive on socket: %s", err)
            return MQTTErrorCode.MQTT_ERR_CONN_LOST
        if not data:
            return MQTTErrorCode.MQTT_ERR_CONN_LOST
        self._rbuf, self._rpos = data, 0
        return None

    def _sock_recv(self, bufsize: int) -> bytes:
        if self._rpos >= len(self._rbuf):
            data = super()._sock_recv(max(bufsize, self._CHUNK))
            if len(data) <= bufsize:  # fits the request, or b"" for a closed socket
                self._rbuf, self._rpos = b"", 0
                return data
            self._rbuf, self._rpos = data, 0
        start = self._rpos
        self._rpos = min(start + bufsize, len(self._rbuf))
        return self._rbuf[start : self._rpos]

    def loop_read(self, max_packets: int = 1) -> MQTTErrorCode:
        rc = super().loop_read(max_packets)
        while (
            rc == MQTTErrorCode.MQTT_ERR_SUCCESS
            and self._rpos < len(self._rbuf)
            and self._sock is not None
        ):
            rc = super().loop_read(1)
        return rc

    def _sock_close(self) -> None:
        # Under the write lock: no write_now is between its check of the socket and its
        # send when the socket closes, so none can reach a descriptor reused meanwhile.
        with self._write_lock:
            self._rbuf, self._rpos = b"", 0
            super()._sock_close()

    def _packet_write(self) -> MQTTErrorCode:
        with self._write_lock:
            rc: MQTTErrorCode = super()._packet_write()
            return rc

    @property
    def connection(self) -> object:
        """The socket of the connection now, or None: what `write_now` is told to write on."""
        return self._sock

    def write_now(self, command: int, buffer: bytes, connection: object) -> bool:
        """Write `buffer` (whole packets) from the calling thread, after what paho queued.

        Without this, each batch's PUBACKs and receipts wait for paho's thread: the
        queue wakes it through its socket pair, and it must then take the GIL from the
        event loop, which has gone on to the batch's fan-out (its `send` to the socket
        pair was the loop's costliest call at 200 msg/s; docs/performance.md,
        sixteenth part). Here the loop writes them itself, on a plain TCP socket only:
        an OpenSSL connection must not be written by one thread while another reads it,
        so TLS (and a websocket) keeps paho's thread as the writer.

        False, with nothing queued, when `connection` is no longer paho's socket (the
        acks belong to a connection that closed). What the kernel did not take stays
        queued in order, and paho's thread is woken to finish it when it can.
        """
        with self._write_lock:
            sock = self._sock
            if sock is None or sock is not connection:
                return False
            if type(sock) is not socket.socket or not self._can_write:
                # TLS or a websocket: paho's thread writes, woken by its queue.
                self._packet_queue(command, buffer, 0, 0)
                return True
            self._out_packet.append(
                {
                    "command": command,
                    "mid": 0,
                    "qos": 0,
                    "pos": 0,
                    "to_process": len(buffer),
                    "packet": buffer,
                    "info": None,
                }
            )
            self._packet_write()
            left = bool(self._out_packet)
            self.direct_writes += 1
        if left and (wake := self._sockpairW) is not None:
            # paho's select() watches for room to write only while it has something queued.
            with contextlib.suppress(BlockingIOError):
                wake.send(b"0")
        return True
