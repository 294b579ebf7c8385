"""Row shapes of the PostgreSQL store, and how a driver error becomes a store error.

The columns are SQLite's (store/sqlite/rows.py) in PostgreSQL's types: times are
`timestamptz` and cross as aware datetimes, JSON is `jsonb` and crosses as text
(asyncpg's default for json), flags are booleans. Batch writes bind one array per
column and `unnest` them, so a table costs one round trip per batch, not one per
row; the casts below name each column's type for that.

What the CLI and the API print (a timeline's `at`, a dead letter's `received_at`,
a device's `registered_at`) is text in the store's one time format (:func:`ts`),
as SQLite returns it, so the two stores answer the same JSON.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

import asyncpg
import orjson

from alarmhub.core.device_settings import settings_json
from alarmhub.core.model import Alarm, AlarmState, Device, Priority, TimelineEntry
from alarmhub.core.people import AuditEntry
from alarmhub.core.suppress import Silence
from alarmhub.store.accounts import ts
from alarmhub.store.columns import (
    ALARM_COLUMNS,
    DEVICE_COLUMNS,
    DEVICE_KEYS,
    TIME_COLUMNS,
    alarm_values,
)
from alarmhub.store.errors import StaleAlarmError, StoreError, StoreUnavailableError
from alarmhub.store.postgres.notify import CHANNEL, payloads

# Errors that mean "the server is not there", not "the server said no": the write
# gate retries both, but these are what an outage looks like (issue 15 section 1).
UNAVAILABLE = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.OperatorInterventionError,  # shutdown, cannot connect now
    # A connection left mid-operation by a cut ("cannot switch to state …"): discarded.
    asyncpg.exceptions.InternalClientError,
)


@asynccontextmanager
async def connection(pool: asyncpg.Pool) -> AsyncIterator[asyncpg.pool.PoolConnectionProxy]:
    """A connection of the pool; a driver error inside becomes the store's own.

    Everything else (IdTakenError, MoveRefusedError) passes through unchanged. A
    connection broken by the error is not reused: the pool drops a closed one.
    """
    try:
        conn = await pool.acquire()
    except (*UNAVAILABLE, asyncpg.PostgresError) as exc:
        # Whatever stops a connection being made (refused, "not accepting connections",
        # "the database system is starting up") is the server out of reach.
        raise StoreUnavailableError(f"{type(exc).__name__}: {exc}") from exc
    try:
        yield conn
    except asyncio.CancelledError:
        # A statement cancelled mid-flight (an owner's term ending, a stop): asyncpg
        # would send the server a cancel request and wait for its answer before the
        # connection could be rolled back or released — through a cut network up to
        # the command timeout (60 s was seen). Closing the connection instead ends at
        # once; the server rolls back whatever the session had open when it notices.
        conn.terminate()
        raise
    except UNAVAILABLE as exc:
        raise StoreUnavailableError(f"{type(exc).__name__}: {exc}") from exc
    except asyncpg.PostgresError as exc:
        raise StoreError(f"{type(exc).__name__}: {exc}") from exc
    finally:
        # Resetting a connection the server has cut fails; asyncpg then terminates it
        # and the pool makes a new one. What the body did stands (or was raised above).
        with contextlib.suppress(*UNAVAILABLE, asyncpg.PostgresError):
            await pool.release(conn)


async def keep_session(conn: asyncpg.Connection) -> None:
    """A pool's connection handed back as it is: no reset query (a round trip).

    asyncpg by default resets each connection on release with `pg_advisory_unlock_all();
    CLOSE ALL; UNLISTEN *; RESET ALL`: one more round trip per pooled call, two per
    ingest batch (its dedup read and its commit) of the ~14 it took (issue 18). None
    of that state is ever left on these pools' sessions: their advisory locks are
    transaction-level (`pg_advisory_xact_lock`), nothing runs SET (only SET LOCAL
    would be harmless), cursors live inside transactions, and LISTEN has a connection
    of its own (notify.py). What asyncpg still does before this is called stays: an
    open transaction is rolled back and the connection's listeners are dropped.
    """
    del conn


@asynccontextmanager
async def transaction(pool: asyncpg.Pool) -> AsyncIterator[asyncpg.pool.PoolConnectionProxy]:
    """:func:`connection` with one transaction on it, committed when the body ends.

    A failure rolls back; a cancellation does not wait for a ROLLBACK's round trip
    (which would first wait for asyncpg's cancel request, see above): the
    connection is closed and the server rolls the transaction back.
    """
    async with connection(pool) as conn:
        tx = conn.transaction()
        await tx.start()
        try:
            yield conn
        except asyncio.CancelledError:
            raise  # connection() closes it
        except BaseException:
            await tx.rollback()
            raise
        await tx.commit()


# PostgreSQL's text and jsonb cannot hold U+0000, which a device may send inside a
# JSON string (and which the fingerprint uses as its separator). A refused row
# would fail its whole batch for ever, stalling every device behind it: NUL is
# stored as U+FFFD instead, except in the fingerprint, a key, which is escaped
# reversibly (:func:`fingerprint_key`).
_NUL, _SHOWN_NUL = "\x00", "\ufffd"


def text(value: str | None) -> str | None:
    """A text value as PostgreSQL can store it."""
    return value.replace(_NUL, _SHOWN_NUL) if value is not None and _NUL in value else value


def json_text(value: object) -> str:
    """JSON for a jsonb column: as SQLite stores it, an escaped NUL shown as U+FFFD."""
    out = orjson.dumps(value).decode()
    return out.replace("\\u0000", "\\ufffd") if "\\u0000" in out else out


def fingerprint_key(fingerprint: str) -> str:
    """The inbox key of a fingerprint: NUL (its separator) and backslash escaped."""
    if _NUL not in fingerprint and "\\" not in fingerprint:
        return fingerprint
    return fingerprint.replace("\\", "\\\\").replace(_NUL, "\\0")


def status_count(status: str) -> int:
    """The row count of a command status ("INSERT 0 3", "UPDATE 1", "DELETE 2")."""
    tail = status.rsplit(" ", 1)[-1]
    return int(tail) if tail.isdigit() else 0


# --- alarms --------------------------------------------------------------------

_INT_COLUMNS = frozenset({"priority", "repeat_count", "escalation_level", "escalation_generation"})
ALARM_TYPES = [
    "timestamptz"
    if c in TIME_COLUMNS
    else "integer"
    if c in _INT_COLUMNS
    else "bigint"
    if c == "rev"
    else "text"
    for c in ALARM_COLUMNS
]
ALARM_SELECT = ", ".join(ALARM_COLUMNS)
_ALARM_SET = ", ".join(f"{c} = excluded.{c}" for c in ALARM_COLUMNS if c != "id")
# A row is written at the revision after the one it was decided on (alarm_row), and
# only over that revision: a row another writer moved on is left alone, and
# upsert_alarms sees fewer rows than it wrote (Alarm.rev, StaleAlarmError).
_ON_ALARM_CONFLICT = (
    f"ON CONFLICT (id) DO UPDATE SET {_ALARM_SET} WHERE alarms.rev = excluded.rev - 1"
)
# Many alarms in one statement: each column an array. The ids must be distinct.
UPSERT_ALARMS = (
    f"INSERT INTO alarms ({ALARM_SELECT}) SELECT {ALARM_SELECT} FROM unnest("
    + ", ".join(f"${i}::{t}[]" for i, t in enumerate(ALARM_TYPES, start=1))
    + f") WITH ORDINALITY AS u({ALARM_SELECT}, n) ORDER BY n {_ON_ALARM_CONFLICT}"
)
# The parameters UPSERT_ALARMS binds before those of a statement it is part of.
ALARM_PARAMS = len(ALARM_COLUMNS)


def renumbered(sql: str, offset: int) -> str:
    """`sql` with each parameter `$n` made `$(n + offset)`, to go after `offset` others
    in one statement (the SQL here quotes nothing with `$`)."""
    return re.sub(r"\$(\d+)", lambda m: f"${int(m[1]) + offset}", sql)


def alarm_writes(offset: int) -> str:
    """WITH items upserting the alarms (`up`, a row per alarm written) and announcing
    them (notify.py) in one statement: parameters from `$(offset + 1)`, the alarms'
    columns, then the channel and the notifications' payloads (:func:`notify_args`).

    Announcing in the upsert's own statement saves a round trip per transaction;
    pg_notify is volatile, so the materialized item runs once for each payload,
    and PostgreSQL still delivers the notifications only at the commit.
    """
    n = offset + ALARM_PARAMS
    return (
        f"up AS ({renumbered(UPSERT_ALARMS, offset)} RETURNING 1), "
        f"note AS MATERIALIZED (SELECT pg_notify(${n + 1}, p) FROM unnest(${n + 2}::text[]) AS p)"
    )


# The upsert and its notifications; the count of rows written (upsert_alarms).
UPSERT_ALARMS_NOTIFY = (
    f"WITH {alarm_writes(0)} SELECT (SELECT count(*) FROM up), (SELECT count(*) FROM note)"
)


def notify_args(columns: list[list[Any]]) -> list[Any]:
    """The channel and payloads announcing the alarms of `columns` (alarm_columns)."""
    ids: list[str] = columns[0] if columns else []
    return [CHANNEL, [p.decode() for p in payloads(ids)] if ids else []]


def alarm_row(alarm: Alarm) -> tuple[Any, ...]:
    """UPSERT_ALARMS's values of one alarm, at the revision after its own."""
    return tuple(alarm_values(alarm))


async def upsert_alarms(conn: Any, alarms: Sequence[Alarm]) -> None:
    """Write alarms in the caller's transaction; StaleAlarmError if any had moved on.

    The error rolls the caller's transaction back, so the batch is written whole or
    not at all, and the caller decides again on the alarms as stored.

    The written ids are announced to the other instances here (notify.py), in the
    upsert's own statement, so no writer of alarms can forget to: PostgreSQL
    delivers the notification at the commit, never for a rollback. The batch's
    write (inbox_rows.py) makes the same upsert part of its larger statement.
    """
    if not alarms:
        return
    columns = alarm_columns(alarms)
    row = await conn.fetchrow(UPSERT_ALARMS_NOTIFY, *columns, *notify_args(columns))
    check_written(columns, int(row[0]))


def check_written(columns: list[list[Any]], written: int) -> None:
    """StaleAlarmError unless every alarm of `columns` was written (Alarm.rev)."""
    if written != len(columns[0]):
        raise StaleAlarmError(list(columns[0]))


def resolved_first(alarms: Sequence[Alarm]) -> list[Alarm]:
    """Alarms in the order a write must apply them: those being resolved first.

    `alarms_one_active` is checked row by row, not at the end of the statement: a
    batch that resolves one alarm and raises the next of the same device and kind
    must free the slot before taking it.
    """
    return sorted(alarms, key=lambda a: a.is_active)


def alarm_columns(alarms: Sequence[Alarm]) -> list[list[Any]]:
    """The arrays UPSERT_ALARMS binds: one per column; an id given twice, its last state.

    One statement may not upsert a row twice, where SQLite's executemany simply
    wrote it twice: the last state is what both leave.
    """
    last = {a.id: a for a in alarms}
    rows = [alarm_row(a) for a in resolved_first(list(last.values()))]
    return [list(col) for col in zip(*rows, strict=True)] if rows else []


def alarm_from_row(row: asyncpg.Record) -> Alarm:
    values = dict(zip(ALARM_COLUMNS, row, strict=True))
    values["priority"] = Priority(values["priority"])
    values["state"] = AlarmState(values["state"])
    return Alarm(**values)


# --- timeline ----------------------------------------------------------------

# An entry identical to one stored (alarm, time, type, actor and detail) is the same
# entry written again: a write retried after its COMMIT's answer was lost with the
# connection (it had committed). Two distinct entries differ in one of them (times are
# the event's or the action's, to the microsecond; a second note has other text); and
# the check sees none of its own statement's rows, so a batch's entries are all kept.
INSERT_TIMELINE = (
    "INSERT INTO timeline (alarm_id, at, type, actor, detail) "
    "SELECT a, t, y, w, d::jsonb FROM unnest($1::text[], $2::timestamptz[], $3::text[], "
    "$4::text[], $5::text[]) WITH ORDINALITY AS u(a, t, y, w, d, n) "
    "WHERE NOT EXISTS (SELECT 1 FROM timeline e WHERE e.alarm_id = u.a AND e.at = u.t "
    "AND e.type = u.y AND e.actor IS NOT DISTINCT FROM u.w AND e.detail = u.d::jsonb) "
    "ORDER BY n"
)


def timeline_columns(entries: Sequence[TimelineEntry]) -> list[list[Any]]:
    return [
        [e.alarm_id for e in entries],
        [e.at for e in entries],
        [e.type.value for e in entries],
        [e.actor for e in entries],
        [json_text(e.detail) for e in entries],
    ]


# --- audit -----------------------------------------------------------------

INSERT_AUDIT = (
    "INSERT INTO audit (at, actor, action, alarm_id, device_id, municipality, address, detail) "
    "SELECT at, actor, action, alarm_id, device_id, municipality, address, detail::jsonb "
    "FROM unnest($1::timestamptz[], $2::text[], $3::text[], $4::text[], $5::text[], "
    "$6::text[], $7::text[], $8::text[]) WITH ORDINALITY "
    "AS u(at, actor, action, alarm_id, device_id, municipality, address, detail, n) ORDER BY n"
)


def audit_columns(entries: Sequence[AuditEntry]) -> list[list[Any]]:
    return [
        [e.at for e in entries],
        [e.actor for e in entries],
        [e.action for e in entries],
        [e.alarm_id for e in entries],
        [e.device_id for e in entries],
        [e.municipality for e in entries],
        [e.address for e in entries],
        [json_text(e.detail or {}) for e in entries],
    ]


# --- devices -----------------------------------------------------------------

DEVICE_SELECT = ", ".join(DEVICE_COLUMNS)


def device_columns(devices: Sequence[Device], now: datetime) -> list[list[Any]]:
    return [
        [d.id for d in devices],
        [d.kind.value for d in devices],
        [d.municipality for d in devices],
        [d.profile for d in devices],
        [d.heartbeat_interval_s for d in devices],
        [d.label for d in devices],
        [d.active for d in devices],
        [d.resident for d in devices],
        [json_text(settings_json(d.settings)) for d in devices],
        [d.bridge for d in devices],
        [now] * len(devices),
    ]


def device_dict(row: asyncpg.Record) -> dict[str, Any]:
    """A row of DEVICE_KEYS as the API and the CLI list it (times as text, like SQLite)."""
    item = dict(zip(DEVICE_KEYS, row, strict=True))
    item["settings"] = orjson.loads(item["settings"] or "{}")
    item["registered_at"] = ts(item["registered_at"])
    item["last_seen_at"] = ts(item["last_seen_at"])
    return item


# --- silences ----------------------------------------------------------------


def silence_from_row(row: asyncpg.Record) -> Silence:
    return Silence(
        row[0],
        row[1],
        row[3],
        row[4],
        device_id=row[2],
        reason=row[5],
        include_priority_1=bool(row[8]),
        created_by=row[6],
        created_at=row[7],
    )
