"""The values the coordination ports pass: fencing tokens, leases, instances.

Defined beside the ports (as accounts.py holds the account rows) so that the
daemon, the CLI and each store name one set of types, and the daemon never
imports ``store/postgres/`` to read a lease.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol


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


# --- the ports several instances share (issue 15): who owns the single-owner work, who
# is alive, what changed (kept beside their values; store/ports.py holds the rest)


class Leases(Protocol):
    """Leases with fencing (daemon/leadership.py). Expiry is in the database's clock.

    `acquire` grants only a lease that has expired (or never existed), with a new
    epoch; `renew` extends only the unexpired grant named by the fence; both
    return what the database decided. A store that cannot reach its database
    raises (any exception): the caller backs off and keeps its local deadline.
    """

    async def acquire(self, name: str, holder: str, ttl_s: float) -> Fence | None: ...

    async def renew(self, fence: Fence, ttl_s: float) -> bool: ...

    async def release(self, fence: Fence) -> None: ...


class Instances(Protocol):
    """Each process's presence and what it owns, for `alarmhub cluster status` and /readyz."""

    async def register_instance(self, info: InstanceInfo) -> None: ...

    async def heartbeat(self, info: InstanceInfo, owns: Sequence[str]) -> None: ...

    async def mark_stopped(self, instance_id: str) -> None: ...

    async def cluster(self) -> ClusterView: ...


class Coordination(Leases, Instances, Protocol):
    """What one database gives several instances to agree on who does what."""


class AlarmChangeFeed(Protocol):
    """Alarms another instance changed, announced at its commit (PostgreSQL LISTEN/NOTIFY).

    Notifications are not stored: `on_resync` runs after every (re)connect, and
    the consumer re-queries what it shows; `on_changed` gets the ids of one
    notification. `listen` runs until cancelled.
    """

    async def listen(
        self,
        on_changed: Callable[[Sequence[str]], Awaitable[None]],
        on_resync: Callable[[], Awaitable[None]],
    ) -> None: ...
