"""paho's client with alarmhub's hot path: buffered reads, PUBLISH read in bulk, no topic walk.

These reach into paho's private parts (`_sock_recv`, `_sock_close`, `_packet_read`,
`_in_packet`, `_msgtime_mutex` and the keep-alive's receive time,
`_on_message_filtered`): pyproject.toml bounds paho to the releases tested with them,
and MqttIngest uses plain paho when they are missing or the setting
`mqtt_paho_internals` is off (alarmhub/mqtt/client.py, docs/operations.md).
"""

from __future__ import annotations

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
        self._rbuf, self._rpos = b"", 0
        super()._sock_close()
