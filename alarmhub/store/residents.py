"""The resident register (issue 17): national identity numbers per (municipality, resident).

alarmhub keeps residents pseudonymous (`r-17`) everywhere; this register is the
one place a resident's national identity number is kept, for the journal note.
The numbers are sealed here, in the shell, before a store sees them
(store/sealing.py) and opened here after it read them: the stores hold bytes
(:class:`ResidentRows`, per store: ``sqlite/residents.py``, ``postgres/residents.py``).

Every read of a number is audited in the read's own transaction: the masked
display on an alarm's detail (:meth:`ResidentRegister.masked`), a listing, and
the clear number the journal export reads (:meth:`ResidentRegister.journal_identity`,
the :class:`~alarmhub.store.ports.NationalIds` port). A number never goes into a
log line, a metric label, an error message or a dead letter: it travels as a
:class:`~alarmhub.core.national_id.NationalId`, which prints masked.

The register also remembers when the number behind each pseudonym last changed
(replaced by another number, or removed; `resident_changes`, written in the change's
transaction), so a note of an older alarm is held rather than sent to whoever the
pseudonym names now (core/journal/identity.py); and it seals the number an
administrator releases such a note for (:meth:`ResidentRegister.release_note`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

import structlog

from alarmhub.clock import Clock
from alarmhub.core.journal.identity import Registered
from alarmhub.core.national_id import LENGTH, NationalId, mask
from alarmhub.core.people import AuditEntry
from alarmhub.store.ports import NationalIds
from alarmhub.store.sealing import KeyMissingError, Keyring, Sealed, SealingError

log = structlog.get_logger("alarmhub")

# Shown for a number the configured keys cannot open: it exists, nobody can read it.
UNREADABLE = "*" * LENGTH
JOURNAL_ACTOR = "journal-export"


@dataclass(frozen=True, slots=True)
class SealedRow:
    """One register row as the database holds it: the number sealed."""

    municipality: str
    resident: str
    key_id: str
    nonce: bytes
    sealed: bytes
    updated_at: datetime
    updated_by: str


@dataclass(frozen=True, slots=True)
class ResidentEntry:
    """One register row as the API and the CLI list it: the number masked."""

    municipality: str
    resident: str
    national_id: str  # masked: 010190*****
    key_id: str
    updated_at: datetime
    updated_by: str


ListAudit = Callable[[Sequence[SealedRow]], Sequence[AuditEntry]]
# Whether a stored row holds the number being set (opened and compared in the shell,
# inside the store's transaction): a number saved again is no change of person.
SameNumber = Callable[[SealedRow], bool]


@dataclass(frozen=True, slots=True)
class JournalRead:
    """What a journal note's patient is decided from, read in one transaction."""

    row: SealedRow | None  # the register's entry now
    changed_at: datetime | None  # the last replacement or removal of its number
    released: Sealed | None  # the number the held note was released for, sealed


@dataclass(frozen=True, slots=True)
class Release:
    """A held note released for a number, sealed to its municipality and alarm."""

    alarm_id: str
    municipality: str
    sealed: Sealed
    at: datetime


# Rows rekey reads, reseals and commits at a time: one short write transaction each, so
# a large register never holds the write lock (SQLite's, or PostgreSQL's row locks) long.
REKEY_CHUNK = 500


@dataclass(frozen=True, slots=True)
class Reseal:
    """One row rekey reseals: the row as read, its new sealing, the change's audit entry."""

    before: SealedRow
    key_id: str
    nonce: bytes
    sealed: bytes
    audit: AuditEntry


@dataclass(frozen=True, slots=True)
class SealedRelease:
    """A number a held note was released for, as its export row holds it (`release_*`),
    sealed to the municipality and the alarm; `resident` is the alarm's, for the audit."""

    alarm_id: str
    municipality: str
    resident: str | None
    sealed: Sealed


@dataclass(frozen=True, slots=True)
class ReleaseReseal:
    """One released number rekey reseals: as read, its new sealing, the audit entry."""

    before: SealedRelease
    sealed: Sealed
    audit: AuditEntry


@dataclass(frozen=True, slots=True)
class Rekeyed:
    """What rekey did so far: numbers resealed (the register's and released notes'), and
    numbers left because they changed meanwhile."""

    resealed: int = 0
    skipped: int = 0


class ResidentRows(Protocol):
    """The register's sealed rows, per store.

    Every change, and every read of a number, commits with its audit entries in
    one transaction: a number is never read without its audit row. A read that
    finds nothing writes no audit (nothing was read). `list_residents` asks
    `audit` for the entries of the rows it found, inside its transaction.
    """

    async def put_resident(
        self, row: SealedRow, audit: Sequence[AuditEntry], same: SameNumber
    ) -> bool:
        """Set the row; True when it is new. A row replaced whose number is not `same`
        records the change (`resident_changes`) at the row's `updated_at`."""
        ...

    async def delete_resident(
        self, municipality: str, resident: str, at: datetime, audit: Sequence[AuditEntry]
    ) -> bool:
        """Remove the row, recording the change at `at`; False (nothing written) if none."""
        ...

    async def read_for_journal(
        self, municipality: str, resident: str, alarm_id: str, audit: Sequence[AuditEntry]
    ) -> JournalRead:
        """The entry, its last change and the alarm's released number, audited when a
        number (either) was found."""
        ...

    async def release_held(self, release: Release, audit: Sequence[AuditEntry]) -> bool:
        """A held export of this alarm and municipality made pending with the sealed
        number, with its audit rows; False, nothing written, when there is none."""
        ...

    async def cancel_held(
        self,
        alarm_id: str,
        municipality: str,
        reason: str,
        at: datetime,
        audit: Sequence[AuditEntry],
    ) -> bool:
        """A held export of this alarm and municipality ended `cancelled`, with its
        audit rows; False, nothing written, when there is none."""
        ...

    async def read_resident(
        self, municipality: str, resident: str, audit: Sequence[AuditEntry]
    ) -> SealedRow | None: ...

    async def list_residents(self, municipality: str, audit: ListAudit) -> list[SealedRow]: ...

    async def stale_residents(
        self, current_key: str, after: tuple[str, str] | None, limit: int
    ) -> list[SealedRow]:
        """Up to `limit` rows not sealed under `current_key`, by (municipality, resident),
        after `after`. Reads no number in clear, so it writes no audit."""
        ...

    async def reseal_residents(self, reseals: Sequence[Reseal]) -> int:
        """Write each reseal, with its audit entry, only if its row still holds exactly
        `before`'s sealing; all in one transaction. How many were written.

        A row changed or removed since it was read is left as it is now: the number in
        it is someone else's newer word, and writing the old one back would undo it.
        """
        ...

    async def stale_releases(
        self, current_key: str, after: str | None, limit: int
    ) -> list[SealedRelease]:
        """Up to `limit` released numbers not sealed under `current_key`, by alarm id,
        after `after`. Reads no number in clear, so it writes no audit."""
        ...

    async def reseal_releases(self, reseals: Sequence[ReleaseReseal]) -> int:
        """As `reseal_residents`, on export rows: each only if the row still holds
        `before`'s sealing (a note done meanwhile holds none, and must keep none)."""
        ...


class Residents(NationalIds, Protocol):
    """The register as the web and the CLI use it: numbers go in checked, come out masked."""

    async def set_national_id(
        self,
        municipality: str,
        resident: str,
        nid: NationalId,
        by: str,
        audit: Sequence[AuditEntry],
    ) -> tuple[ResidentEntry, bool]: ...

    async def remove(
        self, municipality: str, resident: str, audit: Sequence[AuditEntry]
    ) -> bool: ...

    async def release_note(
        self, alarm_id: str, municipality: str, nid: NationalId, audit: Sequence[AuditEntry]
    ) -> bool: ...

    async def cancel_note(
        self, alarm_id: str, municipality: str, reason: str, audit: Sequence[AuditEntry]
    ) -> bool: ...

    async def masked(
        self, municipality: str, resident: str, audit: Sequence[AuditEntry]
    ) -> str | None: ...

    async def entry(
        self, municipality: str, resident: str, audit: Sequence[AuditEntry]
    ) -> ResidentEntry | None: ...

    async def listing(self, municipality: str, audit: ListAudit) -> list[ResidentEntry]: ...


class ResidentRegister:
    """Seals on the way in, opens on the way out, audits every read: over any store's rows."""

    def __init__(self, rows: ResidentRows, keyring: Keyring, clock: Clock) -> None:
        self._rows = rows
        self._keyring = keyring
        self._clock = clock

    async def set_national_id(
        self,
        municipality: str,
        resident: str,
        nid: NationalId,
        by: str,
        audit: Sequence[AuditEntry],
    ) -> tuple[ResidentEntry, bool]:
        """Store (or replace) the number: the entry as stored (masked), and whether the
        resident was not registered before.

        KeyMissingError (before anything is written) when no key is configured.
        """
        sealed = self._keyring.seal(municipality, resident, nid.value)
        row = SealedRow(
            municipality,
            resident,
            sealed.key_id,
            sealed.nonce,
            sealed.sealed,
            self._clock.now(),
            by,
        )
        created = await self._rows.put_resident(row, audit, self._same(nid))
        return _entry(row, nid.masked), created

    def _same(self, nid: NationalId) -> SameNumber:
        def same(old: SealedRow) -> bool:
            try:
                return self._keyring.open(old.municipality, old.resident, _sealed(old)) == nid.value
            except SealingError:  # a number nobody can read now: count it as another
                return False

        return same

    async def remove(self, municipality: str, resident: str, audit: Sequence[AuditEntry]) -> bool:
        return await self._rows.delete_resident(municipality, resident, self._clock.now(), audit)

    async def release_note(
        self, alarm_id: str, municipality: str, nid: NationalId, audit: Sequence[AuditEntry]
    ) -> bool:
        """Release the alarm's held note for `nid`: it is sent with that number, whatever
        the register says. False when this municipality has no held note of that alarm.

        The number is sealed as the register's are, bound to the municipality and the
        alarm (a sealed value copied to another alarm's row does not open), kept on the
        export row until the note is done. KeyMissingError without a key.
        """
        sealed = self._keyring.seal(municipality, _release_name(alarm_id), nid.value)
        release = Release(alarm_id, municipality, sealed, self._clock.now())
        return await self._rows.release_held(release, audit)

    async def cancel_note(
        self, alarm_id: str, municipality: str, reason: str, audit: Sequence[AuditEntry]
    ) -> bool:
        """End the alarm's held note unsent; False when this municipality has none held."""
        return await self._rows.cancel_held(
            alarm_id, municipality, reason, self._clock.now(), audit
        )

    async def masked(
        self, municipality: str, resident: str, audit: Sequence[AuditEntry]
    ) -> str | None:
        """The number masked (`010190*****`), None when the resident has none. Audited."""
        row = await self._rows.read_resident(municipality, resident, audit)
        return self._masked(row) if row is not None else None

    async def entry(
        self, municipality: str, resident: str, audit: Sequence[AuditEntry]
    ) -> ResidentEntry | None:
        """One resident's entry, the number masked; None when not registered. Audited."""
        row = await self._rows.read_resident(municipality, resident, audit)
        return _entry(row, self._masked(row)) if row is not None else None

    async def listing(self, municipality: str, audit: ListAudit) -> list[ResidentEntry]:
        rows = await self._rows.list_residents(municipality, audit)
        return [_entry(r, self._masked(r)) for r in rows]

    async def journal_identity(self, municipality: str, resident: str, alarm_id: str) -> Registered:
        """What the alarm's note is decided from: the number in clear, when its number
        last changed, and the number a release named. Audited as the number's read.

        SealingError when a number it needs cannot be opened (no key, an unknown key).
        """
        entry = AuditEntry(
            JOURNAL_ACTOR,
            "resident.national_id_read",
            self._clock.now(),
            municipality=municipality,
            alarm_id=alarm_id,
            detail={"resident": resident, "purpose": "journal"},
        )
        read = await self._rows.read_for_journal(municipality, resident, alarm_id, [entry])
        if read.released is not None:
            number = self._keyring.open(municipality, _release_name(alarm_id), read.released)
            return Registered(None, read.changed_at, released=number)
        if read.row is None:
            return Registered(None, read.changed_at)
        number = self._keyring.open(municipality, resident, _sealed(read.row))
        return Registered(number, read.changed_at)

    async def national_id(self, municipality: str, resident: str) -> str | None:
        """The number in clear, for the journal export; audited as its read.

        SealingError when it cannot be opened (no key, an unknown key, altered).
        """
        entry = AuditEntry(
            JOURNAL_ACTOR,
            "resident.national_id_read",
            self._clock.now(),
            municipality=municipality,
            detail={"resident": resident, "purpose": "journal"},
        )
        row = await self._rows.read_resident(municipality, resident, [entry])
        if row is None:
            return None
        return self._keyring.open(municipality, resident, _sealed(row))

    async def rekey(
        self,
        by: str,
        progress: Callable[[Rekeyed], None] | None = None,
        chunk: int = REKEY_CHUNK,
    ) -> Rekeyed:
        """Reseal every number not sealed under the current key, `chunk` a transaction:
        the register's rows, then the numbers held notes were released for (kept on
        their export rows until the note is done). Both, or the old key cannot go: a
        released note's number under a dropped key is a note never built again.

        Each is written back only if it is still as it was read (the store checks
        inside the write): a number set or removed meanwhile, through the API or the
        CLI, and a note done meanwhile (its number cleared), stay as that change left
        them, and only resealed numbers get a `resident.rekeyed` audit row. Such a
        number counts as skipped: whoever changed it wrote it with their current key;
        a second run reseals it if that was an old one. `progress` hears the totals
        after each committed chunk; a failure (SealingError: a number no configured key
        opens) leaves the chunks before it done. The number and the row's
        `updated_by`/`updated_at` (who set it, when) are kept.
        """
        current = self._keyring.current
        if current is None:
            raise KeyMissingError
        done, after = Rekeyed(), None
        while rows := await self._rows.stale_residents(current, after, chunk):
            written = await self._rows.reseal_residents([self._reseal(r, by) for r in rows])
            done = Rekeyed(done.resealed + written, done.skipped + len(rows) - written)
            after = (rows[-1].municipality, rows[-1].resident)
            if progress is not None:
                progress(done)
        last = None
        while notes := await self._rows.stale_releases(current, last, chunk):
            reseals = [self._reseal_release(n, by) for n in notes]
            written = await self._rows.reseal_releases(reseals)
            done = Rekeyed(done.resealed + written, done.skipped + len(notes) - written)
            last = notes[-1].alarm_id
            if progress is not None:
                progress(done)
        return done

    def _reseal(self, row: SealedRow, by: str) -> Reseal:
        number = self._keyring.open(row.municipality, row.resident, _sealed(row))
        sealed = self._keyring.seal(row.municipality, row.resident, number)
        entry = self._rekeyed(by, row.municipality, row.resident, row.key_id, sealed.key_id)
        return Reseal(row, sealed.key_id, sealed.nonce, sealed.sealed, entry)

    def _reseal_release(self, note: SealedRelease, by: str) -> ReleaseReseal:
        name, alarm = _release_name(note.alarm_id), note.alarm_id
        try:  # the register's rows are listed with their keys; a release is found by its alarm
            number = self._keyring.open(note.municipality, name, note.sealed)
        except SealingError as exc:
            raise SealingError(
                f"{exc}; it is the number alarm {alarm}'s held journal note was released for: "
                f"add its key to ALARMHUB_RESIDENT_OLD_KEYS, or end that note unsent with "
                f"`alarmhub journal cancel --alarm {alarm} --municipality {note.municipality}`"
            ) from exc
        sealed = self._keyring.seal(note.municipality, name, number)
        entry = self._rekeyed(
            by, note.municipality, note.resident, note.sealed.key_id, sealed.key_id, note.alarm_id
        )
        return ReleaseReseal(note, sealed, entry)

    def _rekeyed(
        self,
        by: str,
        municipality: str,
        resident: str | None,
        was: str,
        now: str,
        alarm_id: str | None = None,
    ) -> AuditEntry:
        """One `resident.rekeyed` entry: a released note's names its alarm too."""
        return AuditEntry(
            by,
            "resident.rekeyed",
            self._clock.now(),
            municipality=municipality,
            alarm_id=alarm_id,
            detail={"resident": resident, "from": was, "to": now},
        )

    def _masked(self, row: SealedRow) -> str:
        try:
            return mask(self._keyring.open(row.municipality, row.resident, _sealed(row)))
        except SealingError as exc:
            log.warning(
                "resident.unreadable",
                municipality=row.municipality,
                key_id=row.key_id,
                reason=str(exc),
            )
            return UNREADABLE


def _entry(row: SealedRow, masked: str) -> ResidentEntry:
    return ResidentEntry(
        row.municipality, row.resident, masked, row.key_id, row.updated_at, row.updated_by
    )


def _sealed(row: SealedRow) -> Sealed:
    return Sealed(row.key_id, row.nonce, row.sealed)


def _release_name(alarm_id: str) -> str:
    """What a released number is sealed to besides its municipality: the alarm. No
    pseudonym has a colon (the API's pattern), so it is never a resident's."""
    return f"alarm:{alarm_id}"


def _is_national_ids(r: ResidentRegister) -> NationalIds:
    return r  # mypy checks here that the register is the journal's port


def _is_residents(r: ResidentRegister) -> Residents:
    return r
