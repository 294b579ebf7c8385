"""A pseudonym's number changed while its note waits: the note is held, never sent to it.

The resident register maps a pseudonym (`r-17`) to a national identity number, read
when the note is built, at delivery. A departed resident's pseudonym given to the next
person while a note for the first still waited (the journal down, retries) sent that
note, a health note, to the second person's patient record. Now a note whose
pseudonym's number was replaced or removed at or after the alarm's raise is `held`
("national id changed since the alarm"), logged, counted, and waits for a municipality
administrator to release it for a number they name, or to cancel it; each audited in
the change's transaction. A number first registered after the alarm (the resident had
none before) is the ordinary late registration and goes.

A real store (SQLite), the real register, a real HTTP journal server (down, then back
on its port); time is a FakeClock the test moves on.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from structlog.testing import capture_logs

from alarmhub.clock import FakeClock
from alarmhub.core.national_id import NationalId, parse_national_id
from alarmhub.core.people import AuditEntry
from alarmhub.daemon.journal import DeliveryPolicy, JournalDelivery
from alarmhub.journal.client import JournalClient
from alarmhub.observability.metrics import Metrics
from alarmhub.store.journal_outbox import JournalExport
from alarmhub.store.residents import ResidentRegister
from alarmhub.store.sealing import Keyring
from alarmhub.store.sqlite.residents import SqliteResidentRows
from alarmhub.store.sqlite.store import SqliteStore
from tests.daemon.test_journal_delivery import resolved_alarm
from tests.support.helpers import async_wait_until, db_rows
from tests.support.journal import CENTRE, PRESS, RULES
from tests.support.journal_server import JournalServer
from tests.support.national_ids import KARI, OLA, synthetic

KEY = bytes(range(32))
ROUNDS = 5  # the worker's rounds while the journal is down
STEPS = 60  # a ceiling on the worker's rounds, never reached when it works
CHANGED = "national id changed since the alarm"
KARI_CORRECTED = synthetic("0101", "90", "456")  # Kari's number, mistyped before


def nid(text: str) -> NationalId:
    parsed = parse_national_id(text)
    assert isinstance(parsed, NationalId), parsed
    return parsed


@dataclass
class Rig:
    db: Path
    store: SqliteStore
    server: JournalServer
    clock: FakeClock
    metrics: Metrics
    register: ResidentRegister
    delivery: JournalDelivery
    client: JournalClient
    alarm_id: str

    async def export(self) -> JournalExport:
        [row] = await self.store.journal_exports([self.alarm_id])
        return row

    async def set_number(self, number: str, by: str = "anne") -> None:
        audit = AuditEntry(by, "resident.national_id_set", self.clock.now(), municipality="0301")
        await self.register.set_national_id("0301", "r-17", nid(number), by, [audit])

    async def remove_number(self) -> None:
        audit = AuditEntry("anne", "resident.national_id_removed", self.clock.now())
        assert await self.register.remove("0301", "r-17", [audit])

    async def journal_down_for_a_while(self) -> None:
        """The journal out of reach: the note is tried, and waits."""
        await self.server.stop()
        for _ in range(ROUNDS):
            await self.delivery.deliver_due(self.client)
            self.clock.advance(timedelta(seconds=5))
        assert (await self.export()).state.value == "pending"

    async def rounds(self, until: str) -> JournalExport:
        """The worker's rounds, a second apart, until the export is in state `until`."""
        for _ in range(STEPS):
            await self.delivery.deliver_due(self.client)
            row = await self.export()
            if row.state.value == until:
                return row
            self.clock.advance(timedelta(seconds=1))
        raise AssertionError(f"still {row}")

    def patients(self) -> list[str]:
        """The national identity number of every note the journal took."""
        return [
            n.bundle["entry"][3]["resource"]["identifier"][0]["value"]  # type: ignore[index]
            for n in self.server.notes.values()
        ]

    def audit(self, action: str) -> list[tuple[Any, ...]]:
        sql = "SELECT actor, municipality, alarm_id, detail FROM audit WHERE action = ?"
        return db_rows(self.db, sql, (action,))


async def rig_with(tmp_path: Path, registered: str | None) -> AsyncIterator[Rig]:
    """The resident registered (`registered`) an hour before the press, or never; the
    alarm answered (raised at PRESS, resolved 25 minutes later); the clock an hour on."""
    db = tmp_path / "a.db"
    store = await SqliteStore.open(db)
    server = JournalServer()
    await server.start()
    clock = FakeClock(PRESS - timedelta(hours=1))
    register = ResidentRegister(SqliteResidentRows(db), Keyring((KEY,)), clock)
    metrics = Metrics()
    policy = DeliveryPolicy(server.url, retry_base_s=1, retry_max_s=4, poll_s=1, timeout_s=0.5)
    delivery = JournalDelivery(
        reader=store,
        writer=store,
        alarms=store,
        register=register,
        practitioners=store,
        rules=lambda: RULES,
        organisation=CENTRE,
        policy=policy,
        lock=asyncio.Lock(),
        clock=clock,
        metrics=metrics,
        draw=lambda: 0.5,
    )
    alarm_id = await resolved_alarm(store)
    async with httpx.AsyncClient(timeout=policy.timeout_s) as http:
        client = JournalClient(http, server.url)
        r = Rig(db, store, server, clock, metrics, register, delivery, client, alarm_id)
        try:
            if registered is not None:
                await r.set_number(registered)
            clock.advance(timedelta(hours=2))  # PRESS + 1 h: the alarm answered, waiting
            yield r
        finally:
            await server.stop()
            await store.close()


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    async for r in rig_with(tmp_path, KARI):
        yield r


@pytest.fixture
async def unregistered(tmp_path: Path) -> AsyncIterator[Rig]:
    async for r in rig_with(tmp_path, None):
        yield r


def value(metric: object) -> float:
    return float(metric._value.get())  # type: ignore[attr-defined]


async def test_a_pseudonym_given_to_another_person_holds_the_waiting_note(rig: Rig) -> None:
    """Kari (r-17) pressed; her note waits for the journal. She moves out, and r-17 is
    given to Ola, the next resident of her flat. The journal comes back: the note must
    not go to Ola's patient record. The old code sent it there."""
    await rig.journal_down_for_a_while()
    await rig.set_number(OLA)  # r-17 is Ola now
    await rig.server.start()  # the journal back, on its port
    with capture_logs() as logs:
        held = await rig.rounds("held")
        for _ in range(ROUNDS):  # and it stays held: nothing sends it on its own
            await rig.delivery.deliver_due(rig.client)
            rig.clock.advance(timedelta(seconds=30))
    assert OLA not in rig.patients()
    assert rig.server.posts == []
    assert (await rig.export()).state.value == "held"
    assert held.reason == CHANGED
    assert held.finished_at is None  # not over: it waits for an administrator
    [said] = [e for e in logs if e["event"] == "journal.held"]
    assert said["log_level"] == "warning"
    assert said["reason"] == CHANGED
    assert OLA not in repr(logs)
    assert KARI not in repr(logs)
    assert value(rig.metrics.journal_holds) == 1
    assert value(rig.metrics.journal_held) == 1
    # It is a failure to look at: `journal status --failed` lists it.
    assert [e.alarm_id for e in await rig.store.journal_exports(failed=True)] == [rig.alarm_id]


async def test_release_sends_the_held_note_for_the_number_the_administrator_names(
    rig: Rig,
) -> None:
    await rig.journal_down_for_a_while()
    await rig.set_number(OLA)
    await rig.server.start()
    await rig.rounds("held")
    audit = AuditEntry(
        "anne", "journal.released", rig.clock.now(), municipality="0301", alarm_id=rig.alarm_id
    )
    # Kari's number, which the register no longer holds: the note is hers.
    assert await rig.register.release_note(rig.alarm_id, "0301", nid(KARI), [audit])
    released = await rig.export()
    assert released.state.value == "pending"
    assert released.reason is None
    await rig.rounds("confirmed")
    assert rig.patients() == [KARI]
    assert value(rig.metrics.journal_held) == 0
    [(actor, municipality, alarm_id, detail)] = rig.audit("journal.released")
    assert (actor, municipality, alarm_id) == ("anne", "0301", rig.alarm_id)
    assert KARI[6:] not in detail
    # The number the note went with is not kept once the note is done.
    sealed = db_rows(rig.db, "SELECT release_sealed FROM journal_exports")
    assert sealed == [(None,)]
    # The register keeps Ola: the release named a number for this note only.
    assert await rig.register.national_id("0301", "r-17") == OLA
    # A release is once: the note is no longer held.
    assert not await rig.register.release_note(rig.alarm_id, "0301", nid(KARI), [audit])
    assert len(rig.audit("journal.released")) == 1


async def test_cancel_ends_the_held_note_unsent(rig: Rig) -> None:
    await rig.journal_down_for_a_while()
    await rig.set_number(OLA)
    await rig.server.start()
    await rig.rounds("held")
    audit = AuditEntry(
        "anne", "journal.cancelled", rig.clock.now(), municipality="0301", alarm_id=rig.alarm_id
    )
    assert await rig.register.cancel_note(rig.alarm_id, "0301", "cancelled by anne", [audit])
    done = await rig.export()
    assert done.state.value == "cancelled"
    assert done.reason == "cancelled by anne"
    assert done.finished_at is not None
    for _ in range(ROUNDS):
        await rig.delivery.deliver_due(rig.client)
        rig.clock.advance(timedelta(seconds=30))
    assert rig.server.posts == []
    assert (await rig.export()).state.value == "cancelled"
    assert value(rig.metrics.journal_held) == 0
    assert len(rig.audit("journal.cancelled")) == 1
    assert not await rig.register.cancel_note(rig.alarm_id, "0301", "again", [audit])
    assert not await rig.register.release_note(rig.alarm_id, "0301", nid(KARI), [audit])
    assert len(rig.audit("journal.cancelled")) == 1


async def test_another_municipality_never_releases_nor_cancels_the_note(rig: Rig) -> None:
    await rig.journal_down_for_a_while()
    await rig.set_number(OLA)
    await rig.server.start()
    await rig.rounds("held")
    audit = AuditEntry("bjorn", "journal.released", rig.clock.now(), municipality="4601")
    assert not await rig.register.release_note(rig.alarm_id, "4601", nid(OLA), [audit])
    assert not await rig.register.cancel_note(rig.alarm_id, "4601", "x", [audit])
    assert (await rig.export()).state.value == "held"
    assert rig.audit("journal.released") == []


async def test_a_pending_note_cannot_be_released_around_the_register(rig: Rig) -> None:
    """Only a held note takes a number of its own: a waiting one goes by the register."""
    await rig.journal_down_for_a_while()
    audit = AuditEntry("anne", "journal.released", rig.clock.now(), municipality="0301")
    assert not await rig.register.release_note(rig.alarm_id, "0301", nid(OLA), [audit])
    assert rig.audit("journal.released") == []
    await rig.server.start()
    await rig.rounds("confirmed")
    assert rig.patients() == [KARI]


async def test_a_correction_while_the_note_waits_is_held_too_and_released(rig: Rig) -> None:
    """A mistyped number corrected while the note waits changes the number behind r-17
    as a new resident would: alarmhub cannot tell the two apart, so it holds the note
    and the administrator who corrected it releases it, naming the corrected number."""
    await rig.journal_down_for_a_while()
    await rig.set_number(KARI_CORRECTED)
    await rig.server.start()
    await rig.rounds("held")
    audit = AuditEntry("anne", "journal.released", rig.clock.now(), municipality="0301")
    assert await rig.register.release_note(rig.alarm_id, "0301", nid(KARI_CORRECTED), [audit])
    await rig.rounds("confirmed")
    assert rig.patients() == [KARI_CORRECTED]


async def test_the_same_number_saved_again_is_no_change(rig: Rig) -> None:
    await rig.journal_down_for_a_while()
    await rig.set_number(KARI, by="bjorn")  # saved again: the same person
    await rig.server.start()
    await rig.rounds("confirmed")
    assert rig.patients() == [KARI]
    assert value(rig.metrics.journal_holds) == 0


async def test_a_correction_made_before_the_alarm_goes_with_the_note(rig: Rig) -> None:
    rig.clock.advance(timedelta(hours=-3))  # before the press
    await rig.set_number(KARI_CORRECTED)
    rig.clock.advance(timedelta(hours=3))
    await rig.rounds("confirmed")
    assert rig.patients() == [KARI_CORRECTED]


async def test_a_number_first_registered_after_the_alarm_goes_with_it(
    unregistered: Rig,
) -> None:
    """Late registration: r-17 had no number when the alarm was raised, and gets one
    before the note is built (without one the note ends `not_applicable` at once). No
    number was replaced: it is the ordinary case of a new resident registered after
    their first alarm, and the note goes with it, the journal down for a while or not."""
    rig = unregistered
    await rig.set_number(KARI)
    await rig.journal_down_for_a_while()
    await rig.server.start()
    await rig.rounds("confirmed")
    assert rig.patients() == [KARI]
    assert value(rig.metrics.journal_holds) == 0


@pytest.mark.parametrize("again", [None, KARI, OLA], ids=["removed", "same-again", "another"])
async def test_a_number_removed_after_the_alarm_holds_the_note(rig: Rig, again: str | None) -> None:
    """Removed (Kari moved out), and perhaps registered again: as the same number or
    another, the pseudonym may name someone else now. Held either way."""
    await rig.journal_down_for_a_while()
    await rig.remove_number()
    if again is not None:
        await rig.set_number(again)
    await rig.server.start()
    held = await rig.rounds("held")
    assert held.reason == CHANGED
    assert rig.server.posts == []


async def test_a_number_removed_before_the_alarm_and_another_registered_after_goes(
    unregistered: Rig,
) -> None:
    """Kari left before the press (her number removed then): r-17 was nobody's at the
    raise, so the number registered afterwards is the late registration of whoever
    pressed, and goes."""
    rig = unregistered
    rig.clock.advance(timedelta(hours=-3))
    await rig.set_number(KARI)
    rig.clock.advance(timedelta(minutes=1))
    await rig.remove_number()
    rig.clock.advance(timedelta(hours=3))
    await rig.set_number(OLA)
    await rig.journal_down_for_a_while()
    await rig.server.start()
    await rig.rounds("confirmed")
    assert rig.patients() == [OLA]


async def test_the_worker_lives_through_a_held_note_and_a_release_it_cannot_open(
    rig: Rig,
) -> None:
    """The worker runs in the intake owner's term: nothing on this path may end it. A
    released number sealed under a key no longer configured waits, retried, and says so."""
    await rig.journal_down_for_a_while()
    await rig.set_number(OLA)
    await rig.server.start()
    task = asyncio.create_task(rig.delivery.run())
    try:
        assert await async_wait_until(lambda: task.done() or value(rig.metrics.journal_held) == 1)
        assert not task.done(), task.exception()
        assert (await rig.export()).state.value == "held"
        # Released under a key the daemon does not have (another host's, a rotation).
        other = ResidentRegister(SqliteResidentRows(rig.db), Keyring((bytes(32),)), rig.clock)
        audit = AuditEntry("anne", "journal.released", rig.clock.now(), municipality="0301")
        assert await other.release_note(rig.alarm_id, "0301", nid(KARI), [audit])
        rig.delivery.wake()
        errors: list[str | None] = []

        async def failed() -> bool:
            errors.append((await rig.export()).last_error)
            return errors[-1] is not None or task.done()

        for _ in range(500):
            if await failed():
                break
            await asyncio.sleep(0.02)
        assert not task.done(), task.exception()
        assert errors[-1] is not None
        assert "cannot open" in errors[-1]
        assert (await rig.export()).state.value == "pending"
        assert rig.server.posts == []
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
