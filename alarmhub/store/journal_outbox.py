"""The journal outbox (issue 17): one export row per answered alarm, and its port.

The row is written in the resolve's own transaction (`save_alarms(…, journal=…)`),
so an answered alarm of a municipality with export on is never lost between the
commit and the delivery; the worker (daemon/journal.py) then moves it through its
states. It holds states, times, the journal's status URL and reasons, never the
document: the document is built again, byte for byte the same, from the alarm's
timeline and the register at each attempt. The one number it may hold is the one an
administrator released a `held` note for, sealed as the register's are (columns
`release_*`, written, read and resealed on a key rotation by the register:
store/residents.py), cleared when the note is done; the worker never sees it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from alarmhub.core.journal_status import JournalState

COLUMNS = (
    "alarm_id",
    "municipality",
    "state",
    "reason",
    "location",
    "attempts",
    "next_at",
    "created_at",
    "sent_at",
    "finished_at",
    "last_error",
)
MAX_TEXT = 500  # a reason or an error kept on the row, at most


@dataclass(frozen=True, slots=True)
class JournalExport:
    """One alarm's export. `next_at`: when the worker looks at it next (send or poll)."""

    alarm_id: str
    municipality: str
    state: JournalState
    reason: str | None
    location: str | None
    attempts: int
    next_at: datetime
    created_at: datetime
    sent_at: datetime | None = None
    finished_at: datetime | None = None
    last_error: str | None = None

    @classmethod
    def new(cls, alarm_id: str, municipality: str, now: datetime) -> JournalExport:
        return cls(alarm_id, municipality, JournalState.PENDING, None, None, 0, now, now)

    @property
    def done(self) -> bool:
        return self.state in FINAL

    def row(self) -> tuple[object, ...]:
        return (
            self.alarm_id,
            self.municipality,
            self.state.value,
            _cut(self.reason),
            self.location,
            self.attempts,
            self.next_at,
            self.created_at,
            self.sent_at,
            self.finished_at,
            _cut(self.last_error),
        )


FINAL = frozenset(
    {
        JournalState.CONFIRMED,
        JournalState.REFUSED,
        JournalState.NOT_APPLICABLE,
        JournalState.CANCELLED,
    }
)
WAITING = (JournalState.PENDING.value, JournalState.SENT.value)
# Listed by `journal status --failed`, besides waiting ones whose last attempt failed:
# refused, and held (waiting for an administrator to release or cancel it).
NEEDS_A_PERSON = (JournalState.REFUSED.value, JournalState.HELD.value)


def _cut(text: str | None) -> str | None:
    return None if text is None else text[:MAX_TEXT]


class JournalOutbox(Protocol):
    """What the delivery worker, the API and `alarmhub journal status` use."""

    async def due_journal(self, now: datetime, limit: int = 50) -> list[JournalExport]:
        """Pending exports to send and sent ones to poll, due by `now`, oldest first."""
        ...

    async def journal_save(self, export: JournalExport) -> None:
        """Record the export's new state (the worker's single-owner write); a done one
        forgets the number a release named."""
        ...

    async def journal_exports(
        self, alarm_ids: Iterable[str] | None = None, *, failed: bool = False, limit: int = 500
    ) -> list[JournalExport]:
        """The exports of these alarms (None: all, newest first); `failed`: refused and
        held ones only, and those still waiting whose last attempt failed."""
        ...

    async def held_journal(self) -> int:
        """How many exports are held, waiting for an administrator."""
        ...

    async def oldest_waiting_journal(self) -> datetime | None:
        """When the oldest export not yet confirmed, refused or not applicable was made."""
        ...
