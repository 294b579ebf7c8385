"""The JSON API over real HTTP against a real store, broker and hub."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
import pytest

from alarmhub.core.tenancy import Scope
from alarmhub.dev.mosquitto import LocalBroker
from alarmhub.store.sqlite import accounts, tenancy
from tests.support.api_harness import login, stack
from tests.support.helpers import db_rows, run_cli

pytestmark = pytest.mark.broker

PUBLIC = {"/healthz", "/readyz", "/login"}


def _concrete(path: str) -> str:
    return path.replace("{alarm_id}", "x").replace("{device_id}", "x").replace("{silence_id}", "x")


async def test_every_route_needs_authentication(
    tmp_path: Path, broker: LocalBroker, client_id: str
) -> None:
    async with stack(tmp_path, broker, client_id, alarms=False) as s, s.client() as anon:
        doc = (await anon.get("/api/v1/openapi.json")).json()
        checked = 0
        for path, ops in doc["paths"].items():
            for method in ops:
                if path in PUBLIC:
                    continue
                for headers in (
                    {},
                    {"Authorization": "Bearer ahk_not-a-token"},
                    {"Authorization": "Basic cm9vdDpyb290"},
                    {"Cookie": "alarmhub_session=forged"},
                ):
                    r = await anon.request(method.upper(), _concrete(path), headers=headers)
                    assert r.status_code == 401, (method, path, headers, r.status_code, r.text)
                    assert r.json()["error"]["code"] == "unauthenticated"
                    checked += 1
        # Every /api/v1 operation was enumerated (a new route is covered automatically).
        assert checked >= 4 * 20, checked
        assert (await anon.get("/healthz")).status_code == 200


async def test_login_cookie_csrf_and_logout(
    tmp_path: Path, broker: LocalBroker, client_id: str
) -> None:
    async with stack(tmp_path, broker, client_id) as s, s.client() as browser:
        wrong = await login(browser, "op0301", "wrong password!!")
        assert wrong.status_code == 401
        assert wrong.json()["error"]["code"] == "invalid_credentials"
        html = await browser.post(
            "/login",
            data={"username": "op0301", "password": "nope"},
            headers={"Accept": "text/html"},
        )
        assert (html.status_code, html.headers["location"]) == (303, "/login?error=invalid")

        r = await login(browser, "op0301")
        assert (r.status_code, r.headers["location"]) == (303, "/")
        cookies = {c.split("=", 1)[0]: c.lower() for c in r.headers.get_list("set-cookie")}
        assert "httponly" in cookies["alarmhub_session"]
        assert "samesite=strict" in cookies["alarmhub_session"]
        assert "secure" not in cookies["alarmhub_session"]
        assert "httponly" not in cookies["alarmhub_csrf"]
        me = await browser.get("/api/v1/me")
        assert me.json() == {
            "name": "op0301",
            "role": "operator",
            "municipalities": ["0301"],
            "all_municipalities": False,
            # An operator's GRANTS, in Permission's order (the pages read this).
            "permissions": ["read_alarms", "act_on_alarms", "read_devices", "read_silences"],
        }

        alarm = s.alarms["osl-pend-1"]
        no_csrf = await browser.post(f"/api/v1/alarms/{alarm}/notes", json={"note": "x"})
        assert (no_csrf.status_code, no_csrf.json()["error"]["code"]) == (403, "csrf")
        bad = await browser.post(
            f"/api/v1/alarms/{alarm}/notes", json={"note": "x"}, headers={"X-CSRF-Token": "guess"}
        )
        assert bad.status_code == 403
        csrf = browser.cookies["alarmhub_csrf"]
        ok = await browser.post(
            f"/api/v1/alarms/{alarm}/acknowledge", headers={"X-CSRF-Token": csrf}
        )
        assert ok.status_code == 200, ok.text
        assert ok.json()["acknowledged_by"] == "op0301"

        out = await browser.post("/logout", headers={"X-CSRF-Token": csrf})
        assert out.status_code == 303
        assert (await browser.get("/api/v1/me")).status_code == 401

        async with s.client() as proxied:
            r = await login(proxied, "op0301b", **{"X-Forwarded-Proto": "https"})
            assert all("secure" in c.lower() for c in r.headers.get_list("set-cookie"))
        # The setup's CLI import is audited too (issue 13 item 4): only the people's here.
        actions = [
            row[0]
            for row in db_rows(
                s.db, "SELECT action FROM audit WHERE actor NOT LIKE 'cli:%' ORDER BY id"
            )
        ]
        assert actions == [
            "login.failed",
            "login.failed",
            "login",
            "alarm.acknowledge",
            "logout",
            "login",
        ]
        assert db_rows(s.db, "SELECT address FROM audit WHERE action='login'")[0] == ("127.0.0.1",)


async def test_a_login_or_logout_that_cannot_be_audited_changes_no_session(
    tmp_path: Path, broker: LocalBroker, client_id: str
) -> None:
    # Review of 2026-12-06 (second session): a failed logout audit used to end the
    # session unrecorded, a failed login audit to leave a session row behind.
    def sessions() -> int:
        return int(db_rows(s.db, "SELECT count(*) FROM sessions")[0][0])

    async with stack(tmp_path, broker, client_id, alarms=False) as s, s.client() as c:
        assert (await login(c, "op0301")).status_code == 303
        with accounts.connect(s.db) as conn:
            conn.execute(
                "CREATE TRIGGER t_fail BEFORE INSERT ON audit WHEN NEW.action IN "
                "('logout','login') BEGIN SELECT RAISE(ABORT, 'audit write failed'); END"
            )
        out = await c.post("/logout", headers={"X-CSRF-Token": c.cookies["alarmhub_csrf"]})
        assert (out.status_code, sessions()) == (500, 1)
        async with s.client() as other:
            assert (await login(other, "op0301")).status_code == 500
        assert sessions() == 1
        assert (await c.get("/api/v1/me")).status_code == 200


async def test_login_is_rate_limited_per_user_and_address(
    tmp_path: Path, broker: LocalBroker, client_id: str
) -> None:
    async with stack(tmp_path, broker, client_id, alarms=False) as s, s.client() as c:
        codes = [(await login(c, "op0301", "wrong-password")).status_code for _ in range(5)]
        assert codes == [401] * 5
        limited = await login(c, "op0301")  # even the right password, for now
        assert limited.status_code == 429
        assert 1 <= int(limited.headers["Retry-After"]) <= 60
        assert limited.json()["error"]["code"] == "rate_limited"
        # Only that (user name, address) pair: another user at the same address (one
        # response centre behind one NAT) is not slowed (tests/web/test_login_limiter.py).
        assert (await login(c, "op4601")).status_code == 303


async def test_two_operators_acknowledging_at_once(
    tmp_path: Path, broker: LocalBroker, client_id: str
) -> None:
    async with stack(tmp_path, broker, client_id) as s:
        alarm = s.alarms["osl-pend-1"]
        async with s.client("op0301") as a, s.client("op0301b") as b:
            ra, rb = await asyncio.gather(
                a.post(f"/api/v1/alarms/{alarm}/acknowledge"),
                b.post(f"/api/v1/alarms/{alarm}/acknowledge"),
            )
        assert sorted([ra.status_code, rb.status_code]) == [200, 409]
        winner, loser = (ra, rb) if ra.status_code == 200 else (rb, ra)
        holder = winner.json()["acknowledged_by"]
        err = loser.json()["error"]
        assert err["code"] == "already_acknowledged"
        assert err["holder"] == holder
        assert err["message"].endswith(f"by {holder}")
        assert db_rows(s.db, "SELECT count(*) FROM timeline WHERE type='acknowledged'") == [(1,)]


async def test_queue_order_pagination_detail_and_actions(
    tmp_path: Path, broker: LocalBroker, client_id: str
) -> None:
    async with stack(tmp_path, broker, client_id) as s:
        await s.raise_alarm("osl-door-1", "d1", "tamper")
        async with (
            s.client("root") as admin,
            s.client("op0301") as op,
            s.client("madm0301") as madm,
        ):
            page = (await admin.get("/api/v1/alarms", params={"limit": 1})).json()
            seen = [page["items"][0]]
            totals = [page["total"]]  # every page says how many there are in all
            while page["next_cursor"]:
                page = (
                    await admin.get(
                        "/api/v1/alarms", params={"limit": 1, "cursor": page["next_cursor"]}
                    )
                ).json()
                seen += page["items"]
                totals.append(page["total"])
            whole = (await admin.get("/api/v1/alarms")).json()["items"]
            assert [a["id"] for a in seen] == [a["id"] for a in whole]
            assert len(whole) == 4
            assert totals == [4, 4, 4, 4]
            # Counted within the caller's municipalities and the filters, not the page.
            only: dict[str, str | int] = {"limit": 1, "state": "open", "municipality": "0301"}
            assert (await admin.get("/api/v1/alarms", params=only)).json()["total"] == sum(
                a["state"] == "open" and a["municipality"] == "0301" for a in whole
            )
            keys = [(a["priority"], a["raised_at"]) for a in whole]
            assert keys == sorted(keys)
            mine_page = (await op.get("/api/v1/alarms")).json()
            mine = mine_page["items"]
            assert {a["municipality"] for a in mine} == {"0301"}
            assert mine_page["total"] == len(mine) < len(whole)
            bad = await op.get("/api/v1/alarms", params={"cursor": "!!"})
            assert bad.status_code == 422
            assert bad.json()["error"]["fields"][0]["field"] == "query.cursor"

            alarm = s.alarms["osl-pend-1"]
            detail = (await op.get(f"/api/v1/alarms/{alarm}")).json()
            assert detail["device"]["label"] == "Oslo-resident-1"
            assert detail["timeline"][0]["type"] == "raised"
            assert detail["recent_events"][0]["msg_id"] == "o1"

            assert (await madm.post(f"/api/v1/alarms/{alarm}/acknowledge")).status_code == 403
            for action, body in [
                ("escalate", None),
                ("dispatch", {"note": "car 3"}),
                ("on-site", None),
                ("notes", {"note": "resident fine"}),
            ]:
                r = await op.post(f"/api/v1/alarms/{alarm}/{action}", json=body)
                assert r.status_code == 200, (action, r.text)
            missing_outcome = await op.post(f"/api/v1/alarms/{alarm}/resolve", json={})
            assert missing_outcome.status_code == 422
            assert missing_outcome.json()["error"]["fields"][0]["field"] == "body.outcome"
            done = await op.post(f"/api/v1/alarms/{alarm}/resolve", json={"outcome": "helped"})
            assert done.json()["state"] == "resolved"
            again = await op.post(f"/api/v1/alarms/{alarm}/resolve", json={"outcome": "helped"})
            assert (again.status_code, again.json()["error"]["code"]) == (409, "already_resolved")
            timeline = (await op.get(f"/api/v1/alarms/{alarm}")).json()["timeline"]
            types = [t["type"] for t in timeline if t["actor"] == "op0301"]
            assert types == [
                "acknowledged",
                "escalated",
                "responder_dispatched",
                "responder_on_site",
                "note",
                "resolved",
            ]
            audit = (await admin.get("/api/v1/audit")).json()
            # Reading an alarm's detail is audited too (health data): who looked, when.
            assert audit[0]["action"] == "alarm.viewed"
            assert (audit[0]["actor"], audit[0]["alarm_id"]) == ("op0301", alarm)
            changes = [a for a in audit if a["action"] != "alarm.viewed"]
            assert [a["action"] for a in changes][:5] == [
                "alarm.resolve",
                "alarm.notes",
                "alarm.on-site",
                "alarm.dispatch",
                "alarm.escalate",
            ]
            assert changes[0]["municipality"] == "0301"
            assert changes[0]["actor"] == "op0301"
            assert (await op.get("/api/v1/audit")).status_code == 403
        counter = s.hub.metrics.http_requests
        assert counter.labels("/api/v1/alarms/{alarm_id}/resolve", "409")._value.get() == 1
        assert counter.labels("/api/v1/alarms", "200")._value.get() >= 5


async def test_errors_are_json_with_the_right_status(
    tmp_path: Path, broker: LocalBroker, client_id: str
) -> None:
    async with stack(tmp_path, broker, client_id) as s, s.client("root") as c:
        alarm = s.alarms["osl-pend-1"]
        r = await c.post(
            f"/api/v1/alarms/{alarm}/notes",
            content=b"{not json",
            headers={"Content-Type": "application/json"},
        )
        assert (r.status_code, r.json()["error"]["code"]) == (400, "malformed_json")
        r = await c.post(f"/api/v1/alarms/{alarm}/notes", json={"note": ""})
        assert r.status_code == 422
        assert r.json()["error"]["fields"][0]["field"] == "body.note"
        r = await c.post(
            "/api/v1/devices/import",
            content=b"a" * (1024 * 1024 + 10),
            headers={"Content-Type": "text/csv"},
        )
        assert (r.status_code, r.json()["error"]["code"]) == (413, "too_large")
        r = await c.get("/api/v1/nothing-here")
        assert (r.status_code, r.json()["error"]["code"]) == (404, "not_found")
        r = await c.get("/api/v1/alarms/no-such-alarm")
        assert (r.status_code, r.json()["error"]["code"]) == (404, "not_found")


async def test_devices_and_silences_lifecycle(
    tmp_path: Path, broker: LocalBroker, client_id: str
) -> None:
    async with stack(tmp_path, broker, client_id, alarms=False) as s, s.client("madm0301") as m:
        r = await m.post(
            "/api/v1/devices",
            json={
                "id": "osl-new",
                "kind": "fall_sensor",
                "municipality": "0301",
                "label": "room 2",
            },
        )
        assert r.status_code == 201, r.text
        assert (
            await m.post(
                "/api/v1/devices",
                json={"id": "brg-pend-1", "kind": "fall_sensor", "municipality": "0301"},
            )
        ).status_code == 409
        r = await m.patch(
            "/api/v1/devices/osl-new", json={"label": "room 3", "heartbeat_interval_s": 600}
        )
        assert (r.json()["label"], r.json()["heartbeat_interval_s"]) == ("room 3", 600)
        r = await m.delete("/api/v1/devices/osl-new")
        assert r.json()["active"] is False
        listed = [d["id"] for d in (await m.get("/api/v1/devices")).json()]
        assert "osl-new" not in listed
        assert "osl-pend-1" in listed
        assert "osl-new" in [
            d["id"] for d in (await m.get("/api/v1/devices?include_inactive=true")).json()
        ]

        csv = "id,kind,municipality\nosl-a,door_sensor,0301\nosl-b,teleporter,0301\n"
        r = await m.post(
            "/api/v1/devices/import", content=csv, headers={"Content-Type": "text/csv"}
        )
        assert r.status_code == 422
        assert r.json()["error"]["rows"] == [
            (
                "line 3: kind 'teleporter' is not one of: safety_alarm, "
                "door_sensor, fall_sensor, gps_tracker, medication_dispenser"
            )
        ]
        assert db_rows(s.db, "SELECT count(*) FROM devices WHERE id='osl-a'") == [(0,)]
        good = "id,kind,municipality,label\nosl-a,door_sensor,0301,hall\nosl-b,gps_tracker,0301,\n"
        r = await m.post(
            "/api/v1/devices/import", content=good, headers={"Content-Type": "text/csv"}
        )
        assert r.json() == {"imported": 2}

        body = {
            "municipality": "0301",
            "device_id": "osl-a",
            "starts_at": "2026-01-01T00:00:00Z",
            "ends_at": "2026-12-31T00:00:00Z",
            "reason": "renovation",
        }
        created = await m.post("/api/v1/silences", json=body)
        assert created.status_code == 201, created.text
        sid = created.json()["id"]
        assert [x["id"] for x in (await m.get("/api/v1/silences")).json()] == [sid]
        assert (
            await m.post("/api/v1/silences", json={**body, "ends_at": "2025-01-01T00:00:00Z"})
        ).status_code == 422
        with accounts.connect(s.db) as conn:
            active = tenancy.list_silences(
                conn, Scope.everything("test"), s.hub.clock.now(), include_ended=False
            )
        assert [a.device_id for a in active] == ["osl-a"]
        assert (await m.delete(f"/api/v1/silences/{sid}")).status_code == 204
        assert (await m.get("/api/v1/silences")).json() == []
        actions = [
            r[0]
            for r in db_rows(
                s.db, "SELECT action FROM audit WHERE actor NOT LIKE 'cli:%' ORDER BY id"
            )
        ]
        assert actions == [
            "device.created",
            "device.changed",
            "device.decommissioned",
            "device.imported",
            "silence.created",
            "silence.ended",
        ]
        async with s.client("op0301") as op:
            assert (await op.post("/api/v1/silences", json=body)).status_code == 403
            assert (await op.delete("/api/v1/devices/osl-a")).status_code == 403


async def test_cli_accounts_beside_the_running_daemon(
    tmp_path: Path, broker: LocalBroker, client_id: str
) -> None:
    async with stack(tmp_path, broker, client_id) as s:
        env = {"ALARMHUB_DATABASE_URL": f"sqlite:///{s.db}"}
        made = run_cli(
            ["users", "create", "--name", "kari", "--role", "operator", "--municipality", "4601"],
            env,
        )
        assert made.returncode == 0, made.stderr
        password = made.stdout.strip().splitlines()[-1]
        tok = run_cli(["tokens", "create", "--user", "kari", "--expires", "1"], env)
        assert tok.returncode == 0, tok.stderr
        token = tok.stdout.strip().splitlines()[-1]
        async with s.client() as c:
            me = await c.get("/api/v1/me", headers={"Authorization": f"Bearer {token}"})
            assert me.json()["name"] == "kari"
            assert (await login(c, "kari", password)).status_code == 303
        assert (
            run_cli(["users", "create", "--name", "kari", "--role", "admin"], env).returncode == 1
        )
        assert (
            run_cli(["users", "create", "--name", "x", "--role", "operator"], env).returncode == 2
        )
        assert run_cli(["tokens", "create", "--user", "nobody"], env).returncode == 1
        audit = run_cli(["audit", "list", "--json", "--limit", "3"], env)
        assert [a["action"] for a in orjson.loads(audit.stdout)] == [
            "login",
            "token.created",
            "user.created",
        ]
        rep = run_cli(
            ["report", "response-times", "--municipality", "4601", "--format", "csv"], env
        )
        assert rep.returncode == 0, rep.stderr
        assert rep.stdout.splitlines()[0].startswith("priority,kind,alarms,")
        assert len(rep.stdout.splitlines()) == 3  # button and fall in Bergen


async def test_chunked_oversized_body_is_413_json(
    tmp_path: Path, broker: LocalBroker, client_id: str
) -> None:
    async with stack(tmp_path, broker, client_id, alarms=False) as s, s.client("root") as c:

        async def chunks():
            for _ in range(20):
                yield b"x" * 65536

        r = await c.post(
            "/api/v1/devices/import", content=chunks(), headers={"Content-Type": "text/csv"}
        )
        assert (r.status_code, r.json()["error"]["code"]) == (413, "too_large")
