"""A SIP port alarmhub cannot bind: the daemon keeps its other intake, says so, and retries.

Real sockets throughout: the test takes the port with a socket of its own (the way a
second daemon, a leftover process or a SIP proxy on the host would), and gives it back.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator, MutableMapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from structlog.testing import capture_logs

from alarmhub.app import AlarmHub
from alarmhub.clock import SystemClock
from alarmhub.core.digest import credentials_for
from alarmhub.core.scaip import parse_answer
from alarmhub.core.sipcodes import BindFailure, Rebind, SipListen, bind_failure
from alarmhub.core.tenancy import Scope
from alarmhub.dev.mosquitto import LocalBroker
from alarmhub.observability.metrics import Metrics
from alarmhub.sip import server as server_module
from alarmhub.sip.server import SipServer
from tests.daemon.test_scaip_daemon import scaip_device
from tests.sip.support import Credentials, Recorder, authorization, request, udp_peer
from tests.support.helpers import (
    Publisher,
    async_wait_until,
    db_count,
    hub_settings,
    native,
    register,
    sample,
)

DEVICE, PASSWORD = "4790012345", "pendant-secret"  # tests/sip/support.py's device
# A ceiling for what must happen by itself (a rebind after the port is free), far above
# the back-off's first steps: the verdict is that it happens, never how soon.
CEILING_S = 60.0


@contextlib.contextmanager
def taken_udp_port() -> Iterator[tuple[socket.socket, int]]:
    """A UDP port on loopback held by a socket of the test's own."""
    holder = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        holder.bind(("127.0.0.1", 0))
        yield holder, holder.getsockname()[1]
    finally:
        holder.close()


def listening(hub: AlarmHub, transport: str = "udp") -> float:
    return sample(hub.metrics, "alarmhub_sip_listening", transport=transport)


async def readyz(hub: AlarmHub) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{hub.http_port}") as http:
        answer = await http.get("/readyz")
    body: dict[str, Any] = answer.json()
    assert answer.status_code == (200 if body["ready"] else 503)
    return body


def events(logs: list[MutableMapping[str, Any]], name: str) -> list[MutableMapping[str, Any]]:
    return [e for e in logs if e["event"] == name]


@pytest.mark.broker
async def test_a_taken_port_keeps_mqtt_intake_and_the_listener_binds_once_it_is_free(
    tmp_path: Path, broker: LocalBroker, client_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "alarmhub.db"
    register(f"sqlite:///{db}", [("pend-1", "safety_alarm", "0301")], tmp_path)
    monkeypatch.setattr(server_module, "REBIND", Rebind(first_s=0.05, most_s=0.5))
    pub = Publisher(broker.port)
    pub.subscribe("alarmhub/v1/+/receipts")
    with taken_udp_port() as (holder, port), capture_logs() as logs:
        settings = hub_settings(
            tmp_path, broker.url, client_id, scaip_listen=f"udp://127.0.0.1:{port}"
        )
        try:
            async with AlarmHub(settings) as hub:
                assert hub.sip is not None
                assert hub.ingest is not None
                assert await hub.ingest.wait_connected(10)
                # MQTT intake goes on: a press is stored and acknowledged (its receipt
                # leaves in the same buffer as the PUBACK, after the commit).
                pub.publish(*native("pend-1", "m0", "button.pressed"))
                assert await async_wait_until(lambda: len(pub.received) == 1, CEILING_S)
                assert orjson.loads(pub.received[0][1])["status"] == "accepted"
                assert db_count(db, "SELECT count(*) FROM alarms WHERE device_id='pend-1'") == 1
                # The listener says what it could not do, why, and what to do.
                assert await async_wait_until(lambda: bool(events(logs, "sip.bind_failed")))
                failed = events(logs, "sip.bind_failed")[0]
                assert failed["log_level"] == "error"
                assert (failed["transport"], failed["host"], failed["port"]) == (
                    "udp",
                    "127.0.0.1",
                    port,
                )
                assert failed["reason"] == "address_in_use"
                assert "in use" in failed["error"].lower()
                assert "ALARMHUB_SCAIP_LISTEN" in failed["hint"]
                assert listening(hub) == 0
                assert not hub.sip.started.is_set()
                # /readyz shows it, and stays ready: the operator page, MQTT intake and
                # the escalations all work (docs/operations.md says why it is no check).
                ready = await readyz(hub)
                assert (ready["ready"], ready["sip_listening"]) == (True, {"udp": False})

                await hub.register_new_device(
                    scaip_device(DEVICE, {"scaip": {"inline": True}}), audit=()
                )
                creds = credentials_for(DEVICE, settings.scaip_realm, PASSWORD)
                now = datetime.now(UTC)
                assert await hub.directory.set_device_credentials(
                    Scope.everything("t"), creds, now, []
                )
                holder.close()  # the other process lets the port go
                await asyncio.wait_for(hub.sip.started.wait(), CEILING_S)
                assert listening(hub) == 1
                assert hub.sip.port("udp") == port
                assert (await readyz(hub))["sip_listening"] == {"udp": True}
                assert events(logs, "sip.listening")[-1]["addresses"] == [f"udp://127.0.0.1:{port}"]
                # and SCAIP is taken on the port it was meant to have.
                async with udp_peer(port) as peer:
                    first = request(port=port)
                    challenge = await peer.ask(first)
                    auth = authorization(challenge, first)
                    answered = await peer.ask(request(port=port, cseq=2, authorization=auth))
                assert answered.code == 200
                assert parse_answer(answered.body)["snu"] == "0"
                assert db_count(db, f"SELECT count(*) FROM alarms WHERE device_id='{DEVICE}'") == 1
        finally:
            pub.close()


@pytest.mark.broker
async def test_a_stop_while_the_listener_waits_to_rebind_ends_the_hub(
    tmp_path: Path, broker: LocalBroker, client_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An hour between tries: a stop that waited for the next try would never end here.
    monkeypatch.setattr(server_module, "REBIND", Rebind(first_s=3600.0, most_s=3600.0))
    with taken_udp_port() as (_, port), capture_logs() as logs:
        settings = hub_settings(
            tmp_path, broker.url, client_id, scaip_listen=f"udp://127.0.0.1:{port}"
        )
        hub = AlarmHub(settings, serve_http=False)

        async def run() -> None:
            async with hub:
                await hub.wait_stopped()

        running = asyncio.create_task(run())
        assert await async_wait_until(lambda: bool(events(logs, "sip.bind_failed")), CEILING_S)
        assert not running.done()  # the daemon runs on
        await hub.stop()  # what SIGTERM does (cli/run)
        await asyncio.wait_for(running, CEILING_S)  # a ceiling for a hang, not a timing
        assert events(logs, "sip.stopped")
        assert listening(hub) == 0


@contextlib.contextmanager
def taken_tcp_port() -> Iterator[tuple[socket.socket, int]]:
    """A TCP port on loopback another process listens on (SO_REUSEADDR does not share it)."""
    holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder, holder.getsockname()[1]
    finally:
        holder.close()


def server(metrics: Metrics, *listen: SipListen, rebind: Rebind) -> SipServer:
    return SipServer(
        listen,
        credentials=Credentials(),
        handler=Recorder(),
        clock=SystemClock(),
        metrics=metrics,
        rebind=rebind,
    )


@contextlib.asynccontextmanager
async def serving(sip: SipServer) -> Any:
    task = asyncio.create_task(sip.run())
    try:
        yield task
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_each_address_listens_on_its_own_and_the_gauge_is_per_transport() -> None:
    """UDP binds, TCP's port is taken: devices on UDP are served meanwhile, the TCP gauge
    stays 0 until its port is free, and `started` waits for both."""
    metrics = Metrics()
    with taken_tcp_port() as (holder, tcp_port), capture_logs() as logs:
        sip = server(
            metrics,
            SipListen("udp", "127.0.0.1", 0),
            SipListen("tcp", "127.0.0.1", tcp_port),
            rebind=Rebind(first_s=0.05, most_s=0.5),
        )
        async with serving(sip) as task:
            gauge = lambda t: sample(metrics, "alarmhub_sip_listening", transport=t)  # noqa: E731
            assert await async_wait_until(lambda: gauge("udp") == 1, CEILING_S)
            async with udp_peer(sip.port("udp")) as peer:
                answered = await peer.ask(request("OPTIONS", port=sip.port("udp")))
            assert answered.code == 200
            [failed] = events(logs, "sip.bind_failed")
            assert (failed["transport"], failed["port"], failed["reason"]) == (
                "tcp",
                tcp_port,
                "address_in_use",
            )
            assert failed["errno"] == "EADDRINUSE"
            assert gauge("tcp") == 0
            assert not sip.started.is_set()
            holder.close()
            await asyncio.wait_for(sip.started.wait(), CEILING_S)
            assert (gauge("udp"), gauge("tcp")) == (1, 1)
            assert sip.port("tcp") == tcp_port
            assert not task.done()
        assert (gauge("udp"), gauge("tcp")) == (0, 0)


class Counting(SipServer):
    """The real server, counting its tries to bind (each one a real bind)."""

    tries = 0

    async def _open_one(self, spec: SipListen) -> Any:
        self.tries += 1
        return await super()._open_one(spec)


async def test_an_unchanged_failure_is_logged_once_a_minute_not_at_each_try() -> None:
    metrics = Metrics()
    with taken_udp_port() as (_, port), capture_logs() as logs:
        sip = Counting(
            [SipListen("udp", "127.0.0.1", port)],
            credentials=Credentials(),
            handler=Recorder(),
            clock=SystemClock(),
            metrics=metrics,
            rebind=Rebind(first_s=0.01, most_s=0.01),
        )
        async with serving(sip):
            assert await async_wait_until(lambda: sip.tries >= 10, CEILING_S)
        assert len(events(logs, "sip.bind_failed")) == 1


async def test_an_address_not_on_this_machine_is_named_so() -> None:
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    code = None
    try:
        probe.bind(("192.0.2.1", 0))  # TEST-NET-1: documentation only, on no host
    except OSError as exc:
        code = exc.errno
    finally:
        probe.close()
    if code is None:
        pytest.skip("this host allows binding addresses it does not have (ip_nonlocal_bind)")
    assert bind_failure(code) is BindFailure.ADDRESS_NOT_AVAILABLE
    metrics = Metrics()
    with capture_logs() as logs:
        sip = server(metrics, SipListen("udp", "192.0.2.1", 5060), rebind=Rebind(3600.0, 3600.0))
        async with serving(sip) as task:
            assert await async_wait_until(lambda: bool(events(logs, "sip.bind_failed")), CEILING_S)
            assert not task.done()
        assert task.cancelled()  # the stop ended it at once, the hour's wait notwithstanding
    [failed] = events(logs, "sip.bind_failed")
    assert failed["reason"] == "address_not_available"
    assert "0.0.0.0" in failed["hint"]
    assert sample(metrics, "alarmhub_sip_listening", transport="udp") == 0
