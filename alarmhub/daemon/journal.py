"""Deliver answered alarms to the residents' journals (issue 17), off the hot path.

The resolve writes the export row in its own transaction (store/journal_outbox.py,
`exports_on_resolve` below), so an answered alarm is never lost between its commit
and its delivery. This worker, part of the single-owner work (daemon/owner.py's
term, like the notifier), then takes each due row:

- `pending`: builds the document from the alarm's timeline, the resolving user's
  HPR number (the author; their user name when they have none) and the resident
  register (the read audited; the number held only in memory, never stored, logged
  or put in an error) and posts it. `202` + `Location`: `sent`. No note to write
  (no national id, a kind not exported): `not_applicable` with the reason.
- `sent`: polls the Location until the EPJ confirms (`confirmed`) or refuses
  (`refused`, with the journal's reason).
- `held`: not looked at. A `pending` note whose resident's number was replaced or
  removed at or after the alarm's raise (the pseudonym may name another person now:
  core/journal/identity.py) is not sent but held, logged and counted, until a
  municipality administrator releases it for a number they name (the register
  seals it on the row, store/residents.py; it is sent with that number) or cancels it.

A state is recorded only after the journal's answer (as the notifier marks a
notification sent only when accepted); 5xx, timeouts and connection errors are
retried with exponential backoff and full jitter, for as long as it takes. The
Bundle's identifier is a uuid5 of the alarm (core/journal/bundle.py): a resend
after a crash between the journal's 202 and our write is the same document, which
the journal recognises instead of filing a second note.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Protocol

import httpx
import orjson
import structlog

from alarmhub.clock import Clock
from alarmhub.core.journal.bundle import Document, journal_document
from alarmhub.core.journal.delivery import (
    Accepted,
    Confirmed,
    Outcome,
    Refused,
    Resend,
    Retry,
    Waiting,
    backoff,
)
from alarmhub.core.journal.document import (
    NotApplicable,
    Organisation,
    Patient,
    Skip,
    author_of,
    qualify,
    resolution_from_timeline,
    timeline_entry,
)
from alarmhub.core.journal.identity import Held, patient_for
from alarmhub.core.journal_status import JournalState
from alarmhub.core.model import Alarm
from alarmhub.core.rules import RuleSet
from alarmhub.daemon.waits import wait_set
from alarmhub.journal import helseid
from alarmhub.journal.auth import NoAuth, RequestAuth
from alarmhub.journal.client import JournalClient
from alarmhub.observability.logs import OncePer
from alarmhub.observability.metrics import Metrics
from alarmhub.settings import Settings
from alarmhub.store.errors import LeaseLostError, StoreError
from alarmhub.store.journal_outbox import JournalExport, JournalOutbox
from alarmhub.store.ports import NationalIds, Practitioners
from alarmhub.store.sealing import SealingError

log = structlog.get_logger("alarmhub.journal")
IDLE_S = 1.0


# How a municipality's requests are authorised, given the worker's connection pool:
# its HelseID client (journal/helseid.py auth_for) in production, NoAuth in tests.
AuthFor = Callable[[str, httpx.AsyncClient], RequestAuth]


class ExportSwitch:
    """Which municipalities have journal export on: the one decision, `exporting`.

    Those whose HelseID client is configured (Settings.journal_exporting): a note is
    never sent unauthenticated, so a municipality without a client exports nothing.
    """

    def __init__(self, municipalities: Iterable[str]) -> None:
        self._on = frozenset(municipalities)

    def exporting(self, municipality: str) -> bool:
        return municipality in self._on


def exports_on_resolve(
    exporting: Callable[[str], bool],
) -> Callable[[Alarm, datetime], list[JournalExport]]:
    """The export rows an operator's resolve writes in its own transaction."""

    def rows(alarm: Alarm, now: datetime) -> list[JournalExport]:
        if not exporting(alarm.municipality):
            return []
        return [JournalExport.new(alarm.id, alarm.municipality, now)]

    return rows


class AlarmSource(Protocol):
    """What a note is built from: the alarm and its timeline."""

    async def get_alarms(self, ids: Iterable[str]) -> list[Alarm]: ...

    async def timeline(self, alarm_id: str) -> list[dict[str, Any]]: ...


@dataclass(frozen=True, slots=True)
class DeliveryPolicy:
    url: str
    retry_base_s: float = 1.0
    retry_max_s: float = 300.0
    poll_s: float = 30.0
    timeout_s: float = 10.0


class JournalDelivery:
    """The journal outbox's one consumer: due rows in, the journal's answers recorded."""

    def __init__(
        self,
        *,
        reader: JournalOutbox,
        writer: JournalOutbox,
        alarms: AlarmSource,
        register: NationalIds,
        practitioners: Practitioners,
        rules: Callable[[], RuleSet],
        organisation: Organisation | None,
        policy: DeliveryPolicy,
        lock: asyncio.Lock,
        clock: Clock,
        metrics: Metrics,
        auth_for: AuthFor = lambda _m, _http: NoAuth(),
        draw: Callable[[], float] = random.random,
    ) -> None:
        self._reader, self._writer, self._alarms = reader, writer, alarms
        self._register, self._rules, self._organisation = register, rules, organisation
        self._practitioners = practitioners
        self._policy, self._lock, self._clock = policy, lock, clock
        self._metrics, self._auth_for, self._draw = metrics, auth_for, draw
        self._wake = asyncio.Event()
        self._once = OncePer(60.0)
        # One auth per municipality and connection pool: a HelseID token is cached in it
        # until shortly before it expires, so it must outlive a single request.
        self._auths: dict[tuple[str, int], RequestAuth] = {}

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        """One owner's term: its own connection pool, and the sign-ins made over it.

        The auths (a HelseID token, DPoP nonces) are this term's, dropped with its pool
        at the end: kept, every term left one per municipality behind, with its pool.
        """
        async with httpx.AsyncClient(timeout=self._policy.timeout_s) as http:
            client = JournalClient(http, self._policy.url)
            try:
                while True:
                    # A database out of reach holds exports back until it returns; it
                    # must not end the daemon. A row sent but not yet marked is sent again
                    # then, the same document: the journal recognises it by its identifier.
                    try:
                        await self.deliver_due(client)
                    except StoreError as exc:
                        self._store_failed(exc)
                    self._wake.clear()
                    await wait_set(self._wake, IDLE_S)
            finally:
                for key in [k for k in self._auths if k[1] == id(http)]:
                    del self._auths[key]

    async def deliver_due(self, client: JournalClient) -> None:
        for export in await self._reader.due_journal(self._clock.now()):
            with structlog.contextvars.bound_contextvars(alarm_id=export.alarm_id):
                try:
                    await self._step(export, client)
                except (StoreError, LeaseLostError):
                    raise  # run() waits for the database; the term's end stops this worker
                except Exception as exc:  # one export's fault stays with that export
                    self._step_failed(exc)
                    await self._record(export, Retry(f"unexpected error: {exc!r}"))
        oldest = await self._reader.oldest_waiting_journal()
        age = 0.0 if oldest is None else (self._clock.now() - oldest).total_seconds()
        self._metrics.journal_oldest_pending.set(max(0.0, age))
        self._metrics.journal_held.set(await self._reader.held_journal())

    def _store_failed(self, exc: StoreError) -> None:
        """The store refused a read or a mark: said once a minute, retried next turn."""
        self._once.warn(log, "journal.store_failed", error=str(exc))

    def _step_failed(self, exc: Exception) -> None:
        """An export step raised something unforeseen: said once a minute, then the next.

        This worker runs in the intake owner's term: an error out of it ended the
        term's task group, so the daemon, MQTT and SIP intake with it, and the next
        owner read the same row and ended too. The row is retried with its backoff.
        """
        should, suppressed = self._once.should_log("journal.step_failed")
        if should:
            log.error("journal.step_failed", since_last=suppressed, exc_info=exc)

    async def _step(self, export: JournalExport, client: JournalClient) -> None:
        key = (export.municipality, id(client.http))
        auth = self._auths.get(key)
        if auth is None:
            try:
                auth = self._auths[key] = self._auth_for(export.municipality, client.http)
            except (LookupError, OSError, ValueError) as exc:
                # No HelseID client for this municipality (any more), or its key file
                # unreadable since start-up: fixable, so kept and retried, shown on the row.
                await self._record(export, Retry(f"cannot sign in to the journal: {exc}"))
                return
        if export.state is JournalState.SENT and export.location is not None:
            await self._record(export, await client.poll(export.location, auth))
            return
        await self._send(export, client, auth)

    async def _send(self, export: JournalExport, client: JournalClient, auth: RequestAuth) -> None:
        built = await self._document(export)
        if isinstance(built, NotApplicable):
            await self._finish(export, JournalState.NOT_APPLICABLE, built.reason.value)
            log.info("journal.not_applicable", reason=built.reason.value)
            return
        if isinstance(built, Held):
            await self._hold(export, built)
            return
        if isinstance(built, Retry):
            await self._record(export, built)
            return
        outcome = await client.post_bundle(orjson.dumps(built.bundle), auth)
        if isinstance(outcome, Accepted | Confirmed):
            self._metrics.journal_sends.labels("accepted").inc()
        elif isinstance(outcome, Retry):  # a refusal is counted as one, not as a retry
            self._metrics.journal_sends.labels("retry").inc()
        await self._record(export, outcome)

    async def _document(self, export: JournalExport) -> Document | NotApplicable | Held | Retry:
        found = await self._alarms.get_alarms([export.alarm_id])
        if not found or self._organisation is None:
            why = "the alarm is gone" if not found else "the organisation settings are missing"
            return Retry(why)
        alarm, rules = found[0], self._rules()
        rows = await self._alarms.timeline(alarm.id)
        timeline = [timeline_entry(alarm.id, row) for row in rows]
        ready = qualify(alarm, timeline, rules.journal)
        if isinstance(ready, NotApplicable) and ready.reason is Skip.NOT_RESOLVED:
            # The row says an operator answered it: open again, the answer is still to
            # be journaled, and a second resolve writes no row of its own (one per alarm).
            return Retry("the alarm was reopened: its note goes once it is resolved again")
        if isinstance(ready, NotApplicable):
            return ready
        patient = await self._patient(alarm)
        if isinstance(patient, Held | Retry):
            return patient
        resolved_by = alarm.resolved_by or ""
        # The user record as it is now: an HPR number set after the resolve is sent too.
        author = author_of(resolved_by, await self._practitioners.hpr_of(resolved_by))
        resolution = resolution_from_timeline(timeline)
        return journal_document(
            alarm,
            timeline,
            patient,
            author,
            self._organisation,
            resolution,
            rules.journal,
            rules.timezone,
        )

    async def _patient(self, alarm: Alarm) -> Patient | Held | Retry:
        """The register's number now, unless it changed since the alarm (Held) or a
        release named another; read at each attempt, so a correction made before the
        alarm, or a number registered late, goes in the note."""
        if alarm.resident is None:
            return Patient(None)
        try:
            found = await self._register.journal_identity(
                alarm.municipality, alarm.resident, alarm.id
            )
        except SealingError as exc:  # a key missing or replaced: fixable, so retried
            return Retry(f"the register cannot open the number: {exc}")
        return patient_for(alarm.raised_at, found)

    async def _hold(self, export: JournalExport, held: Held) -> None:
        """Not sent, and not over: it waits for an administrator (release or cancel)."""
        reason = held.reason.value
        await self._save(
            replace(
                export,
                state=JournalState.HELD,
                reason=reason,
                location=None,
                next_at=self._clock.now(),
                last_error=None,
            )
        )
        self._metrics.journal_holds.inc()
        log.warning("journal.held", reason=reason, municipality=export.municipality)

    async def _record(self, export: JournalExport, outcome: Outcome) -> None:
        now = self._clock.now()
        poll = now + timedelta(seconds=self._policy.poll_s)
        if isinstance(outcome, Accepted):
            sent = replace(
                export,
                state=JournalState.SENT,
                location=outcome.location,
                attempts=export.attempts + 1,
                sent_at=now,
                next_at=poll,
                last_error=None,
            )
            await self._save(sent)
            log.info("journal.sent")
        elif isinstance(outcome, Waiting):
            await self._save(replace(export, next_at=poll, last_error=None))
        elif isinstance(outcome, Confirmed):
            await self._finish(export, JournalState.CONFIRMED, None)
            self._metrics.journal_confirmations.inc()
            log.info("journal.confirmed")
        elif isinstance(outcome, Resend):  # posted again: the journal knows its identifier
            pending = replace(export, state=JournalState.PENDING, location=None)
            await self._retry(pending, Retry(outcome.error))
        elif isinstance(outcome, Refused):
            await self._finish(export, JournalState.REFUSED, outcome.reason)
            self._metrics.journal_refusals.labels(outcome.kind.value).inc()
            log.warning("journal.refused", reason_class=outcome.kind.value, reason=outcome.reason)
        else:
            await self._retry(export, outcome)

    async def _retry(self, export: JournalExport, outcome: Retry) -> None:
        p = self._policy
        wait = backoff(export.attempts, p.retry_base_s, p.retry_max_s, self._draw())
        later = replace(
            export,
            attempts=export.attempts + 1,
            next_at=self._clock.now() + wait,
            last_error=outcome.error,
        )
        await self._save(later)
        should, suppressed = self._once.should_log(f"journal:{outcome.error}")
        if should:
            log.warning(
                "journal.retry",
                error=outcome.error,
                attempts=later.attempts,
                similar_since_last_log=suppressed,
            )

    async def _finish(self, export: JournalExport, state: JournalState, reason: str | None) -> None:
        now = self._clock.now()
        await self._save(
            replace(
                export, state=state, reason=reason, finished_at=now, next_at=now, last_error=None
            )
        )

    async def _save(self, export: JournalExport) -> None:
        async with self._lock:
            await self._writer.journal_save(export)


class DeliveryReads(JournalOutbox, AlarmSource, Practitioners, Protocol):
    """The reader's connection: the due exports, the alarms they are built from, and the
    resolving users' HPR numbers."""


def delivery_from(
    settings: Settings,
    reader: DeliveryReads,
    writer: JournalOutbox,
    register: NationalIds,
    rules: Callable[[], RuleSet],
    lock: asyncio.Lock,
    clock: Clock,
    metrics: Metrics,
    auth_for: AuthFor | None = None,
) -> JournalDelivery | None:
    """The worker the settings ask for; None without ALARMHUB_JOURNAL_URL (rows wait)."""
    if settings.journal_url is None:
        return None
    name, number = settings.journal_organisation_name, settings.journal_organisation_number
    policy = DeliveryPolicy(
        settings.journal_url,
        settings.journal_retry_base_s,
        settings.journal_retry_max_s,
        settings.journal_poll_s,
        settings.journal_timeout_s,
    )
    return JournalDelivery(
        reader=reader,
        writer=writer,
        alarms=reader,
        register=register,
        practitioners=reader,
        rules=rules,
        organisation=Organisation(name, number) if name and number else None,
        policy=policy,
        lock=lock,
        clock=clock,
        metrics=metrics,
        auth_for=auth_for or (lambda m, http: helseid.auth_for(settings, m, http, clock)),
    )
