"""One suite for the Directory port (ScopedReads + Accounts + Access), run on both stores.

Issue 15: the PostgreSQL directory must behave as the SQLite one does, call for
call: the same rows in the same shapes and order, the same errors, the same
audit rows. Each test runs twice, on a migrated SQLite file and on a PostgreSQL
database of its own (`directory_backends.py` sets up the rows ingest would have
written), and asserts exact values, so a difference between the stores fails
one of the two runs.

Promise 3: one municipality never sees another's data. An id of another
municipality is answered as an unknown id (None, empty), never as an error that
would say the row exists.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from alarmhub.core.model import Alarm, AlarmState, Priority
from alarmhub.core.people import AuditEntry, Role, User
from alarmhub.core.suppress import Silence
from alarmhub.core.tenancy import AlarmFilter, DeviceFilter, Scope
from alarmhub.store.accounts import everyone, ts
from alarmhub.store.errors import AccountError
from tests.store.directory_backends import (
    DATABASE_ERRORS,
    Backend,
    norwegian_database,
    postgres_backend,
    sqlite_backend,
)
from tests.support.postgres import scratch_database

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
OSLO = Scope("kari", Role.OPERATOR, frozenset({"0301"}))
NOBODY = Scope("ola", Role.OPERATOR, frozenset())
ALL = Scope.everything("root")


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param("postgres", marks=pytest.mark.postgres),
        pytest.param("postgres-nb", marks=pytest.mark.postgres),
    ]
)
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    """The directory on each store; postgres-nb is a database that sorts text as nb_NO."""
    if request.param == "sqlite":
        async with sqlite_backend(tmp_path) as b:
            yield b
        return
    database = scratch_database() if request.param == "postgres" else norwegian_database()
    async with database as url, postgres_backend(url) as b:
        yield b


def alarm(
    alarm_id: str,
    municipality: str,
    raised: datetime,
    priority: Priority = Priority.CRITICAL,
    state: AlarmState = AlarmState.OPEN,
) -> Alarm:
    return Alarm(
        alarm_id, "dev-" + alarm_id, municipality, "press", priority, state, raised, raised
    )


def silence(sid: str, municipality: str, device: str | None = None) -> Silence:
    return Silence(
        sid,
        municipality,
        NOW - timedelta(hours=1),
        NOW + timedelta(hours=1),
        device_id=device,
        reason="renovation",
        created_by="kari",
        created_at=NOW - timedelta(hours=1),
    )


def entry(action: str, **detail: object) -> AuditEntry:
    return AuditEntry("cli:root", action, NOW, detail=dict(detail))


async def seed_two_municipalities(b: Backend) -> None:
    """Oslo (0301) and Bergen (4601): a device, an alarm, its timeline, messages, a silence each."""
    await b.device("osl-1", "0301", NOW - timedelta(days=2), label="Kari stue")
    await b.device("brg-1", "4601", NOW - timedelta(days=1), label="Bergen gang")
    await b.alarm(alarm("a-osl", "0301", NOW - timedelta(minutes=10)))
    await b.alarm(alarm("a-brg", "4601", NOW - timedelta(minutes=9)))
    await b.timeline("a-osl", NOW - timedelta(minutes=10), "raised", {"event": "button.pressed"})
    await b.timeline("a-brg", NOW - timedelta(minutes=9), "raised", {"event": "button.pressed"})
    await b.inbox(
        "f:osl-1:m1", NOW - timedelta(minutes=10), "osl-1", "0301", "new", events=["button.pressed"]
    )
    await b.inbox(
        "f:brg-1:m1", NOW - timedelta(minutes=9), "brg-1", "4601", "new", events=["button.pressed"]
    )
    await b.inbox(
        "f:osl-1:m2", NOW - timedelta(minutes=8), "osl-1", "0301", "rejected", reason="bad_json"
    )
    await b.inbox(
        "f:brg-1:m2", NOW - timedelta(minutes=7), "brg-1", "4601", "rejected", reason="bad_json"
    )
    await b.inbox(
        "f:ghost:m1", NOW - timedelta(minutes=6), None, None, "rejected", reason="unknown_device"
    )
    await b.directory.insert_silence(silence("s-osl", "0301"), [])
    await b.directory.insert_silence(silence("s-brg", "4601", "brg-1"), [])


# --- scoped reads -----------------------------------------------------------------------


async def test_a_municipality_never_sees_another_municipalitys_rows(backend: Backend) -> None:
    await seed_two_municipalities(backend)
    d = backend.directory

    assert [a.id for a in await d.list_alarms(OSLO, AlarmFilter())] == ["a-osl"]
    assert await d.list_alarms(OSLO, AlarmFilter(municipality="4601")) == []
    assert await d.get_alarm(OSLO, "a-brg") is None
    assert await d.timeline(OSLO, "a-brg") == []
    assert await d.recent_events(OSLO, "brg-1", "4601") == []
    assert [x["id"] for x in await d.page_devices(OSLO, DeviceFilter())] == ["osl-1"]
    assert await d.page_devices(OSLO, DeviceFilter(municipality="4601")) == []
    assert await d.get_device(OSLO, "brg-1") is None
    assert [x["device_id"] for x in await d.dead_letters(OSLO, 10)] == ["osl-1"]
    assert [s.id for s in await d.list_silences(OSLO, NOW, include_ended=True)] == ["s-osl"]
    assert await d.get_silence(OSLO, "s-brg") is None
    assert await d.response_rows(OSLO, "4601", None, None) == []
    assert len(await d.response_rows(OSLO, None, None, None)) == 1

    # The caller's own rows are there; an admin sees both, and unknown devices' letters.
    got = await d.get_alarm(OSLO, "a-osl")
    assert got is not None
    assert got.raised_at == NOW - timedelta(minutes=10)
    assert [a.id for a in await d.list_alarms(ALL, AlarmFilter())] == ["a-osl", "a-brg"]
    letters = await d.dead_letters(ALL, 10)
    assert [x["device_id"] for x in letters] == [None, "brg-1", "osl-1"]
    assert await d.get_silence(ALL, "s-brg") is not None

    # A user with no municipality sees nothing at all.
    assert await d.list_alarms(NOBODY, AlarmFilter()) == []
    assert await d.page_devices(NOBODY, DeviceFilter()) == []
    assert await d.dead_letters(NOBODY, 10) == []
    assert await d.list_silences(NOBODY, NOW, include_ended=True) == []
    assert await d.response_rows(NOBODY, None, None, None) == []


async def test_reads_give_the_same_shapes_in_both_stores(backend: Backend) -> None:
    await seed_two_municipalities(backend)
    d = backend.directory
    raised = NOW - timedelta(minutes=10)

    assert await d.timeline(OSLO, "a-osl") == [
        {
            "at": ts(raised),
            "type": "raised",
            "actor": "device",
            "detail": {"event": "button.pressed"},
        }
    ]
    assert await d.get_device(OSLO, "osl-1") == {
        "id": "osl-1",
        "kind": "safety_alarm",
        "municipality": "0301",
        "profile": None,
        "heartbeat_interval_s": None,
        "label": "Kari stue",
        "active": True,
        "resident": None,
        "settings": {"room": "2"},
        "bridge": None,
        "registered_at": ts(NOW - timedelta(days=2)),
        "last_seen_at": None,
    }
    events = await d.recent_events(OSLO, "osl-1", "0301")
    assert [{k: v for k, v in e.items() if k != "seq"} for e in events] == [
        {
            "received_at": ts(NOW - timedelta(minutes=8)),
            "msg_id": "m2",
            "verdict": "rejected",
            "reason": "bad_json",
            "events": [],
        },
        {
            "received_at": ts(raised),
            "msg_id": "m1",
            "verdict": "new",
            "reason": None,
            "events": ["button.pressed"],
        },
    ]
    [letter] = await d.dead_letters(OSLO, 10)
    assert {k: v for k, v in letter.items() if k != "seq"} == {
        "received_at": ts(NOW - timedelta(minutes=8)),
        "topic": "alarmhub/v1/osl-1/events",
        "device_id": "osl-1",
        "municipality": "0301",
        "msg_id": "m2",
        "reason": "bad_json",
        "detail": "detail of f:osl-1:m2",
    }
    assert await d.get_silence(OSLO, "s-osl") == silence("s-osl", "0301")
    [row] = await d.response_rows(OSLO, "0301", raised, NOW)
    assert (row.kind, row.priority, row.raised_at, row.acknowledged_at) == (
        "press",
        1,
        raised,
        None,
    )
    assert await d.response_rows(OSLO, "0301", NOW, None) == []  # [since, until)


async def test_silences_listed_by_end_and_scope(backend: Backend) -> None:
    d = backend.directory
    ended = Silence(
        "s-old",
        "0301",
        NOW - timedelta(days=2),
        NOW - timedelta(days=1),
        created_by="kari",
        created_at=NOW - timedelta(days=2),
    )
    await d.insert_silence(ended, [])
    await d.insert_silence(silence("s-now", "0301"), [])
    assert [s.id for s in await d.list_silences(OSLO, NOW, include_ended=False)] == ["s-now"]
    assert [s.id for s in await d.list_silences(OSLO, NOW, include_ended=True)] == [
        "s-now",
        "s-old",
    ]


# --- paging -----------------------------------------------------------------------------


async def test_the_queue_pages_in_one_order_and_cursors_mean_the_same(backend: Backend) -> None:
    d = backend.directory
    t = NOW - timedelta(minutes=5)
    # Ties broken by id in byte order: "a-b" < "aB" < "a_b" (en_US would say otherwise).
    for a in [
        alarm("aB", "0301", t),
        alarm("a_b", "0301", t),
        alarm("a-b", "0301", t),
        alarm("early", "0301", t - timedelta(minutes=1)),
        alarm("late", "0301", NOW),
        alarm("low", "0301", t - timedelta(hours=1), Priority.NORMAL),
        alarm("acked", "0301", t, state=AlarmState.ACKNOWLEDGED),
        alarm("bergen", "4601", t),
    ]:
        await backend.alarm(a)
    order = ["early", "a-b", "aB", "a_b", "acked", "late", "low"]
    assert [a.id for a in await d.list_alarms(OSLO, AlarmFilter())] == order

    seen: list[str] = []
    after: tuple[int, str, str] | None = None
    while True:
        page = await d.list_alarms(OSLO, AlarmFilter(limit=2, after=after))
        if not page:
            break
        seen += [a.id for a in page]
        last = page[-1]
        after = (int(last.priority), ts(last.raised_at) or "", last.id)
    assert seen == order

    only = AlarmFilter(state="open", priority=1)
    assert [a.id for a in await d.list_alarms(ALL, only)] == [
        "early",
        "a-b",
        "aB",
        "a_b",
        "bergen",
        "late",
    ]
    # A cursor whose time is not in the API's own form compares as text, as SQLite
    # does: "…11:55:00Z" sorts after "…11:55:00.000000+00:00", so the 11:55 ties are past.
    odd = (1, "2026-03-01T11:55:00Z", "a-b")
    assert [a.id for a in await d.list_alarms(OSLO, AlarmFilter(after=odd))] == ["late", "low"]
    assert await d.list_alarms(OSLO, AlarmFilter(after=(2**40, "", ""))) == []
    assert await d.list_alarms(OSLO, AlarmFilter(priority=2**40)) == []
    assert await d.list_alarms(OSLO, AlarmFilter(after=(1, "~", ""))) == [
        a for a in await d.list_alarms(OSLO, AlarmFilter()) if a.id == "low"
    ]


async def test_device_pages_filters_and_search(backend: Backend) -> None:
    d = backend.directory
    for did, m, label, active in [
        ("osl-b", "0301", "Kari stue", True),
        ("osl-a", "0301", "Per_kjøkken", True),
        ("osl-old", "0301", None, False),
        ("osl_c", "0301", None, True),
        ("oslA", "0301", None, True),
        ("brg-a", "4601", "Bergen", True),
        ("bdo-a", "1804", "Bodø", True),
    ]:
        await backend.device(did, m, NOW, label=label, active=active)
    await backend.device("osl-fall", "0301", NOW, kind="fall_sensor")

    def ids(rows: list[dict[str, object]]) -> list[object]:
        return [r["id"] for r in rows]

    # (municipality, id) in byte order, whatever the database's locale.
    everything = DeviceFilter(active=None, limit=None)
    oslo = ["osl-a", "osl-b", "osl-fall", "osl-old", "oslA", "osl_c"]
    assert ids(await d.page_devices(ALL, everything)) == [*oslo, "bdo-a", "brg-a"]
    seen: list[object] = []
    after: tuple[str, str] | None = None
    while page := await d.page_devices(ALL, DeviceFilter(limit=2, after=after)):
        seen += ids(page)
        after = (str(page[-1]["municipality"]), str(page[-1]["id"]))
    assert seen == ["osl-a", "osl-b", "osl-fall", "oslA", "osl_c", "bdo-a", "brg-a"]
    # A cursor naming another municipality's device only says where to start.
    assert ids(await d.page_devices(OSLO, DeviceFilter(after=("1804", "bdo-a")))) == []
    after_b = DeviceFilter(after=("0301", "osl-b"))
    assert ids(await d.page_devices(OSLO, after_b)) == ["osl-fall", "oslA", "osl_c"]

    # A part of the id or label, ASCII letters in any case; % and _ are plain characters.
    assert ids(await d.page_devices(OSLO, DeviceFilter(text="KARI"))) == ["osl-b"]
    assert ids(await d.page_devices(OSLO, DeviceFilter(text="_"))) == ["osl-a", "osl_c"]
    assert ids(await d.page_devices(OSLO, DeviceFilter(text="r_k"))) == ["osl-a"]
    assert ids(await d.page_devices(OSLO, DeviceFilter(text="%"))) == []
    assert ids(await d.page_devices(OSLO, DeviceFilter(kind="fall_sensor"))) == ["osl-fall"]
    assert ids(await d.page_devices(OSLO, DeviceFilter(active=False))) == ["osl-old"]
    assert ids(await d.page_devices(OSLO, DeviceFilter(text="Bergen"))) == []


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
        },
        {
            "name": "root",
            "role": "admin",
            "municipalities": [],
            "active": True,
            "created_at": ts(NOW + timedelta(seconds=1)),
        },
    ]
    oslo_only = Scope("madm", Role.MUNICIPALITY_ADMIN, frozenset({"0301"})).manages
    assert [u.user.name for u in await d.list_users(oslo_only)] == ["kari"]
    assert await d.find_user(oslo_only, "root") is None


async def test_disabling_a_user_locks_them_out_once_with_one_audit_row(backend: Backend) -> None:
    d = backend.directory
    await d.create_user("kari", Role.OPERATOR, ["0301"], "h", NOW, [])
    token = await d.create_token("kari", NOW, None, [])
    sid, _csrf = await d.create_session("kari", NOW, NOW + timedelta(hours=8))

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
    sid, csrf = await d.create_session("kari", NOW, ends)
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
    later, _ = await d.create_session("kari", ends, ends + timedelta(hours=8))
    assert await backend.scalar("SELECT count(*) FROM sessions") == 1
    await d.delete_session(later)
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
    created = await asyncio.gather(
        *(
            d.create_user("per", Role.ADMIN, [], "h", NOW, [entry("user.created")])
            for _ in range(6)
        ),
        return_exceptions=True,
    )
    assert sorted(disabled) == [False] * 5 + [True]
    assert len({r.revoked_at for r in revoked}) == 1
    assert sum(isinstance(c, User) for c in created) == 1
    assert all(isinstance(c, User | AccountError) for c in created)
    actions = sorted(r["action"] for r in await d.list_audit())
    assert actions == ["token.revoked", "user.created", "user.disabled"]


async def test_an_id_holding_nul_is_unknown_not_an_error(backend: Backend) -> None:
    """PostgreSQL text cannot hold NUL; a client can still send `%00` in a path."""
    await seed_two_municipalities(backend)
    d = backend.directory
    await d.create_user("kari", Role.OPERATOR, ["0301"], "h", NOW, [])
    nul = "osl-1\x00"
    assert await d.get_device(ALL, nul) is None
    assert await d.get_alarm(ALL, "a-osl\x00") is None
    assert await d.timeline(ALL, "a-osl\x00") == []
    assert await d.recent_events(ALL, nul, "0301") == []
    assert await d.get_silence(ALL, "s-osl\x00") is None
    assert await d.list_alarms(ALL, AlarmFilter(municipality="0301\x00")) == []
    assert await d.page_devices(ALL, DeviceFilter(kind="safety_alarm\x00")) == []
    assert await d.response_rows(ALL, "0301\x00", None, None) == []
    assert await d.password_hash_of("kari\x00") == (None, None)
    assert await d.find_user(everyone, "kari\x00") is None
    assert await d.list_tokens(everyone, "kari\x00") == []
    with pytest.raises(AccountError, match="no user"):
        await d.set_active(everyone, "kari\x00", False, entry("user.disabled"))
    with pytest.raises(AccountError, match="no user"):
        await d.create_token("kari\x00", NOW, None, [])
    with pytest.raises(AccountError, match="no token"):
        await d.revoke_token(everyone, "tok_\x00", entry("token.revoked"))
    assert await d.list_audit() == []
