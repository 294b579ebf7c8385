"""The resident register's API and the resolve step's cause and action (issue 17), over HTTP.

The real stack (tests/support/api_harness.py): Mosquitto, the hub in-process, SQLite,
HTTP on loopback. Municipality admins manage their own municipality's residents;
operators never set a number and see it only masked on an alarm's detail; another
municipality's admin can neither read nor set. Every read of a number is audited.
"""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from alarmhub.dev.mosquitto import LocalBroker
from tests.support.api_harness import Stack, stack
from tests.support.helpers import db_rows
from tests.support.national_ids import KARI, OLA

pytestmark = pytest.mark.broker

KEY = base64.b64encode(bytes(range(32))).decode()
MASKED = KARI[:6] + "*****"
# An alarm without a journal export row: no times, no attempts (issue 17, delivery).
NO_EXPORT = {
    "created_at": None,
    "sent_at": None,
    "finished_at": None,
    "attempts": 0,
    "last_error": None,
}


def audit_actions(s: Stack, prefix: str = "resident.") -> list[tuple[str, str, str]]:
    return [
        (str(actor), str(action), str(m))
        for actor, action, m in db_rows(
            s.db,
            "SELECT actor, action, municipality FROM audit WHERE action LIKE ? ORDER BY id",
            (prefix + "%",),
        )
    ]


async def _give_resident(s: Stack, device: str, resident: str) -> None:
    async with s.client("root") as c:
        r = await c.patch(f"/api/v1/devices/{device}", json={"resident": resident})
        assert r.status_code == 200, r.text


async def test_admins_set_and_list_their_own_operators_and_others_cannot(
    tmp_path: Path, broker: LocalBroker, client_id: str
) -> None:
    async with stack(
        tmp_path, broker, client_id, alarms=False, settings={"resident_key": KEY}
    ) as s:
        body = {"municipality": "0301", "national_id": KARI}
        async with s.client("madm0301") as c:
            r = await c.put("/api/v1/residents/r-17", json=body)
            assert r.status_code == 201, r.text
            assert r.json()["national_id"] == MASKED
            assert KARI not in r.text
            r = await c.put("/api/v1/residents/r-17", json=body)
            assert r.status_code == 200  # replaced
            listed = (await c.get("/api/v1/residents", params={"municipality": "0301"})).json()
            assert [(e["resident"], e["national_id"]) for e in listed] == [("r-17", MASKED)]
            one = await c.get("/api/v1/residents/r-17", params={"municipality": "0301"})
            assert one.json()["national_id"] == MASKED
            # A wrong number: why, never what.
            bad = KARI[:-1] + str((int(KARI[-1]) + 1) % 10)
            r = await c.put(
                "/api/v1/residents/r-18", json={"municipality": "0301", "national_id": bad}
            )
            assert r.status_code == 422
            assert "check digits" in r.json()["error"]["message"]
            assert bad not in r.text
            assert bad[6:] not in r.text
        # Operators never set (nor list); another municipality's admin can neither.
        async with s.client("op0301") as c:
            assert (await c.put("/api/v1/residents/r-17", json=body)).status_code == 403
            r = await c.get("/api/v1/residents", params={"municipality": "0301"})
            assert r.status_code == 403
        async with s.client("madm4601") as c:
            assert (await c.put("/api/v1/residents/r-17", json=body)).status_code == 403
            r = await c.get("/api/v1/residents", params={"municipality": "0301"})
            assert r.status_code == 403
            one = await c.get("/api/v1/residents/r-17", params={"municipality": "0301"})
            assert one.status_code == 404
            gone = await c.delete("/api/v1/residents/r-17", params={"municipality": "0301"})
            assert gone.status_code == 404
            # Its own r-17 is another person: setting it leaves Oslo's alone.
            r = await c.put(
                "/api/v1/residents/r-17", json={"municipality": "4601", "national_id": OLA}
            )
            assert r.status_code == 201
        async with s.client("madm0301") as c:
            one = await c.get("/api/v1/residents/r-17", params={"municipality": "0301"})
            assert one.json()["national_id"] == MASKED
            r = await c.delete("/api/v1/residents/r-17", params={"municipality": "0301"})
            assert r.status_code == 204
            r = await c.delete("/api/v1/residents/r-17", params={"municipality": "0301"})
            assert r.status_code == 404
        assert audit_actions(s) == [
            ("madm0301", "resident.national_id_set", "0301"),
            ("madm0301", "resident.national_id_set", "0301"),
            ("madm0301", "resident.national_ids_listed", "0301"),
            ("madm0301", "resident.national_id_viewed", "0301"),
            ("madm4601", "resident.national_id_set", "4601"),
            ("madm0301", "resident.national_id_viewed", "0301"),
            ("madm0301", "resident.national_id_removed", "0301"),
        ]


async def test_without_a_key_setting_fails_with_one_line_saying_how(
    tmp_path: Path, broker: LocalBroker, client_id: str
) -> None:
    async with stack(tmp_path, broker, client_id, alarms=False) as s, s.client("madm0301") as c:
        r = await c.put(
            "/api/v1/residents/r-17", json={"municipality": "0301", "national_id": KARI}
        )
        assert r.status_code == 409
        error = r.json()["error"]
        assert error["code"] == "resident_key_missing"
        assert "ALARMHUB_RESIDENT_KEY" in error["message"]
        assert "\n" not in error["message"]
        assert db_rows(s.db, "SELECT count(*) FROM residents") == [(0,)]


async def test_alarm_detail_shows_the_number_masked_audited_and_the_journal_state(
    tmp_path: Path, broker: LocalBroker, client_id: str
) -> None:
    async with stack(
        tmp_path, broker, client_id, alarms=False, settings={"resident_key": KEY}
    ) as s:
        await _give_resident(s, "osl-pend-1", "r-17")
        await _give_resident(s, "brg-pend-1", "r-99")  # a resident without a register entry
        async with s.client("madm0301") as c:
            r = await c.put(
                "/api/v1/residents/r-17", json={"municipality": "0301", "national_id": KARI}
            )
            assert r.status_code == 201
        pressed = await s.raise_alarm("osl-pend-1", "o1")
        other_alarm = await s.raise_alarm("brg-pend-1", "b1")
        async with s.client("op0301") as c:
            detail = (await c.get(f"/api/v1/alarms/{pressed}")).json()
            assert detail["national_id_masked"] == MASKED
            assert detail["journal"] == {
                **NO_EXPORT,
                "state": "not_applicable",
                "reason": "journal export not configured",
            }
            queue = await c.get("/api/v1/alarms")
            assert KARI[6:] not in queue.text
        async with s.client("op4601") as c:
            other = (await c.get(f"/api/v1/alarms/{other_alarm}")).json()
            assert other["national_id_masked"] is None
            assert other["journal"] == {
                **NO_EXPORT,
                "state": "not_applicable",
                "reason": "no national id",
            }
        viewed = [a for a in audit_actions(s) if a[1] == "resident.national_id_viewed"]
        assert viewed == [("op0301", "resident.national_id_viewed", "0301")]  # one read, one row


async def test_resolve_takes_cause_and_action_codes_of_the_kinds_list(
    tmp_path: Path, broker: LocalBroker, client_id: str
) -> None:
    async with stack(tmp_path, broker, client_id) as s, s.client("op0301") as c:
        choices = (await c.get("/api/v1/resolution-choices")).json()
        assert "fall" in choices["kinds"]
        default_causes = [x["code"] for x in choices["default"]["causes"]]
        alarm = s.alarms["osl-pend-1"]  # a `button` alarm: the default list
        r = await c.post(
            f"/api/v1/alarms/{alarm}/resolve",
            json={"outcome": "helped", "cause": "fall_injured", "action_taken": "talked"},
        )
        assert r.status_code == 422, r.text
        error = r.json()["error"]
        assert error["allowed"] == default_causes
        assert error["fields"][0]["field"] == "body.cause"
        r = await c.post(
            f"/api/v1/alarms/{alarm}/resolve",
            json={
                "outcome": "helped",
                "cause": "needed_help",
                "cause_text": "could not get up",
                "action_taken": "home_care",
            },
        )
        assert r.status_code == 200, r.text
        out = r.json()
        assert (out["cause"], out["cause_text"], out["action_taken"], out["action_text"]) == (
            "needed_help",
            "could not get up",
            "home_care",
            None,
        )
        assert out["outcome"] == "helped"  # kept as before
        detail = (await c.get(f"/api/v1/alarms/{alarm}")).json()
        resolved = [e for e in detail["timeline"] if e["type"] == "resolved"]
        assert resolved[0]["detail"]["cause_label"] == "Trengte hjelp"
        assert resolved[0]["detail"]["action_taken"] == "home_care"
        stored = db_rows(s.db, "SELECT cause, action_taken FROM alarms WHERE id = ?", (alarm,))
        assert stored == [("needed_help", "home_care")]
        # The old body, outcome only, still resolves.
        async with s.client("op4601") as bergen:
            alarm = s.alarms["brg-pend-1"]
            r = await bergen.post(
                f"/api/v1/alarms/{alarm}/resolve", json={"outcome": "false_alarm"}
            )
            assert r.status_code == 200
            assert r.json()["cause"] is None
