"""One suite for the Directory port, run on both stores: the scoped reads (ScopedReads).

Issue 15: the PostgreSQL directory must behave as the SQLite one does, call for
call: the same rows in the same shapes and order, the same errors. Each test runs
on a migrated SQLite file, on a PostgreSQL database of its own, and on one that
sorts text as nb_NO (the `backend` fixture, tests/store/conftest.py;
`directory_backends.py` sets up the rows ingest would have written), and asserts
exact values, so a difference between the stores fails one of the runs. The
accounts and access ports: test_directory_accounts.py.

Promise 3: one municipality never sees another's data. An id of another
municipality is answered as an unknown id (None, empty), never as an error that
would say the row exists.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from alarmhub.core.model import AlarmState, Priority
from alarmhub.core.people import Role
from alarmhub.core.suppress import Silence
from alarmhub.core.tenancy import AlarmFilter, DeviceFilter
from alarmhub.store.accounts import everyone, ts
from alarmhub.store.errors import AccountError
from tests.store.directory_backends import (
    ALL,
    NOBODY,
    NOW,
    OSLO,
    Backend,
    alarm,
    entry,
    seed_two_municipalities,
    silence,
)

# --- scoped reads -----------------------------------------------------------------------


async def test_a_municipality_never_sees_another_municipalitys_rows(backend: Backend) -> None:
    await seed_two_municipalities(backend)
    d = backend.directory

    assert [a.id for a in await d.list_alarms(OSLO, AlarmFilter())] == ["a-osl"]
    assert await d.list_alarms(OSLO, AlarmFilter(municipality="4601")) == []
    assert await d.count_alarms(OSLO, AlarmFilter()) == 1
    assert await d.count_alarms(OSLO, AlarmFilter(municipality="4601")) == 0
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
    assert await d.count_alarms(ALL, AlarmFilter()) == 2
    letters = await d.dead_letters(ALL, 10)
    assert [x["device_id"] for x in letters] == [None, "brg-1", "osl-1"]
    assert await d.get_silence(ALL, "s-brg") is not None

    # A user with no municipality sees nothing at all.
    assert await d.list_alarms(NOBODY, AlarmFilter()) == []
    assert await d.count_alarms(NOBODY, AlarmFilter()) == 0
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
        "sip_credentials": None,
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
    # The count is of everything the filter selects: not the page's limit, nor its cursor.
    assert await d.count_alarms(OSLO, AlarmFilter(limit=2, after=after)) == len(order)

    only = AlarmFilter(state="open", priority=1)
    assert await d.count_alarms(ALL, only) == 6
    assert await d.count_alarms(OSLO, AlarmFilter(state="acknowledged")) == 1
    assert await d.count_alarms(OSLO, AlarmFilter(priority=2**40)) == 0
    assert await d.count_alarms(ALL, AlarmFilter(municipality="0301\x00")) == 0
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


async def test_response_rows_time_the_first_acknowledgement(backend: Backend) -> None:
    """The column holds the latest acknowledgement (a reminder put the alarm back in the
    queue and it was taken again); the report's time to acknowledge is the first."""
    raised = NOW - timedelta(hours=1)
    first, again = raised + timedelta(seconds=20), raised + timedelta(minutes=31)
    await backend.alarm(
        replace(
            alarm("a-1", "0301", raised, state=AlarmState.ACKNOWLEDGED),
            acknowledged_at=again,
            acknowledged_by="kari",
        )
    )
    await backend.timeline("a-1", raised, "raised", {})
    await backend.timeline("a-1", first, "acknowledged", {"after_s": 20})
    await backend.timeline("a-1", again, "acknowledged", {"after_s": 1880})
    # An alarm whose timeline says nothing of it (older rows) keeps the column's time.
    await backend.alarm(
        replace(
            alarm("a-2", "0301", raised, state=AlarmState.ACKNOWLEDGED),
            acknowledged_at=first,
            acknowledged_by="kari",
        )
    )
    rows = await backend.directory.response_rows(ALL, "0301", None, None)
    assert [r.acknowledged_at for r in rows] == [first, first]
