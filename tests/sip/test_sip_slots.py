"""Who may hold the TCP/TLS connection slots: devices that authenticate, not strangers.

Safety alarms reach the receiver over mobile networks, so its port faces the
internet, and many genuine devices may share one public address (carrier-grade NAT,
a fleet's private APN). Before 2026-12-06 (third session) one address could open
`max_connections` connections and send nothing, or an OPTIONS a minute, and every
genuine device was refused for as long as it liked; and a TLS connection whose
handshake failed kept its slot for ever. Each verdict here waits for what the
server did (a connection closed, a response read), with generous ceilings, or moves
a FakeClock: none depends on how fast the machine is.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sipmessage import Response
from structlog.testing import capture_logs

from alarmhub.clock import FakeClock, SystemClock
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


@asynccontextmanager
async def strangers(
    count: int,
    port: int,
    client: ssl.SSLContext | None,
    *,
    host: str,
    talk: bool,
) -> AsyncIterator[list[Peer]]:
    """`count` connections that never authenticate. `talk`: each completes its TLS
    handshake (if any) and has an OPTIONS answered; else it sends nothing at all (over
    TLS, not even the handshake)."""
    async with AsyncExitStack() as stack:
        peers = []
        for _ in range(count):
            tls = client if talk else None
            peer = await stack.enter_async_context(stream_peer(port, tls, local_host=host))
            if talk:
                assert await options(peer, port, "tls" if client else "tcp") == 200
            peers.append(peer)
        yield peers


@pytest.mark.parametrize("talk", [False, True], ids=["silent", "options"])
@pytest.mark.parametrize("kind", ["tcp", "tls"])
async def test_strangers_holding_every_connection_do_not_keep_a_device_out(
    kind: str, talk: bool, tmp_path: Path
) -> None:
    """The reproducer: one address (the device's own, as behind carrier-grade NAT) holds
    every slot, silent or answered an OPTIONS; the device's alarm used to be refused with
    its connection closed at once. Now the oldest stranger gives up its slot."""
    metrics, handler = Metrics(), Recorder()
    limits = SipLimits(max_connections=4)
    async with serving(kind, tmp_path, limits, metrics=metrics, handler=handler) as (server, tls):
        port = server.port(kind)
        async with strangers(4, port, tls, host="127.0.0.1", talk=talk) as held:
            assert await async_wait_until(lambda: len(server.connections) == 4)
            async with stream_peer(port, tls) as device:
                got = await alarm(device, port, kind)
            assert got == 200  # was None: the device's connection closed at once
            await asyncio.wait_for(held[0].closed.wait(), 10)  # the oldest stranger made room
    assert [m.user for m in handler.messages] == [DEVICE]
    assert dropped(metrics, "evicted") == 1
    assert dropped(metrics, "connections") == 0


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


async def test_a_stranger_has_30_s_to_authenticate_and_an_options_a_minute_does_not_extend_it(
    tmp_path: Path,
) -> None:
    """An OPTIONS is answered without authentication, so a peer pinging one every 20 s held
    its slot for ever (each restarted the idle timer). A connection now has
    `auth_deadline_s` from its opening to authenticate; a device's connection, which did,
    stays open past it on keep-alives alone."""
    clock = FakeClock(datetime(2026, 12, 6, tzinfo=UTC))
    metrics, limits = Metrics(), SipLimits(idle_timeout_s=180.0)  # auth_deadline_s 30
    async with serving("tcp", tmp_path, limits, metrics=metrics, clock=clock) as (server, _):
        port = server.port("tcp")
        async with (
            stream_peer(port) as pinger,
            stream_peer(port) as device,
            stream_peer(port) as challenged,
        ):
            assert await options(pinger, port, "tcp") == 200
            # Challenged and never answering the challenge: not authenticated either.
            first = request(port=port, transport="TCP", local_port=challenged.port)
            assert status(await answer(challenged, first)) == 401
            clock.advance(timedelta(seconds=20))
            assert await options(pinger, port, "tcp") == 200  # within its 30 s
            assert await alarm(device, port, "tcp") == 200  # at 20 s: a device's connection
            clock.advance(timedelta(seconds=15))  # 35 s after they opened
            device.send(b"\r\n\r\n")  # a keep-alive
            await asyncio.wait_for(pinger.closed.wait(), 10)
            await asyncio.wait_for(challenged.closed.wait(), 10)
            assert await options(device, port, "tcp") == 200  # still open
            clock.advance(timedelta(seconds=100))  # 135 s: within the idle timeout
            assert await alarm(device, port, "tcp") == 200
    assert dropped(metrics, "unauthenticated") == 2
    assert dropped(metrics, "slow") + dropped(metrics, "idle") + dropped(metrics, "evicted") == 0


async def test_devices_behind_one_address_are_never_evicted_for_strangers(tmp_path: Path) -> None:
    """Devices behind one NAT (every socket from 127.0.0.1) that authenticated keep their
    slots: strangers, from their address or another, are refused when the devices hold
    them all, and take only each other's slots when there is one left."""
    metrics, handler = Metrics(), Recorder()
    devices = sorted(DEVICES)[:4]
    limits = SipLimits(max_connections=4)
    async with serving("tcp", tmp_path, limits, metrics=metrics, handler=handler) as (server, _):
        port = server.port("tcp")
        async with AsyncExitStack() as stack:
            peers = [await stack.enter_async_context(stream_peer(port)) for _ in devices]
            for peer, user in zip(peers, devices, strict=True):
                assert await alarm(peer, port, "tcp", user) == 200
            for host in ("127.0.0.1", OTHER, "127.0.0.1"):
                async with stream_peer(port, local_host=host) as stranger:
                    await asyncio.wait_for(stranger.closed.wait(), 10)  # refused at once
            # One device leaves: its slot goes to strangers, who take it from each other.
            peers.pop().close()
            assert await async_wait_until(lambda: len(server.connections) == 3)
            async with strangers(5, port, None, host="127.0.0.1", talk=True) as held:
                for evicted in held[:4]:
                    await asyncio.wait_for(evicted.closed.wait(), 10)
                assert await options(held[4], port, "tcp") == 200
            for peer, user in zip(peers, devices[:3], strict=True):
                assert await alarm(peer, port, "tcp", user) == 200  # never closed
    assert dropped(metrics, "connections") == 3
    assert dropped(metrics, "evicted") == 4
    assert len(handler.messages) == 4 + 3


async def test_a_peer_reconnecting_fast_takes_only_its_own_slots(tmp_path: Path) -> None:
    """When the table is full, the slot taken is a stranger's of the address holding the
    most: one address opening connection after connection takes its own, never that of a
    device elsewhere that has connected and not yet authenticated (its round trip on 4G),
    even when that device's is the oldest stranger of all."""
    metrics, handler = Metrics(), Recorder()
    limits = SipLimits(max_connections=4)
    async with serving("tcp", tmp_path, limits, metrics=metrics, handler=handler) as (server, _):
        port = server.port("tcp")
        async with stream_peer(port) as device:
            assert await async_wait_until(lambda: len(server.connections) == 1)
            async with strangers(12, port, None, host=OTHER, talk=True):
                assert not device.closed.is_set()
                assert await alarm(device, port, "tcp") == 200
    assert dropped(metrics, "evicted") == 12 - 3
    assert [m.user for m in handler.messages] == [DEVICE]


async def test_one_devices_credentials_protect_at_most_four_connections(tmp_path: Path) -> None:
    """The password of one pendant, read out of it, made every connection it authenticated
    on a device's: with it one peer could hold every slot again. A device's credentials
    now protect its four most recent connections; an older one is a stranger again, whose
    slot another device takes when the table is full."""
    metrics, handler = Metrics(), Recorder()
    limits = SipLimits(max_connections=5)  # max_connections_per_device 4
    async with serving("tcp", tmp_path, limits, metrics=metrics, handler=handler) as (server, _):
        port = server.port("tcp")
        async with AsyncExitStack() as stack:
            same = [await stack.enter_async_context(stream_peer(port)) for _ in range(5)]
            with capture_logs() as logs:
                for peer in same:
                    assert await alarm(peer, port, "tcp") == 200
            other = sorted(DEVICES)[1]
            async with stream_peer(port, local_host=OTHER) as elsewhere:
                assert await alarm(elsewhere, port, "tcp", other) == 200
            await asyncio.wait_for(same[0].closed.wait(), 10)  # the one no longer protected
            for peer in same[1:]:
                assert await options(peer, port, "tcp") == 200
    assert dropped(metrics, "evicted") == 1
    [said] = [e for e in logs if e["event"] == "sip.device_connections_exceeded"]
    assert (said["device"], said["most"]) == (DEVICE, 4)


async def test_closing_strangers_is_said_once_a_minute_per_address(tmp_path: Path) -> None:
    metrics = Metrics()
    limits = SipLimits(max_connections=2)
    async with serving("tcp", tmp_path, limits, metrics=metrics) as (server, _):
        port = server.port("tcp")
        with capture_logs() as logs:
            async with (
                strangers(2, port, None, host=OTHER, talk=True),
                strangers(20, port, None, host="127.0.0.1", talk=True),
            ):
                pass
    said = [(e["event"], e["peer"]) for e in logs if e["event"].startswith("sip.")]
    assert said == [
        ("sip.unauthenticated_closed", OTHER),
        ("sip.unauthenticated_closed", "127.0.0.1"),
    ]
    assert dropped(metrics, "evicted") == 20
