"""The values the coordination ports pass: fencing tokens, leases, instances.

Defined beside the ports (as accounts.py holds the account rows) so that the
daemon, the CLI and each store name one set of types, and the daemon never
imports ``store/postgres/`` to read a lease.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True, slots=True)
class Fence:
    """A grant of a lease: who holds it, and the epoch that fences its writes.

    The epoch goes up with every grant, so a write that names it fails once the
    lease has expired or been granted again, whatever the writer believes.
    """

    name: str
    holder: str
    epoch: int


@dataclass(frozen=True, slots=True)
class LeaseRow:
    name: str
    holder: str
    epoch: int
    acquired_at: datetime
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class InstanceInfo:
    """What an instance says about itself when it registers."""

    id: str
    host: str
    pid: int
    version: str


@dataclass(frozen=True, slots=True)
class InstanceRow:
    id: str
    host: str
    pid: int
    version: str
    started_at: datetime
    heartbeat_at: datetime
    stopped_at: datetime | None
    owns: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ClusterView:
    """Every instance and lease, with the database's `now` they are to be read against.

    Ages and expiries are computed from the database's clock, the one that set
    them, never from the reader's (which may be another machine's).
    """

    now: datetime
    instances: tuple[InstanceRow, ...]
    leases: tuple[LeaseRow, ...]
