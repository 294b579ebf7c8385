"""The tenancy matrix: every endpoint x every role of Oslo (0301) against Bergen's (4601) data.

The promise: one municipality never sees or touches another's data. Each
request must be refused (403/404; 422 where a body names something not in
scope) or, for listings, answer without any trace of Bergen: no id, no label,
no municipality number. Admin is the control that the data is really there.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from alarmhub.core.people import AuditEntry, Role, User
from alarmhub.core.tenancy import GRANTS, Permission, Scope
from alarmhub.dev.mosquitto import LocalBroker
from alarmhub.store.sqlite.tenancy import scope_where
from alarmhub.web.paging import encode_device_cursor
from tests.support.api_harness import BERGEN_LABEL, stack
from tests.support.helpers import async_wait_until, db_count, db_rows, mentions, native
from tests.support.national_ids import KARI

pytestmark = pytest.mark.broker

REFUSED = {403, 404}


def test_scope_sql_and_grants() -> None:
    oslo = Scope.of(User("a", Role.OPERATOR, ("0301", "3201")))
    assert scope_where(oslo) == ("municipality IN (?,?)", ["0301", "3201"])
    assert scope_where(Scope.of(User("b", Role.ADMIN, ("0301",)))) == ("1=1", [])
    assert scope_where(Scope.of(User("c", Role.MUNICIPALITY_ADMIN, ()))) == ("0=1", [])
    assert oslo.allows("0301")
    assert not oslo.allows("4601")
    assert not oslo.allows(None)
    assert Permission.ACT_ON_ALARMS not in GRANTS[Role.MUNICIPALITY_ADMIN]
    assert Permission.READ_REPORTS not in GRANTS[Role.OPERATOR]
    assert Permission.READ_AUDIT in GRANTS[Role.ADMIN]


async def test_oslo_roles_never_see_or_touch_bergen(
    tmp_path: Path, broker: LocalBroker, client_id: str
) -> None:
    async with stack(tmp_path, broker, client_id) as s:
        brg_alarm = s.alarms["brg-pend-1"]
        brg_fall = s.alarms["brg-fall-1"]
        s.pub.publish("alarmhub/v1/brg-pend-1/events", b"{not json")  # a Bergen dead letter
        assert await async_wait_until(
            lambda: db_count(s.db, "SELECT count(*) FROM inbox WHERE verdict='rejected'") == 1
        )
        async with s.client("madm4601") as bergen:
            r = await bergen.post(
                "/api/v1/silences",
                json={
                    "municipality": "4601",
                    "device_id": "brg-pend-1",
                    "reason": "Bergen-only reason",
                    "starts_at": "2026-01-01T00:00:00Z",
                    "ends_at": "2026-12-31T00:00:00Z",
                },
            )
            assert r.status_code == 201, r.text
            silence = r.json()["id"]
        [brg_token] = db_rows(s.db, "SELECT id FROM api_tokens WHERE user_name = 'op4601'")[0]
        secrets = [
            brg_alarm,
            brg_fall,
            "brg-pend-1",
            "brg-fall-1",
            BERGEN_LABEL,
            "4601",
            silence,
            "Bergen-only reason",
            brg_token,
        ]
        silence_0301 = {
            "municipality": "0301",
            "device_id": None,
            "reason": "x",
            "starts_at": "2026-01-01T00:00:00Z",
            "ends_at": "2026-01-02T00:00:00Z",
        }
        device_4601 = {"id": "new-dev", "kind": "safety_alarm", "municipality": "4601"}
        # (method, path, json body or None, raw CSV or None, statuses allowed besides 403/404)
        matrix: list[tuple[str, str, object, str | None, set[int]]] = [
            ("GET", "/api/v1/alarms", None, None, {200}),
            ("GET", "/api/v1/alarms?municipality=4601", None, None, {200}),
            ("GET", "/api/v1/alarms?state=open&limit=500", None, None, {200}),
            ("GET", f"/api/v1/alarms/{brg_alarm}", None, None, set()),
            *[
                ("POST", f"/api/v1/alarms/{brg_alarm}/{a}", None, None, set())
                for a in ("acknowledge", "escalate", "dispatch", "on-site")
            ],
            ("POST", f"/api/v1/alarms/{brg_alarm}/resolve", {"outcome": "x"}, None, set()),
            ("POST", f"/api/v1/alarms/{brg_alarm}/notes", {"note": "x"}, None, set()),
            # A held journal note (issue 17): released or cancelled by its municipality only.
            (
                "POST",
                f"/api/v1/alarms/{brg_alarm}/journal/release",
                {"national_id": KARI},
                None,
                set(),
            ),
            ("POST", f"/api/v1/alarms/{brg_alarm}/journal/cancel", None, None, set()),
            ("GET", "/api/v1/devices", None, None, {200}),
            ("GET", "/api/v1/devices?municipality=4601&include_inactive=true", None, None, {200}),
            # Pages (issue 13 item 3): a cursor naming Bergen's device only says where to
            # start; the filters and the page size change nothing about scope.
            (
                "GET",
                f"/api/v1/devices?limit=1&cursor={encode_device_cursor('4601', '')}",
                None,
                None,
                {200},
            ),
            (
                "GET",
                f"/api/v1/devices?cursor={encode_device_cursor('0000', '')}&active=false",
                None,
                None,
                {200},
            ),
            (
                "GET",
                "/api/v1/devices?municipality=4601&kind=safety_alarm&q=brg&limit=1000",
                None,
                None,
                {200},
            ),
            ("POST", "/api/v1/devices", device_4601, None, set()),
            (
                "POST",
                "/api/v1/devices",
                {**device_4601, "id": "brg-pend-1", "municipality": "0301"},
                None,
                {409},
            ),  # global ids: "not available", nothing more
            ("GET", "/api/v1/devices/brg-pend-1", None, None, set()),
            ("PATCH", "/api/v1/devices/brg-pend-1", {"label": "mine now"}, None, set()),
            ("DELETE", "/api/v1/devices/brg-pend-1", None, None, set()),
            (
                "POST",
                "/api/v1/devices/import",
                None,
                "id,kind,municipality\nnew-dev,door_sensor,4601\n",
                {422},
            ),
            ("GET", "/api/v1/dead-letters", None, None, {200}),
            ("GET", "/api/v1/silences?include_ended=true", None, None, {200}),
            ("POST", "/api/v1/silences", {**silence_0301, "municipality": "4601"}, None, set()),
            ("POST", "/api/v1/silences", {**silence_0301, "device_id": "brg-pend-1"}, None, {422}),
            ("DELETE", f"/api/v1/silences/{silence}", None, None, set()),
            ("GET", "/api/v1/reports/response-times?municipality=4601", None, None, set()),
            ("GET", "/api/v1/reports/response-times", None, None, {200}),
            (
                "GET",
                "/api/v1/reports/response-times?municipality=4601&from=2026-01-01&to=2026-12-31",
                None,
                None,
                set(),
            ),
            (
                "GET",
                "/api/v1/reports/response-times?from=2000-01-01&to=2026-12-31",
                None,
                None,
                {422},
            ),  # over max_report_days
            ("GET", "/api/v1/audit", None, None, set()),
            # Users and tokens (issue 13 #6): Bergen's people are not found, never locked out.
            ("GET", "/api/v1/users", None, None, {200}),
            *[
                ("POST", f"/api/v1/users/{u}/{verb}", None, None, set())
                for u in ("op4601", "madm4601")
                for verb in ("disable", "enable")
            ],
            ("GET", "/api/v1/tokens", None, None, {200}),
            ("GET", "/api/v1/tokens?user=op4601", None, None, {200}),
            ("DELETE", f"/api/v1/tokens/{brg_token}", None, None, set()),
        ]
        failures = []
        for user in ("op0301", "madm0301"):
            async with s.client(user) as c:
                for method, path, body, csv, allowed in matrix:
                    kw: dict[str, object] = {"json": body} if body is not None else {}
                    if csv is not None:
                        kw = {"content": csv, "headers": {"Content-Type": "text/csv"}}
                    r = await c.request(method, path, **kw)  # type: ignore[arg-type]
                    leaked = [x for x in secrets if mentions(r.text, x)]
                    if r.status_code not in REFUSED | allowed or leaked:
                        failures.append((user, method, path, r.status_code, leaked, r.text[:200]))
                    if r.status_code >= 400:
                        assert "error" in r.json(), (user, path, r.text)
                report = (await c.get("/api/v1/reports/response-times")).json()
                if user == "madm0301":  # Bergen's fall alarm must not be counted
                    assert [g["kind"] for g in report["groups"]] == ["button"], report
        assert failures == []
        # Nothing of Bergen's was changed.
        assert (
            db_count(s.db, "SELECT count(*) FROM alarms WHERE municipality='4601' AND state='open'")
            == 2
        )
        assert (
            db_count(
                s.db,
                "SELECT count(*) FROM devices WHERE municipality='4601' AND active=1 AND label LIKE 'Bergen%'",
            )
            == 2
        )
        assert db_count(s.db, "SELECT count(*) FROM silences WHERE deleted_at IS NULL") == 1
        assert db_count(s.db, "SELECT count(*) FROM devices WHERE id='new-dev'") == 0
        assert db_count(s.db, "SELECT count(*) FROM users WHERE active = 1") == 6
        assert db_count(s.db, "SELECT count(*) FROM api_tokens WHERE revoked_at IS NOT NULL") == 0
        # Control: the admin does see Bergen, so the refusals above are about scope.
        async with s.client("root") as admin:
            r = await admin.get(f"/api/v1/alarms/{brg_alarm}")
            assert r.status_code == 200
            assert BERGEN_LABEL in r.text
            assert brg_alarm in (await admin.get("/api/v1/alarms")).text
            assert silence in (await admin.get("/api/v1/silences")).text
            assert "4601" in (await admin.get("/api/v1/dead-letters")).text
            assert "op4601" in (await admin.get("/api/v1/users")).text
            assert brg_token in (await admin.get("/api/v1/tokens")).text


async def test_alarm_detail_keeps_other_tenants_messages_out(
    tmp_path: Path, broker: LocalBroker, client_id: str
) -> None:
    """A device moved from Bergen to Oslo: Oslo sees its new messages, not Bergen's."""
    async with stack(tmp_path, broker, client_id) as s:
        async with s.client("root") as admin:
            r = await admin.post(
                f"/api/v1/alarms/{s.alarms['brg-fall-1']}/resolve", json={"outcome": "ok"}
            )
            assert r.status_code == 200, r.text
            r = await admin.patch(
                "/api/v1/devices/brg-fall-1", json={"municipality": "0301", "label": "moved"}
            )
            assert r.status_code == 200, r.text
        s.pub.publish(*native("brg-fall-1", "after-move", "fall.detected"))
        sql = "SELECT id FROM alarms WHERE device_id='brg-fall-1' AND municipality='0301'"
        assert await async_wait_until(lambda: bool(db_rows(s.db, sql)))
        oslo_alarm = db_rows(s.db, sql)[0][0]
        async with s.client("op0301") as op:
            detail = (await op.get(f"/api/v1/alarms/{oslo_alarm}")).json()
            assert detail["municipality"] == "0301"
            assert [e["msg_id"] for e in detail["recent_events"]] == ["after-move"]
            assert (await op.get(f"/api/v1/alarms/{s.alarms['brg-pend-1']}")).status_code == 404


@pytest.mark.parametrize("how", ["patch", "delete"])
async def test_a_device_moved_away_between_read_and_write_is_left_to_its_new_owners(
    tmp_path: Path, broker: LocalBroker, client_id: str, how: str
) -> None:
    """Oslo's admin reads osl-door-1; before the write, an admin moves it to Bergen.

    The change was made from the row as read, so writing it would move Bergen's
    device home and undo Bergen's changes (or decommission it). Checked inside the
    write's transaction: 409 `device_moved`, nothing written, nothing audited.
    """
    async with stack(tmp_path, broker, client_id, alarms=False) as s:
        reads = s.hub.directory
        read = reads.get_device
        moved = False

        async def read_then_move(scope: Scope, device_id: str) -> dict[str, object] | None:
            nonlocal moved
            found = await read(scope, device_id)
            if scope.user == "madm0301" and not moved:
                moved = True
                device = s.hub.state.devices[device_id]
                await s.hub.register_devices(
                    [replace(device, municipality="4601", label="Bergen now")],
                    audit=[AuditEntry("root", "device.changed", s.hub.clock.now())],
                )
            return found

        reads.get_device = read_then_move  # type: ignore[method-assign]
        async with s.client("madm0301") as oslo:
            if how == "patch":
                r = await oslo.patch("/api/v1/devices/osl-door-1", json={"label": "Oslo label"})
            else:
                r = await oslo.delete("/api/v1/devices/osl-door-1")
        assert moved
        assert r.status_code == 409, r.text
        assert r.json()["error"]["code"] == "device_moved"
        rows = db_rows(
            s.db, "SELECT municipality, label, active FROM devices WHERE id='osl-door-1'"
        )
        assert rows == [("4601", "Bergen now", 1)]
        assert db_count(s.db, "SELECT count(*) FROM audit WHERE actor = 'madm0301'") == 0
        assert s.hub.state.devices["osl-door-1"].municipality == "4601"
