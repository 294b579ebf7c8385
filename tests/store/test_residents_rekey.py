"""`alarmhub residents rekey` on both stores: it never undoes a change made while it ran.

Review of 2026-12-06 (second session): rekey read every row, then wrote each back with
an unconditional upsert, so a number corrected meanwhile went back to the old one, a
number removed meanwhile came back, and the audit log's only word was
`resident.rekeyed`. The races here are interleaved step by step: a hook runs the
other change right after rekey's read, or a second connection holds the row.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

from alarmhub.clock import FakeClock
from alarmhub.store.residents import Rekeyed, Reseal, ResidentRegister, ResidentRows, SealedRow
from alarmhub.store.sealing import Keyring, key_id
from tests.store.directory_backends import Backend
from tests.store.test_residents_contract import KEY_A, KEY_B, NOW, entry, nid, rows_of
from tests.support.helpers import sqlite_at
from tests.support.national_ids import KARI, OLA

CLOCK = FakeClock(NOW)


class AfterRead:
    """The store's rows, running `meanwhile` once, right after rekey's first read."""

    def __init__(self, rows: ResidentRows, meanwhile: Callable[[], Awaitable[None]]) -> None:
        self._rows = rows
        self._meanwhile: Callable[[], Awaitable[None]] | None = meanwhile

    def __getattr__(self, name: str) -> object:
        return getattr(self._rows, name)

    async def stale_residents(
        self, current_key: str, after: tuple[str, str] | None, limit: int
    ) -> list[SealedRow]:
        rows = await self._rows.stale_residents(current_key, after, limit)
        if self._meanwhile is not None:
            meanwhile, self._meanwhile = self._meanwhile, None
            await meanwhile()
        return rows

    async def reseal_residents(self, reseals: Sequence[Reseal]) -> int:
        return await self._rows.reseal_residents(reseals)


def register(rows: ResidentRows, *keys: bytes) -> ResidentRegister:
    return ResidentRegister(rows, Keyring(keys), CLOCK)


async def rekeyed(backend: Backend) -> list[object]:
    rows = await backend.directory.list_audit(1000)
    return [r["detail"]["resident"] for r in reversed(rows) if r["action"] == "resident.rekeyed"]


async def test_rekey_leaves_a_number_changed_or_removed_meanwhile(backend: Backend) -> None:
    rows = rows_of(backend)
    old, new = register(rows, KEY_A), register(rows, KEY_B, KEY_A)
    for resident in ("r-16", "r-17", "r-18", "r-19"):
        await old.set_national_id("0301", resident, nid(KARI), "anne", [entry("set")])

    async def meanwhile() -> None:
        # kari corrects r-17 through an instance with the new key, removes r-18, and
        # an instance still on the old key corrects r-19.
        await new.set_national_id("0301", "r-17", nid(OLA), "kari", [entry("set")])
        await new.remove("0301", "r-18", [entry("removed")])
        await old.set_national_id("0301", "r-19", nid(OLA), "kari", [entry("set")])

    racing = register(AfterRead(rows, meanwhile), KEY_B, KEY_A)  # type: ignore[arg-type]
    assert await racing.rekey("cli:ops") == Rekeyed(resealed=1, skipped=3)

    assert await new.national_id("0301", "r-17") == OLA
    assert await new.entry("0301", "r-18", []) is None
    nineteen = await new.entry("0301", "r-19", [])
    assert nineteen is not None
    assert (nineteen.key_id, nineteen.updated_by) == (key_id(KEY_A), "kari")
    assert await new.national_id("0301", "r-19") == OLA
    assert await rekeyed(backend) == ["r-16"]  # only what was resealed is audited as such

    # A second run reseals what the old-key instance wrote; nothing else is left.
    assert await new.rekey("cli:ops") == Rekeyed(resealed=1, skipped=0)
    assert await new.national_id("0301", "r-19") == OLA
    assert await rekeyed(backend) == ["r-16", "r-19"]
    sixteen = await new.entry("0301", "r-16", [])
    assert sixteen is not None
    assert (sixteen.key_id, sixteen.updated_by) == (key_id(KEY_B), "anne")


async def test_rekey_commits_chunk_by_chunk(backend: Backend) -> None:
    rows = rows_of(backend)
    old, new = register(rows, KEY_A), register(rows, KEY_B, KEY_A)
    for n in range(5):
        await old.set_national_id("0301", f"r-{n}", nid(KARI), "anne", [entry("set")])
    await new.set_national_id("4601", "r-9", nid(OLA), "anne", [entry("set")])
    heard: list[Rekeyed] = []
    assert await new.rekey("cli:ops", heard.append, chunk=2) == Rekeyed(5, 0)
    assert heard == [Rekeyed(2, 0), Rekeyed(4, 0), Rekeyed(5, 0)]
    assert await rekeyed(backend) == [f"r-{n}" for n in range(5)]
    assert await new.rekey("cli:ops", heard.append, chunk=2) == Rekeyed(0, 0)
    for n in range(5):
        assert await register(rows, KEY_B).national_id("0301", f"r-{n}") == KARI


async def test_a_reseal_waits_for_a_change_in_flight_and_then_leaves_it(
    backend: Backend,
) -> None:
    """The other writer's transaction is open (its update not committed) when the reseal
    comes: the reseal must wait for it and see its result, not the row it read before."""
    rows = rows_of(backend)
    old, new = register(rows, KEY_A), register(rows, KEY_B, KEY_A)
    await old.set_national_id("0301", "r-17", nid(KARI), "anne", [entry("set")])
    [read] = await rows.stale_residents(key_id(KEY_B), None, 10)
    reseal = new._reseal(read, "cli:ops")  # the step rekey takes next
    update = "UPDATE residents SET nonce = {}, updated_by = 'kari'"
    if backend.pool is not None:
        async with backend.pool.acquire() as conn, conn.transaction():
            await conn.execute(update.format("'\\x00'::bytea"))
            task = asyncio.create_task(rows.reseal_residents([reseal]))
            await _until_waiting_for_a_lock(backend)
        assert await task == 0
    else:
        assert backend.path is not None
        with sqlite_at(backend.path, isolation_level=None) as other:
            other.execute("BEGIN IMMEDIATE")
            other.execute(update.format("x'00'"))
            task = asyncio.create_task(rows.reseal_residents([reseal]))
            # Whether the reseal's BEGIN IMMEDIATE comes before this COMMIT (and waits)
            # or after, it compares with kari's row. Only PostgreSQL is made to wait
            # here (_until_waiting_for_a_lock): on SQLite the interleaving is not forced,
            # and the read-then-write race itself is the AfterRead test's above.
            await asyncio.sleep(0)
            other.execute("COMMIT")
        assert await task == 0
    assert await backend.scalar("SELECT updated_by FROM residents") == "kari"
    assert await rekeyed(backend) == []


async def _until_waiting_for_a_lock(backend: Backend) -> None:
    assert backend.pool is not None
    sql = (
        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
        "AND datname = current_database()"
    )
    async with asyncio.timeout(60):
        while not await backend.pool.fetchval(sql):
            await asyncio.sleep(0.02)
