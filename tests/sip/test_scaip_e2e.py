"""SCAIP end to end: real peers against the real hub (issue 16, "Tests against real peers").

The hub is the in-process `AlarmHub` with its SIP listener on loopback, a real Mosquitto
and SQLite, as in tests/daemon/test_scaip_daemon.py; the devices are SIPp (two instances:
one sends, one on the contact port receives the answer) and the fake device of
alarmhub/sim/scaip_device.py, written from the protocol rather than from the receiver.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from alarmhub.app import AlarmHub
from alarmhub.core.digest import credentials_for
from alarmhub.core.tenancy import Scope
from alarmhub.dev.mosquitto import LocalBroker
from alarmhub.sim.scaip_device import Outcome, ResendPolicy, ScaipFleet
from tests.daemon.test_scaip_daemon import scaip_device
from tests.sip.support import authorization, request, udp_peer
from tests.sip.test_sipp import SCENARIOS, _bound, _free_udp_port, _sipp, sipp  # noqa: F401
from tests.support.helpers import (
    async_wait_until,
    db_count,
    db_rows,
    failing_commits,
    hub_settings,
    sample,
)

pytestmark = pytest.mark.broker

DEVICE, PASSWORD = "4790012345", "scaip-test-secret"  # as in scaip_message_uac.xml
# The standard's 5-20 s between resends, shortened: the sequence is the same.
POLICY = ResendPolicy(
    interval_s=(0.2, 0.4), answer_timeout_s=2.0, give_up_after_s=60.0, t1_s=0.1, t2_s=0.8
)


@asynccontextmanager
async def scaip_hub(
    tmp_path: Path, broker: LocalBroker, client_id: str, **extra: Any
) -> AsyncIterator[AlarmHub]:
    """The hub listening for SCAIP on a free UDP port, with DEVICE registered and its
    credentials set through the store (what `devices credentials` writes)."""
    settings = hub_settings(
        tmp_path, broker.url, client_id, scaip_listen="udp://127.0.0.1:0", **extra
    )
    async with AlarmHub(settings, serve_http=False) as hub:
        assert hub.sip is not None
        await hub.sip.started.wait()
        await hub.register_new_device(scaip_device(DEVICE), audit=())
        creds = credentials_for(DEVICE, settings.scaip_realm, PASSWORD)
        now = datetime.now(UTC)
        assert await hub.directory.set_device_credentials(Scope.everything("t"), creds, now, [])
        yield hub


def alarms(tmp_path: Path) -> int:
    return db_count(tmp_path / "alarmhub.db", "SELECT count(*) FROM alarms")


async def test_sipp_sends_an_alarm_with_digest_and_its_contact_receives_snu_0(
    sipp: str,  # noqa: F811
    tmp_path: Path,
    broker: LocalBroker,
    client_id: str,
) -> None:
    # SIPp 3.6 answers only the first challenge, and only MD5 (docs/scaip.md).
    async with scaip_hub(tmp_path, broker, client_id, scaip_digest_algorithms="MD5,SHA-256") as hub:
        assert hub.sip is not None
        contact_port, device_port = _free_udp_port(), _free_udp_port()
        uas = await _sipp(
            sipp,
            "-sf",
            str(SCENARIOS / "scaip_answer_uas.xml"),
            "-p",
            str(contact_port),
            errors=tmp_path / "uas.err",
        )
        try:
            assert await async_wait_until(lambda: _bound(contact_port))
            uac = await _sipp(
                sipp,
                f"127.0.0.1:{hub.sip.port('udp')}",
                "-sf",
                str(SCENARIOS / "scaip_message_uac.xml"),
                "-p",
                str(device_port),
                "-key",
                "ref",
                "S1",
                "-key",
                "contact_port",
                str(contact_port),
                errors=tmp_path / "uac.err",
            )
            uac_rc = await asyncio.wait_for(uac.wait(), 60)
            uas_rc = await asyncio.wait_for(uas.wait(), 60)
        finally:
            with contextlib.suppress(ProcessLookupError):
                uas.kill()
        errors = "".join(p.read_text(errors="replace") for p in tmp_path.glob("*.err"))
        # The UAC got its 200 OK; the UAS got the answer MESSAGE and found <snu>0</snu>.
        assert (uac_rc, uas_rc) == (0, 0), errors
        assert alarms(tmp_path) == 1
        [(device_id, kind)] = db_rows(
            tmp_path / "alarmhub.db", "SELECT device_id, kind FROM alarms"
        )
        assert (device_id, kind) == (DEVICE, "button")
        assert hub.metrics.scaip_requests.labels("ME", "0")._value.get() == 1


async def test_hold_while_the_store_fails_then_the_resend_is_answered_0(
    tmp_path: Path, broker: LocalBroker, client_id: str
) -> None:
    async with scaip_hub(tmp_path, broker, client_id, scaip_hold_after_s=0.3) as hub:
        failing = failing_commits(hub.store)  # until cleared
        async with ScaipFleet(f"udp://127.0.0.1:{hub.sip.port('udp')}", POLICY) as fleet:  # type: ignore[union-attr]
            record = fleet.device(DEVICE, PASSWORD).alarm("H1", stc="0010")
            # The device is held and resends the same ref, again and again.
            assert await async_wait_until(lambda: record.snus[:2] == [4, 4], 30), record
            assert alarms(tmp_path) == 0
            failing.clear()  # the store is back: the queued request commits
            assert await record.wait(30), record
        assert record.outcome is Outcome.HANDLED, record
        # The sequence: HOLD for every attempt while failing, then 0 once, ending the session.
        *held, last = record.snus
        assert len(held) >= 2, record.snus
        assert set(held) == {4}, record.snus
        assert last == 0, record.snus
        assert len(record.attempts) == len(record.snus)  # one answer per resend of "H1"
        assert alarms(tmp_path) == 1
        assert db_count(tmp_path / "alarmhub.db", "SELECT count(*) FROM inbox") == 1


async def test_a_body_of_another_content_type_is_a_dead_letter_when_its_415_arrives(
    tmp_path: Path, broker: LocalBroker, client_id: str
) -> None:
    """Over the wire: a press labelled `text/plain` (firmware that forgot SCAIP's type) was
    answered 415 by the SIP layer and only logged, the body lost: no dead letter, no
    count. When the 415 arrives now, the body is a dead letter with its reason, the device
    and its municipality, counted by the device's kind and logged."""
    async with scaip_hub(tmp_path, broker, client_id) as hub:
        assert hub.sip is not None
        port = hub.sip.port("udp")
        body = f"<mrq><ref>T1</ref><cid>{DEVICE}</cid><dty>3</dty><stc>10</stc></mrq>".encode()
        args: dict[str, Any] = {"port": port, "content_type": "text/plain", "body": body}
        async with udp_peer(port) as peer:
            first = request(**args, local_port=peer.port)
            challenge = await peer.ask(first)
            assert challenge.code == 401
            signed = authorization(challenge, first, password=PASSWORD)
            with capture_logs() as logs:
                reply = await peer.ask(request(**args, local_port=peer.port, authorization=signed))
                dead = db_rows(
                    tmp_path / "alarmhub.db",
                    "SELECT device_id, municipality, msg_id, reason, detail FROM inbox "
                    "WHERE verdict = 'rejected'",
                )  # read as the answer arrives: committed before it was sent
        assert reply.code == 415
        assert reply.headers["Accept"] == "application/scaip+xml, application/xml, text/xml"
        [(device, municipality, ref, reason, detail)] = dead
        assert (device, municipality, ref, reason) == (
            DEVICE, "0301", "T1", "unsupported_content_type"
        )  # fmt: skip
        assert "text/plain" in detail
        assert alarms(tmp_path) == 0
        counted = sample(
            hub.metrics,
            "alarmhub_messages_dead_lettered_total",
            reason="unsupported_content_type",
            device_kind="safety_alarm",
        )
        assert counted == 1
        [logged] = [e for e in logs if e["event"] == "message.dead_lettered"]
        assert (logged["device_id"], logged["reason"]) == (DEVICE, "unsupported_content_type")
        # The 415 is counted among the answers like any other (it used to count nowhere):
        # type `unknown`, the body unread; the answer named by the SIP status's reason.
        answers = {
            (s.labels["type"], s.labels["answer"]): s.value
            for family in hub.metrics.registry.collect()
            if family.name == "alarmhub_scaip_requests"
            for s in family.samples
            if s.name.endswith("_total") and s.value
        }
        assert answers == {("unknown", "unsupported_media_type"): 1}


async def test_resent_and_duplicate_references_make_one_alarm(
    tmp_path: Path, broker: LocalBroker, client_id: str
) -> None:
    async with scaip_hub(tmp_path, broker, client_id) as hub:
        target = f"udp://127.0.0.1:{hub.sip.port('udp')}"  # type: ignore[union-attr]
        async with ScaipFleet(target, POLICY) as fleet:
            device = fleet.device(DEVICE, PASSWORD)
            first = device.alarm("D1", stc="0010")
            assert await first.wait(30), first
            # The same reference again, in new SIP transactions: a device that did not
            # hear the answer, and one that repeats itself. Redeliveries, answered 0.
            second = device.alarm("D1", stc="0010")
            assert await second.wait(30), second
            third = device.alarm("D1", stc="0010")
            assert await third.wait(30), third
        assert [r.outcome for r in (first, second, third)] == [Outcome.HANDLED] * 3
        assert [a.snu for _, a in third.answers] == [0, 0, 0]  # one history per ref
        assert alarms(tmp_path) == 1
        db = tmp_path / "alarmhub.db"
        assert db_count(db, "SELECT count(*) FROM inbox") == 1
        assert db_count(db, "SELECT count(*) FROM alarms WHERE repeat_count != 0") == 0
        assert db_count(db, "SELECT count(*) FROM inbox WHERE verdict = 'rejected'") == 0
