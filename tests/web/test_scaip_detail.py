"""What operators see of a SCAIP alarm in the API's detail, and the answers recorded (issue 16).

Real stack: Mosquitto, the hub in-process, SQLite, HTTP on loopback. The requests go to
the handler the SIP layer is given (`hub.scaip`) as in tests/daemon/test_scaip_daemon.py;
tests/web/test_web_scaip.py drives the same through SIP and a browser.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from alarmhub.dev.mosquitto import LocalBroker
from tests.daemon.test_scaip_daemon import CID, answer, inbound, mrq, scaip_device
from tests.support.api_harness import stack
from tests.support.helpers import REPO, db_rows

pytestmark = pytest.mark.broker

HOLD_RULES = """
[municipalities.0301.scaip]
answer = "hold_until_taken"
mre = 2
cre = 61
"""
ALARM = (
    "<stc>0010</stc><crd>gsm:+4791234567</crd><crd>sip:4790012345@home.example</crd>"
    "<stt>Manual alarm</stt><lge><geo>N59.91390 E10.75220</geo><tim>2026-11-25T10:00:00Z</tim>"
    "</lge><lte>Bedroom</lte><ite>Key box at the back door</ite>"
)


def answered(db: Path, alarm_id: str) -> list[dict[str, Any]]:
    rows = db_rows(
        db, "SELECT detail FROM timeline WHERE alarm_id = ? AND type = 'answered' ORDER BY id",
        (alarm_id,),
    )  # fmt: skip
    return [orjson.loads(d) for (d,) in rows]


async def test_the_detail_shows_callbacks_position_texts_and_the_voice_answered(
    tmp_path: Path, broker: LocalBroker, client_id: str
) -> None:
    voice = {"scaip": {"mre": 1, "cre": 62, "tnu": "+4722000000"}}
    async with stack(tmp_path, broker, client_id, alarms=False) as s:
        await s.hub.register_new_device(scaip_device(settings=voice), audit=())
        reply = await s.hub.scaip(inbound(mrq("A1", ALARM)))
        assert answer(reply)["snu"] == "0"
        [(alarm_id,)] = db_rows(s.db, "SELECT id FROM alarms WHERE device_id = ?", (CID,))
        # Recorded in the commit that made the answer: there when the answer leaves.
        first = {"snu": 0, "mre": 1, "cre": 62, "tnu": "+4722000000", "ref": "A1"}
        assert answered(s.db, alarm_id) == [first]
        # A resend, a second request, an update with a new place: answered the same way,
        # so no second entry.
        update = mrq("A2", "<mty>IN</mty><stc>0010</stc><lte>Bathroom floor</lte>")
        for body in (mrq("A1", ALARM), mrq("A2", ALARM), update):
            assert answer(await s.hub.scaip(inbound(body)))["snu"] == "0"
        assert answered(s.db, alarm_id) == [first]
        async with s.client("op0301") as op, s.client("op4601") as bergen:
            detail = (await op.get(f"/api/v1/alarms/{alarm_id}")).json()
            other = await bergen.get(f"/api/v1/alarms/{alarm_id}")
        assert other.status_code == 404  # another municipality's alarm does not exist for it
        scaip = detail["scaip"]
        assert scaip["crd"] == ["gsm:+4791234567", "sip:4790012345@home.example"]
        assert scaip["position"] == {"lat": 59.9139, "lon": 10.7522}
        assert scaip["lge"]["tim"] == "2026-11-25T10:00:00Z"
        assert (scaip["stt"], scaip["ite"]) == ("Manual alarm", "Key box at the back door")
        assert scaip["lte"] == "Bathroom floor"  # the newest the device sent
        assert scaip["ref"] == "A2"
        assert scaip["voice"] == {"mre": 1, "cre": 62, "tnu": "+4722000000"}
        assert [a["snu"] for a in scaip["answers"]] == [0]
        assert scaip["answer_policy"] == "immediate"
        assert scaip["configured_voice"] == {"mre": 1, "cre": 62, "tnu": "+4722000000"}
        assert [e["type"] for e in detail["timeline"]].count("answered") == 1


async def test_held_once_taken_once_and_held_again_when_a_new_press_realerts(
    tmp_path: Path, broker: LocalBroker, client_id: str
) -> None:
    rules = tmp_path / "rules.toml"
    rules.write_text((REPO / "config" / "rules.toml").read_text() + HOLD_RULES)
    async with stack(tmp_path, broker, client_id, alarms=False, settings={"rules": rules}) as s:
        await s.hub.register_new_device(scaip_device(), audit=())
        for _ in range(3):  # the first request and two HOLD resends
            assert answer(await s.hub.scaip(inbound(mrq("H1", ALARM))))["snu"] == "4"
        [(alarm_id,)] = db_rows(s.db, "SELECT id FROM alarms WHERE device_id = ?", (CID,))
        assert answered(s.db, alarm_id) == [{"snu": 4, "ref": "H1"}]
        async with s.client("op0301") as op:
            before = (await op.get(f"/api/v1/alarms/{alarm_id}")).json()["scaip"]
            assert before["answer_policy"] == "hold_until_taken"
            assert before["configured_voice"] == {"mre": 2, "cre": 61, "tnu": None}
            assert before["voice"] is None  # nothing handled yet
            chosen = {"mre": 1, "cre": 62, "tnu": "+4712345678"}
            taken = await op.post(f"/api/v1/alarms/{alarm_id}/acknowledge", json={"voice": chosen})
            assert taken.status_code == 200, taken.text
            # Written with the acknowledgement, before the device asks again.
            assert answered(s.db, alarm_id)[1:] == [{"snu": 0, **chosen}]
            resent = answer(await s.hub.scaip(inbound(mrq("H1", ALARM))))
            assert (resent["snu"], resent["mre"], resent["tnu"]) == ("0", "1", "+4712345678")
            # A new press re-alerts the acknowledged person alarm: held again, recorded once.
            assert answer(await s.hub.scaip(inbound(mrq("H2", ALARM))))["snu"] == "4"
            assert answer(await s.hub.scaip(inbound(mrq("H2", ALARM))))["snu"] == "4"
            detail = (await op.get(f"/api/v1/alarms/{alarm_id}")).json()
        assert [(a["snu"], a.get("ref")) for a in detail["scaip"]["answers"]] == [
            (4, "H1"), (0, None), (4, "H2"),
        ]  # fmt: skip
        assert detail["scaip"]["voice"] == chosen


async def test_an_alarm_of_another_device_has_no_scaip_part(
    tmp_path: Path, broker: LocalBroker, client_id: str
) -> None:
    async with stack(tmp_path, broker, client_id) as s, s.client("op0301") as op:
        detail = (await op.get(f"/api/v1/alarms/{s.alarms['osl-pend-1']}")).json()
        assert detail["scaip"] is None
        assert all(e["type"] != "answered" for e in detail["timeline"])
