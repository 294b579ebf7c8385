"""The :class:`~alarmhub.store.cluster.Coordination` port on a small pool of its own.

Its own pool, not the store's: a renewal must not queue behind a batch of
inserts (a lease renewed late is a lease lost), and a store pool drained by a
slow burst must not cost the instance its ownership. Two connections: a renewal
and a heartbeat may overlap.

Every call gets a bounded wait (`command_timeout`, `connect_timeout`): a
database behind a cut network does not answer, it goes quiet, and a caller that
waits forever cannot back off. The leadership service keeps its own deadline as
well; these bounds only keep its loop moving.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import Self

import asyncpg

from alarmhub.store.cluster import ClusterView, Fence, InstanceInfo
from alarmhub.store.errors import StoreError
from alarmhub.store.postgres import instances, leases
from alarmhub.store.postgres.leases import Conn


class PgCoordination:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @classmethod
    async def open(
        cls, dsn: str, *, command_timeout_s: float = 5.0, connect_timeout_s: float = 5.0
    ) -> Self:
        pool = await asyncpg.create_pool(
            dsn,
            min_size=0,
            max_size=2,
            command_timeout=command_timeout_s,
            timeout=connect_timeout_s,
        )
        return cls(pool)

    async def close(self, timeout_s: float = 5.0) -> None:
        """Close gracefully, but not for ever: a connection behind a cut network is ended."""
        try:
            await asyncio.wait_for(self._pool.close(), timeout_s)
        except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            self._pool.terminate()

    @contextlib.asynccontextmanager
    async def _conn(self) -> AsyncIterator[Conn]:
        """A pooled connection, closed (not handed back) when its call fails or is cancelled.

        Handed back after a timeout or a cancel, asyncpg first waits for its cancel
        request and then runs its reset query on the connection, with no bound but the
        command timeout: one connection gone silent (a failover, a dropped NAT entry)
        held the leadership's loop that long, past the holder's own deadline, so a
        lone instance lost its lease while new connections worked. Closed, the next
        call gets a new one at once.
        """
        async with self._pool.acquire() as conn:
            try:
                yield conn
            except BaseException:
                conn.terminate()
                raise

    async def acquire(self, name: str, holder: str, ttl_s: float) -> Fence | None:
        async with self._conn() as conn:
            return await leases.acquire(conn, name, holder, ttl_s)

    async def renew(self, fence: Fence, ttl_s: float) -> bool:
        async with self._conn() as conn:
            return await leases.renew(conn, fence, ttl_s)

    async def release(self, fence: Fence) -> None:
        async with self._conn() as conn:
            await leases.release(conn, fence)

    async def register_instance(self, info: InstanceInfo) -> None:
        async with self._conn() as conn:
            await instances.register(conn, info)

    async def heartbeat(self, info: InstanceInfo, owns: Sequence[str]) -> None:
        async with self._conn() as conn:
            await instances.heartbeat(conn, info, owns)

    async def mark_stopped(self, instance_id: str) -> None:
        async with self._conn() as conn:
            await instances.mark_stopped(conn, instance_id)

    async def cluster(self) -> ClusterView:
        async with self._pool.acquire() as conn, conn.transaction(isolation="repeatable_read"):
            now = await instances.database_now(conn)
            try:
                return ClusterView(
                    now=now,
                    instances=tuple(await instances.all_instances(conn)),
                    leases=tuple(await leases.all_leases(conn)),
                )
            except asyncpg.UndefinedTableError:
                raise StoreError(
                    "the database has no alarmhub schema yet: run `alarmhub db migrate`"
                ) from None


async def read_cluster(dsn: str) -> ClusterView:
    """One look at the cluster for the CLI; StoreError when the database cannot say."""
    coordination = await PgCoordination.open(dsn)
    try:
        return await coordination.cluster()
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise StoreError(f"cannot read the cluster: {exc}") from exc
    finally:
        await coordination.close()
