"""What the inbox keeps, and for how long (issue 13 item 2).

Every message received is stored with its payload: GPS positions of people with
dementia among them, which are health data. Kept forever, they were a growing
record of where people went, long after any use. Alarms, their timelines and the
audit log are the record of who asked for help and what was done: they are
never pruned. What is pruned, and from when, is decided here; the shell
(alarmhub/daemon/pruner.py) deletes in small batches.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum


class RetainedTable(StrEnum):
    """The rows a retention applies to; the `table` label of alarmhub_oldest_row_age_seconds."""

    INBOX = "inbox"  # messages used (events, heartbeats, positions)
    DEAD_LETTERS = "dead_letters"  # messages rejected (inbox rows with verdict `rejected`)


@dataclass(frozen=True, slots=True)
class Retention:
    inbox: timedelta
    dead_letters: timedelta

    def cutoffs(self, now: datetime) -> dict[RetainedTable, datetime]:
        """Rows that arrived before these instants are past their retention."""
        return {
            RetainedTable.INBOX: now - self.inbox,
            RetainedTable.DEAD_LETTERS: now - self.dead_letters,
        }


def age_seconds(now: datetime, oldest: datetime | None) -> float:
    """The age of the oldest row kept; 0 for none (and for a clock stepped back)."""
    return 0.0 if oldest is None else max(0.0, (now - oldest).total_seconds())
