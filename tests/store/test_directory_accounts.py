"""One suite for the Directory port, run on both stores: people (Accounts, Access).

The same three runs as test_directory_contract.py (SQLite, PostgreSQL, PostgreSQL
sorting as nb_NO). Users, tokens and sessions; tokens and session ids kept as
sha256 digests only; every change and its audit rows in one transaction (an
audit insert made to fail takes the change with it); the audit table refusing to
be changed; and changes that several instances might make at once happening once.
"""

from __future__ import annotations

import asyncio
import hashlib
from datetime import timedelta

import pytest

from alarmhub.core.people import AuditEntry, Role, User
from alarmhub.core.tenancy import Scope
from alarmhub.store.accounts import everyone, ts
from alarmhub.store.errors import AccountError
from tests.store.directory_backends import (
    ALL,
    DATABASE_ERRORS,
    NOW,
    Backend,
    entry,
    silence,
)

# --- accounts ---------------------------------------------------------------------------


async def test_users_are_created_with_their_audit_and_never_twice(backend: Backend) -> None:
    d = backend.directory
    made = entry("user.created", user="kari", role="operator", municipalities=["0301"])
    user = await d.create_user("kari", Role.OPERATOR, ["0301"], "argon-hash", NOW, [made])
    assert user == User("kari", Role.OPERATOR, ("0301",))
    assert await d.password_hash_of("kari") == (user, "argon-hash")
    assert await d.password_hash_of("nobody") == (None, None)

    with pytest.raises(AccountError, match="already exists"):
        await d.create_user("kari", Role.ADMIN, [], "other", NOW, [entry("user.created")])
    assert await d.password_hash_of("kari") == (user, "argon-hash")
    [row] = await d.list_audit()
    assert {k: v for k, v in row.items() if k != "id"} == {
        "at": ts(NOW),
        "actor": "cli:root",
        "action": "user.created",
        "alarm_id": None,
        "device_id": None,
        "municipality": None,
        "address": None,
        "detail": {"user": "kari", "role": "operator", "municipalities": ["0301"]},
    }

    await d.create_user("root", Role.ADMIN, [], "h2", NOW + timedelta(seconds=1), [])
    listed = await d.list_users(everyone)
    assert [u.json() for u in listed] == [
        {
            "name": "kari",
            "role": "operator",
            "municipalities": ["0301"],
            "active": True,
            "created_at": ts(NOW),
            "hpr": None,
        },
        {
            "name": "root",
            "role": "admin",
            "municipalities": [],
            "active": True,
            "created_at": ts(NOW + timedelta(seconds=1)),
            "hpr": None,
        },
    ]
    oslo_only = Scope("madm", Role.MUNICIPALITY_ADMIN, frozenset({"0301"})).manages
    assert [u.user.name for u in await d.list_users(oslo_only)] == ["kari"]
    assert await d.find_user(oslo_only, "root") is None


async def test_disabling_a_user_locks_them_out_once_with_one_audit_row(backend: Backend) -> None:
    d = backend.directory
    await d.create_user("kari", Role.OPERATOR, ["0301"], "h", NOW, [])
    token = await d.create_token("kari", NOW, None, [])
    sid, _csrf = await d.create_session("kari", NOW, NOW + timedelta(hours=8), [])

    assert await d.set_active(everyone, "kari", False, entry("user.disabled", user="kari"))
    assert not await d.set_active(everyone, "kari", False, entry("user.disabled", user="kari"))
    assert await d.password_hash_of("kari") == (None, None)
    assert await d.user_for_token(token, NOW) is None
    assert await d.session(sid, NOW) is None
    found = await d.find_user(everyone, "kari")
    assert found is not None
    assert not found.user.active

    assert await d.set_active(everyone, "kari", True, entry("user.enabled", user="kari"))
    assert await d.user_for_token(token, NOW) == User("kari", Role.OPERATOR, ("0301",))
    assert await d.session(sid, NOW) is None  # the old session stays ended
    assert [r["action"] for r in await d.list_audit()] == ["user.enabled", "user.disabled"]

    with pytest.raises(AccountError, match="no user"):
        await d.set_active(everyone, "nobody", False, entry("user.disabled"))
    bergen_admin = Scope("madm", Role.MUNICIPALITY_ADMIN, frozenset({"4601"})).manages
    with pytest.raises(AccountError, match="no user"):  # out of sight is not found
        await d.set_active(bergen_admin, "kari", False, entry("user.disabled"))
    assert len(await d.list_audit()) == 2


async def test_an_hpr_number_is_set_changed_and_removed_with_one_audit_row_each(
    backend: Backend,
) -> None:
    """The journal note's author (issue 17), kept on the user record (read for the note by
    the store's hpr_of: test_store_contract.py)."""
    d = backend.directory
    await d.create_user("kari", Role.OPERATOR, ["0301"], "h", NOW, [])

    async def hpr_of(name: str) -> str | None:
        found = await d.find_user(everyone, name)
        return None if found is None else found.hpr

    assert await hpr_of("kari") is None

    assert await d.set_hpr(everyone, "kari", "1234567", entry("user.hpr_set", hpr="1234567"))
    assert not await d.set_hpr(everyone, "kari", "1234567", entry("user.hpr_set"))
    assert await hpr_of("kari") == "1234567"
    found = await d.find_user(everyone, "kari")
    assert found is not None
    assert (found.hpr, found.json()["hpr"]) == ("1234567", "1234567")
    assert [u.hpr for u in await d.list_users(everyone)] == ["1234567"]
    # Setting it changes nothing else: she still logs in as before.
    assert await d.password_hash_of("kari") == (User("kari", Role.OPERATOR, ("0301",)), "h")

    assert await d.set_hpr(everyone, "kari", "7125186", entry("user.hpr_set", hpr="7125186"))
    assert await hpr_of("kari") == "7125186"
    assert await d.set_hpr(everyone, "kari", None, entry("user.hpr_removed"))
    assert not await d.set_hpr(everyone, "kari", None, entry("user.hpr_removed"))
    assert await hpr_of("kari") is None
    audit = await d.list_audit()
    assert [(r["action"], r["detail"]) for r in audit] == [
        ("user.hpr_removed", {}),
        ("user.hpr_set", {"hpr": "7125186"}),
        ("user.hpr_set", {"hpr": "1234567"}),
    ]

    with pytest.raises(AccountError, match="no user"):
        await d.set_hpr(everyone, "nobody", "1", entry("user.hpr_set"))
    bergen_admin = Scope("madm", Role.MUNICIPALITY_ADMIN, frozenset({"4601"})).manages
    with pytest.raises(AccountError, match="no user"):  # another municipality's: not found
        await d.set_hpr(bergen_admin, "kari", "1", entry("user.hpr_set"))
    assert await hpr_of("kari") is None
    assert len(await d.list_audit()) == 3


async def test_an_hpr_number_whose_audit_fails_is_not_stored(backend: Backend) -> None:
    d = backend.directory
    await d.create_user("kari", Role.OPERATOR, ["0301"], "h", NOW, [])
    await backend.fail_audit("user.hpr_set")
    with pytest.raises(DATABASE_ERRORS, match="injected fault"):
        await d.set_hpr(everyone, "kari", "1234567", entry("user.hpr_set"))
    await backend.heal_audit()
    found = await d.find_user(everyone, "kari")
    assert found is not None
    assert found.hpr is None
    assert await d.list_audit() == []


async def test_tokens_are_digests_that_expire_and_revoke_once(backend: Backend) -> None:
    d = backend.directory
    await d.create_user("kari", Role.OPERATOR, ["0301"], "h", NOW, [])
    await d.create_user("per", Role.OPERATOR, ["4601"], "h", NOW, [])
    expires = NOW + timedelta(days=1)
    token = await d.create_token("kari", NOW, expires, [entry("token.created", user="kari")])
    forever = await d.create_token("per", NOW + timedelta(seconds=1), None, [])
    assert token.startswith("ahk_")
    digest = hashlib.sha256(token.encode()).hexdigest()
    assert (
        await backend.scalar(f"SELECT count(*) FROM api_tokens WHERE token_hash = '{digest}'") == 1
    )
    assert (
        await backend.scalar(f"SELECT count(*) FROM api_tokens WHERE token_hash = '{token}'") == 0
    )

    kari = User("kari", Role.OPERATOR, ("0301",))
    assert await d.user_for_token(token, expires - timedelta(microseconds=1)) == kari
    assert await d.user_for_token(token, expires) is None
    assert await d.user_for_token("ahk_made-up", NOW) is None

    rows = await d.list_tokens(everyone, None)
    assert [(r.user, r.created_at, r.expires_at, r.revoked_at) for r in rows] == [
        ("kari", ts(NOW), ts(expires), None),
        ("per", ts(NOW + timedelta(seconds=1)), None, None),
    ]
    assert [r.state(expires) for r in rows] == ["expired", "active"]
    assert [r.user for r in await d.list_tokens(everyone, "per")] == ["per"]
    oslo_admin = Scope("madm", Role.MUNICIPALITY_ADMIN, frozenset({"0301"})).manages
    assert [r.user for r in await d.list_tokens(oslo_admin, None)] == ["kari"]

    per_id = rows[1].id
    with pytest.raises(AccountError, match="no token"):
        await d.revoke_token(oslo_admin, per_id, entry("token.revoked"))
    revoked = await d.revoke_token(everyone, per_id, entry("token.revoked"))
    assert (revoked.revoked_at, revoked.revoked_by) == (ts(NOW), "cli:root")
    assert revoked.state(NOW) == "revoked"
    assert await d.user_for_token(forever, NOW) is None
    again = await d.revoke_token(everyone, per_id, entry("token.revoked"))
    assert again == revoked
    with pytest.raises(AccountError, match="no token"):
        await d.revoke_token(everyone, "tok_unknown", entry("token.revoked"))
    with pytest.raises(AccountError, match="no user"):
        await d.create_token("nobody", NOW, None, [entry("token.created", user="nobody")])

    audit = await d.list_audit()
    assert [(r["action"], r["detail"]) for r in audit] == [
        ("token.revoked", {"token_id": per_id, "user": "per"}),
        ("token.created", {"user": "kari"}),
    ]


async def test_sessions_are_digests_that_expire_and_end(backend: Backend) -> None:
    d = backend.directory
    await d.create_user("kari", Role.OPERATOR, ["0301"], "h", NOW, [])
    ends = NOW + timedelta(hours=8)
    sid, csrf = await d.create_session("kari", NOW, ends, [])
    digest = hashlib.sha256(sid.encode()).hexdigest()
    assert await backend.scalar(f"SELECT count(*) FROM sessions WHERE id_hash = '{digest}'") == 1

    got = await d.session(sid, NOW)
    assert got is not None
    assert (got.user, got.csrf, got.expires_at) == (
        User("kari", Role.OPERATOR, ("0301",)),
        csrf,
        ends,
    )
    assert await d.session(sid, ends) is None
    assert await d.session("made-up", NOW) is None

    # A session created after the first expired sweeps it away.
    later, _ = await d.create_session("kari", ends, ends + timedelta(hours=8), [])
    assert await backend.scalar("SELECT count(*) FROM sessions") == 1
    await d.delete_session(later, [])
    assert await d.session(later, ends) is None
    assert await backend.scalar("SELECT count(*) FROM sessions") == 0


async def test_the_audit_log_lists_newest_first_and_keeps_text(backend: Backend) -> None:
    d = backend.directory
    for i in range(5):
        await d.audit(
            AuditEntry(
                "kari",
                "login",
                NOW + timedelta(seconds=i),
                address="10.0.0.1",
                alarm_id="a-1",
                device_id="osl-1",
                municipality="0301",
                detail={"i": i, "place": "Tromsø – Ålesund"},
            )
        )
    rows = await d.list_audit(limit=3)
    assert [r["detail"]["i"] for r in rows] == [4, 3, 2]
    assert rows[0]["at"] == ts(NOW + timedelta(seconds=4))
    assert rows[0]["detail"]["place"] == "Tromsø – Ålesund"
    assert (rows[0]["address"], rows[0]["municipality"]) == ("10.0.0.1", "0301")
    assert rows[0]["id"] > rows[1]["id"] > rows[2]["id"]


# --- one transaction, and a log that cannot be rewritten ---------------------------------


async def test_a_silence_whose_audit_fails_is_not_stored(backend: Backend) -> None:
    d = backend.directory
    await backend.fail_audit("silence.created")
    with pytest.raises(DATABASE_ERRORS, match="injected fault"):
        await d.insert_silence(silence("s-1", "0301"), [entry("silence.created")])
    assert await d.list_silences(ALL, NOW, include_ended=True) == []
    assert await d.list_audit() == []

    # Another action's audit still goes in, with its silence.
    await d.insert_silence(silence("s-2", "0301"), [entry("silence.imported")])
    assert [s.id for s in await d.list_silences(ALL, NOW, include_ended=True)] == ["s-2"]
    assert [r["action"] for r in await d.list_audit()] == ["silence.imported"]


async def test_a_change_whose_audit_fails_is_rolled_back(backend: Backend) -> None:
    d = backend.directory
    await d.create_user("kari", Role.OPERATOR, ["0301"], "h", NOW, [])
    token = await d.create_token("kari", NOW, None, [])
    [row] = await d.list_tokens(everyone, None)

    await backend.fail_audit("user.disabled")
    with pytest.raises(DATABASE_ERRORS, match="injected fault"):
        await d.set_active(everyone, "kari", False, entry("user.disabled"))
    assert await d.user_for_token(token, NOW) is not None
    await backend.heal_audit()

    await backend.fail_audit("token.revoked")
    with pytest.raises(DATABASE_ERRORS, match="injected fault"):
        await d.revoke_token(everyone, row.id, entry("token.revoked"))
    assert await d.list_tokens(everyone, None) == [row]
    assert await d.user_for_token(token, NOW) is not None
    await backend.heal_audit()

    assert await d.list_audit() == []
    assert await d.set_active(everyone, "kari", False, entry("user.disabled"))
    assert [r["action"] for r in await d.list_audit()] == ["user.disabled"]


async def test_a_login_or_logout_whose_audit_fails_changes_no_session(backend: Backend) -> None:
    """Review of 2026-12-06 (second session): the session and its audit row were two
    writes, so a failed `logout` audit still ended the session unrecorded and a failed
    `login` audit left a session nobody was told of. Now each is one transaction."""
    d = backend.directory
    await d.create_user("kari", Role.OPERATOR, ["0301"], "h", NOW, [])
    ends = NOW + timedelta(hours=8)

    await backend.fail_audit("login")
    with pytest.raises(DATABASE_ERRORS, match="injected fault"):
        await d.create_session("kari", NOW, ends, [entry("login")])
    assert await backend.scalar("SELECT count(*) FROM sessions") == 0
    await backend.heal_audit()

    sid, _ = await d.create_session("kari", NOW, ends, [entry("login")])
    await backend.fail_audit("logout")
    with pytest.raises(DATABASE_ERRORS, match="injected fault"):
        await d.delete_session(sid, [entry("logout")])
    assert await d.session(sid, NOW) is not None
    await backend.heal_audit()

    await d.delete_session(sid, [entry("logout")])
    assert await d.session(sid, NOW) is None
    assert [r["action"] for r in await d.list_audit()] == ["logout", "login"]


async def test_the_audit_log_refuses_to_be_changed(backend: Backend) -> None:
    d = backend.directory
    await d.audit(entry("login"))
    with pytest.raises(DATABASE_ERRORS, match="append-only"):
        await backend.run("UPDATE audit SET actor = 'someone else'", "UPDATE audit SET actor = 'x'")
    with pytest.raises(DATABASE_ERRORS, match="append-only"):
        await backend.run("DELETE FROM audit", "DELETE FROM audit")
    if backend.kind == "postgres":
        with pytest.raises(DATABASE_ERRORS, match="append-only"):
            await backend.run("", "TRUNCATE audit")
    [row] = await d.list_audit()
    assert (row["actor"], row["action"]) == ("cli:root", "login")


async def test_concurrent_changes_of_one_user_or_token_happen_once(backend: Backend) -> None:
    """Several instances share one PostgreSQL: a check must not go stale before its write."""
    d = backend.directory
    await d.create_user("kari", Role.OPERATOR, ["0301"], "h", NOW, [])
    await d.create_token("kari", NOW, None, [])
    [token] = await d.list_tokens(everyone, None)

    disabled = await asyncio.gather(
        *(d.set_active(everyone, "kari", False, entry("user.disabled")) for _ in range(6))
    )
    revoked = await asyncio.gather(
        *(d.revoke_token(everyone, token.id, entry("token.revoked")) for _ in range(6))
    )
    numbered = await asyncio.gather(
        *(d.set_hpr(everyone, "kari", "1234567", entry("user.hpr_set")) for _ in range(6))
    )
    created = await asyncio.gather(
        *(
            d.create_user("per", Role.ADMIN, [], "h", NOW, [entry("user.created")])
            for _ in range(6)
        ),
        return_exceptions=True,
    )
    assert sorted(disabled) == [False] * 5 + [True]
    assert sorted(numbered) == [False] * 5 + [True]
    assert len({r.revoked_at for r in revoked}) == 1
    assert sum(isinstance(c, User) for c in created) == 1
    assert all(isinstance(c, User | AccountError) for c in created)
    actions = sorted(r["action"] for r in await d.list_audit())
    assert actions == ["token.revoked", "user.created", "user.disabled", "user.hpr_set"]
