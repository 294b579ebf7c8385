"""ALARMHUB_SCAIP_* settings, and the SIP server run by the owner's term of a real hub."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import pytest

from alarmhub.app import AlarmHub
from alarmhub.clock import SystemClock
from alarmhub.core.digest import credentials_for
from alarmhub.core.sipcodes import SipListen, parse_sip_listen
from alarmhub.core.tenancy import Scope
from alarmhub.dev.mosquitto import LocalBroker
from alarmhub.observability.metrics import Metrics
from alarmhub.settings import SettingsError, load_settings
from alarmhub.sip.server import SipLimits, sip_server_from
from tests.sip.support import (
    DEVICE,
    PASSWORD,
    Credentials,
    Recorder,
    authorization,
    request,
    self_signed,
    stream_peer,
    udp_peer,
)
from tests.support.helpers import hub_settings, register, sample


def test_listen_urls_are_parsed_with_default_ports() -> None:
    assert parse_sip_listen("udp://0.0.0.0, tcp://0.0.0.0:5070 ,tls://[::1]") == (
        SipListen("udp", "0.0.0.0", 5060),
        SipListen("tcp", "0.0.0.0", 5070),
        SipListen("tls", "::1", 5061),
    )
    assert str(SipListen("tls", "::1", 5061)) == "tls://[::1]:5061"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("sip://0.0.0.0:5060", "expected udp://host:port"),
        ("udp://:5060", "no host"),
        ("udp://0.0.0.0:99999", "bad port"),
        ("udp://0.0.0.0:5060,udp://0.0.0.0:5060", "listed twice"),
        ("tls://0.0.0.0:5061", "ALARMHUB_SCAIP_TLS_CERT and ALARMHUB_SCAIP_TLS_KEY"),
    ],
)
def test_a_bad_listen_setting_is_one_clear_error(value: str, message: str) -> None:
    with pytest.raises(SettingsError, match="ALARMHUB_SCAIP_LISTEN") as caught:
        load_settings(None, scaip_listen=value)
    assert message in str(caught.value)


def test_tls_listen_with_cert_and_key_and_the_other_scaip_settings(tmp_path: Path) -> None:
    crt, key = self_signed(tmp_path)
    s = load_settings(
        None,
        scaip_listen="tls://127.0.0.1:0",
        scaip_tls_cert=crt,
        scaip_tls_key=key,
        scaip_digest_algorithms="md5, sha-256",
    )
    assert s.sip_listen == (SipListen("tls", "127.0.0.1", 0),)
    assert s.digest_algorithms == ("MD5", "SHA-256")
    assert load_settings(None).sip_listen == ()  # unset: off
    assert load_settings(None).scaip_realm == "alarmhub"
    with pytest.raises(SettingsError, match="ALARMHUB_SCAIP_DIGEST_ALGORITHMS"):
        load_settings(None, scaip_digest_algorithms="SHA-512")
    with pytest.raises(SettingsError, match="ALARMHUB_SCAIP_REALM"):
        load_settings(None, scaip_realm='bad "realm"')


def test_the_receivers_capacity_is_set_and_bounded() -> None:
    """ALARMHUB_SCAIP_MAX_CONNECTIONS, _MAX_IN_FLIGHT and _IDLE_TIMEOUT_S: a fleet with more
    TCP/TLS devices than the default 2,000 slots, or devices that speak less often than
    every 180 s, is configured, not patched."""
    default = load_settings(None)
    assert (default.scaip_max_connections, default.scaip_max_in_flight) == (2000, 2000)
    assert default.scaip_idle_timeout_s == 180.0
    # The same as SipLimits' own defaults (what a server built without settings holds).
    code = SipLimits()
    assert (code.max_connections, code.max_in_flight, code.idle_timeout_s) == (
        default.scaip_max_connections,
        default.scaip_max_in_flight,
        default.scaip_idle_timeout_s,
    )
    s = load_settings(
        None, scaip_max_connections=6000, scaip_max_in_flight=500, scaip_idle_timeout_s=900
    )
    assert (s.scaip_max_connections, s.scaip_max_in_flight, s.scaip_idle_timeout_s) == (
        6000,
        500,
        900.0,
    )
    for name, bad in [
        ("scaip_max_connections", 0),
        ("scaip_max_in_flight", 0),
        ("scaip_idle_timeout_s", 5),
    ]:
        with pytest.raises(SettingsError, match=f"ALARMHUB_{name.upper()}"):
            load_settings(None, **{name: bad})


async def test_the_server_built_from_the_settings_holds_that_many_connections() -> None:
    """The settings reach the receiver: with ALARMHUB_SCAIP_MAX_CONNECTIONS=1 a second
    connection is refused at once while the first is held, and counted."""
    settings = load_settings(
        None,
        scaip_listen="tcp://127.0.0.1:0",
        scaip_max_connections=1,
        scaip_max_in_flight=7,
        scaip_idle_timeout_s=600,
    )
    metrics = Metrics()
    creds = Credentials(**{DEVICE: PASSWORD})
    server = sip_server_from(settings, creds, SystemClock(), metrics, Recorder())
    assert server is not None
    assert server._limits == SipLimits(max_connections=1, max_in_flight=7, idle_timeout_s=600)
    task = asyncio.create_task(server.run())
    try:
        await asyncio.wait_for(server.started.wait(), 5)
        port = server.port("tcp")
        async with stream_peer(port) as first:
            # A device's connection (authenticated) keeps its slot; a stranger's would go
            # to the newcomer (tests/sip/test_sip_slots.py).
            first_try = request(port=port, transport="TCP", local_port=first.port)
            auth = authorization(await first.ask(first_try), first_try)
            again = request(
                port=port, transport="TCP", local_port=first.port, cseq=2, authorization=auth
            )
            assert (await first.ask(again)).code == 200
            async with stream_peer(port) as second:
                await asyncio.wait_for(second.closed.wait(), 5)  # over the one slot
            assert not first.closed.is_set()
        assert sample(metrics, "alarmhub_sip_dropped_total", reason="connections") == 1
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_the_owner_term_runs_the_sip_server_with_the_stores_credentials(
    tmp_path: Path, broker: LocalBroker, client_id: str
) -> None:
    register(f"sqlite:///{tmp_path / 'alarmhub.db'}", [(DEVICE, "safety_alarm", "0301")], tmp_path)
    settings = hub_settings(tmp_path, broker.url, client_id, scaip_listen="udp://127.0.0.1:0")
    async with AlarmHub(settings, serve_http=False) as hub:
        assert hub.sip is not None
        await hub.sip.started.wait()
        now = datetime.now(UTC)
        creds = credentials_for(DEVICE, "alarmhub", PASSWORD)
        assert await hub.directory.set_device_credentials(Scope.everything("t"), creds, now, [])
        port = hub.sip.port("udp")
        async with udp_peer(port) as peer:
            first = request(port=port)
            challenge = await peer.ask(first)
            auth = authorization(challenge, first)
            # app.py hands the SCAIP intake to the listener: an authenticated MESSAGE
            # is answered by it (this device is not a scaip one: answered, not stored).
            assert hub.sip.handler is hub.scaip
            answered = await peer.ask(request(port=port, cseq=2, authorization=auth))
            assert answered.code == 200
