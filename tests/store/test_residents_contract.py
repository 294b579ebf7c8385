"""The resident register on both stores (issue 17): sealed at rest, every read audited.

One suite over SQLite and PostgreSQL (a scratch database of the test's own), through
the register (store/residents.py) over each store's rows, and the stores' side doors
to check what is really on disk. And the resolve step's cause and action columns,
written and read back through the alarm store's own ports.
"""

from __future__ import annotations

import base64
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from alarmhub.clock import FakeClock
from alarmhub.core.model import Alarm, AlarmState, Priority
from alarmhub.core.national_id import NationalId, parse_national_id
from alarmhub.core.people import AuditEntry
from alarmhub.store.errors import StoreError
from alarmhub.store.postgres.residents import PostgresResidentRows
from alarmhub.store.residents import UNREADABLE, Rekeyed, ResidentRegister, ResidentRows
from alarmhub.store.sealing import KeyMissingError, Keyring, SealingError
from alarmhub.store.sqlite.residents import SqliteResidentRows
from tests.store.conftest import OpenedStore
from tests.store.directory_backends import Backend
from tests.support.national_ids import KARI, OLA

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
KEY_A = bytes(range(32))
KEY_B = bytes(range(32, 64))


def nid(text: str) -> NationalId:
    parsed = parse_national_id(text)
    assert isinstance(parsed, NationalId)
    return parsed


def entry(action: str, municipality: str = "0301") -> AuditEntry:
    return AuditEntry("anne", action, NOW, municipality=municipality, detail={"resident": "r-17"})


def rows_of(backend: Backend) -> ResidentRows:
    if backend.pool is not None:
        return PostgresResidentRows(backend.pool)
    assert backend.path is not None
    return SqliteResidentRows(backend.path)


@pytest.fixture
def register(backend: Backend) -> ResidentRegister:
    return ResidentRegister(rows_of(backend), Keyring((KEY_A,)), FakeClock(NOW))


async def audit_actions(backend: Backend) -> list[str]:
    rows = await backend.directory.list_audit(1000)
    return [r["action"] for r in reversed(rows)]


async def test_set_read_masked_list_remove(backend: Backend, register: ResidentRegister) -> None:
    stored, created = await register.set_national_id(
        "0301", "r-17", nid(KARI), "anne", [entry("set")]
    )
    assert created
    assert stored.national_id == KARI[:6] + "*****"
    _, again = await register.set_national_id("0301", "r-17", nid(KARI), "anne", [entry("set")])
    assert not again  # replaced, not a second row
    await register.set_national_id("0301", "r-18", nid(OLA), "anne", [entry("set")])
    await register.set_national_id("4601", "r-17", nid(OLA), "bjorn", [entry("set", "4601")])

    assert await register.masked("0301", "r-17", [entry("viewed")]) == KARI[:6] + "*****"
    assert await register.masked("0301", "r-99", [entry("viewed")]) is None
    listed = await register.listing("0301", lambda rows: [entry(f"listed {len(rows)}")])
    assert [(e.resident, e.national_id) for e in listed] == [
        ("r-17", KARI[:6] + "*****"),
        ("r-18", OLA[:6] + "*****"),
    ]
    # Tenancy: the same pseudonym in another municipality is another person.
    assert await register.national_id("4601", "r-17") == OLA
    assert await register.national_id("0301", "r-17") == KARI

    assert await register.remove("0301", "r-18", [entry("removed")])
    assert not await register.remove("0301", "r-18", [entry("removed again")])
    assert await register.national_id("0301", "r-18") is None

    # Every read that found a number, and every change, has its audit row; a read
    # or removal that found nothing has none.
    assert await audit_actions(backend) == [
        "set",
        "set",
        "set",
        "set",
        "viewed",
        "listed 2",
        "resident.national_id_read",
        "resident.national_id_read",
        "removed",
    ]


async def test_the_number_is_not_on_disk_in_clear(
    backend: Backend, register: ResidentRegister
) -> None:
    await register.set_national_id("0301", "r-17", nid(KARI), "anne", [entry("set")])
    sealed = await backend.scalar("SELECT sealed FROM residents")
    nonce = await backend.scalar("SELECT nonce FROM residents")
    assert len(bytes(nonce)) == 12
    for shape in (KARI.encode(), KARI[6:].encode(), base64.b64encode(KARI.encode())):
        assert shape not in bytes(sealed)
    # Nor in the audit log, which records who and which resident, never the number.
    for row in await backend.directory.list_audit(100):
        assert KARI[6:] not in str(row)


async def test_a_sealed_number_moved_to_another_resident_does_not_open(
    backend: Backend, register: ResidentRegister
) -> None:
    await register.set_national_id("0301", "r-17", nid(KARI), "anne", [entry("set")])
    await register.set_national_id("0301", "r-18", nid(OLA), "anne", [entry("set")])
    # Someone with write access to the database copies Kari's sealed number onto r-18.
    await backend.run(
        "UPDATE residents SET nonce = (SELECT nonce FROM residents WHERE resident = 'r-17'), "
        "sealed = (SELECT sealed FROM residents WHERE resident = 'r-17') WHERE resident = 'r-18'",
        "UPDATE residents SET nonce = k.nonce, sealed = k.sealed FROM residents k "
        "WHERE k.resident = 'r-17' AND residents.resident = 'r-18'",
    )
    with pytest.raises(SealingError, match="another resident"):
        await register.national_id("0301", "r-18")
    # Shown as a number that exists and cannot be read, never as Kari's.
    assert await register.masked("0301", "r-18", [entry("viewed")]) == UNREADABLE


async def test_a_change_and_its_audit_row_commit_together(
    backend: Backend, register: ResidentRegister
) -> None:
    await backend.fail_audit("set")
    # The store's own error, as from every other read and write: the journal worker
    # waits for the database on it, the web answers it as the store's (third session).
    with pytest.raises(StoreError):
        await register.set_national_id("0301", "r-17", nid(KARI), "anne", [entry("set")])
    await backend.heal_audit()
    assert await backend.scalar("SELECT count(*) FROM residents") == 0
    await register.set_national_id("0301", "r-17", nid(KARI), "anne", [entry("set ok")])
    # A read whose audit row cannot be written is no read: it fails, nothing is shown.
    await backend.fail_audit("viewed")
    with pytest.raises(StoreError):
        await register.masked("0301", "r-17", [entry("viewed")])
    await backend.heal_audit()


async def test_key_rotation_and_a_missing_key(backend: Backend) -> None:
    rows = rows_of(backend)
    clock = FakeClock(NOW)
    old = ResidentRegister(rows, Keyring((KEY_A,)), clock)
    await old.set_national_id("0301", "r-17", nid(KARI), "anne", [entry("set")])
    # The new key seals; the old one still opens until everything is resealed.
    rotating = ResidentRegister(rows, Keyring((KEY_B, KEY_A)), clock)
    assert await rotating.national_id("0301", "r-17") == KARI
    assert await rotating.rekey("cli:root") == Rekeyed(resealed=1)
    assert await rotating.rekey("cli:root") == Rekeyed()
    new_only = ResidentRegister(rows, Keyring((KEY_B,)), clock)
    assert await new_only.national_id("0301", "r-17") == KARI
    # The old key alone no longer opens it, and says which key it lacks.
    with pytest.raises(SealingError, match="not configured"):
        await old.national_id("0301", "r-17")
    # No key at all: nothing is stored, and the message says how to configure one.
    nothing = ResidentRegister(rows, Keyring(()), clock)
    with pytest.raises(KeyMissingError, match="ALARMHUB_RESIDENT_KEY"):
        await nothing.set_national_id("0301", "r-18", nid(OLA), "anne", [entry("set")])
    assert await nothing.masked("0301", "r-17", [entry("viewed")]) == UNREADABLE


async def test_the_resolve_steps_cause_and_action_are_stored(opened: OpenedStore) -> None:
    store = opened.store
    raised = NOW - timedelta(minutes=5)
    alarm = Alarm(
        "a1", "pend-1", "0301", "fall", Priority.CRITICAL, AlarmState.OPEN, raised, raised
    )
    await store.save_alarms([alarm], [], audit=())
    stored = await store.get_alarm("a1")
    assert stored is not None
    resolved = replace(
        stored,
        state=AlarmState.RESOLVED,
        resolved_at=NOW,
        outcome="helped",
        cause="fall",
        cause_text="på badet",
        action_taken="helped_up",
        action_text=None,
    )
    await store.save_alarms([resolved], [], audit=())
    back = await store.get_alarm("a1")
    assert back is not None
    assert (back.cause, back.cause_text, back.action_taken, back.action_text) == (
        "fall",
        "på badet",
        "helped_up",
        None,
    )
