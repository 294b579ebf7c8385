"""The end of alarmhub's own close of a broker connection: wait until the broker has read it all.

Pure socket work, no paho: MqttIngest calls it from paho's `on_socket_close`, on paho's
thread, between paho's write of the DISCONNECT and its close of the socket.
"""

from __future__ import annotations

import socket
import time


def await_broker_close(sock: socket.socket, within_s: float) -> None:
    """After our DISCONNECT: half-close, then read until the broker closes its side.

    Why: the broker may not have read our last PUBACKs yet when paho would close the
    socket. Mosquitto reads a connection one packet at a time and, with
    `autosave_on_changes` and `autosave_interval 1` (the production settings), saves
    its store after each: a backlog's 1,500 PUBACKs took it about a second to read.
    A connection with the same client id arriving meanwhile (a daemon restarted at
    once) takes the session over, the broker closes the old connection unread, its
    kernel answers the unread bytes with a RST and drops them, and every message
    whose PUBACK was among them is sent again (docs/reliability.md, seventh session:
    1,340-1,440 of 1,500). The broker closes its side once it has read the DISCONNECT,
    and so every PUBACK before it: the end of the stream is that proof. Whatever comes
    meanwhile is dropped unacknowledged (the broker keeps it for the session). Bounded:
    a broker gone silent costs `within_s`, and what it had not read comes back as before.
    """
    deadline = time.monotonic() + within_s
    try:
        sock.shutdown(socket.SHUT_WR)  # our FIN, behind the DISCONNECT paho just wrote
        while (left := deadline - time.monotonic()) > 0:
            sock.settimeout(left)
            if not sock.recv(65536):
                return
    except OSError:  # a timeout, or the connection already gone: nothing more to wait for
        return
