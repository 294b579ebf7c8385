"""The resident register (issue 17): national identity numbers per (municipality, resident).

alarmhub keeps residents pseudonymous (`r-17`) everywhere; this register is the
one place a resident's national identity number is kept, for the journal note.
The numbers are sealed here, in the shell, before a store sees them
(store/sealing.py) and opened here after it read them: the stores hold bytes
(:class:`ResidentRows`, per store: ``sqlite/residents.py``, ``postgres/residents.py``).

Every read of a number is audited in the read's own transaction: the masked
display on an alarm's detail (:meth:`ResidentRegister.masked`), a listing, and
the clear number the journal export reads (:meth:`ResidentRegister.national_id`,
the :class:`~alarmhub.store.ports.NationalIds` port). A number never goes into a
log line, a metric label, an error message or a dead letter: it travels as a
:class:`~alarmhub.core.national_id.NationalId`, which prints masked.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

import structlog

from alarmhub.clock import Clock
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
class Rekeyed:
    """What rekey did so far: rows resealed, and rows left because they changed meanwhile."""

    resealed: int = 0
    skipped: int = 0


class ResidentRows(Protocol):
    """The register's sealed rows, per store.

    Every change, and every read of a number, commits with its audit entries in
    one transaction: a number is never read without its audit row. A read that
    finds nothing writes no audit (nothing was read). `list_residents` asks
    `audit` for the entries of the rows it found, inside its transaction.
    """

    async def put_resident(self, row: SealedRow, audit: Sequence[AuditEntry]) -> bool: ...

    async def delete_resident(
        self, municipality: str, resident: str, audit: Sequence[AuditEntry]
    ) -> bool: ...

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
        created = await self._rows.put_resident(row, audit)
        return _entry(row, nid.masked), created

    async def remove(self, municipality: str, resident: str, audit: Sequence[AuditEntry]) -> bool:
        return await self._rows.delete_resident(municipality, resident, audit)

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
        """Reseal every row not sealed under the current key, `chunk` rows a transaction.

        Each row is written back only if it is still as it was read (the store checks
        inside the write): a number set or removed meanwhile, through the API or the
        CLI, stays as that change left it, and only resealed rows get a
        `resident.rekeyed` audit row. Such a row counts as skipped: it was written by
        whoever changed it, with their current key; a second run reseals it if that was
        an old one. `progress` hears the totals after each committed chunk; a failure
        (SealingError: a row no configured key opens) leaves the chunks before it done.
        The number and the row's `updated_by`/`updated_at` (who set it, when) are kept.
        """
        done, after = Rekeyed(), None
        current = self._keyring.current
        if current is None:
            raise KeyMissingError
        while rows := await self._rows.stale_residents(current, after, chunk):
            reseals = [self._reseal(row, by) for row in rows]
            written = await self._rows.reseal_residents(reseals)
            done = Rekeyed(done.resealed + written, done.skipped + len(rows) - written)
            after = (rows[-1].municipality, rows[-1].resident)
            if progress is not None:
                progress(done)
        return done

    def _reseal(self, row: SealedRow, by: str) -> Reseal:
        number = self._keyring.open(row.municipality, row.resident, _sealed(row))
        sealed = self._keyring.seal(row.municipality, row.resident, number)
        entry = AuditEntry(
            by,
            "resident.rekeyed",
            self._clock.now(),
            municipality=row.municipality,
            detail={"resident": row.resident, "from": row.key_id, "to": sealed.key_id},
        )
        return Reseal(row, sealed.key_id, sealed.nonce, sealed.sealed, entry)

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


def _is_national_ids(r: ResidentRegister) -> NationalIds:
    return r  # mypy checks here that the register is the journal's port


def _is_residents(r: ResidentRegister) -> Residents:
    return r
