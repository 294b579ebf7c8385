"""What a store raises that its callers handle: defined here, once, for every store.

The daemon, the web and the CLI catch these by name; were they defined in
``store/sqlite/``, each caller would import the SQLite module to catch them, and a
second store would have to raise the first one's exceptions. Each carries the
data its handler reports (the refused moves, the taken ids).
"""

from __future__ import annotations

from alarmhub.core.bridges import BridgeTaken, BridgeUnassigned, BridgeVerdict
from alarmhub.core.moves import MoveRefused


class StoreError(Exception):
    """The database refused a write; the caller keeps the batch and retries."""


class StaleAlarmError(Exception):
    """An alarm changed in the database since it was read: the write was rolled back.

    Not a StoreError: retrying the same write would fail again. The caller reloads
    the named alarms (`ids`) and decides again on what the database holds now;
    another instance (issue 15), or anything else writing the database, got there first.
    """

    def __init__(self, ids: list[str]) -> None:
        super().__init__(f"alarm(s) changed since read: {', '.join(ids[:10])}")
        self.ids = ids


class DeviceMovedError(Exception):
    """A device moved since the batch was decided with it: the write was rolled back.

    Another process (the CLI, another instance's API on a shared PostgreSQL) moved
    it to another municipality or gave it another resident, and this instance's
    registry has not polled since. Not a StoreError: the same write would raise an
    alarm in the old municipality. The caller reloads the named devices (`ids`) and
    decides the batch again on them (WriteGate.deciding).
    """

    def __init__(self, ids: list[str]) -> None:
        super().__init__(f"device(s) moved since read: {', '.join(ids[:10])}")
        self.ids = ids


class StoreUnavailableError(StoreError):
    """The database server cannot be reached (restarted, failed over, network cut).

    A StoreError, so the write gate retries it like any refused write and nothing is
    acknowledged meanwhile. A transaction cut off by it either committed or did not;
    the retry is safe because every write it repeats is idempotent in the database
    (the inbox's unique key, the escalations' primary key, upserts by id).
    """


class StoreInUseError(StoreError):
    """The store is held by another daemon and may not be shared (a SQLite file).

    Raised only while opening, before anything is written or connected to: the
    message names the holder and what to do instead (store/sqlite/instance_lock.py).
    """


class AccountError(Exception):
    """A request the person can correct: the message says what is wrong."""


class MoveRefusedError(Exception):
    """Devices that may not move yet; `refused` names each with its open alarms."""

    def __init__(self, refused: list[MoveRefused]) -> None:
        super().__init__("; ".join(r.message() for r in refused))
        self.refused = refused


class BridgeTakenError(Exception):
    """A registry write that would put a Zigbee2MQTT bridge in a second municipality."""

    def __init__(self, taken: list[BridgeTaken]) -> None:
        super().__init__("; ".join(t.message() for t in taken))
        self.taken = taken


class BridgeUnassignedError(Exception):
    """A municipality admin's registry write would put the first device on a bridge no
    system admin has assigned to a municipality (core/bridges.py judge_bridges)."""

    def __init__(self, unassigned: list[BridgeUnassigned]) -> None:
        super().__init__("; ".join(u.message() for u in unassigned))
        self.unassigned = unassigned


def refuse_bridges(verdict: BridgeVerdict) -> None:
    """Raise what a refused bridge verdict says, in the order both stores check it: a
    bridge taken by another municipality first, then one no system admin assigned."""
    if verdict.taken:
        raise BridgeTakenError(verdict.taken)
    if verdict.unassigned:
        raise BridgeUnassignedError(verdict.unassigned)


class BridgeInUseError(Exception):
    """An assignment of a bridge to a municipality other than its devices' own: they
    decide (core/bridges.py); `municipalities` are theirs, for the system admin."""

    def __init__(self, bridge: str, municipalities: tuple[str, ...]) -> None:
        super().__init__(
            f"bridge {bridge} has devices in {', '.join(municipalities)}: move all of them "
            "together (one import) instead, and the assignment follows them"
        )
        self.bridge = bridge
        self.municipalities = municipalities


class IdTakenError(Exception):
    """Device ids already registered where this write may not change them (issue 13 item 5)."""

    def __init__(self, ids: list[str]) -> None:
        super().__init__(f"device id(s) not available: {', '.join(ids)}")
        self.ids = ids


class LeaseLostError(Exception):
    """A single-owner write found its lease expired or granted again: it was rolled back.

    Nothing it would have committed may be acknowledged; the instance is no
    longer the owner, whatever its own timers say (issue 15: fencing). Not a
    :class:`StoreError` on purpose: the write gate retries those until they
    commit, and this one never will — the work that raised it must stop.
    """

    def __init__(self, name: str, holder: str, epoch: int) -> None:
        super().__init__(f"lease {name!r} epoch {epoch} is no longer held by {holder!r}")
        self.name = name
        self.holder = holder
        self.epoch = epoch
