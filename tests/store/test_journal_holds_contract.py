"""When a pseudonym's number changed, and a held journal note's release or cancel, on both
stores (issue 17; core/journal/identity.py).

The register records the time of each replacement of a number by another and each
removal, in the change's transaction, and never for a number saved again or a first
registration; the journal read returns it with the number and the number a release
named. A release or cancel changes only a `held` export of the municipality named,
with its audit rows in the same transaction; the released number is sealed on the row
and forgotten when the note is done.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from alarmhub.clock import FakeClock
from alarmhub.core.journal.identity import Registered
from alarmhub.core.journal_status import JournalState
from alarmhub.core.national_id import NationalId, parse_national_id
from alarmhub.core.people import AuditEntry
from alarmhub.store.journal_outbox import JournalExport
from alarmhub.store.postgres.residents import PostgresResidentRows
from alarmhub.store.postgres.store import PostgresStore
from alarmhub.store.residents import ResidentRegister, ResidentRows
from alarmhub.store.sealing import Keyring, SealingError
from alarmhub.store.sqlite.residents import SqliteResidentRows
from tests.store.conftest import OpenedStore
from tests.store.test_journal_outbox_contract import RESOLVED_AT, resolved_with_export
from tests.store.test_store_contract import new_alarm_batch, registered
from tests.support.helpers import sqlite_at
from tests.support.national_ids import KARI, OLA

KEY = bytes(range(32))
T = RESOLVED_AT + timedelta(hours=1)


def nid(text: str) -> NationalId:
    parsed = parse_national_id(text)
    assert isinstance(parsed, NationalId)
    return parsed


def rows_of(opened: OpenedStore) -> ResidentRows:
    if opened.path is not None:
        return SqliteResidentRows(opened.path)
    assert isinstance(opened.store, PostgresStore)
    return PostgresResidentRows(opened.store.pool)


def entry(action: str, municipality: str = "0301") -> AuditEntry:
    return AuditEntry("anne", action, T, municipality=municipality, detail={"resident": "r-17"})


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T)


@pytest.fixture
def register(opened: OpenedStore, clock: FakeClock) -> ResidentRegister:
    return ResidentRegister(rows_of(opened), Keyring((KEY,)), clock)


async def changed_at(register: ResidentRegister) -> object:
    return (await register.journal_identity("0301", "r-17", "a-1")).changed_at


async def test_a_replacement_or_a_removal_is_a_change_a_save_again_is_not(
    register: ResidentRegister, clock: FakeClock
) -> None:
    async def put(number: str) -> None:
        await register.set_national_id("0301", "r-17", nid(number), "anne", [entry("set")])

    assert await register.journal_identity("0301", "r-17", "a-1") == Registered(None, None)
    await put(KARI)  # a first registration: no change
    assert await register.journal_identity("0301", "r-17", "a-1") == Registered(KARI, None)
    clock.advance(timedelta(minutes=1))
    await put(KARI)  # the same number saved again: the same person
    assert await changed_at(register) is None
    clock.advance(timedelta(minutes=1))
    replaced_at = clock.now()
    await put(OLA)
    assert await register.journal_identity("0301", "r-17", "a-1") == Registered(OLA, replaced_at)
    clock.advance(timedelta(minutes=1))
    removed_at = clock.now()
    assert await register.remove("0301", "r-17", [entry("removed")])
    assert await register.journal_identity("0301", "r-17", "a-1") == Registered(None, removed_at)
    clock.advance(timedelta(minutes=1))
    await put(KARI)  # registered again after the removal: the removal is the change
    assert await register.journal_identity("0301", "r-17", "a-1") == Registered(KARI, removed_at)
    # A removal that found nothing changes nothing.
    assert not await register.remove("0301", "r-99", [entry("removed")])
    assert (await register.journal_identity("0301", "r-99", "a-1")).changed_at is None
    # Another municipality's r-17 is another person, with a history of its own.
    assert (await register.journal_identity("4601", "r-17", "a-1")).changed_at is None


async def test_a_clock_behind_never_moves_a_change_back(
    register: ResidentRegister, clock: FakeClock
) -> None:
    await register.set_national_id("0301", "r-17", nid(KARI), "anne", [entry("set")])
    await register.set_national_id("0301", "r-17", nid(OLA), "anne", [entry("set")])
    clock.jump(timedelta(hours=-2))  # another instance's clock, or NTP stepping back
    await register.set_national_id("0301", "r-17", nid(KARI), "anne", [entry("set")])
    assert await changed_at(register) == T


async def test_an_unreadable_stored_number_replaced_counts_as_a_change(
    opened: OpenedStore, register: ResidentRegister
) -> None:
    await register.set_national_id("0301", "r-17", nid(KARI), "anne", [entry("set")])
    other_key = ResidentRegister(rows_of(opened), Keyring((bytes(32),)), FakeClock(T))
    await other_key.set_national_id("0301", "r-17", nid(KARI), "anne", [entry("set")])
    assert await changed_at(other_key) == T


async def held_export(opened: OpenedStore) -> JournalExport:
    await registered(opened)
    export = await resolved_with_export(opened)
    held = replace(export, state=JournalState.HELD, reason="national id changed since the alarm")
    await opened.store.journal_save(held)
    return held


async def audited(opened: OpenedStore, action: str) -> int:
    return await opened.count("SELECT count(*) FROM audit WHERE action = ?", action)


async def test_release_only_a_held_note_of_the_municipality_named(
    opened: OpenedStore, register: ResidentRegister
) -> None:
    await held_export(opened)
    assert not await register.release_note("a-1", "4601", nid(OLA), [entry("journal.released")])
    assert not await register.cancel_note("a-1", "4601", "no", [entry("journal.cancelled")])
    assert not await register.release_note("a-2", "0301", nid(OLA), [entry("journal.released")])
    assert await audited(opened, "journal.released") == 0
    [still] = await opened.store.journal_exports(["a-1"])
    assert still.state is JournalState.HELD

    assert await register.release_note("a-1", "0301", nid(OLA), [entry("journal.released")])
    assert await audited(opened, "journal.released") == 1
    [released] = await opened.store.journal_exports(["a-1"])
    assert (released.state, released.reason, released.next_at) == (JournalState.PENDING, None, T)
    assert await opened.store.due_journal(T) == [released]
    found = await register.journal_identity("0301", "r-17", "a-1")
    assert found.released == OLA
    # Sealed on the row, never in clear; bound to its alarm, so it opens for no other.
    [(sealed,)] = await opened.rows("SELECT release_sealed FROM journal_exports")
    assert OLA.encode() not in bytes(sealed)
    assert OLA[6:].encode() not in bytes(sealed)
    with pytest.raises(SealingError):
        await copied_to_another_alarm(opened, register)
    # Not held any more: neither released again nor cancelled.
    assert not await register.release_note("a-1", "0301", nid(KARI), [entry("journal.released")])
    assert not await register.cancel_note("a-1", "0301", "no", [entry("journal.cancelled")])
    # Done: the number the release named is not kept.
    confirmed = replace(released, state=JournalState.CONFIRMED, finished_at=T)
    await opened.store.journal_save(confirmed)
    kept = "SELECT release_sealed FROM journal_exports WHERE alarm_id = ?"
    assert await opened.rows(kept, "a-1") == [(None,)]
    assert (await register.journal_identity("0301", "r-17", "a-1")).released is None


async def copied_to_another_alarm(opened: OpenedStore, register: ResidentRegister) -> None:
    """Someone with write access copies a-1's sealed release onto a-9's export."""
    await opened.store.commit_batch(new_alarm_batch("m-a-9", "a-9"), {})
    await opened.rows(
        "INSERT INTO journal_exports (alarm_id, municipality, state, attempts, next_at, "
        "created_at, release_key_id, release_nonce, release_sealed) SELECT ?, municipality, "
        "state, attempts, next_at, created_at, release_key_id, release_nonce, release_sealed "
        "FROM journal_exports WHERE alarm_id = ?",
        "a-9",
        "a-1",
    )
    await register.journal_identity("0301", "r-17", "a-9")


async def test_cancel_ends_a_held_note(opened: OpenedStore, register: ResidentRegister) -> None:
    await held_export(opened)
    assert await register.cancel_note("a-1", "0301", "cancelled by anne", [entry("c")])
    [done] = await opened.store.journal_exports(["a-1"])
    assert (done.state, done.reason, done.finished_at) == (
        JournalState.CANCELLED,
        "cancelled by anne",
        T,
    )
    assert done.done
    assert await opened.store.due_journal(T + timedelta(days=1)) == []
    assert await audited(opened, "c") == 1


async def test_held_notes_are_counted_and_listed_as_failed(opened: OpenedStore) -> None:
    assert await opened.store.held_journal() == 0
    held = await held_export(opened)
    assert await opened.store.held_journal() == 1
    assert await opened.store.journal_exports(failed=True) == [held]
    assert await opened.store.due_journal(T + timedelta(days=1)) == []
    assert await opened.store.oldest_waiting_journal() is None  # waiting for a person


async def test_a_release_and_its_audit_row_commit_together(
    opened: OpenedStore, register: ResidentRegister
) -> None:
    await held_export(opened)
    await fail_audit(opened, "journal.released")
    with pytest.raises(Exception, match="injected"):
        await register.release_note("a-1", "0301", nid(OLA), [entry("journal.released")])
    [still] = await opened.store.journal_exports(["a-1"])
    assert still.state is JournalState.HELD
    assert await opened.rows("SELECT release_sealed FROM journal_exports") == [(None,)]


async def fail_audit(opened: OpenedStore, action: str) -> None:
    """From now on every audit insert of `action` fails ('injected') inside its transaction."""
    await run_script(
        opened,
        "CREATE TRIGGER audit_fault BEFORE INSERT ON audit "
        f"WHEN NEW.action = '{action}' BEGIN SELECT RAISE(ABORT, 'injected'); END"
        if opened.path is not None
        else "CREATE FUNCTION audit_fault() RETURNS trigger LANGUAGE plpgsql AS $$ "
        "BEGIN RAISE EXCEPTION 'injected'; END $$; "
        "CREATE TRIGGER audit_fault BEFORE INSERT ON audit FOR EACH ROW "
        f"WHEN (NEW.action = '{action}') EXECUTE FUNCTION audit_fault()",
    )


async def run_script(opened: OpenedStore, script: str) -> None:
    if opened.path is not None:
        with sqlite_at(opened.path, isolation_level=None) as conn:
            conn.executescript(script)
        return
    assert isinstance(opened.store, PostgresStore)
    await opened.store.pool.execute(script)
