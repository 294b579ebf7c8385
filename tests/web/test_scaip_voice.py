"""The operator chooses the SCAIP voice parameters on taking a held alarm (issue 16).

Under `hold_until_taken` the device is answered HOLD until an operator acknowledges its
alarm; `POST /api/v1/alarms/{id}/acknowledge` with `{"voice": {...}}` chooses what the
answer `snu=0` to the device's next resend carries. Real stack: Mosquitto, the hub
in-process with its SIP listener, SQLite, HTTP on loopback, the fake SCAIP device.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from alarmhub.core.digest import credentials_for
from alarmhub.core.tenancy import Scope
from alarmhub.dev.mosquitto import LocalBroker
from alarmhub.sim.scaip_device import Outcome, ResendPolicy, ScaipFleet
from tests.daemon.test_scaip_daemon import scaip_device
from tests.support.api_harness import stack
from tests.support.helpers import REPO, async_wait_until, db_rows

pytestmark = pytest.mark.broker

DEVICE, PASSWORD = "4790012345", "scaip-test-secret"
POLICY = ResendPolicy(
    interval_s=(0.2, 0.4), answer_timeout_s=2.0, give_up_after_s=60.0, t1_s=0.1, t2_s=0.8
)
HOLD_RULES = """
[municipalities.0301.scaip]
answer = "hold_until_taken"
"""


async def test_the_voice_chosen_on_acknowledging_goes_to_the_held_device(
    tmp_path: Path, broker: LocalBroker, client_id: str
) -> None:
    rules = tmp_path / "rules.toml"
    rules.write_text((REPO / "config" / "rules.toml").read_text() + HOLD_RULES)
    settings = {"rules": rules, "scaip_listen": "udp://127.0.0.1:0"}
    async with stack(tmp_path, broker, client_id, alarms=False, settings=settings) as s:
        hub = s.hub
        assert hub.sip is not None
        await hub.sip.started.wait()
        await hub.register_new_device(scaip_device(DEVICE), audit=())
        creds = credentials_for(DEVICE, hub.settings.scaip_realm, PASSWORD)
        now = datetime.now(UTC)
        assert await hub.directory.set_device_credentials(Scope.everything("t"), creds, now, [])
        async with (
            ScaipFleet(f"udp://127.0.0.1:{hub.sip.port('udp')}", POLICY) as fleet,
            s.client("op0301") as op,
        ):
            record = fleet.device(DEVICE, PASSWORD).alarm("V1", stc="0010")
            # Held: the alarm is stored and queued, the device polls.
            assert await async_wait_until(lambda: record.snus[:2] == [4, 4], 30), record
            [(alarm_id,)] = db_rows(s.db, "SELECT id FROM alarms WHERE device_id = ?", (DEVICE,))
            url = f"/api/v1/alarms/{alarm_id}/acknowledge"
            # Out of the standard's ranges, or cre 62 without the number: refused, not taken.
            for bad in ({"mre": 5}, {"cre": 63}, {"cre": 62}, {"tnu": "call me"}, {}):
                refused = await op.post(url, json={"voice": bad})
                assert refused.status_code == 422, (bad, refused.text)
            assert db_rows(s.db, "SELECT state FROM alarms") == [("open",)]
            voice = {"mre": 1, "cre": 62, "tnu": "+4712345678"}
            taken = await op.post(url, json={"voice": voice})
            assert taken.status_code == 200, taken.text
            assert await record.wait(30), record
        assert record.outcome is Outcome.HANDLED, record
        *held, last = [a for _, a in record.answers]
        assert {a.snu for a in held} == {4}
        assert (last.snu, last.mre, last.cre, last.tnu) == (0, 1, 62, "+4712345678")
        # Recorded: on the alarm's timeline and in the audit, in the acknowledgement's commit.
        [(detail,)] = db_rows(
            s.db, "SELECT detail FROM timeline WHERE type = 'acknowledged' AND alarm_id = ?",
            (alarm_id,),
        )  # fmt: skip
        assert orjson.loads(detail)["voice"] == voice
        [(audit,)] = db_rows(s.db, "SELECT detail FROM audit WHERE action='alarm.acknowledge'")
        assert orjson.loads(audit)["voice"] == voice


async def test_an_acknowledgement_without_a_body_still_works(
    tmp_path: Path, broker: LocalBroker, client_id: str
) -> None:
    async with stack(tmp_path, broker, client_id) as s, s.client("op0301") as op:
        alarm = s.alarms["osl-pend-1"]
        ok = await op.post(f"/api/v1/alarms/{alarm}/acknowledge")
        assert ok.status_code == 200, ok.text
        [(detail,)] = db_rows(s.db, "SELECT detail FROM timeline WHERE type = 'acknowledged'")
        assert "voice" not in orjson.loads(detail)
