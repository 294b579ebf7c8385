"""A user's HPR number, the journal note's author (issue 17), through the API.

The real stack (Mosquitto, the hub in-process, HTTP on loopback). Who may set whose
number is who may disable whom (`Scope.manages`); every change leaves one audit row.
The CLI's `users set-hpr` is tested with `journal export` (tests/cli/test_journal_cli.py).
"""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from alarmhub.dev.mosquitto import LocalBroker
from tests.support.api_harness import stack
from tests.support.helpers import db_rows


@pytest.mark.broker
async def test_api_sets_an_hpr_number_only_for_whom_the_caller_manages(
    tmp_path: Path, broker: LocalBroker, client_id: str
) -> None:
    async with stack(tmp_path, broker, client_id, alarms=False) as s:
        async with s.client("op0301") as op:
            r = await op.put("/api/v1/users/op0301/hpr", json={"hpr": "1234567"})
            assert r.status_code == 403  # not even their own
        async with s.client("madm0301") as madm:
            for other in ("op4601", "madm4601", "root", "madm0301", "nosuch"):
                r = await madm.put(f"/api/v1/users/{other}/hpr", json={"hpr": "1234567"})
                assert r.status_code == 404, (other, r.text)
                assert (await madm.delete(f"/api/v1/users/{other}/hpr")).status_code == 404
            r = await madm.put("/api/v1/users/op0301/hpr", json={"hpr": " 001234567 "})
            assert r.status_code == 200, r.text
            assert (r.json()["name"], r.json()["hpr"]) == ("op0301", "1234567")
            again = await madm.put("/api/v1/users/op0301/hpr", json={"hpr": "1234567"})
            assert again.json() == r.json()  # the same number: nothing changed
            bad = await madm.put("/api/v1/users/op0301/hpr", json={"hpr": "12a4567"})
            assert bad.status_code == 422
            assert bad.json()["error"]["message"] == "hpr: an HPR number has only the digits 0-9"
            for body in ({}, {"hpr": ""}, {"hpr": "1", "extra": 1}, {"hpr": 1234567}):
                r = await madm.put("/api/v1/users/op0301/hpr", json=body)
                assert r.status_code == 422, (body, r.text)
            listed = {u["name"]: u["hpr"] for u in (await madm.get("/api/v1/users")).json()}
            assert listed == {"op0301": "1234567", "op0301b": None}
        async with s.client("root") as root:
            r = await root.put("/api/v1/users/op4601/hpr", json={"hpr": "7125186"})
            assert (r.status_code, r.json()["hpr"]) == (200, "7125186")
            r = await root.delete("/api/v1/users/op0301/hpr")
            assert (r.status_code, r.json()["hpr"]) == (200, None)
        rows = db_rows(
            s.db,
            "SELECT actor, action, detail FROM audit WHERE action LIKE 'user.hpr%' ORDER BY id",
        )
        assert [(a, b, orjson.loads(c)) for a, b, c in rows] == [
            ("madm0301", "user.hpr_set", {"user": "op0301", "hpr": "1234567"}),
            ("root", "user.hpr_set", {"user": "op4601", "hpr": "7125186"}),
            ("root", "user.hpr_removed", {"user": "op0301"}),
        ]
