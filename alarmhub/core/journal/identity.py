"""Whose journal an answered alarm's note goes to, when its pseudonym's number changed.

Residents are pseudonyms (`r-17`); the resident register maps each to a national
identity number, read when the note is built, at delivery, not at the alarm. A
pseudonym given to the next person (a room number, the flat's pendant) while a note
for the first still waited (a journal outage, retries) sent that note, a health note,
to the second person's patient record. The register now remembers when the number
behind each pseudonym last changed (replaced by another number, or removed:
store/residents.py), and a note is held when that happened at or after its alarm
was raised. alarmhub cannot tell a new person from a corrected number, so a
correction holds a waiting note too; the administrator who made it releases the note
naming the number it goes with.

A number first registered after the alarm, for a pseudonym that had none, is not a
change: that is the ordinary late registration of a new resident, and the note goes.
(A pseudonym that never had a number is unknown to the register: its reassignment
cannot be seen, which is why docs/journal.md still says to give a new person a new
pseudonym.)

`raised_at` is the alarm's, the receipt time of its first trigger on the hub's clock,
never the device's; the comparison is at-or-after, so a change in the same instant
holds the note.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from alarmhub.core.journal.document import Patient
from alarmhub.core.journal_status import JournalReason


@dataclass(frozen=True, slots=True)
class Registered:
    """What the register says of an alarm's resident when its note is built."""

    number: str | None  # the number in the register now; None: no entry
    changed_at: datetime | None  # the last replacement or removal of it; None: never
    released: str | None = None  # the number an administrator released the held note for


@dataclass(frozen=True, slots=True)
class Held:
    """The note is not sent: it waits for an administrator to release or cancel it."""

    reason: JournalReason = JournalReason.NATIONAL_ID_CHANGED


def patient_for(raised_at: datetime, found: Registered) -> Patient | Held:
    """The note's patient, or Held when the pseudonym's number changed since the alarm.

    A released note goes with the number its release named, whatever the register
    says now: an administrator decided whose note it is.
    """
    if found.released is not None:
        return Patient(found.released)
    if found.changed_at is not None and found.changed_at >= raised_at:
        return Held()
    return Patient(found.number)
