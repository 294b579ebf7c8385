"""An alarm's state in the resident's journal (issue 17), as the API and the pages show it.

The shape is fixed here, `{"state": …, "reason": …, "created_at", "sent_at",
"finished_at", "attempts", "last_error"}`; the states are the whole life of an
export (store/journal_outbox.py holds them, daemon/journal.py moves them). An
alarm without an export row is `not_applicable`: without a national identity
number for its resident, or with export off for its municipality.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from alarmhub.core.model import Alarm


class JournalState(StrEnum):
    NOT_APPLICABLE = "not_applicable"  # nothing will be sent: `reason` says why
    PENDING = "pending"  # resolved; the export is queued (delivery)
    SENT = "sent"  # the journal service accepted it (202); confirmation awaited
    CONFIRMED = "confirmed"  # the patient record confirmed it
    REFUSED = "refused"  # refused; `reason` is the journal's
    HELD = "held"  # not sent: the resident's number changed since the alarm (`reason`)
    CANCELLED = "cancelled"  # a held note an administrator cancelled: never sent


class JournalReason(StrEnum):
    NO_NATIONAL_ID = "no national id"
    EXPORT_OFF = "journal export not configured"
    NATIONAL_ID_CHANGED = "national id changed since the alarm"


@dataclass(frozen=True, slots=True)
class JournalStatus:
    state: JournalState
    reason: str | None = None
    created_at: datetime | None = None  # when the resolve queued it
    sent_at: datetime | None = None  # when the journal accepted it (202)
    finished_at: datetime | None = None  # confirmed, refused or found not applicable
    attempts: int = 0
    last_error: str | None = None  # the last failed attempt's, while it is retried

    def as_json(self) -> dict[str, str | int | None]:
        def at(t: datetime | None) -> str | None:
            return t.isoformat() if t is not None else None

        return {
            "state": self.state.value,
            "reason": self.reason,
            "created_at": at(self.created_at),
            "sent_at": at(self.sent_at),
            "finished_at": at(self.finished_at),
            "attempts": self.attempts,
            "last_error": self.last_error,
        }


def journal_status(alarm: Alarm, has_national_id: bool) -> JournalStatus:
    """An alarm without an export row: not applicable, for want of a number or an export."""
    if alarm.resident is None or not has_national_id:
        return JournalStatus(JournalState.NOT_APPLICABLE, JournalReason.NO_NATIONAL_ID.value)
    return JournalStatus(JournalState.NOT_APPLICABLE, JournalReason.EXPORT_OFF.value)
