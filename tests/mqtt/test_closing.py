"""await_broker_close on real TCP sockets: it half-closes, reads to the peer's end, and is bounded.

The daemon's stop and an owner's step-down wait in it (on paho's thread), so a peer
that never closes must not hold them for longer than the bound. Verdicts rest on what
the peer saw and on the call returning at all, not on how long anything took.
"""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Iterator

import pytest

from alarmhub.mqtt.closing import await_broker_close


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    """A connected (ours, the broker's) pair over loopback TCP."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        ours = socket.create_connection(listener.getsockname())
        theirs, _ = listener.accept()
    try:
        yield ours, theirs
    finally:
        ours.close()
        theirs.close()


def _in_thread(sock: socket.socket, within_s: float) -> threading.Thread:
    thread = threading.Thread(target=await_broker_close, args=(sock, within_s), daemon=True)
    thread.start()
    return thread


def test_it_half_closes_and_returns_once_the_peer_has_read_everything_and_closed(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    ours, theirs = pair
    ours.sendall(b"acks" * 1000)
    waiting = _in_thread(ours, within_s=600)  # far above need: only the peer's close ends it
    got = b""
    theirs.settimeout(30)
    while chunk := theirs.recv(65536):  # our FIN ends the stream after every byte
        got += chunk
    assert got == b"acks" * 1000
    assert waiting.is_alive()  # the peer has not closed: still waiting
    theirs.sendall(b"late publish, dropped unacknowledged")
    theirs.shutdown(socket.SHUT_WR)
    waiting.join(30)
    assert not waiting.is_alive()


def test_a_peer_that_never_closes_holds_it_only_until_the_bound(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    ours, theirs = pair
    waiting = _in_thread(ours, within_s=0.2)
    waiting.join(30)
    assert not waiting.is_alive()
    theirs.settimeout(30)
    assert theirs.recv(1) == b""  # it did half-close first


def test_a_connection_already_reset_returns_at_once(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    ours, theirs = pair
    # SO_LINGER 0: the close sends a RST, as a broker dropping the connection does.
    theirs.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    theirs.close()
    waiting = _in_thread(ours, within_s=600)
    waiting.join(30)
    assert not waiting.is_alive()
