"""An alarm's state in the resident's journal (issue 17), as the API and the pages show it.

The shape is fixed here, `{"state": …, "reason": …}`; the states are the whole
life of an export. Until journal delivery is configured only `not_applicable`
is reached: without a national identity number for the alarm's resident there
is nothing to send (the issue's "journal: not applicable (no national id)").
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from alarmhub.core.model import Alarm


class JournalState(StrEnum):
    NOT_APPLICABLE = "not_applicable"  # nothing will be sent: `reason` says why
    PENDING = "pending"  # resolved; the export is queued (delivery)
    SENT = "sent"  # the journal service accepted it (202); confirmation awaited
    CONFIRMED = "confirmed"  # the patient record confirmed it
    REFUSED = "refused"  # refused; `reason` is the journal's


class JournalReason(StrEnum):
    NO_NATIONAL_ID = "no national id"
    EXPORT_OFF = "journal export not configured"


@dataclass(frozen=True, slots=True)
class JournalStatus:
    state: JournalState
    reason: str | None = None

    def as_json(self) -> dict[str, str | None]:
        return {"state": self.state.value, "reason": self.reason}


def journal_status(alarm: Alarm, has_national_id: bool) -> JournalStatus:
    """Before delivery exists: not applicable, for want of a number or of an export."""
    if alarm.resident is None or not has_national_id:
        return JournalStatus(JournalState.NOT_APPLICABLE, JournalReason.NO_NATIONAL_ID.value)
    return JournalStatus(JournalState.NOT_APPLICABLE, JournalReason.EXPORT_OFF.value)
