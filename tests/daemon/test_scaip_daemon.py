"""SCAIP requests through a running hub (real Mosquitto, real SQLite; one on PostgreSQL).

The SIP layer is not started here: each test calls the handler the SIP layer is given
(`hub.scaip`, sip/ports.py `MessageHandler`) with the InboundMessage it would build, and
checks the answer against what the store holds at the moment the answer is returned.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from structlog.testing import capture_logs

from alarmhub.app import AlarmHub
from alarmhub.core.actions import Action
from alarmhub.core.device_settings import parse_settings
from alarmhub.core.model import AlarmState, Device, DeviceKind
from alarmhub.core.scaip import parse_answer
from alarmhub.dev.mosquitto import LocalBroker
from alarmhub.sip.ports import InboundMessage, Reply
from tests.support.helpers import (
    REPO,
    async_wait_until,
    db_count,
    db_rows,
    failing_commits,
    hub_settings,
    run_cli,
)

pytestmark = pytest.mark.broker

CID = "4790012345"
OTHER = "4790054321"
SCAIP = "application/scaip+xml"
ACCEPT = ("Accept", "application/scaip+xml, application/xml, text/xml")


def mrq(ref: str, extra: str = "<stc>0010</stc>", cid: str = CID, dty: str = "0003") -> bytes:
    return (
        f'<?xml version="1.0" encoding="UTF-8"?><mrq><ref>{ref}</ref><cid>{cid}</cid>'
        f"<dty>{dty}</dty>{extra}</mrq>"
    ).encode()


def inbound(body: bytes, user: str = CID, content_type: str = SCAIP) -> InboundMessage:
    return InboundMessage(
        user=user,
        body=body,
        contact=f"sip:{user}@127.0.0.1:5070",
        source=("127.0.0.1", 5070),
        transport="udp",
        call_id="c1@test",
        received_at=datetime.now(UTC),
        content_type=content_type,
    )


def answer(reply: Reply) -> dict[str, str]:
    assert reply.status == 200, reply
    assert reply.body is not None
    return parse_answer(reply.body)


def scaip_device(device_id: str = CID, settings: dict[str, Any] | None = None) -> Device:
    return Device(
        device_id,
        DeviceKind.SAFETY_ALARM,
        "0301",
        profile="scaip",
        settings=parse_settings(settings),
    )


@asynccontextmanager
async def running(
    tmp_path: Path, broker: LocalBroker, client_id: str, **extra: Any
) -> AsyncIterator[AlarmHub]:
    settings = hub_settings(tmp_path, broker.url, client_id, **extra)
    async with AlarmHub(settings, serve_http=False) as hub:
        yield hub


def sqlite_count(tmp_path: Path, sql: str) -> int:
    return db_count(tmp_path / "alarmhub.db", sql)


async def test_a_press_is_answered_0_only_once_committed_and_a_resend_is_a_redelivery(
    tmp_path: Path, broker: LocalBroker, client_id: str
) -> None:
    db_url = f"sqlite:///{tmp_path / 'alarmhub.db'}"
    voice = '{"scaip": {"mre": 1, "cre": 62, "tnu": "+4722000000", "inline": true}}'
    result = run_cli(
        [
            "devices", "register", "--id", CID, "--kind", "safety_alarm",
            "--municipality", "0301", "--profile", "scaip", "--settings", voice,
        ],
        {"ALARMHUB_DATABASE_URL": db_url},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    async with running(tmp_path, broker, client_id) as hub:
        reply = await hub.scaip(inbound(mrq("A1", "<stc>0010</stc><crd>gsm:+4791234567</crd>")))
        # The alarm is in the database when the answer leaves.
        assert sqlite_count(tmp_path, "SELECT count(*) FROM alarms") == 1
        assert answer(reply) == {
            "ref": "A1", "snu": "0", "mre": "1", "cre": "62", "tnu": "+4722000000"
        }  # fmt: skip
        assert reply.inline  # the device's setting: the answer in the 200 OK
        again = await hub.scaip(inbound(mrq("A1", "<stc>0010</stc><crd>gsm:+4791234567</crd>")))
        assert answer(again)["snu"] == "0"
        assert sqlite_count(tmp_path, "SELECT count(*) FROM alarms") == 1
        assert sqlite_count(tmp_path, "SELECT count(*) FROM inbox") == 1
        [(kind, state)] = db_rows(tmp_path / "alarmhub.db", "SELECT kind, state FROM alarms")
        assert (kind, state) == ("button", "open")
        [(events,)] = db_rows(tmp_path / "alarmhub.db", "SELECT events FROM inbox")
        assert "gsm:+4791234567" in events  # what the operator is shown, kept on the event
        m = hub.metrics
        assert m.scaip_requests.labels("ME", "0")._value.get() == 2
        assert m.scaip_answer_seconds._sum.get() > 0


async def test_hold_while_the_store_cannot_commit_then_0_for_the_resend(
    tmp_path: Path, broker: LocalBroker, client_id: str
) -> None:
    async with running(tmp_path, broker, client_id, scaip_hold_after_s=0.3) as hub:
        await hub.register_new_device(scaip_device(), audit=())
        failing = failing_commits(hub.store)  # until cleared
        first = await hub.scaip(inbound(mrq("H1")))
        assert answer(first) == {"ref": "H1", "snu": "4", "ste": "not stored yet: send again"}
        resend = await hub.scaip(inbound(mrq("H1")))
        assert answer(resend)["snu"] == "4"
        assert sqlite_count(tmp_path, "SELECT count(*) FROM alarms") == 0
        failing.clear()  # the disk has room again: the queued request commits
        assert await async_wait_until(
            lambda: sqlite_count(tmp_path, "SELECT count(*) FROM alarms") == 1, 15
        )
        later = await hub.scaip(inbound(mrq("H1")))
        assert answer(later)["snu"] == "0"
        assert sqlite_count(tmp_path, "SELECT count(*) FROM alarms") == 1
        assert hub.metrics.scaip_requests.labels("ME", "4")._value.get() == 2


BAD = [
    # (what, body, answer code, dead-letter reason)
    ("not XML", b"ref=1;stc=10", "2", "malformed_xml"),
    ("entity expansion", b'<!DOCTYPE m [<!ENTITY a "aa">]><mrq><ref>&a;</ref></mrq>', "2",
     "malformed_xml"),
    ("dty not a code", mrq("R3", dty="pendant"), "3", "bad_value"),
    ("no dty", f"<mrq><ref>R7</ref><cid>{CID}</cid></mrq>".encode(), "7", "missing_field"),
    ("no ref", f"<mrq><cid>{CID}</cid><dty>3</dty></mrq>".encode(), "10", "missing_field"),
    ("too long", mrq("R1", "<stt>" + "x" * 20_000 + "</stt>"), "1", "oversized"),
    # Upper-case names are read (below), but an answer is no request whatever its case.
    ("upper-case answer", b"<MRS><REF>U2</REF><SNU>0</SNU></MRS>", "2", "malformed_xml"),
    # XML without a declaration is UTF-8: a Latin-1 "å" is not well-formed.
    ("Latin-1 without a declaration",
     f"<mrq><ref>L1</ref><cid>{CID}</cid><dty>3</dty><stt>Fall på badet</stt></mrq>".encode(
         "latin-1"), "2", "malformed_xml"),
]  # fmt: skip


async def test_each_rejection_is_answered_its_code_and_dead_lettered(
    tmp_path: Path, broker: LocalBroker, client_id: str
) -> None:
    async with running(tmp_path, broker, client_id) as hub:
        await hub.register_new_device(scaip_device(), audit=())
        with capture_logs() as logs:
            for what, body, snu, _ in BAD:
                assert answer(await hub.scaip(inbound(body)))["snu"] == snu, what
            # A device alarmhub does not serve: not treated (5), the device ends the session.
            assert answer(await hub.scaip(inbound(mrq("U1", cid=OTHER), user=OTHER)))["snu"] == "5"
        rows = db_rows(
            tmp_path / "alarmhub.db",
            "SELECT reason FROM inbox WHERE verdict = 'rejected' ORDER BY seq",
        )
        assert [r for (r,) in rows] == [*(b[3] for b in BAD), "unknown_device"]
        # Each kept as it came, byte for byte (those under the 512 bytes a dead letter keeps).
        kept = db_rows(
            tmp_path / "alarmhub.db",
            "SELECT payload FROM inbox WHERE verdict = 'rejected' AND length(payload) < 512 "
            "ORDER BY seq",
        )
        assert [bytes(p) for (p,) in kept] == [
            *(b[1] for b in BAD if len(b[1]) < 512),
            mrq("U1", cid=OTHER),
        ]
        assert sqlite_count(tmp_path, "SELECT count(*) FROM alarms") == 0
        assert any(e["event"] == "message.dead_lettered" for e in logs)
        assert hub.metrics.scaip_requests.labels("unknown", "2")._value.get() == 4


async def test_upper_case_names_are_answered_with_the_devices_ref(
    tmp_path: Path, broker: LocalBroker, client_id: str
) -> None:
    """An upper-case `<MRQ>` (some devices send the standard's names so) was refused
    `snu=2` with an empty `ref`: the device could not match the answer and resent for up
    to 30 minutes, and its alarm was only a dead letter. Now it is read like `<mrq>`; a
    body still refused echoes its upper-case `<REF>` and is kept with its reason."""
    async with running(tmp_path, broker, client_id) as hub:
        await hub.register_new_device(scaip_device(), audit=())
        press = f"<MRQ><REF>U1</REF><CID>{CID}</CID><DTY>3</DTY><STC>0010</STC></MRQ>".encode()
        assert answer(await hub.scaip(inbound(press))) == {"ref": "U1", "snu": "0"}
        refused = await hub.scaip(inbound(f"<MRQ><REF>U2</REF><CID>{CID}</CID>".encode()))
        assert {k: v for k, v in answer(refused).items() if k != "ste"} == {
            "ref": "U2", "snu": "2"
        }  # fmt: skip
        rows = db_rows(
            tmp_path / "alarmhub.db", "SELECT msg_id, verdict, reason FROM inbox ORDER BY seq"
        )
        assert [(m, r) for m, _, r in rows] == [("U1", None), ("U2", "malformed_xml")]
        [(kind,)] = db_rows(tmp_path / "alarmhub.db", "SELECT kind FROM alarms")
        assert kind == "button"


async def test_a_body_under_another_content_type_is_kept_before_its_415(
    tmp_path: Path, broker: LocalBroker, client_id: str
) -> None:
    """The 415 used to come from the SIP layer with the body thrown away. The body is now a
    dead letter (`unsupported_content_type`, the device, its municipality), counted by the
    device's kind, and the 415 leaves only once that is committed: while the store fails
    the answer is 503 with Retry-After, and the device's resend finds it stored."""
    async with running(tmp_path, broker, client_id, scaip_hold_after_s=0.3) as hub:
        await hub.register_new_device(scaip_device(), audit=())
        failing = failing_commits(hub.store)  # until cleared
        dead = "SELECT count(*) FROM inbox WHERE verdict = 'rejected'"
        held = await hub.scaip(inbound(mrq("T1"), content_type="application/json"))
        assert (held.status, held.headers, held.body) == (503, (("Retry-After", "5"),), None)
        assert sqlite_count(tmp_path, dead) == 0
        failing.clear()  # the store is back: the queued request commits as a dead letter
        assert await async_wait_until(lambda: sqlite_count(tmp_path, dead) == 1, 15)
        resend = await hub.scaip(inbound(mrq("T1"), content_type="application/json"))
        assert (resend.status, resend.headers, resend.body) == (415, (ACCEPT,), None)
        # No Content-Type at all: the same, and said so.
        unlabelled = await hub.scaip(inbound(mrq("T2"), content_type=""))
        assert (unlabelled.status, unlabelled.headers) == (415, (ACCEPT,))
        rows = db_rows(
            tmp_path / "alarmhub.db",
            "SELECT device_id, municipality, msg_id, reason, detail FROM inbox ORDER BY seq",
        )
        assert [r[:4] for r in rows] == [
            (CID, "0301", "T1", "unsupported_content_type"),
            (CID, "0301", "T2", "unsupported_content_type"),
        ]  # the resend of T1 was a redelivery: one row
        assert "application/json" in rows[0][4]
        assert "(none)" in rows[1][4]
        assert sqlite_count(tmp_path, "SELECT count(*) FROM alarms") == 0  # a press, unread
        counted = hub.metrics.messages_dead_lettered.labels(
            "unsupported_content_type", "safety_alarm"
        )
        assert counted._value.get() == 2
        # Each answer counted as what was sent: the 503, then the two 415s.
        requests = hub.metrics.scaip_requests
        assert requests.labels("unknown", "service_unavailable")._value.get() == 1
        assert requests.labels("unknown", "unsupported_media_type")._value.get() == 2


async def test_a_bad_optional_element_keeps_the_alarm_and_is_recorded(
    tmp_path: Path, broker: LocalBroker, client_id: str
) -> None:
    """One bad optional element (a newline, a code outside its table, an unknown status
    code) used to refuse the whole request with `snu=3`: the device ended the session and
    no alarm was raised. Now the alarm is raised, answered 0, and what was left out is on
    the inbox row ("partial"), as for an MQTT message."""
    async with running(tmp_path, broker, client_id) as hub:
        await hub.register_new_device(scaip_device(), audit=())
        bodies = [
            mrq("N1", "<stc>0010</stc><lte>Bathroom\nfloor</lte><pri>10</pri><hbo>yes</hbo>"),
            mrq("N2", "<stc>0500</stc>", dty="0052"),
        ]
        for body in bodies:
            assert answer(await hub.scaip(inbound(body)))["snu"] == "0"
        rows = db_rows(tmp_path / "alarmhub.db", "SELECT msg_id, reason, detail FROM inbox")
        assert [(m, r) for m, r, _ in rows] == [("N1", "partial"), ("N2", None)]
        assert "<pri> 10" in rows[0][2]
        assert "<hbo>" in rows[0][2]
        assert sqlite_count(tmp_path, "SELECT count(*) FROM inbox WHERE verdict='rejected'") == 0
        [alarm] = hub.state.alarms.by_id.values()  # both presses: one button alarm
        assert (alarm.kind, alarm.repeat_count) == ("button", 1)
        [(events,)] = db_rows(
            tmp_path / "alarmhub.db", "SELECT events FROM inbox WHERE msg_id = 'N1'"
        )
        assert "Bathroom floor" in events


async def test_a_forged_cid_is_refused_with_403_and_raises_nothing(
    tmp_path: Path, broker: LocalBroker, client_id: str
) -> None:
    async with running(tmp_path, broker, client_id) as hub:
        await hub.register_new_device(scaip_device(), audit=())
        await hub.register_new_device(scaip_device(OTHER), audit=())
        with capture_logs() as logs:
            # OTHER's credentials, a body claiming to be CID.
            reply = await hub.scaip(inbound(mrq("F1"), user=OTHER))
        assert reply.status == 403
        assert reply.body is None
        [forged] = [e for e in logs if e["event"] == "scaip.forged_cid"]
        assert (forged["user"], forged["cid"]) == (OTHER, CID)
        assert await async_wait_until(
            lambda: sqlite_count(tmp_path, "SELECT count(*) FROM inbox") == 1, 10
        )
        [(reason, device)] = db_rows(
            tmp_path / "alarmhub.db", "SELECT reason, device_id FROM inbox"
        )
        assert (reason, device) == ("device_mismatch", OTHER)
        assert sqlite_count(tmp_path, "SELECT count(*) FROM alarms") == 0
        assert hub.metrics.scaip_requests.labels("ME", "forbidden")._value.get() == 1


async def test_a_forged_cid_is_refused_only_once_its_dead_letter_is_kept(
    tmp_path: Path, broker: LocalBroker, client_id: str
) -> None:
    """The 403 went out before the forged body was committed: a store failing then (or
    the process dying) lost the evidence, and the 403 had ended the transaction, so the
    device never sent it again. Now 503 with Retry-After until it is kept."""
    async with running(tmp_path, broker, client_id, scaip_hold_after_s=0.3) as hub:
        await hub.register_new_device(scaip_device(), audit=())
        await hub.register_new_device(scaip_device(OTHER), audit=())
        failing = failing_commits(hub.store)  # until cleared
        held = await hub.scaip(inbound(mrq("F2"), user=OTHER))
        assert (held.status, held.headers) == (503, (("Retry-After", "5"),))
        assert sqlite_count(tmp_path, "SELECT count(*) FROM inbox") == 0
        failing.clear()
        dead = "SELECT count(*) FROM inbox WHERE reason = 'device_mismatch'"
        assert await async_wait_until(lambda: sqlite_count(tmp_path, dead) == 1, 15)
        resend = await hub.scaip(inbound(mrq("F2"), user=OTHER))
        assert resend.status == 403
        assert sqlite_count(tmp_path, "SELECT count(*) FROM inbox") == 1  # a redelivery
        assert sqlite_count(tmp_path, "SELECT count(*) FROM alarms") == 0
        # The 503 was counted as a 403 ("forbidden") that had not been sent.
        requests = hub.metrics.scaip_requests
        assert requests.labels("ME", "service_unavailable")._value.get() == 1
        assert requests.labels("ME", "forbidden")._value.get() == 1


async def test_an_update_joins_the_alarm_and_a_reset_is_the_rules_cancel(
    tmp_path: Path, broker: LocalBroker, client_id: str
) -> None:
    async with running(tmp_path, broker, client_id) as hub:
        await hub.register_new_device(scaip_device(), audit=())
        assert answer(await hub.scaip(inbound(mrq("A7"))))["snu"] == "0"
        [alarm_id] = list(hub.state.alarms.by_id)
        update = mrq("A7", "<mty>IN</mty><stc>0010</stc><lge><geo>59.91,10.75</geo></lge>")
        assert answer(await hub.scaip(inbound(update)))["snu"] == "0"
        alarm = hub.state.alarms.get(alarm_id)
        assert alarm is not None
        assert alarm.repeat_count == 1  # joined the open alarm, not a new one
        assert len(hub.state.alarms.by_id) == 1
        assert answer(await hub.scaip(inbound(mrq("A7", "<mty>RE</mty>"))))["snu"] == "0"
        alarm = hub.state.alarms.get(alarm_id)
        assert alarm is not None
        # A person alarm cancelled by the device waits for an operator (core/judge.py).
        assert alarm.clearing_event == "button.cancelled"
        assert alarm.state is AlarmState.OPEN
        assert sqlite_count(tmp_path, "SELECT count(*) FROM inbox") == 3


async def test_a_heartbeat_feeds_supervision_and_carries_the_interval_once(
    tmp_path: Path, broker: LocalBroker, client_id: str
) -> None:
    async with running(tmp_path, broker, client_id) as hub:
        device = scaip_device()
        await hub.register_new_device(device, audit=())
        heard: list[str] = []
        original = hub.supervision.heard

        def spy(ids: Any) -> None:
            heard.extend(ids)
            original(ids)

        hub.pipeline._heard = type("H", (), {  # type: ignore[union-attr]
            "heard": staticmethod(spy),
            "dose_taken": hub.supervision.dose_taken,
            "location": hub.supervision.location,
        })()  # fmt: skip
        ping = mrq("P1", "<mty>PI</mty><hbo>001</hbo>")
        # safety_alarm's default interval in config/rules.toml: 3600 s = 60 min.
        assert answer(await hub.scaip(inbound(ping))) == {"ref": "P1", "snu": "0", "hbi": "60"}
        assert heard == [CID]
        again = mrq("P2", "<mty>PI</mty><hbo>001</hbo>")
        assert answer(await hub.scaip(inbound(again))) == {"ref": "P2", "snu": "0"}  # told
        plain = mrq("P3", "<mty>PI</mty>")
        assert answer(await hub.scaip(inbound(plain))) == {"ref": "P3", "snu": "0"}
        assert sqlite_count(tmp_path, "SELECT count(*) FROM alarms") == 0
        assert hub.metrics.scaip_requests.labels("PI", "0")._value.get() == 3


HOLD_RULES = """
[municipalities.0301.scaip]
answer = "hold_until_taken"
"""


async def test_hold_until_an_operator_takes_the_alarm(
    tmp_path: Path, broker: LocalBroker, client_id: str
) -> None:
    rules = tmp_path / "rules.toml"
    shipped = (REPO / "config" / "rules.toml").read_text()
    voice = 'answer = "immediate"\nmre = 1\ncre = 61'
    rules.write_text(shipped.replace('answer = "immediate"', voice) + HOLD_RULES)
    async with running(tmp_path, broker, client_id, rules=rules) as hub:
        await hub.register_new_device(scaip_device(), audit=())
        first = answer(await hub.scaip(inbound(mrq("W1"))))
        assert first == {"ref": "W1", "snu": "4", "ste": "waiting for an operator"}
        assert sqlite_count(tmp_path, "SELECT count(*) FROM alarms") == 1  # stored all the same
        assert answer(await hub.scaip(inbound(mrq("W1"))))["snu"] == "4"  # the device polls
        [alarm_id] = list(hub.state.alarms.by_id)
        await hub.act(alarm_id, Action.ACKNOWLEDGE, "op-1", audit=())
        taken = answer(await hub.scaip(inbound(mrq("W1"))))
        assert taken == {"ref": "W1", "snu": "0", "mre": "1", "cre": "61"}
        assert len(hub.state.alarms.by_id) == 1


async def pg_value(url: str, sql: str) -> Any:
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetchval(sql)
    finally:
        await conn.close()


async def test_on_postgresql_the_answer_follows_the_commit(
    tmp_path: Path, broker: LocalBroker, client_id: str, pg_url: str
) -> None:
    async with running(tmp_path, broker, client_id, database_url=pg_url) as hub:
        await hub.register_new_device(scaip_device(), audit=())

        async def count() -> Any:
            return await pg_value(pg_url, "SELECT count(*) FROM alarms")

        assert answer(await hub.scaip(inbound(mrq("G1"))))["snu"] == "0"
        assert await count() == 1
        assert answer(await hub.scaip(inbound(mrq("G1"))))["snu"] == "0"
        assert await count() == 1
        assert await pg_value(pg_url, "SELECT count(*) FROM inbox") == 1
