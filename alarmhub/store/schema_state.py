"""How a database's schema version stands against the one this alarmhub knows.

Plain values and the words that go with them, for `alarmhub db status`, `db
migrate` and `run`; reading and migrating a database is store/versions.py's.
Kept apart from it so a command module can name these types without importing
any database driver.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

MIGRATE = '"alarmhub db migrate"'


class SchemaState(StrEnum):
    """Where a database stands; the value is what `db status --json` says."""

    EMPTY = "empty"  # no alarmhub tables: `run` or `db migrate` creates them
    CURRENT = "current"
    BEHIND = "behind"  # older: `db migrate` first; `run` refuses it
    AHEAD = "ahead"  # newer: made by a later alarmhub; nothing here may touch it


@dataclass(frozen=True, slots=True)
class SchemaStatus:
    """The version found in the database (0: none) and the one this alarmhub knows."""

    found: int
    known: int

    @property
    def state(self) -> SchemaState:
        if self.found == 0:
            return SchemaState.EMPTY
        if self.found < self.known:
            return SchemaState.BEHIND
        if self.found > self.known:
            return SchemaState.AHEAD
        return SchemaState.CURRENT

    def refusal(self) -> str | None:
        """Why `alarmhub run` may not start on this database; None when it may.

        An empty database is no reason: `run` creates the schema, at the current
        version, as it always did for a fresh file (the tests and the demo rely
        on it). An older one is: its migration may take long or need a backup
        first, and with several instances it must run once, before any of them
        starts (docs/operations.md, "Schema migrations").
        """
        if self.state is SchemaState.BEHIND:
            return (
                f"the database schema is version {self.found}, this alarmhub needs "
                f"{self.known}: run {MIGRATE} first"
            )
        if self.state is SchemaState.AHEAD:
            return (
                f"the database schema is version {self.found}, newer than this alarmhub "
                f"knows ({self.known}): upgrade alarmhub or point it at another database"
            )
        return None

    def advice(self) -> str:
        """What to do next, for `alarmhub db status`."""
        match self.state:
            case SchemaState.EMPTY:
                return f"no alarmhub tables yet: {MIGRATE} (or `alarmhub run`) creates them"
            case SchemaState.BEHIND:
                return f"run {MIGRATE}, then start (or restart) alarmhub"
            case SchemaState.AHEAD:
                return (
                    "a newer alarmhub made this schema: upgrade alarmhub, or point it "
                    "at another database (alarmhub never downgrades a schema)"
                )
            case SchemaState.CURRENT:
                return "nothing to do"


class SchemaVersionError(Exception):
    """The schema is one this alarmhub may not use (or, migrating, may not touch)."""

    def __init__(self, message: str, status: SchemaStatus) -> None:
        super().__init__(message)
        self.status = status
