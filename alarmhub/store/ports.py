"""The store as the shell sees it: one Protocol per kind of use, and the rows they pass.

Each service takes the narrowest port that covers what it does, one port per
use (ingest an :class:`IngestStore`, the notifier :class:`OutboxReads` and
:class:`OutboxWrites`, the escalator an :class:`EscalationStore`, suppression a
:class:`SilenceSource` and a :class:`ReleaseStore`); these are the only
definitions, daemon/ declares none of its own. So a second store is a new module beside
``store/sqlite/`` that implements these, plus one line of wiring in ``app.py``
that opens it instead of :class:`~alarmhub.store.sqlite.store.SqliteStore`.
Nothing outside ``store/`` imports a driver or writes SQL
(tests/store/test_no_sql_outside_store.py).

The second store is ``store/postgres/`` (issue 15); the journal export (issue 17) has an
outbox of its own (``store/journal_outbox.py``), beside the notifications'.

The domain values that cross these ports are defined once: alarms, devices and
silences in ``core/`` (``core.model``, ``core.suppress.Silence``), people in
``core.people``, the tenancy scope in ``core.tenancy``. The three row types
below are the store's own vocabulary for the escalation transaction and the
outbox; they are plain values too.

The web and the CLI reach people and scoped reads through :class:`ScopedReads`,
:class:`Accounts` and :class:`Access` (together a :class:`Directory`), never the
SQLite functions behind them: ``store/sqlite/directory.py`` runs each of those on
a short-lived connection of its own in a worker thread; a PostgreSQL module would
implement the same methods on its pool.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol, runtime_checkable

from alarmhub.core.dedup import Prior
from alarmhub.core.digest import DeviceCredentials
from alarmhub.core.escalation import DeadlineKey, EscalationDecision
from alarmhub.core.journal.identity import Registered
from alarmhub.core.model import Alarm, Device, TimelineEntry
from alarmhub.core.people import AuditEntry, Role, User
from alarmhub.core.pipeline import BatchEffects
from alarmhub.core.quick import quick_init
from alarmhub.core.reports import ResponseRow
from alarmhub.core.retention import RetainedTable
from alarmhub.core.suppress import Silence
from alarmhub.core.tenancy import AlarmFilter, DeviceFilter, Scope
from alarmhub.store.accounts import SessionInfo, TokenRow, UserRow, Visible
from alarmhub.store.journal_outbox import JournalExport, JournalOutbox

# --- the rows the ports pass ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class OutboxItem:
    id: int
    alarm_id: str
    target: str
    channel: str  # "mqtt" or "webhook"
    address: str  # topic or URL
    payload: bytes
    attempts: int


@quick_init
@dataclass(frozen=True, slots=True)
class Notification:
    target: str
    channel: str
    address: str
    payload: dict[str, Any]


@quick_init
@dataclass(frozen=True, slots=True)
class DecidedRow:
    """One decided deadline and everything it changes, for one transaction."""

    decision: EscalationDecision
    alarm_id: str
    alarm: Alarm | None
    timeline: Sequence[TimelineEntry]
    notifications: Sequence[Notification]

    @property
    def decided_at(self) -> datetime:
        """When it was decided: due time plus how late."""
        return self.decision.deadline.due_at + self.decision.late_by


@dataclass(frozen=True, slots=True)
class DoseHistory:
    """What the store says about one dispenser's doses, for tracking after a restart.

    `since`: every dose scheduled at or before it is settled as far as the store
    shows: the latest dose alarmhub reported missed, else the device's
    registration, never earlier than `lookback` before now. `taken`: the
    dose.taken times received after `since`, in order, to replay.
    """

    since: datetime
    taken: tuple[datetime, ...]


# --- what each part of the shell uses ------------------------------------------


class IngestStore(Protocol):
    """Ingest (daemon/ingest.py): the per-batch sandwich's one read and one write.

    Plus the registry looked up by id: a device registered a moment ago by the
    CLI or the API is found before its message is rejected as unknown.
    """

    async def latest_messages(self, fingerprints: Iterable[str]) -> dict[str, Prior]: ...

    # With its new alarms' first steps (`decided`), claimed as commit_decisions claims
    # them, in one transaction; per step, whether recorded now. Nothing is written, and
    # DeviceMovedError names them, if a device of `effects.decided_with` is stored now in
    # another municipality or with another resident (moved by another process).
    async def commit_batch(
        self,
        effects: BatchEffects,
        municipality_of: dict[str, str],
        decided: Sequence[DecidedRow] = (),
    ) -> list[bool]: ...

    async def get_devices(self, ids: Iterable[str]) -> list[Device]: ...


class RegistryStore(Protocol):
    """Registry sync (daemon/registry.py): the registry and the alarms loaded at start,
    polled for changes another process made, and written for the CLI and the API."""

    async def load_devices(self) -> dict[str, Device]: ...

    async def load_active_alarms(self) -> list[Alarm]: ...

    async def load_resolved_since(self, since: datetime) -> list[Alarm]: ...

    async def newest_device_update(self) -> str: ...

    async def devices_changed_since(self, since: str) -> tuple[list[Device], str]: ...

    async def get_devices(self, ids: Iterable[str]) -> list[Device]: ...

    async def register_devices(
        self,
        devices: Sequence[Device],
        now: datetime,
        keep: frozenset[str] = frozenset(),
        *,
        audit: Sequence[AuditEntry],
        existing_in: frozenset[str] | None = None,
        assign_bridges: bool = False,
    ) -> list[str]:
        """Returns the written ids whose SIP credentials were set in another municipality.

        `assign_bridges`: a system admin's write, which may put the first device on a
        bridge nobody assigned (and so assigns it); otherwise BridgeUnassignedError.
        """
        ...

    async def assign_bridge(
        self, bridge: str, municipality: str, now: datetime, *, actor: str
    ) -> str | None:
        """A system admin assigns a bridge, audited with it; returns its previous
        municipality. BridgeInUseError while it has devices of another."""
        ...

    async def list_bridges(self) -> list[dict[str, str]]:
        """Every assigned bridge: id, municipality, assigned_at, assigned_by."""
        ...


class ActionStore(Protocol):
    """Operator actions (daemon/actions.py): alarms, timeline and audit in one transaction."""

    async def get_alarm(self, alarm_id: str) -> Alarm | None: ...

    async def save_alarms(
        self,
        alarms: Iterable[Alarm],
        entries: Iterable[TimelineEntry],
        *,
        audit: Sequence[AuditEntry],
        journal: Sequence[JournalExport] = (),
    ) -> None: ...

    async def queue_outbox(self, alarm_id: str, note: Notification, at: datetime) -> None:
        """Leave `note` for the owner's notifier to send (any instance may; not fenced).

        A standby has no broker connection (issue 15): a device's "handled" receipt
        made by an action there reaches the device through this row.
        """
        ...


class FollowedAlarms(Protocol):
    """The change follower (daemon/follower.py): alarms another instance changed, read back.

    `get_alarms` reads the announced ids in one query (those not found are left
    out); `load_active_alarms` is the re-query after the listener reconnected.
    """

    async def get_alarms(self, ids: Iterable[str]) -> list[Alarm]: ...

    async def load_active_alarms(self) -> list[Alarm]: ...


class RaisingMessages(Protocol):
    """Which message raised an alarm, for the device's receipt; read on the reader's side."""

    async def raising_message(self, alarm_id: str) -> tuple[str, str] | None: ...


class ReleaseStore(Protocol):
    """Suppression (daemon/suppression.py): a silence ends, the alarms it held are released."""

    async def save_alarms(
        self,
        alarms: Iterable[Alarm],
        entries: Iterable[TimelineEntry],
        *,
        audit: Sequence[AuditEntry],
        journal: Sequence[JournalExport] = (),
    ) -> None: ...

    async def end_silence_releasing(
        self,
        silence_id: str,
        by: str,
        now: datetime,
        released: Sequence[Alarm],
        entries: Sequence[TimelineEntry],
        *,
        audit: Sequence[AuditEntry],
    ) -> bool: ...


class EscalationStore(Protocol):
    """The escalator: deadlines are rows; which fired, and each decision with its effects, once."""

    async def fired_keys(self, alarm_ids: Iterable[str]) -> dict[str, set[DeadlineKey]]: ...

    async def commit_decisions(
        self, rows: Sequence[DecidedRow], decided_at: datetime
    ) -> list[bool]: ...


class OutboxReads(Protocol):
    """The due notifications, read on the reader's connection (daemon/notifier.py).

    `busy` are addresses with a send in flight: their rows are left out, so the
    `limit` is spent on other receivers and a backlog queued for one dead receiver
    cannot fill every page and hide the rows of the others behind it.
    """

    async def due_outbox(
        self, now: datetime, limit: int = 100, busy: Collection[str] = ()
    ) -> list[OutboxItem]: ...


class OutboxWrites(Protocol):
    """Each notification marked done or not, on the writer's connection under the gate."""

    async def outbox_sent(self, item_id: int, at: datetime) -> None: ...

    async def outbox_failed(self, item_id: int, next_at: datetime, error: str) -> None: ...


class Outbox(OutboxReads, OutboxWrites, Protocol):
    """What a consumer of queued notifications needs: take the due, mark each done or not."""


class SilenceSource(Protocol):
    """The silences not yet ended: the pipeline's suppression step and the registry's reload."""

    async def active_silences(self, now: datetime) -> list[Silence]: ...


class RetentionStore(Protocol):
    """The pruner: delete what is past retention, in bounded batches."""

    async def prune(self, table: RetainedTable, before: datetime, limit: int) -> int: ...

    async def oldest_received(self, table: RetainedTable) -> datetime | None: ...


class AlarmReads(Protocol):
    """Alarms and devices as the CLI lists and explains them (unscoped: it holds the file)."""

    async def list_alarms(
        self,
        state: str | None = None,
        limit: int | None = None,
        municipalities: Sequence[str] | None = None,
    ) -> list[Alarm]: ...

    async def timeline(self, alarm_id: str) -> list[dict[str, Any]]: ...

    async def dead_letters(self, limit: int | None = None) -> list[dict[str, Any]]: ...

    async def outbox_for(self, alarm_id: str) -> list[dict[str, Any]]: ...

    async def list_devices(self, municipality: str | None = None) -> list[dict[str, Any]]: ...


@runtime_checkable
class NationalIds(Protocol):
    """The resident register's one read the journal export needs (issue 17).

    For an alarm of a pseudonymous resident (`r-17`) of a municipality: the national
    identity number in the register now (None without an entry: the alarm is then
    `journal: not applicable (no national id)`), when the number behind the pseudonym
    last changed (a note of an older alarm is held: core/journal/identity.py), and the
    number an administrator released the alarm's held note for. An implementation
    decrypts the numbers, audits the read, and never logs them.
    """

    async def journal_identity(
        self, municipality: str, resident: str, alarm_id: str
    ) -> Registered: ...


class SupervisionHistory(Protocol):
    """What supervision reads back at start: a restart must not forget silence or doses."""

    async def last_heard(self) -> dict[str, datetime]: ...

    async def dose_history(
        self, device_ids: list[str], now: datetime, lookback: timedelta
    ) -> dict[str, DoseHistory]: ...


class Practitioners(Protocol):
    """The journal note's author (issue 17): a user's HPR number; None: no user, or none."""

    async def hpr_of(self, name: str) -> str | None: ...


class AlarmStore(
    IngestStore,
    RegistryStore,
    ActionStore,
    FollowedAlarms,
    RaisingMessages,
    ReleaseStore,
    EscalationStore,
    Outbox,
    SilenceSource,
    RetentionStore,
    AlarmReads,
    JournalOutbox,
    Practitioners,
    Protocol,
):
    """Everything the daemon's services and the CLI use, as one opened store owns it."""

    async def close(self) -> None: ...


class ScopedReads(Protocol):
    """The reads the web answers, each filtered by the caller's scope inside the store.

    Filtering in the store, not in the handler, means a handler cannot forget to:
    a row of another municipality is simply not found (404).
    """

    async def list_alarms(self, scope: Scope, f: AlarmFilter) -> list[Alarm]: ...

    # All the alarms `f` selects (its limit and cursor aside): the list's `total`, which
    # says a client that read only part of a long queue how much it has not read.
    async def count_alarms(self, scope: Scope, f: AlarmFilter) -> int: ...

    async def get_alarm(self, scope: Scope, alarm_id: str) -> Alarm | None: ...

    async def timeline(self, scope: Scope, alarm_id: str) -> list[dict[str, Any]]: ...

    async def recent_events(
        self, scope: Scope, device_id: str, municipality: str, limit: int = 20
    ) -> list[dict[str, Any]]: ...

    async def page_devices(self, scope: Scope, f: DeviceFilter) -> list[dict[str, Any]]: ...

    async def get_device(self, scope: Scope, device_id: str) -> dict[str, Any] | None: ...

    async def dead_letters(self, scope: Scope, limit: int) -> list[dict[str, Any]]: ...

    async def list_silences(
        self, scope: Scope, now: datetime, include_ended: bool
    ) -> list[Silence]: ...

    async def get_silence(self, scope: Scope, silence_id: str) -> Silence | None: ...

    async def response_rows(
        self,
        scope: Scope,
        municipality: str | None,
        since: datetime | None,
        until: datetime | None,
    ) -> list[ResponseRow]: ...


class Accounts(Protocol):
    """People and their traces: users, API tokens, browser sessions, the audit log, silences.

    Every change takes the audit entries that record it and commits both in one
    transaction (issue 13 item 4); :meth:`audit` is only for what changes nothing
    else (a login, a logout, a view).
    """

    async def create_user(
        self,
        name: str,
        role: Role,
        municipalities: list[str],
        password_hash: str,
        now: datetime,
        audit: Sequence[AuditEntry],
    ) -> User: ...

    async def password_hash_of(self, name: str) -> tuple[User | None, str | None]: ...

    async def create_token(
        self,
        user: str,
        now: datetime,
        expires_at: datetime | None,
        audit: Sequence[AuditEntry],
    ) -> str: ...

    async def user_for_token(self, token: str, now: datetime) -> User | None: ...

    # Both session changes commit with their audit entries (login, logout).
    async def create_session(
        self, user: str, now: datetime, expires_at: datetime, audit: Sequence[AuditEntry]
    ) -> tuple[str, str]: ...

    async def session(self, session_id: str, now: datetime) -> SessionInfo | None: ...

    async def delete_session(self, session_id: str, audit: Sequence[AuditEntry]) -> None: ...

    async def audit(self, entry: AuditEntry) -> None: ...

    async def list_audit(self, limit: int = 100) -> list[dict[str, Any]]: ...

    async def insert_silence(self, silence: Silence, audit: Sequence[AuditEntry]) -> None: ...


class Access(Protocol):
    """Locking people out: users and tokens as `visible` lets the caller see them."""

    async def list_users(self, visible: Visible) -> list[UserRow]: ...

    async def find_user(self, visible: Visible, name: str) -> UserRow | None: ...

    async def set_active(
        self, visible: Visible, name: str, active: bool, entry: AuditEntry
    ) -> bool: ...

    # A user's HPR number (None: remove it), checked by core/hpr.py; False as set_active.
    async def set_hpr(
        self, visible: Visible, name: str, hpr: str | None, entry: AuditEntry
    ) -> bool: ...

    async def list_tokens(self, visible: Visible, user: str | None) -> list[TokenRow]: ...

    async def revoke_token(
        self, visible: Visible, token_id: str, entry: AuditEntry
    ) -> TokenRow: ...


class DeviceSecrets(Protocol):
    """A SCAIP device's digest credentials (issue 16): HA1 per algorithm, never a password.

    `set_device_credentials` writes them with their audit entries in one
    transaction, only for a device registered in a municipality the scope allows
    (else False, nothing written: the web answers 404 as for any device out of
    scope); `device_credentials` is the SIP server's look-up by username.
    """

    async def set_device_credentials(
        self,
        scope: Scope,
        credentials: DeviceCredentials,
        now: datetime,
        audit: Sequence[AuditEntry],
    ) -> bool: ...

    async def device_credentials(self, device_id: str) -> DeviceCredentials | None: ...


class Directory(ScopedReads, Accounts, Access, DeviceSecrets, Protocol):
    """What the web and the CLI's account commands are handed: one object, four ports."""
