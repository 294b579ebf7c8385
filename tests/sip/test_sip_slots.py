"""Who may hold the TCP/TLS connection slots.

Safety alarms reach the receiver over mobile networks, so its port faces the
internet. Before 2026-12-06 (third session) a TLS connection whose handshake failed
kept its slot for ever. Each verdict here waits for what the server did (a
connection closed, a response read), with generous ceilings: none depends on how
fast the machine is.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from sipmessage import Response

from alarmhub.clock import SystemClock
from alarmhub.observability.metrics import Metrics
from alarmhub.sip.server import SipLimits, SipServer, server_tls
from tests.sip.support import (
    DEVICE,
    PASSWORD,
    Credentials,
    Peer,
    Recorder,
    authorization,
    request,
    running,
    self_signed,
    stream_peer,
)
from tests.support.helpers import async_wait_until

DEVICES = {DEVICE: PASSWORD, **{f"479001000{i}": f"pendant-secret-{i}" for i in range(1, 6)}}
OTHER = "127.0.0.2"  # another loopback address: another peer address to the server


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


def dropped(metrics: Metrics, reason: str) -> float:
    return sample(metrics, "alarmhub_sip_dropped_total", reason=reason)


async def answer(peer: Peer, req: Any, timeout: float = 10.0) -> Response | None:
    """Send `req` and return the final response; None when the server closed the connection."""
    if peer.closed.is_set():
        return None
    peer.send(bytes(req))
    got = asyncio.ensure_future(peer.next(timeout))
    closed = asyncio.ensure_future(peer.closed.wait())
    done, _ = await asyncio.wait({got, closed}, timeout=timeout, return_when="FIRST_COMPLETED")
    for task in (got, closed):
        task.cancel()
    await asyncio.gather(got, closed, return_exceptions=True)
    if got in done and not got.cancelled() and got.exception() is None:
        response = got.result()
        assert isinstance(response, Response)
        return response
    assert closed in done, "no answer and the connection is still open"
    return None


def status(response: Response | None) -> int | None:
    return None if response is None else int(response.code)


async def alarm(peer: Peer, port: int, kind: str, user: str = DEVICE) -> int | None:
    """A MESSAGE as a device sends it: challenged, then with its digest; the final status
    (None: the server closed the connection)."""
    args: dict[str, Any] = {"port": port, "transport": kind.upper(), "user": user}
    first = request(**args, local_port=peer.port)
    challenge = await answer(peer, first)
    if challenge is None or challenge.code != 401:
        return status(challenge)
    auth = authorization(challenge, first, user=user, password=DEVICES[user])
    again = request(**args, local_port=peer.port, cseq=2, authorization=auth)
    return status(await answer(peer, again))


async def options(peer: Peer, port: int, kind: str) -> int | None:
    """An OPTIONS, answered without authentication (a keep-alive)."""
    return status(
        await answer(peer, request("OPTIONS", port=port, transport=kind.upper(), body=b""))
    )


def tls_contexts(tmp_path: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    crt, key = self_signed(tmp_path)
    return server_tls(crt, key), ssl.create_default_context(cafile=str(crt))


@asynccontextmanager
async def serving(
    kind: str,
    tmp_path: Path,
    limits: SipLimits,
    *,
    metrics: Metrics,
    clock: Any = None,
    handler: Recorder | None = None,
) -> AsyncIterator[tuple[SipServer, ssl.SSLContext | None]]:
    tls, client = tls_contexts(tmp_path) if kind == "tls" else (None, None)
    async with running(
        (kind,),
        handler or Recorder(),
        Credentials(**DEVICES),
        metrics=metrics,
        clock=clock or SystemClock(),
        tls=tls,
        limits=limits,
    ) as server:
        yield server, client


async def test_a_failed_tls_handshake_gives_its_slot_back(tmp_path: Path) -> None:
    """A slot was taken when a TLS connection was accepted and given back when the
    protocol heard of its end, which asyncio never tells of a connection whose handshake
    failed: a scanner, or plain SIP sent to the TLS port, kept a slot for ever, and two
    such refused every device for good with a limit of 2."""
    metrics, limits = Metrics(), SipLimits(max_connections=2)
    async with serving("tls", tmp_path, limits, metrics=metrics) as (server, client):
        port = server.port("tls")
        for _ in range(3):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(bytes(request("OPTIONS", port=port, transport="TCP", body=b"")))
            with contextlib.suppress(ConnectionResetError):  # closed with a reset: closed
                assert await asyncio.wait_for(reader.read(), 10) == b""  # closed by the server
            writer.close()
        async with stream_peer(port, client) as device:
            got = await alarm(device, port, "tls")
        assert got == 200  # was None: the device's connection closed at once
        assert await async_wait_until(lambda: len(server.connections) == 0)
    assert sample(metrics, "alarmhub_sip_connections", transport="tls") == 0
