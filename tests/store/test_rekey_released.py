"""`alarmhub residents rekey` reseals the numbers held journal notes were released for.

Fourth session of 2026-12-06: a number an administrator released a held note for is
sealed on the note's export row (`release_*`) until the note is done, and rekey resealed
only the register's rows. After a rotation that number stayed under the old key; once
the old key was dropped, as a rotation allows, the note could never be built: the
journal worker retried it for ever ("the register cannot open the number") and the
resident's journal entry never arrived. Here, on both stores, the released number is
resealed as the register's are: only if the row still holds what rekey read, with a
`resident.rekeyed` audit row in the same transaction, chunk by chunk.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

import asyncpg
import pytest

from alarmhub.clock import FakeClock
from alarmhub.core.journal_status import JournalState
from alarmhub.store.postgres.store import PostgresStore
from alarmhub.store.residents import Rekeyed, ResidentRegister, ResidentRows, SealedRelease
from alarmhub.store.sealing import Keyring, SealingError, key_id
from tests.store.conftest import OpenedStore
from tests.store.test_journal_holds_contract import T, entry, fail_audit, nid, rows_of
from tests.store.test_journal_outbox_contract import resolved_with_export
from tests.store.test_store_contract import registered
from tests.support.helpers import sqlite_at
from tests.support.national_ids import KARI, OLA

KEY_A = bytes(range(32))
KEY_B = bytes(range(32, 64))
CLOCK = FakeClock(T)


def register(rows: ResidentRows, *keys: bytes) -> ResidentRegister:
    return ResidentRegister(rows, Keyring(keys), CLOCK)


async def released_notes(opened: OpenedStore, *alarm_ids: str, number: str = OLA) -> None:
    """Each alarm answered, its note held, and released for `number` under KEY_A."""
    await registered(opened)
    old = register(rows_of(opened), KEY_A)
    for alarm_id in alarm_ids:
        export = await resolved_with_export(opened, alarm_id)
        # The pseudonym the alarm's device had (the contract's alarms carry none).
        await opened.rows("UPDATE alarms SET resident = ? WHERE id = ?", "r-17", alarm_id)
        held = replace(export, state=JournalState.HELD, reason="national id changed")
        await opened.store.journal_save(held)
        audit = [entry("journal.released")]
        assert await old.release_note(alarm_id, "0301", nid(number), audit)


async def rekeyed(opened: OpenedStore) -> list[tuple[Any, ...]]:
    """The `resident.rekeyed` audit rows: municipality, alarm, detail."""
    sql = "SELECT municipality, alarm_id, detail FROM audit WHERE action = ? ORDER BY id"
    return [(m, a, json.loads(d)) for m, a, d in await opened.rows(sql, "resident.rekeyed")]


async def test_a_released_number_still_opens_after_the_old_key_is_dropped(
    opened: OpenedStore,
) -> None:
    """The rotation as docs/journal.md describes it: rekey, then drop the old key."""
    rows = rows_of(opened)
    await released_notes(opened, "a-1")
    await register(rows, KEY_A).set_national_id("0301", "r-17", nid(KARI), "anne", [])
    heard: list[Rekeyed] = []
    done = await register(rows, KEY_B, KEY_A).rekey("cli:ops", heard.append)

    new_only = register(rows, KEY_B)  # ALARMHUB_RESIDENT_OLD_KEYS dropped
    found = await new_only.journal_identity("0301", "r-17", "a-1")
    assert found.released == OLA  # the note goes with the number the release named
    assert await new_only.national_id("0301", "r-17") == KARI
    assert done == Rekeyed(resealed=2, skipped=0)
    assert heard == [Rekeyed(1, 0), Rekeyed(2, 0)]  # the register's chunk, then the notes'
    assert await opened.rows("SELECT release_key_id FROM journal_exports") == [(key_id(KEY_B),)]
    [(state,)] = await opened.rows("SELECT state FROM journal_exports")
    assert state == JournalState.PENDING.value  # the note itself is not touched
    assert await rekeyed(opened) == [
        ("0301", None, {"resident": "r-17", "from": key_id(KEY_A), "to": key_id(KEY_B)}),
        ("0301", "a-1", {"resident": "r-17", "from": key_id(KEY_A), "to": key_id(KEY_B)}),
    ]
    # Nothing is left under the old key: a second run finds nothing.
    assert await register(rows, KEY_B, KEY_A).rekey("cli:ops") == Rekeyed(0, 0)


async def test_a_released_number_no_key_opens_names_its_alarm(opened: OpenedStore) -> None:
    """The register's rows are listed with their key ids (`residents list`); a released
    number is found only by its alarm. A rekey that meets one it cannot open says which
    alarm, and what to do, instead of only that some key is missing."""
    await released_notes(opened, "a-1")
    with pytest.raises(SealingError) as refused:
        await register(rows_of(opened), KEY_B).rekey("cli:ops")  # KEY_A already dropped
    text = str(refused.value)
    assert key_id(KEY_A) in text  # the key it needs, as before
    assert "alarm a-1" in text
    assert "alarmhub journal cancel --alarm a-1 --municipality 0301" in text
    assert OLA not in text  # never the number


async def test_released_numbers_are_resealed_chunk_by_chunk(opened: OpenedStore) -> None:
    rows = rows_of(opened)
    await released_notes(opened, "a-1", "a-2", "a-3")
    heard: list[Rekeyed] = []
    rekey = register(rows, KEY_B, KEY_A).rekey("cli:ops", heard.append, chunk=2)
    assert await rekey == Rekeyed(3, 0)
    assert heard == [Rekeyed(2, 0), Rekeyed(3, 0)]
    assert [a for _, a, _ in await rekeyed(opened)] == ["a-1", "a-2", "a-3"]
    for alarm_id in ("a-1", "a-2", "a-3"):
        found = await register(rows, KEY_B).journal_identity("0301", "r-17", alarm_id)
        assert found.released == OLA


class AfterRead:
    """The store's rows, running `meanwhile` once, right after rekey's first read of the
    released numbers."""

    def __init__(self, rows: ResidentRows, meanwhile: Callable[[], Awaitable[None]]) -> None:
        self._rows = rows
        self._meanwhile: Callable[[], Awaitable[None]] | None = meanwhile

    def __getattr__(self, name: str) -> object:
        return getattr(self._rows, name)

    async def stale_releases(
        self, current_key: str, after: str | None, limit: int
    ) -> list[SealedRelease]:
        found = await self._rows.stale_releases(current_key, after, limit)
        if self._meanwhile is not None:
            meanwhile, self._meanwhile = self._meanwhile, None
            await meanwhile()
        return found


async def test_a_note_done_while_rekey_ran_keeps_no_number(opened: OpenedStore) -> None:
    """The note was sent and confirmed between rekey's read and its write: its number
    was cleared, and writing the resealed one back would keep it for ever."""
    rows = rows_of(opened)
    await released_notes(opened, "a-1")

    async def meanwhile() -> None:
        [pending] = await opened.store.journal_exports(["a-1"])
        done = replace(pending, state=JournalState.CONFIRMED, finished_at=T)
        await opened.store.journal_save(done)

    racing = register(AfterRead(rows, meanwhile), KEY_B, KEY_A)  # type: ignore[arg-type]
    assert await racing.rekey("cli:ops") == Rekeyed(resealed=0, skipped=1)
    kept = "SELECT release_key_id, release_sealed FROM journal_exports"
    assert await opened.rows(kept) == [(None, None)]
    assert await rekeyed(opened) == []


async def test_a_reseal_and_its_audit_row_commit_together(opened: OpenedStore) -> None:
    rows = rows_of(opened)
    await released_notes(opened, "a-1")
    await fail_audit(opened, "resident.rekeyed")
    with pytest.raises(Exception, match="injected"):
        await register(rows, KEY_B, KEY_A).rekey("cli:ops")
    assert await opened.rows("SELECT release_key_id FROM journal_exports") == [(key_id(KEY_A),)]
    found = await register(rows, KEY_A).journal_identity("0301", "r-17", "a-1")
    assert found.released == OLA


async def test_a_reseal_waits_for_a_note_finishing_in_flight_and_then_leaves_it(
    opened: OpenedStore,
) -> None:
    """The worker's transaction that ends the note (and clears its number) is open when
    the reseal comes: the reseal must wait for it and see the cleared row."""
    rows = rows_of(opened)
    await released_notes(opened, "a-1")
    [read] = await rows.stale_releases(key_id(KEY_B), None, 10)
    reseal = register(rows, KEY_B, KEY_A)._reseal_release(read, "cli:ops")  # rekey's next step
    clear = (
        "UPDATE journal_exports SET release_key_id = NULL, release_nonce = NULL, "
        "release_sealed = NULL"
    )
    if opened.path is None:
        assert isinstance(opened.store, PostgresStore)
        async with opened.store.pool.acquire() as conn, conn.transaction():
            await conn.execute(clear)
            task = asyncio.create_task(rows.reseal_releases([reseal]))
            await _until_waiting_for_a_lock(opened.store.pool)
        assert await task == 0
    else:
        with sqlite_at(opened.path, isolation_level=None) as other:
            other.execute("BEGIN IMMEDIATE")
            other.execute(clear)
            task = asyncio.create_task(rows.reseal_releases([reseal]))
            await asyncio.sleep(0)  # not forced on SQLite: see test_residents_rekey.py
            other.execute("COMMIT")
        assert await task == 0
    kept = "SELECT release_key_id, release_sealed FROM journal_exports"
    assert await opened.rows(kept) == [(None, None)]
    assert await rekeyed(opened) == []


async def _until_waiting_for_a_lock(pool: asyncpg.Pool) -> None:
    sql = (
        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
        "AND datname = current_database()"
    )
    async with asyncio.timeout(60):
        while not await pool.fetchval(sql):
            await asyncio.sleep(0.02)
