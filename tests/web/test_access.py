"""Locking people out (issue 13 #6): disable users, revoke tokens, token lifetime, live streams.

The CLI runs through the real entry point on a real SQLite file; the API and the
live stream run against the real stack (Mosquitto, the hub in-process, HTTP).
"""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import datetime, timedelta
from pathlib import Path

import httpx
import orjson
import pytest

from alarmhub.clock import SystemClock
from alarmhub.core.people import Role, User
from alarmhub.core.tenancy import Scope
from alarmhub.dev.mosquitto import LocalBroker
from alarmhub.store.sqlite import accounts
from alarmhub.store.sqlite.schema import MIGRATIONS
from tests.support.api_harness import Stack, login, stack
from tests.support.helpers import async_wait_until, db_rows, run_cli

STREAM = "/api/v1/alarms/stream"


def _cli(db: Path, *args: str) -> tuple[int, str, str]:
    r = run_cli(list(args), {"ALARMHUB_DATABASE_URL": f"sqlite:///{db}"})
    return r.returncode, r.stdout, r.stderr


# --- who manages whom: a table of plain values -----------------------------------

OP_OSLO = User("op", Role.OPERATOR, ("0301",))
OP_BOTH = User("op2", Role.OPERATOR, ("0301", "4601"))
OP_BERGEN = User("op3", Role.OPERATOR, ("4601",))
MADM_OSLO = User("madm", Role.MUNICIPALITY_ADMIN, ("0301",))
MADM_PEER = User("madm2", Role.MUNICIPALITY_ADMIN, ("0301",))
ADMIN = User("root", Role.ADMIN, ())
ADMIN2 = User("root2", Role.ADMIN, ())


@pytest.mark.parametrize(
    ("actor", "target", "manages"),
    [
        (ADMIN, OP_BERGEN, True),
        (ADMIN, MADM_OSLO, True),
        (ADMIN, ADMIN2, True),
        (ADMIN, ADMIN, False),  # nobody locks themselves out
        (MADM_OSLO, OP_OSLO, True),
        (MADM_OSLO, OP_BOTH, False),  # works for Bergen too: not only Oslo's to manage
        (MADM_OSLO, OP_BERGEN, False),
        (MADM_OSLO, MADM_PEER, False),  # its own role: a peer, not an operator
        (MADM_OSLO, ADMIN, False),  # above its own role
        (MADM_OSLO, MADM_OSLO, False),
        (OP_OSLO, OP_OSLO, False),
        (OP_OSLO, User("x", Role.OPERATOR, ("0301",)), False),
    ],
)
def test_who_manages_whom(actor: User, target: User, manages: bool) -> None:
    assert Scope.of(actor).manages(target) is manages


# --- the command line ----------------------------------------------------------


def test_cli_disable_enable_list_and_revoke(tmp_path: Path) -> None:
    db = tmp_path / "a.db"
    code, out, err = _cli(
        db, "users", "create", "--name", "kari", "--role", "operator", "--municipality", "0301"
    )
    assert code == 0, err
    password = out.strip().splitlines()[-1]
    code, out, err = _cli(db, "tokens", "create", "--user", "kari")
    assert code == 0, err
    token = out.strip().splitlines()[-1]
    now = SystemClock().now()
    with accounts.connect(db) as conn:
        assert accounts.user_for_token(conn, token, now) is not None

    code, out, err = _cli(db, "users", "disable", "--name", "kari")
    assert code == 0, err
    users = orjson.loads(_cli(db, "users", "list", "--json")[1])
    assert [(u["name"], u["active"]) for u in users] == [("kari", False)]
    with accounts.connect(db) as conn:
        assert accounts.user_for_token(conn, token, now) is None
        assert accounts.password_hash_of(conn, "kari") == (None, None)  # login refused
    assert _cli(db, "users", "enable", "--name", "kari")[0] == 0
    with accounts.connect(db) as conn:
        assert accounts.user_for_token(conn, token, now) is not None
        assert accounts.verify_password(accounts.password_hash_of(conn, "kari")[1], password)

    listed = orjson.loads(_cli(db, "tokens", "list", "--user", "kari", "--json")[1])
    assert len(listed) == 1
    assert listed[0]["state"] == "active"
    assert token not in str(listed)  # never the secret
    token_id = listed[0]["id"]
    code, out, err = _cli(db, "tokens", "revoke", token_id)
    assert code == 0, err
    with accounts.connect(db) as conn:
        assert accounts.user_for_token(conn, token, now) is None
    listed = orjson.loads(_cli(db, "tokens", "list", "--json")[1])
    assert listed[0]["state"] == "revoked"
    assert listed[0]["revoked_by"].startswith("cli:")
    code, _, err = _cli(db, "tokens", "revoke", "tok_nosuch")
    assert (code, err) == (1, "alarmhub: no token 'tok_nosuch'\n")  # a message, no traceback
    code, _, err = _cli(db, "users", "disable", "--name", "nosuch")
    assert (code, err) == (1, "alarmhub: no user 'nosuch'\n")
    # Every change is on the audit log.
    actions = [r[0] for r in db_rows(db, "SELECT action FROM audit ORDER BY id")]
    assert actions == [
        "user.created",
        "token.created",
        "user.disabled",
        "user.enabled",
        "token.revoked",
    ]


def test_tokens_expire_by_default_after_the_setting(tmp_path: Path) -> None:
    db = tmp_path / "a.db"
    assert _cli(db, "users", "create", "--name", "kari", "--role", "admin")[0] == 0
    env = {"ALARMHUB_DATABASE_URL": f"sqlite:///{db}", "ALARMHUB_TOKEN_LIFETIME_DAYS": "7"}
    for extra in ([], ["--expires", "2"], ["--never"]):
        r = run_cli(["tokens", "create", "--user", "kari", *extra], env)
        assert r.returncode == 0, r.stderr
    rows = db_rows(db, "SELECT created_at, expires_at FROM api_tokens ORDER BY rowid")
    lifetimes = [
        None
        if e is None
        else round((datetime.fromisoformat(e) - datetime.fromisoformat(c)) / timedelta(days=1))
        for c, e in rows
    ]
    assert lifetimes == [7, 2, None]
    r = run_cli(["tokens", "create", "--user", "kari", "--expires", "2", "--never"], env)
    assert r.returncode == 2


def test_tokens_from_before_the_migration_get_a_revocable_id(tmp_path: Path) -> None:
    db = tmp_path / "a.db"
    [mine] = [i for i, m in enumerate(MIGRATIONS) if "api_tokens ADD COLUMN id" in m]
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE schema_version (version INTEGER)")
    for version, script in enumerate(MIGRATIONS[:mine], start=1):
        conn.executescript(script)
        conn.execute("INSERT INTO schema_version VALUES (?)", (version,))
    conn.execute(
        "INSERT INTO users (name, role, password_hash, created_at) VALUES "
        "('old', 'admin', 'x', '2026-01-01T00:00:00.000000+00:00')"
    )
    old_token = "ahk_old-secret"
    for secret in (old_token, "ahk_another"):
        conn.execute(
            "INSERT INTO api_tokens (token_hash, user_name, created_at) VALUES "
            "(?, 'old', '2026-01-01T00:00:00.000000+00:00')",
            (accounts.digest(secret),),
        )
    conn.commit()
    conn.close()
    listed = orjson.loads(_cli(db, "tokens", "list", "--json")[1])
    ids = [t["id"] for t in listed]
    assert len(set(ids)) == 2
    assert all(i.startswith("tok_") for i in ids)
    now = SystemClock().now()
    with accounts.connect(db) as c:
        assert accounts.user_for_token(c, old_token, now) is not None
    target = next(
        i
        for i in ids
        if db_rows(db, "SELECT token_hash FROM api_tokens WHERE id = ?", (i,))[0][0]
        == accounts.digest(old_token)
    )
    assert _cli(db, "tokens", "revoke", target)[0] == 0
    with accounts.connect(db) as c:
        assert accounts.user_for_token(c, old_token, now) is None
        assert accounts.user_for_token(c, "ahk_another", now) is not None


# --- the API -----------------------------------------------------------------------


@pytest.mark.broker
async def test_api_roles_disable_enable_and_revoke(
    tmp_path: Path, broker: LocalBroker, client_id: str
) -> None:
    async with stack(tmp_path, broker, client_id, alarms=False) as s:
        async with s.client("op0301") as op:
            assert (await op.get("/api/v1/users")).status_code == 403
            assert (await op.post("/api/v1/users/op0301b/disable")).status_code == 403
            assert (await op.get("/api/v1/tokens")).status_code == 403
        async with s.client("madm0301") as madm:
            names = [u["name"] for u in (await madm.get("/api/v1/users")).json()]
            assert names == ["op0301", "op0301b"]  # Oslo's operators only
            # Another municipality's operator, a peer, an admin: all "not found".
            for other in ("op4601", "madm4601", "root", "madm0301", "nosuch"):
                r = await madm.post(f"/api/v1/users/{other}/disable")
                assert r.status_code == 404, (other, r.text)
            tokens = (await madm.get("/api/v1/tokens")).json()
            assert {t["user"] for t in tokens} == {"op0301", "op0301b", "madm0301"}
            r = await madm.post("/api/v1/users/op0301/disable")
            assert r.status_code == 200, r.text
            assert r.json()["active"] is False
        async with s.client("op0301") as op:
            r = await op.get("/api/v1/me")
            assert r.status_code == 401
            assert r.json()["error"]["code"] == "unauthenticated"
        async with s.client("root") as root:
            assert (await root.post("/api/v1/users/op0301/enable")).status_code == 200
            assert {u["name"] for u in (await root.get("/api/v1/users")).json()} == {
                "op0301",
                "op0301b",
                "madm0301",
                "op4601",
                "madm4601",
            }
            [tok] = (await root.get("/api/v1/tokens", params={"user": "op4601"})).json()
            assert tok["state"] == "active"
            assert s.tokens["op4601"] not in str(tok)
            async with s.client("madm0301") as madm:  # not Oslo's: 404, and still valid
                assert (await madm.delete(f"/api/v1/tokens/{tok['id']}")).status_code == 404
            assert (await root.delete(f"/api/v1/tokens/{tok['id']}")).status_code == 204
            assert (await root.delete(f"/api/v1/tokens/{tok['id']}")).status_code == 204
            [tok] = (await root.get("/api/v1/tokens", params={"user": "op4601"})).json()
            assert (tok["state"], tok["revoked_by"]) == ("revoked", "root")
        async with s.client("op0301") as op:
            assert (await op.get("/api/v1/me")).status_code == 200  # enabled again
        async with s.client("op4601") as op:
            assert (await op.get("/api/v1/me")).status_code == 401  # revoked
        rows = db_rows(
            s.db,
            "SELECT actor, action, detail FROM audit WHERE action LIKE 'user.%' "
            "OR action LIKE 'token.%' ORDER BY id",
        )
        assert [(a, b, orjson.loads(c).get("user")) for a, b, c in rows] == [
            ("madm0301", "user.disabled", "op0301"),
            ("root", "user.enabled", "op0301"),
            ("root", "token.revoked", "op4601"),  # once: the second revoke changed nothing
        ]


@pytest.mark.broker
async def test_a_disabled_users_session_ends_and_login_is_refused(
    tmp_path: Path, broker: LocalBroker, client_id: str
) -> None:
    async with (
        stack(tmp_path, broker, client_id, alarms=False) as s,
        httpx.AsyncClient(base_url=s.base, timeout=10) as browser,
        s.client("root") as root,
    ):
        assert (await login(browser, "op0301")).status_code == 303
        assert (await browser.get("/api/v1/me")).status_code == 200
        assert (await root.post("/api/v1/users/op0301/disable")).status_code == 200
        assert (await browser.get("/api/v1/me")).status_code == 401
        assert (await login(browser, "op0301")).status_code == 401
        assert (await root.post("/api/v1/users/op0301/enable")).status_code == 200
        # The old session stays ended: enabling does not bring it back.
        assert (await browser.get("/api/v1/me")).status_code == 401


# --- the live stream -------------------------------------------------------------

# Re-checked every 0.2 s in these tests; the waits below are ceilings far above it.
RECHECK = {"stream_recheck_s": 0.2}
ENDS_WITHIN = 30.0


async def _stream_ends(s: Stack, client: httpx.AsyncClient, lock_out: object) -> None:
    """Open the stream, run `lock_out`, and wait (a ceiling) for the server to end it.

    The stream's listener must be gone afterwards: a leaked one would grow with
    every locked-out reconnect.
    """
    async with client.stream("GET", STREAM) as resp:
        assert resp.status_code == 200
        lines = resp.aiter_lines()
        assert (await asyncio.wait_for(anext(lines), ENDS_WITHIN)).startswith(":")
        await lock_out()  # type: ignore[operator]

        async def drain() -> None:
            async for _ in lines:
                pass

        await asyncio.wait_for(drain(), ENDS_WITHIN)  # TimeoutError: the stream stayed open
    assert await async_wait_until(lambda: s.hub.live.listeners == 0, ENDS_WITHIN)


@pytest.mark.broker
async def test_the_stream_of_a_disabled_user_ends(
    tmp_path: Path, broker: LocalBroker, client_id: str
) -> None:
    async with (
        stack(tmp_path, broker, client_id, alarms=False, settings=RECHECK) as s,
        s.client("op0301") as op,
        s.client("root") as root,
    ):

        async def disable() -> None:
            assert (await root.post("/api/v1/users/op0301/disable")).status_code == 200

        await _stream_ends(s, op, disable)
        assert (await op.get(STREAM)).status_code == 401  # and the reconnect is refused


@pytest.mark.broker
async def test_the_stream_of_a_revoked_token_ends(
    tmp_path: Path, broker: LocalBroker, client_id: str
) -> None:
    async with (
        stack(tmp_path, broker, client_id, alarms=False, settings=RECHECK) as s,
        s.client("op0301") as op,
        s.client("root") as root,
    ):

        async def revoke() -> None:
            [tok] = (await root.get("/api/v1/tokens", params={"user": "op0301"})).json()
            assert (await root.delete(f"/api/v1/tokens/{tok['id']}")).status_code == 204

        await _stream_ends(s, op, revoke)
        # A colleague's stream is untouched by it: the check is per caller.
        async with s.client("op0301b") as other, other.stream("GET", STREAM) as resp:
            assert resp.status_code == 200


@pytest.mark.broker
async def test_the_stream_of_a_logged_out_session_ends(
    tmp_path: Path, broker: LocalBroker, client_id: str
) -> None:
    async with (
        stack(tmp_path, broker, client_id, alarms=False, settings=RECHECK) as s,
        httpx.AsyncClient(base_url=s.base, timeout=10) as browser,
    ):
        assert (await login(browser, "op0301")).status_code == 303
        csrf = browser.cookies["alarmhub_csrf"]

        async def logout() -> None:
            r = await browser.post("/logout", headers={"X-CSRF-Token": csrf})
            assert r.status_code == 303

        # Logging out clears the cookies in this client; the stream keeps its request's.
        await _stream_ends(s, browser, logout)


# --- the re-check itself, on a fake clock ------------------------------------------


async def test_a_busy_stream_is_rechecked_too() -> None:
    """Changes that never stop must not starve the re-check: it is due by the clock as well."""
    from alarmhub.clock import FakeClock  # noqa: PLC0415
    from alarmhub.daemon.fanout import Broadcaster  # noqa: PLC0415
    from alarmhub.web.sse import Recheck, event_stream  # noqa: PLC0415

    clock = FakeClock(SystemClock().now())
    live = Broadcaster()
    checks: list[int] = []
    received: list[int] = []

    async def allowed() -> bool:
        checks.append(received[-1])
        return len(checks) < 3  # the third check says no: locked out

    recheck = Recheck(allowed, 10.0, clock.monotonic)
    # Resuming from 0: the first change, published before the listener exists, is replayed.
    body = event_stream(live, 0, "", lambda _m: True, recheck, 3000)

    async def consume() -> None:
        await anext(body)  # the opening
        for n in range(1, 100):  # a ceiling: without a check by the clock it never ends
            live.publish("alarm", {"n": n})
            try:
                chunk = await anext(body)
            except StopAsyncIteration:
                return
            received.append(orjson.loads(chunk.split(b"data: ")[1].split(b"\n")[0])["n"])
            clock.advance(timedelta(seconds=5))  # two changes per re-check interval

    await asyncio.wait_for(consume(), 30)
    # Due after every second change's 5 s: checked after changes 2, 4 and 6, ended at the third no.
    assert checks == [2, 4, 6]
    assert received == [1, 2, 3, 4, 5, 6]
    assert live.listeners == 0  # the stream's end took its listener away
