"""Leases with fencing in PostgreSQL: one owner at a time of each piece of single-owner work.

A lease is a row (`leases`, schema.py) with a holder, an `epoch` and an expiry
set by the DATABASE's clock, so every instance compares against one clock
whatever its own says. Every grant raises the epoch; the epoch is the fencing
token: a write that must come from the owner checks, inside its own
transaction, that its grant is still the current one (:func:`check_fence`).

Why the fence holds even against a holder that does not know it lost (a paused
process, a cut network healing): the check takes ``FOR SHARE`` on the lease row,
and a takeover is an UPDATE of that row, which waits for every transaction
holding the share lock. So a fenced transaction either commits before the
takeover is committed, or it sees the new epoch (or the expiry) and raises
:class:`~alarmhub.store.errors.LeaseLostError`, rolling back. No write of epoch
E commits after epoch E+1 was granted.

`acquire`, `renew` and `release` are single statements in their own
transaction, so their `now()` is the moment they run. The fence uses
`clock_timestamp()`, because it runs inside a longer transaction whose `now()`
is when that transaction began.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeAlias

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from alarmhub.store.cluster import Fence, LeaseRow
from alarmhub.store.errors import LeaseLostError

# A plain connection or one lent by a pool (the stubs make the proxy generic; at run
# time it is not subscriptable).
if TYPE_CHECKING:
    Conn: TypeAlias = asyncpg.Connection | PoolConnectionProxy[Any]
else:
    Conn = asyncpg.Connection | PoolConnectionProxy

# A new holder only once the lease has expired (or was released, which expires it).
# The same holder is not exempt: a grant after any gap is a new grant with a new
# epoch, so writes fenced by the old one fail.
_ACQUIRE = """
INSERT INTO leases AS l (name, holder, epoch, acquired_at, expires_at)
VALUES ($1, $2, 1, now(), now() + make_interval(secs => $3))
ON CONFLICT (name) DO UPDATE
    SET holder = EXCLUDED.holder,
        epoch = l.epoch + 1,
        acquired_at = EXCLUDED.acquired_at,
        expires_at = EXCLUDED.expires_at
    WHERE l.expires_at <= now()
RETURNING epoch
"""

# Only the unexpired grant named by (holder, epoch): an expired one is not revived,
# since its holder has stopped acting at its local deadline and may resume only
# under a new epoch.
_RENEW = """
UPDATE leases SET expires_at = now() + make_interval(secs => $4)
WHERE name = $1 AND holder = $2 AND epoch = $3 AND expires_at > now()
RETURNING expires_at
"""

_RELEASE = """
UPDATE leases SET expires_at = now()
WHERE name = $1 AND holder = $2 AND epoch = $3 AND expires_at > now()
"""

# The fence, for any single-owner write: run it first in the write's transaction.
FENCE_SQL = """
SELECT 1 FROM leases
WHERE name = $1 AND holder = $2 AND epoch = $3 AND expires_at > clock_timestamp()
FOR SHARE
"""

_ALL = """
SELECT name, holder, epoch, acquired_at, expires_at FROM leases ORDER BY name
"""


async def acquire(conn: Conn, name: str, holder: str, ttl_s: float) -> Fence | None:
    """The lease granted to `holder` with a new epoch, or None while another holds it."""
    epoch = await conn.fetchval(_ACQUIRE, name, holder, ttl_s)
    return None if epoch is None else Fence(name, holder, int(epoch))


async def renew(conn: Conn, fence: Fence, ttl_s: float) -> bool:
    """Extend the grant by `ttl_s` from now; False when it has expired or moved on."""
    row = await conn.fetchrow(_RENEW, fence.name, fence.holder, fence.epoch, ttl_s)
    return row is not None


async def release(conn: Conn, fence: Fence) -> None:
    """Expire the grant now, so that a standby need not wait out the ttl (a clean stop)."""
    await conn.execute(_RELEASE, fence.name, fence.holder, fence.epoch)


async def check_fence(conn: Conn, fence: Fence) -> None:
    """Raise LeaseLostError unless `fence` is the current, unexpired grant; lock it till commit.

    Call it inside the transaction of the write it guards (first, so the lock is
    held for the whole write); the exception rolls that transaction back.
    """
    if not conn.is_in_transaction():
        raise RuntimeError("check_fence guards a transaction: call it inside one")
    ok = await conn.fetchval(FENCE_SQL, fence.name, fence.holder, fence.epoch)
    if ok is None:
        raise LeaseLostError(fence.name, fence.holder, fence.epoch)


async def all_leases(conn: Conn) -> list[LeaseRow]:
    return [
        LeaseRow(r["name"], r["holder"], r["epoch"], r["acquired_at"], r["expires_at"])
        for r in await conn.fetch(_ALL)
    ]
