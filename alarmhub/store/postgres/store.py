"""PostgreSQL through asyncpg: the store several instances can share (issue 15).

The same ports as :class:`~alarmhub.store.sqlite.store.SqliteStore`, with the same
behaviour and the same exceptions, on a connection pool. Each write is one
transaction; a batch's rows go in one statement per table (arrays `unnest`ed), so
a batch costs a handful of round trips whatever its size. A connection lost
mid-write is a :class:`~alarmhub.store.errors.StoreUnavailableError`, which the
write gate retries until PostgreSQL is back: nothing is acknowledged meanwhile,
and the retry is a no-op where the lost transaction had committed after all.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Sequence
from datetime import datetime
from typing import Any

import asyncpg
import orjson

from alarmhub.core.dedup import DEAD_LETTER_KEPT_BYTES, Prior
from alarmhub.core.escalation import DeadlineKey
from alarmhub.core.model import Alarm, Device, TimelineEntry
from alarmhub.core.people import AuditEntry
from alarmhub.core.pipeline import BatchEffects
from alarmhub.core.retention import RetainedTable
from alarmhub.core.suppress import Silence
from alarmhub.redact import redact_url
from alarmhub.store.accounts import ts
from alarmhub.store.cluster import Fence
from alarmhub.store.columns import DEVICE_LISTING, SILENCE_KEYS, device_from_row, device_upsert_set
from alarmhub.store.errors import StoreUnavailableError
from alarmhub.store.journal_outbox import JournalExport
from alarmhub.store.ports import AlarmStore, DecidedRow, Notification, OutboxItem
from alarmhub.store.postgres import migrations
from alarmhub.store.postgres.bridge_rows import REGISTRY_LOCK, PgBridgeRows
from alarmhub.store.postgres.escalation_rows import (
    fired_rows,
    write_decisions,
    write_release,
)
from alarmhub.store.postgres.inbox_rows import select_priors, write_batch
from alarmhub.store.postgres.journal_rows import PgJournalRows, insert_journal
from alarmhub.store.postgres.leases import Conn, check_fence
from alarmhub.store.postgres.reads import check_bridges, check_moves, oldest_sql, prune_sql
from alarmhub.store.postgres.reads import credentials_set_elsewhere as stale_credentials
from alarmhub.store.postgres.rows import (
    ALARM_SELECT,
    DEVICE_SELECT,
    INSERT_AUDIT,
    alarm_from_row,
    audit_columns,
    connection,
    device_columns,
    device_dict,
    keep_session,
    silence_from_row,
    status_count,
    transaction,
)
from alarmhub.store.postgres.sql import storable

# Text sorts byte by byte, as in SQLite, whatever the database's collation.
_QUEUE_ORDER = 'ORDER BY priority ASC, raised_at ASC, id COLLATE "C" ASC'
# What pg_stat_activity shows for alarmhub's connections.
APPLICATION_NAME = "alarmhub"


class PostgresStore(PgJournalRows, PgBridgeRows):
    """A connection pool and the ports on it; create with :meth:`open`."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        # The single-owner writes' grant (issue 15): None until the daemon sets it.
        self._grant: Callable[[], Fence] | None = None

    def fence_with(self, grant: Callable[[], Fence]) -> None:
        """Fence the single-owner writes by `grant` from now on (daemon/owner.py).

        `grant` returns the lease grant of the owner's current term, or raises
        LeaseLostError when there is none (the term ended or the lease's local
        deadline passed): the write then fails before it touches the database.
        The writes so fenced are the ones only the owner makes (a batch, escalation
        decisions, the outbox marks, pruning); each checks the grant first in its
        own transaction (leases.check_fence), so a grant that moved on rolls it
        back. A store never told (the CLI, the store tests) writes unfenced.
        """
        self._grant = grant

    def _owner_grant(self) -> Fence | None:
        return None if self._grant is None else self._grant()

    @staticmethod
    async def _fence(conn: Conn, grant: Fence | None) -> None:
        if grant is not None:
            await check_fence(conn, grant)

    @classmethod
    async def open(
        cls,
        url: str,
        *,
        migrate: bool = True,
        min_size: int = 1,
        max_size: int = 4,
        command_timeout: float = 60.0,
        idle_in_transaction_s: float | None = None,
    ) -> PostgresStore:
        """Open a pool (and bring the schema up to date unless `migrate=False`).

        `command_timeout` bounds a statement on a connection that went silent (a
        network cut sends no reset): it then fails as unavailable and is retried.
        """
        # Plans made for each execution's values, never a generic plan: asyncpg prepares
        # every statement, and PostgreSQL's generic plan, chosen after five executions on
        # a table still empty or unanalyzed (a new database, the first minute of a storm),
        # stays: a seq scan whose `= ANY(array)` filter compares every row with every
        # fingerprint of the batch (the dedup read took 0.7-0.9 s at 13,000 inbox rows),
        # a hash join over all of the timeline or devices. A custom plan sees the array's
        # length and the table's current size; it costs a plan per statement.
        settings = {"application_name": APPLICATION_NAME, "plan_cache_mode": "force_custom_plan"}
        if idle_in_transaction_s is not None:
            # The fence's FOR SHARE lock lives as long as its transaction: a writer cut
            # off mid-transaction would hold up every takeover until the server noticed
            # (TCP keepalive: hours). The server ends such a session after this long.
            ms = max(1, round(idle_in_transaction_s * 1000))
            settings["idle_in_transaction_session_timeout"] = str(ms)
        try:
            if migrate:
                conn = await asyncpg.connect(url, server_settings=settings)
                try:
                    await migrations.migrate(conn)
                finally:
                    await conn.close()
            pool = await asyncpg.create_pool(
                url,
                min_size=min_size,
                max_size=max_size,
                command_timeout=command_timeout,
                server_settings=settings,
                reset=keep_session,
            )
        except (OSError, TimeoutError, asyncpg.PostgresConnectionError) as exc:
            # One line saying which server, not a driver traceback (the password redacted).
            raise StoreUnavailableError(f"{redact_url(url)}: {type(exc).__name__}: {exc}") from exc
        return cls(pool)

    async def close(self) -> None:
        await self.pool.close()

    # --- the ingest path -------------------------------------------------

    async def latest_messages(self, fingerprints: Iterable[str]) -> dict[str, Prior]:
        """The latest stored message per fingerprint, for dedup (core/dedup.py)."""
        wanted = list(dict.fromkeys(fingerprints))
        if not wanted:
            return {}
        async with connection(self.pool) as conn:
            return await select_priors(conn, wanted)

    async def commit_batch(
        self,
        effects: BatchEffects,
        municipality_of: dict[str, str],
        decided: Sequence[DecidedRow] = (),
    ) -> list[bool]:
        """Write one batch's every effect in one transaction, or nothing at all; with
        its new alarms' first steps, per row whether recorded now (IngestStore)."""
        grant = self._owner_grant()
        async with transaction(self.pool) as conn:
            # Fenced in the batch's first statement, not one of its own (a round trip).
            return await write_batch(conn, effects, municipality_of, decided, grant)

    async def get_devices(self, ids: Iterable[str]) -> list[Device]:
        wanted = list(dict.fromkeys(ids))
        if not wanted:
            return []
        sql = f"SELECT {DEVICE_SELECT} FROM devices WHERE id = ANY($1::text[])"
        async with connection(self.pool) as conn:
            return [device_from_row(r) for r in await conn.fetch(sql, wanted)]

    # --- state loaded at start and the registry --------------------------

    async def load_devices(self) -> dict[str, Device]:
        async with connection(self.pool) as conn:
            rows = await conn.fetch(f"SELECT {DEVICE_SELECT} FROM devices")
        return {r[0]: device_from_row(r) for r in rows}

    async def devices_changed_since(self, since: str) -> tuple[list[Device], str]:
        """Devices updated after the mark `since` (text in ts() form, "" for all)."""
        sql = f"SELECT {DEVICE_SELECT}, updated_at FROM devices"
        args: list[Any] = []
        if since:
            sql += " WHERE updated_at > $1"
            args.append(datetime.fromisoformat(since))
        async with connection(self.pool) as conn:
            rows = await conn.fetch(sql + " ORDER BY updated_at", *args)
        newest = ts(rows[-1]["updated_at"]) if rows else since
        return [device_from_row(r) for r in rows], newest or ""

    async def newest_device_update(self) -> str:
        async with connection(self.pool) as conn:
            newest = await conn.fetchval("SELECT max(updated_at) FROM devices")
        return ts(newest) or ""

    async def load_active_alarms(self) -> list[Alarm]:
        # Oldest first: a newer alarm of the same device and kind must index last.
        sql = f"SELECT {ALARM_SELECT} FROM alarms WHERE state <> 'resolved' ORDER BY raised_at"
        async with connection(self.pool) as conn:
            return [alarm_from_row(r) for r in await conn.fetch(sql)]

    async def load_resolved_since(self, since: datetime) -> list[Alarm]:
        sql = (
            f"SELECT {ALARM_SELECT} FROM alarms "
            "WHERE state = 'resolved' AND resolved_at >= $1 ORDER BY resolved_at"
        )
        async with connection(self.pool) as conn:
            return [alarm_from_row(r) for r in await conn.fetch(sql, since)]

    async def register_devices(
        self,
        devices: Sequence[Device],
        now: datetime,
        keep: frozenset[str] = frozenset(),
        *,
        audit: Sequence[AuditEntry],
        existing_in: frozenset[str] | None = None,
        assign_bridges: bool = False,
    ) -> list[str]:
        """Insert or update devices, all or none; columns in `keep` stay as they are.

        As SqliteStore.register_devices: refused whole by a move with open alarms, an id
        taken outside `existing_in`, another municipality's bridge or an unassigned one;
        `audit` commits with it. Returns the ids whose SIP credentials were set elsewhere.
        """
        last = list({d.id: d for d in devices}.values())
        update = device_upsert_set(keep)
        sql = (
            "INSERT INTO devices (id, kind, municipality, profile, heartbeat_interval_s, label, "
            "active, resident, settings, bridge, registered_at, updated_at) "
            "SELECT i, k, m, p, h, l, a, r, s::jsonb, b, n, n FROM unnest($1::text[], "
            "$2::text[], $3::text[], $4::text[], $5::integer[], $6::text[], $7::boolean[], "
            "$8::text[], $9::text[], $10::text[], $11::timestamptz[]) "
            "AS u(i, k, m, p, h, l, a, r, s, b, n) "
            + (f"ON CONFLICT (id) DO UPDATE SET {update}" if update else "ON CONFLICT DO NOTHING")
        )
        async with transaction(self.pool) as conn:
            await conn.execute("SELECT pg_advisory_xact_lock($1)", REGISTRY_LOCK)
            await check_moves(conn, last, existing_in)
            await check_bridges(conn, last, now, audit, may_assign=assign_bridges)
            if last:
                await conn.execute(sql, *device_columns(last, now))
            if audit:
                await conn.execute(INSERT_AUDIT, *audit_columns(audit))
            return await stale_credentials(conn, [d.id for d in last])

    # --- operators' actions and releases ----------------------------------

    async def get_alarm(self, alarm_id: str) -> Alarm | None:
        sql = f"SELECT {ALARM_SELECT} FROM alarms WHERE id = $1"
        async with connection(self.pool) as conn:
            row = await conn.fetchrow(sql, alarm_id)
        return alarm_from_row(row) if row else None

    async def get_alarms(self, ids: Iterable[str]) -> list[Alarm]:
        """The stored alarms of these ids, in one query (the change follower's read)."""
        wanted = list(dict.fromkeys(ids))
        if not wanted:
            return []
        sql = f"SELECT {ALARM_SELECT} FROM alarms WHERE id = ANY($1::text[])"
        async with connection(self.pool) as conn:
            return [alarm_from_row(r) for r in await conn.fetch(sql, wanted)]

    async def save_alarms(
        self,
        alarms: Iterable[Alarm],
        entries: Iterable[TimelineEntry],
        *,
        audit: Sequence[AuditEntry],
        journal: Sequence[JournalExport] = (),
    ) -> None:
        """Several alarms' changes with their timeline entries and audit, all or nothing;
        `journal`: the journal exports a resolve starts, in the same transaction."""
        async with transaction(self.pool) as conn:
            await write_release(conn, list(alarms), list(entries), None, audit)
            await insert_journal(conn, journal)

    async def end_silence_releasing(
        self,
        silence_id: str,
        by: str,
        now: datetime,
        released: Sequence[Alarm],
        entries: Sequence[TimelineEntry],
        *,
        audit: Sequence[AuditEntry],
    ) -> bool:
        """End a silence now, release its alarms and audit it; False if already ended."""
        async with transaction(self.pool) as conn:
            return await write_release(conn, released, entries, (now, by, silence_id), audit)

    async def raising_message(self, alarm_id: str) -> tuple[str, str] | None:
        """The (topic, message id) of the message that raised an alarm."""
        sql = (
            "SELECT i.topic, i.msg_id FROM timeline t JOIN alarms a ON a.id = t.alarm_id "
            "JOIN inbox i ON i.device_id = a.device_id AND i.msg_id = t.detail->>'msg_id' "
            "WHERE t.alarm_id = $1 AND t.type = 'raised' LIMIT 1"
        )
        async with connection(self.pool) as conn:
            row = await conn.fetchrow(sql, alarm_id)
        return (str(row[0]), str(row[1])) if row else None

    # --- escalation and the outbox ----------------------------------------
    async def fired_keys(self, alarm_ids: Iterable[str]) -> dict[str, set[DeadlineKey]]:
        wanted = list(alarm_ids)
        sql = "SELECT alarm_id, round, step FROM escalations WHERE alarm_id = ANY($1::text[])"
        async with connection(self.pool) as conn:
            return fired_rows(await conn.fetch(sql, wanted), wanted)

    async def commit_decisions(
        self, rows: Sequence[DecidedRow], decided_at: datetime
    ) -> list[bool]:
        """Record decided deadlines with their effects, in one transaction. Per row, whether
        it was recorded now: False when the step was decided before (an earlier life,
        another instance) and its effects were not written again."""
        grant = self._owner_grant()
        async with transaction(self.pool) as conn:
            await self._fence(conn, grant)
            return await write_decisions(conn, rows, decided_at)

    async def due_outbox(
        self, now: datetime, limit: int = 100, busy: Collection[str] = ()
    ) -> list[OutboxItem]:
        sql = (
            "SELECT id, alarm_id, target, channel, address, payload, attempts FROM outbox "
            "WHERE sent_at IS NULL AND next_attempt_at <= $1 AND address <> ALL($3::text[]) "
            "ORDER BY next_attempt_at, id LIMIT $2"
        )
        async with connection(self.pool) as conn:
            rows = await conn.fetch(sql, now, limit, list(busy))
        return [OutboxItem(r[0], r[1], r[2], r[3], r[4], r[5].encode(), r[6]) for r in rows]

    async def outbox_sent(self, item_id: int, at: datetime) -> None:
        grant = self._owner_grant()
        async with transaction(self.pool) as conn:
            await self._fence(conn, grant)
            await conn.execute(
                "UPDATE outbox SET sent_at = $1, attempts = attempts + 1 WHERE id = $2",
                at,
                item_id,
            )

    async def outbox_failed(self, item_id: int, next_at: datetime, error: str) -> None:
        grant = self._owner_grant()
        async with transaction(self.pool) as conn:
            await self._fence(conn, grant)
            await conn.execute(
                "UPDATE outbox SET attempts = attempts + 1, next_attempt_at = $1, "
                "last_error = $2 WHERE id = $3",
                next_at,
                error[:500],
                item_id,
            )

    async def queue_outbox(self, alarm_id: str, note: Notification, at: datetime) -> None:
        async with connection(self.pool) as conn:
            await conn.execute(
                "INSERT INTO outbox (alarm_id, target, channel, address, payload, created_at, "
                "next_attempt_at) VALUES ($1, $2, $3, $4, $5, $6, $6)",
                alarm_id,
                note.target,
                note.channel,
                note.address,
                orjson.dumps(note.payload).decode(),
                at,
            )

    async def outbox_for(self, alarm_id: str) -> list[dict[str, Any]]:
        sql = (
            "SELECT target, channel, created_at, attempts, sent_at, last_error FROM outbox "
            "WHERE alarm_id = $1 ORDER BY id"
        )
        async with connection(self.pool) as conn:
            rows = await conn.fetch(sql, alarm_id)
        return [
            {
                "target": r[0],
                "channel": r[1],
                "created_at": ts(r[2]),
                "attempts": r[3],
                "sent_at": ts(r[4]),
                "last_error": r[5],
            }
            for r in rows
        ]

    async def active_silences(self, now: datetime) -> list[Silence]:
        """Silences not yet ended, for the pipeline (one not yet begun covers nothing yet)."""
        sql = (
            f"SELECT {', '.join(SILENCE_KEYS)} FROM silences "
            "WHERE deleted_at IS NULL AND ends_at > $1"
        )
        async with connection(self.pool) as conn:
            return [silence_from_row(r) for r in await conn.fetch(sql, now)]

    # --- retention (issue 13 item 2) ----------------------------------------

    async def prune(self, table: RetainedTable, before: datetime, limit: int) -> int:
        """Delete one small batch of rows past retention, in its own transaction."""
        grant = self._owner_grant()
        async with transaction(self.pool) as conn:
            await self._fence(conn, grant)
            return status_count(await conn.execute(prune_sql(table), before, limit))

    async def oldest_received(self, table: RetainedTable) -> datetime | None:
        async with connection(self.pool) as conn:
            at: datetime | None = await conn.fetchval(oldest_sql(table))
        return at

    # --- reads for the CLI and the API -----------------------------------

    async def list_alarms(
        self,
        state: str | None = None,
        limit: int | None = None,
        municipalities: Sequence[str] | None = None,
    ) -> list[Alarm]:
        where: list[str] = []
        args: list[Any] = []
        if state is not None:
            args.append(state)
            where.append(f"state = ${len(args)}")
        if municipalities is not None:
            args.append(list(municipalities))
            where.append(f"municipality = ANY(${len(args)}::text[])")
        sql = f"SELECT {ALARM_SELECT} FROM alarms"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += f" {_QUEUE_ORDER}"
        if limit is not None:
            args.append(limit)
            sql += f" LIMIT ${len(args)}"
        async with connection(self.pool) as conn:
            return [alarm_from_row(r) for r in await conn.fetch(sql, *args)]

    async def timeline(self, alarm_id: str) -> list[dict[str, Any]]:
        sql = "SELECT at, type, actor, detail FROM timeline WHERE alarm_id = $1 ORDER BY id"
        async with connection(self.pool) as conn:
            rows = await conn.fetch(sql, alarm_id)
        return [
            {"at": ts(r[0]), "type": r[1], "actor": r[2], "detail": orjson.loads(r[3])}
            for r in rows
        ]

    async def hpr_of(self, name: str) -> str | None:
        if not storable(name):  # a NUL no name holds: nobody's, as in SQLite
            return None
        async with connection(self.pool) as conn:
            value: str | None = await conn.fetchval("SELECT hpr FROM users WHERE name = $1", name)
        return value

    async def dead_letters(self, limit: int | None = None) -> list[dict[str, Any]]:
        sql = (
            "SELECT seq, received_at, topic, device_id, municipality, msg_id, reason, detail, "
            "payload, payload_bytes FROM inbox WHERE verdict = 'rejected' ORDER BY seq DESC"
        )
        args: list[Any] = []
        if limit is not None:
            sql += " LIMIT $1"
            args.append(limit)
        async with connection(self.pool) as conn:
            rows = await conn.fetch(sql, *args)
        keys = ("seq", "received_at", "topic", "device_id", "municipality", "msg_id", "reason")
        out = []
        for r in rows:
            item = dict(zip(keys, r[:7], strict=True))
            item["received_at"] = ts(r[1])
            item["detail"] = r[7]
            payload: bytes = r[8]
            item["payload"] = payload[:DEAD_LETTER_KEPT_BYTES].decode("utf-8", "replace")
            item["payload_bytes"] = r[9]
            out.append(item)
        return out

    async def list_devices(self, municipality: str | None = None) -> list[dict[str, Any]]:
        sql = f"SELECT {DEVICE_LISTING} FROM devices"
        args: list[Any] = []
        if municipality is not None:
            sql += " WHERE municipality = $1"
            args.append(municipality)
        sql += ' ORDER BY municipality COLLATE "C", id COLLATE "C"'
        async with connection(self.pool) as conn:
            return [device_dict(r) for r in await conn.fetch(sql, *args)]


def _is_an_alarm_store(store: PostgresStore) -> AlarmStore:
    """mypy's proof that PostgresStore implements every port in store/ports.py."""
    return store
