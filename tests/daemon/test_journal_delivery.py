"""Journal delivery (daemon/journal.py) against a journal server on loopback (issue 17).

A real store (SQLite), the real resident register, a real HTTP journal server
(tests/support/journal_server.py); time is a FakeClock the test moves on, so the
backoff is exercised without waiting it out. Each test ends in a state and a count
of notes by Bundle identifier: exactly once is a count of one.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
import structlog
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from structlog.testing import capture_logs

from alarmhub.clock import FakeClock
from alarmhub.core.actions import Action, Applied, apply_action
from alarmhub.core.journal import codes
from alarmhub.core.journal_status import JournalState
from alarmhub.core.model import AlarmState, TimelineEntry, TimelineType
from alarmhub.core.national_id import NationalId, parse_national_id
from alarmhub.core.people import AuditEntry, Role
from alarmhub.core.pipeline import BatchEffects
from alarmhub.daemon.journal import DeliveryPolicy, JournalDelivery
from alarmhub.journal.auth import NoAuth, RequestAuth
from alarmhub.journal.client import JournalClient
from alarmhub.observability.metrics import Metrics
from alarmhub.store.accounts import everyone
from alarmhub.store.errors import StoreError
from alarmhub.store.journal_outbox import JournalExport
from alarmhub.store.residents import ResidentRegister
from alarmhub.store.sealing import Keyring
from alarmhub.store.sqlite.directory import SqliteDirectory
from alarmhub.store.sqlite.residents import SqliteResidentRows
from alarmhub.store.sqlite.store import SqliteStore
from tests.support.helpers import async_wait_until
from tests.support.journal import (
    CENTRE,
    HPR,
    NIN,
    PENDANT,
    PRESS,
    RULES,
    answered,
    raised_by_a_press,
)
from tests.support.journal_server import JournalServer

KEY = bytes(range(32))
STEPS = 60  # a ceiling on the worker's rounds in one test, never reached when it works
CEILING_S = 60.0  # a ceiling only: each verdict is whether it happens at all


@dataclass
class Rig:
    store: SqliteStore
    server: JournalServer
    clock: FakeClock
    metrics: Metrics
    directory: SqliteDirectory
    delivery: JournalDelivery
    client: JournalClient
    alarm_id: str

    async def export(self) -> JournalExport:
        [row] = await self.store.journal_exports([self.alarm_id])
        return row

    async def until(self, *states: JournalState) -> JournalExport:
        """Run the worker's rounds, moving the clock a second each, until a state."""
        for _ in range(STEPS):
            await self.delivery.deliver_due(self.client)
            row = await self.export()
            if row.state in states:
                return row
            self.clock.advance(timedelta(seconds=1))
        raise AssertionError(f"still {row}")


async def resolved_alarm(store: SqliteStore) -> str:
    await store.register_devices([PENDANT], PRESS, audit=[])
    alarm, raised = raised_by_a_press()
    await store.commit_batch(BatchEffects(alarms={alarm.id: alarm}, timeline=raised), {})
    done, timeline = answered()
    stored = await store.get_alarm(alarm.id)
    assert stored is not None
    assert done.resolved_at is not None
    export = JournalExport.new(alarm.id, alarm.municipality, done.resolved_at)
    await store.save_alarms(
        [replace(done, rev=stored.rev)], timeline[len(raised) :], audit=(), journal=[export]
    )
    return alarm.id


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    db = tmp_path / "a.db"
    store = await SqliteStore.open(db)
    server = JournalServer()
    await server.start()
    clock = FakeClock(PRESS + timedelta(hours=1))
    register = ResidentRegister(SqliteResidentRows(db), Keyring((KEY,)), clock)
    nid = parse_national_id(NIN)
    assert isinstance(nid, NationalId)
    audit = AuditEntry("admin", "resident.national_id_set", clock.now(), municipality="0301")
    await register.set_national_id("0301", "r-17", nid, "admin", [audit])
    directory = SqliteDirectory(db)  # kari resolves the alarm; her HPR number is set per test
    await directory.create_user("kari", Role.OPERATOR, ["0301"], "hash", clock.now(), [])
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
        try:
            client = JournalClient(http, server.url)
            yield Rig(store, server, clock, metrics, directory, delivery, client, alarm_id)
        finally:
            await server.stop()
            await store.close()


def value(metric: object) -> float:
    return float(metric._value.get())  # type: ignore[attr-defined]


async def test_a_resolved_alarm_arrives_exactly_once_and_is_confirmed(rig: Rig) -> None:
    rig.server.polls_to_confirm = 3
    sent = await rig.until(JournalState.SENT)
    assert sent.location is not None
    assert sent.location.startswith(rig.server.url)
    done = await rig.until(JournalState.CONFIRMED)
    assert done.finished_at is not None
    assert done.finished_at >= sent.sent_at  # type: ignore[operator]
    assert list(rig.server.note_count().values()) == [1]
    assert len(rig.server.posts) == 1
    assert value(rig.metrics.journal_confirmations) == 1
    assert value(rig.metrics.journal_sends.labels("accepted")) == 1
    [note] = rig.server.notes.values()
    patient = note.bundle["entry"][3]["resource"]  # type: ignore[index]
    assert patient["identifier"][0]["value"] == NIN  # the register's number, in the note only
    assert value(rig.metrics.journal_oldest_pending) == 0
    # kari has no HPR number: the note names her by alarmhub's user name.
    practitioner = note.bundle["entry"][4]["resource"]  # type: ignore[index]
    assert practitioner["identifier"] == [{"system": codes.USER_SYSTEM, "value": "kari"}]


async def test_the_note_names_the_resolving_operator_by_her_hpr_number(rig: Rig) -> None:
    entry = AuditEntry("admin", "user.hpr_set", rig.clock.now(), detail={"user": "kari"})
    assert await rig.directory.set_hpr(everyone, "kari", HPR, entry)
    await rig.until(JournalState.SENT)
    [note] = rig.server.notes.values()
    practitioner = note.bundle["entry"][4]["resource"]  # type: ignore[index]
    assert practitioner["identifier"] == [{"system": codes.HPR_SYSTEM, "value": HPR}]
    assert practitioner["name"] == [{"text": "kari"}]


@pytest.mark.parametrize("fault", ["500", "timeout", "down"])
async def test_a_failing_journal_delays_delivery_and_loses_nothing(rig: Rig, fault: str) -> None:
    if fault == "500":
        rig.server.fail_next = 3
    elif fault == "timeout":
        rig.server.hang_s = 1.0  # the client gives up after 0.5 s
    else:
        await rig.server.stop()
    for _ in range(3):  # three failed attempts, each backing off
        await rig.delivery.deliver_due(rig.client)
        rig.clock.advance(timedelta(seconds=5))
    waiting = await rig.export()
    assert (waiting.state, waiting.attempts) == (JournalState.PENDING, 3)
    assert waiting.last_error
    assert value(rig.metrics.journal_sends.labels("retry")) == 3
    assert value(rig.metrics.journal_oldest_pending) > 0
    failed = await rig.store.journal_exports(failed=True)
    assert [f.alarm_id for f in failed] == [rig.alarm_id]
    rig.server.hang_s = 0
    if fault == "down":
        await rig.server.start()  # the same port, back again
    await rig.until(JournalState.CONFIRMED)
    assert list(rig.server.note_count().values()) == [1]
    if fault == "timeout":  # the hung requests may have arrived: still one note
        assert len(rig.server.notes) == 1


async def test_a_resend_after_a_crash_is_recognised_not_a_second_note(rig: Rig) -> None:
    """The journal took the Bundle, but the crash came before the row said `sent`."""
    await rig.delivery.deliver_due(rig.client)
    sent = await rig.export()
    await rig.store.journal_save(replace(sent, state=JournalState.PENDING, location=None))
    await rig.until(JournalState.CONFIRMED)
    assert len(rig.server.posts) == 2  # sent twice
    assert list(rig.server.note_count().values()) == [1]  # journaled once


async def test_an_answered_alarm_reopened_before_its_note_went_waits_for_its_resolve(
    rig: Rig,
) -> None:
    """The export row exists because an operator answered the alarm. Reopened before the
    worker came to it (a flap reopened an operator's `auto` outcome), the row was
    finished as `not_applicable (not resolved)`, and the second resolve's row was the
    same one (one per alarm, ON CONFLICT DO NOTHING): the answer never reached the
    journal. It waits now, saying why, and goes once the alarm is resolved again."""
    [resolved] = await rig.store.get_alarms([rig.alarm_id])
    reopened_at = rig.clock.now()
    reopened = replace(resolved, state=AlarmState.OPEN, resolved_at=None, resolved_by=None)
    entry = TimelineEntry(rig.alarm_id, reopened_at, TimelineType.REOPENED, None, {})
    await rig.store.save_alarms([reopened], [entry], audit=())
    for _ in range(3):
        await rig.delivery.deliver_due(rig.client)
        rig.clock.advance(timedelta(seconds=5))
    waiting = await rig.export()
    assert waiting.state is JournalState.PENDING, waiting
    assert waiting.last_error is not None
    assert "reopened" in waiting.last_error
    assert [f.alarm_id for f in await rig.store.journal_exports(failed=True)] == [rig.alarm_id]
    assert rig.server.posts == []
    [stored] = await rig.store.get_alarms([rig.alarm_id])
    again = apply_action(stored, Action.RESOLVE, "kari", rig.clock.now(), outcome="helped")
    assert isinstance(again, Applied)
    await rig.store.save_alarms([again.alarm], again.timeline, audit=())
    await rig.until(JournalState.CONFIRMED)
    assert list(rig.server.note_count().values()) == [1]


@pytest.mark.parametrize(
    ("status", "challenge"),
    [
        (401, 'DPoP error="invalid_dpop_proof", error_description="iat too far off"'),
        (403, 'DPoP error="insufficient_scope"'),
        (404, None),
    ],
    ids=["proof-refused", "not-allowed", "no-such-endpoint"],
)
async def test_a_refused_sign_in_or_endpoint_is_retried_not_the_note_given_up(
    rig: Rig, status: int, challenge: str | None
) -> None:
    """401/403 (the municipality's sign-in: a clock off, a client not yet approved for
    JFT) and 404 (ALARMHUB_JOURNAL_URL mistyped) say nothing about the note, but ended
    it as `refused`, for good: there is no resend, so every alarm answered until the
    fix never reached its journal. They are retried with backoff now, shown pending
    with the journal's answer, until it takes the note."""
    refusing = True

    async def check(request: Request) -> Response | None:
        if not refusing:
            return None
        headers = {"www-authenticate": challenge} if challenge else {}
        return JSONResponse({"reason": "nei"}, status_code=status, headers=headers)

    rig.server.check = check
    for _ in range(3):
        await rig.delivery.deliver_due(rig.client)
        rig.clock.advance(timedelta(seconds=5))
    waiting = await rig.export()
    assert (waiting.state, waiting.attempts) == (JournalState.PENDING, 3)
    assert waiting.last_error is not None
    assert str(status) in waiting.last_error
    assert [f.alarm_id for f in await rig.store.journal_exports(failed=True)] == [rig.alarm_id]
    refusing = False  # the clock set right, the client approved, the URL corrected
    await rig.until(JournalState.CONFIRMED)
    assert list(rig.server.note_count().values()) == [1]


async def test_a_status_url_the_journal_forgot_is_sent_again_and_recognised(rig: Rig) -> None:
    """A poll answered 404/410 (the journal restarted and forgot its status URLs) said
    nothing about the note, but ended it as `refused` for good. The note is posted again
    now: the journal recognises its identifier and answers with its status again."""
    sent = await rig.until(JournalState.SENT)
    assert sent.location is not None
    forgotten = {sent.location.removeprefix(rig.server.url)}

    async def check(request: Request) -> Response | None:
        if request.method == "GET" and request.url.path in forgotten:
            forgotten.discard(request.url.path)
            return JSONResponse({"reason": "no such request"}, status_code=404)
        return None

    rig.server.check = check
    rig.clock.advance(timedelta(seconds=5))
    await rig.delivery.deliver_due(rig.client)
    again = await rig.export()
    assert (again.state, again.location) == (JournalState.PENDING, None)
    assert again.last_error is not None
    assert "404" in again.last_error
    await rig.until(JournalState.CONFIRMED)
    assert len(rig.server.posts) == 2  # sent twice
    assert list(rig.server.note_count().values()) == [1]  # journaled once
    assert value(rig.metrics.journal_refusals.labels("not_found")) == 0


async def test_a_refusal_is_recorded_with_its_reason_and_counted(rig: Rig) -> None:
    rig.server.refuse = f"ukjent pasient {NIN}"
    refused = await rig.until(JournalState.REFUSED)
    assert refused.reason == "ukjent pasient " + NIN[:6] + "*****"
    assert value(rig.metrics.journal_refusals.labels("journal")) == 1
    assert [f.alarm_id for f in await rig.store.journal_exports(failed=True)] == [rig.alarm_id]


async def test_a_post_refused_is_not_counted_as_a_send_retried(rig: Rig) -> None:
    """A note the journal refused at the post (422) was counted in
    alarmhub_journal_sends_total{result="retry"}, documented as "tried again with
    backoff": the failing-sends panel showed a retry that never came."""

    async def check(request: Request) -> Response | None:
        return JSONResponse({"reason": "ukjent kode"}, status_code=422)

    rig.server.check = check
    refused = await rig.until(JournalState.REFUSED)
    assert refused.reason == "ukjent kode"
    assert value(rig.metrics.journal_refusals.labels("invalid")) == 1
    assert value(rig.metrics.journal_sends.labels("retry")) == 0
    assert value(rig.metrics.journal_sends.labels("accepted")) == 0


async def test_each_term_keeps_only_its_own_sign_ins(rig: Rig) -> None:
    """The worker runs once per owner's term, each run with its own connection pool. A
    municipality's auth (its HelseID token, DPoP nonces) was kept per pool for the
    worker's life, so every term left one behind, holding its closed pool: one per
    municipality per term, for as long as the daemon ran (PostgreSQL: per lease lost)."""
    pools: list[httpx.AsyncClient] = []

    def auth_for(municipality: str, http: httpx.AsyncClient) -> RequestAuth:
        pools.append(http)
        return NoAuth()

    rig.delivery._auth_for = auth_for

    async def term(until: JournalState) -> None:
        task = asyncio.create_task(rig.delivery.run())
        try:

            async def reached() -> bool:
                return (await rig.export()).state is until or task.done()

            for _ in range(int(CEILING_S / 0.05)):
                if await reached():
                    break
                await asyncio.sleep(0.05)
            assert not task.done(), task.exception()
            assert (await rig.export()).state is until
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    await term(JournalState.SENT)  # the first term posts
    rig.clock.advance(timedelta(seconds=5))
    await term(JournalState.CONFIRMED)  # the next one polls, with its own pool
    assert len(pools) == 2
    assert pools[0] is not pools[1]
    assert len(rig.delivery._auths) == 0  # none kept past its term


async def test_without_a_national_id_nothing_is_sent(rig: Rig, tmp_path: Path) -> None:
    # Removed before the press: the resident had no number when the alarm came. (One
    # removed after it holds the note: tests/daemon/test_journal_pseudonym.py.)
    before = FakeClock(PRESS - timedelta(minutes=1))
    register = ResidentRegister(SqliteResidentRows(tmp_path / "a.db"), Keyring((KEY,)), before)
    await register.remove("0301", "r-17", [])
    done = await rig.until(JournalState.NOT_APPLICABLE)
    assert done.reason == "no national id"
    assert rig.server.posts == []


@pytest.mark.parametrize("quoted", [NIN, f"{NIN[:6]} {NIN[6:]}"], ids=["run", "grouped"])
async def test_no_national_id_number_in_any_log_line_or_row(rig: Rig, quoted: str) -> None:
    rig.server.fail_next = 1
    rig.server.refuse = f"ukjent pasient {quoted}"
    with structlog.testing.capture_logs() as logs:
        await rig.until(JournalState.REFUSED)
    assert {e["event"] for e in logs} >= {"journal.retry", "journal.sent", "journal.refused"}
    for shown in (repr(logs), repr(await rig.store.journal_exports())):
        assert NIN not in shown
        assert NIN[6:] not in shown


def test_no_auth_adds_no_headers() -> None:
    assert NoAuth().observe(401, {}) is False


@pytest.mark.parametrize("fault", ["no-client", "key-unreadable", "unforeseen"])
async def test_an_export_that_cannot_be_signed_in_is_retried_and_the_worker_lives(
    rig: Rig, fault: str
) -> None:
    """A municipality's HelseID client removed while its exports wait, its key file
    gone since start-up, or any other error in one step: that row waits with the
    reason, and the worker goes on. The worker runs in the intake owner's term, so
    an error out of it ended the daemon (MQTT and SIP intake too), on every owner."""
    errors: dict[str, Exception] = {
        "no-client": LookupError("municipality 0301 has no HelseID client: export is off"),
        "key-unreadable": ValueError("/etc/alarmhub/helseid-0301.pem cannot be read"),
        "unforeseen": RuntimeError("something nobody planned for"),
    }
    broken = True

    def auth_for(municipality: str, http: httpx.AsyncClient) -> RequestAuth:
        if broken:
            raise errors[fault]
        return NoAuth()

    if fault == "unforeseen":  # past the sign-in: the document step raises
        real = rig.delivery._document

        async def document(export: JournalExport) -> object:
            if broken:
                raise errors[fault]
            return await real(export)

        rig.delivery._document = document  # type: ignore[method-assign,assignment]
    else:
        rig.delivery._auth_for = auth_for
    # run() lets only a StoreError out of deliver_due pass: anything else raised here
    # ended the worker, and with it the term.
    for _ in range(3):
        await rig.delivery.deliver_due(rig.client)
        rig.clock.advance(timedelta(seconds=5))
    waiting = await rig.export()
    assert waiting.state is JournalState.PENDING
    assert waiting.last_error is not None
    assert str(errors[fault]) in waiting.last_error
    assert rig.server.posts == []
    broken = False  # the client configured again, the key back
    await rig.until(JournalState.CONFIRMED)
    assert list(rig.server.note_count().values()) == [1]


async def test_a_refused_read_of_the_due_exports_holds_them_back_and_ends_nothing(
    rig: Rig,
) -> None:
    """SQLite's refusal of `due_journal` (a read on the reader's own connection) came out
    as sqlite3.OperationalError, not StoreError: run() let it through, the worker ended,
    and with it the owner's term and the daemon's TaskGroup (MQTT and SIP intake).

    A reader of a WAL database cannot be locked out by another connection, so the
    refusal here is the schema's: another process renames the table, then puts it back.
    """
    assert rig.store.path is not None
    other = sqlite3.connect(rig.store.path, isolation_level=None, timeout=30)
    try:
        other.execute("ALTER TABLE journal_exports RENAME TO journal_exports_away")
        with capture_logs() as logs:

            def said() -> bool:
                return any(e["event"] == "journal.store_failed" for e in logs)

            task = asyncio.create_task(rig.delivery.run())
            assert await async_wait_until(lambda: said() or task.done(), CEILING_S)
            assert not task.done(), task.exception()
            other.execute("ALTER TABLE journal_exports_away RENAME TO journal_exports")
            # Back: the export the refusal held goes out on a later turn, once.
            assert await async_wait_until(lambda: bool(rig.server.posts) or task.done(), CEILING_S)
            assert not task.done(), task.exception()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        assert list(rig.server.note_count().values()) == [1]
        failed = [e for e in logs if e["event"] == "journal.store_failed"]
        assert failed[0]["log_level"] == "warning"
        assert "no such table" in failed[0]["error"]
    finally:
        other.close()


async def test_a_refused_read_of_the_residents_number_waits_for_the_database(rig: Rig) -> None:
    """The register's read of the resident's number let the driver's own error out
    (sqlite3.OperationalError; asyncpg's on PostgreSQL), so the worker's catch-all took a
    database refusal for that export's fault: `journal.step_failed` at error level with a
    traceback, and the row retried with backoff, "unexpected error" as its reason. It is
    a StoreError now, like every other read: run() waits for the database
    (`journal.store_failed`), the row is left as it was, and the note goes once."""
    assert rig.store.path is not None
    before = await rig.export()
    other = sqlite3.connect(rig.store.path, isolation_level=None, timeout=30)
    try:
        other.execute("ALTER TABLE residents RENAME TO residents_away")
        with capture_logs() as logs, pytest.raises(StoreError, match="no such table"):
            await rig.delivery.deliver_due(rig.client)
        assert [e for e in logs if e["event"] == "journal.step_failed"] == []
        assert await rig.export() == before
        other.execute("ALTER TABLE residents_away RENAME TO residents")
    finally:
        other.close()
    await rig.until(JournalState.CONFIRMED)
    assert list(rig.server.note_count().values()) == [1]
