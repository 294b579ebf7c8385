"""One ingest batch in PostgreSQL: dedup's read, and the batch's one transaction.

The inbox's key is (fingerprint, the payload's sha256, occurrence): a redelivery
committed twice is a conflict and `ON CONFLICT … DO NOTHING` makes it a no-op,
whoever commits it (a retry after a connection lost at COMMIT, or, later, a
second instance that received the same message). `occurrence` tells apart the
identical messages dedup nevertheless judged new (the same id and bytes after the
window, or after their alarm was resolved: core/dedup.py): such a row gets one more
than the highest occurrence stored *before it arrived*. Counting only earlier rows
keeps a retry of the same batch on the same occurrence, so it conflicts again
instead of adding a second row; the highest, not the count, so rows pruned by
retention cannot make a new message collide with a kept one and vanish.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from alarmhub.core.dedup import Identity, Prior, payload_digest
from alarmhub.core.model import Device, Verdict
from alarmhub.core.moves import moved_since
from alarmhub.core.pipeline import BatchEffects, MessageOutcome
from alarmhub.store.cluster import Fence
from alarmhub.store.columns import ALARM_COLUMNS
from alarmhub.store.errors import DeviceMovedError, LeaseLostError
from alarmhub.store.inbox import inbox_row
from alarmhub.store.ports import DecidedRow
from alarmhub.store.postgres.escalation_rows import (
    INSERT_OUTBOX,
    decided_args,
    insert_decided,
    outbox_rows,
    recorded_now,
)
from alarmhub.store.postgres.leases import FENCE_SQL
from alarmhub.store.postgres.rows import (
    ALARM_PARAMS,
    INSERT_TIMELINE,
    alarm_columns,
    alarm_writes,
    check_written,
    fingerprint_key,
    notify_args,
    renumbered,
    text,
    timeline_columns,
)

# The latest row per fingerprint, from the (fingerprint, seq) index. The digest is
# handed to dedup only for a payload kept in part, as SQLite does (Prior.digest).
SELECT_PRIORS = (
    "SELECT DISTINCT ON (fingerprint) fingerprint, received_at, payload, events, "
    "CASE WHEN payload_bytes <> octet_length(payload) THEN payload_sha256 END "
    "FROM inbox WHERE fingerprint = ANY($1::text[]) ORDER BY fingerprint, seq DESC"
)

INSERT_INBOX = """
INSERT INTO inbox (fingerprint, received_at, topic, payload, device_id, municipality, msg_id,
    verdict, reason, detail, events, identity, payload_bytes, payload_sha256, occurrence)
SELECT u.fp, u.at, u.topic, u.payload, u.dev, u.mun, u.msg, u.verdict, u.reason, u.detail,
    u.events::jsonb, u.identity, u.size, u.sha,
    CASE WHEN u.identity IS NULL THEN 0 ELSE (
        SELECT coalesce(max(i.occurrence) + 1, 0) FROM inbox i
        WHERE i.fingerprint = u.fp AND i.payload_sha256 = u.sha AND i.received_at < u.at
    ) END
FROM unnest($1::text[], $2::timestamptz[], $3::text[], $4::bytea[], $5::text[], $6::text[],
    $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], $12::text[], $13::integer[],
    $14::text[]) WITH ORDINALITY
    AS u(fp, at, topic, payload, dev, mun, msg, verdict, reason, detail, events, identity,
         size, sha, n)
ORDER BY u.n
ON CONFLICT ON CONSTRAINT inbox_message DO NOTHING
"""

# The devices heard from, each only where the batch was decided with it (municipality
# and resident; a NULL municipality: a batch built by hand, not checked). A device
# another process moved meanwhile is not updated: the count returned comes up short.
# A move still uncommitted holds the row (reads.check_moves, FOR UPDATE): this waits
# for it and then compares against the moved row, as READ COMMITTED re-reads it.
SEEN = (
    "UPDATE devices d SET last_seen_at = u.at "
    "FROM unnest($1::text[], $2::timestamptz[], $3::text[], $4::text[]) AS u(id, at, mun, res) "
    "WHERE d.id = u.id AND (u.mun IS NULL OR (d.municipality = u.mun "
    "AND d.resident IS NOT DISTINCT FROM u.res)) RETURNING 1"
)
# Where the batch's devices are now, when the update came up short or a device was
# not heard from (a dead letter's, an internal event's). FOR SHARE: a move waits
# for this batch's commit and then finds its alarms (reads.check_moves).
WHERE_NOW = (
    "SELECT id, municipality, resident FROM devices WHERE id = ANY($1::text[]) "
    "ORDER BY id FOR SHARE"
)

# A batch is two statements in its transaction, whatever it holds (issue 18: each
# statement is a round trip, and one per table and one for the fence made ~10).
# The first: the owner's fence ($1-$3, all NULL when unfenced), the devices heard
# from, the inbox and the new alarms' first steps. The fence's FOR SHARE lock is
# held from here to the commit, and a grant that moved on rolls all of it back
# (write_batch raises), so nothing written under a lost grant commits; the rows
# this statement wrote before its lock are in the same uncommitted transaction.
# The steps are claimed only when the inbox took a row or had none to take (see
# write_batch: a batch committed before writes nothing again). Last, the count of
# devices updated (SEEN).
BATCH_FIRST = (
    f"WITH fence AS MATERIALIZED ({FENCE_SQL.strip()}), "
    f"seen AS ({renumbered(SEEN, 3)}), "
    f"ins AS ({renumbered(INSERT_INBOX.strip(), 7)} RETURNING 1), "
    f"dec AS ({insert_decided(21, 'cardinality($8::text[]) = 0 OR EXISTS (SELECT FROM ins)')}) "
    "SELECT $1::text IS NULL OR EXISTS (SELECT FROM fence), (SELECT count(*) FROM ins), "
    "d.a, d.r, d.s, (SELECT count(*) FROM seen) FROM (SELECT array_agg(alarm_id) AS a, "
    "array_agg(round) AS r, array_agg(step) AS s FROM dec) AS d"
)
# The second: the alarms as this batch leaves them and their notifications, the
# timeline (the batch's entries, then those of the steps recorded now) and the
# steps' outbox rows. Returns the count of alarms written (rows.check_written).
_TIMELINE_AT = ALARM_PARAMS + 2
BATCH_SECOND = (
    f"WITH {alarm_writes(0)}, "
    f"tl AS ({renumbered(INSERT_TIMELINE, _TIMELINE_AT)}), "
    f"ob AS ({renumbered(INSERT_OUTBOX, _TIMELINE_AT + 5)}) "
    "SELECT (SELECT count(*) FROM up), (SELECT count(*) FROM note)"
)


async def select_priors(conn: Any, wanted: list[str]) -> dict[str, Prior]:
    """Per fingerprint: its latest row's arrival, bytes and the alarms it touched."""
    by_key = {fingerprint_key(fp): fp for fp in wanted}
    rows = await conn.fetch(SELECT_PRIORS, list(by_key))
    return {by_key[r[0]]: prior_of(r) for r in rows}


def prior_of(row: Any) -> Prior:
    events = row[3]
    ids = tuple(e["alarm_id"] for e in orjson.loads(events) if e.get("alarm_id")) if events else ()
    return Prior(row[1], bytes(row[2]), ids, row[4])


def inbox_columns(effects: BatchEffects, municipality_of: dict[str, str]) -> list[list[Any]]:
    """The inbox arrays of a batch: every message but a redelivery, as SQLite stores it.

    The row is built by the stores' shared ``store/inbox.py`` :func:`inbox_row` (the
    events' JSON, what of a payload is kept), then given what this schema always
    holds: the time as a datetime, and the whole payload's size and sha256, since
    the digest is in the key.
    """
    cols: list[list[Any]] = [[] for _ in range(14)]
    for m in effects.messages:
        if m.verdict is Verdict.REDELIVERY:
            continue
        row = _row(m, municipality_of)
        for col, value in zip(cols, row, strict=True):
            col.append(value)
    return cols


def _row(m: MessageOutcome, municipality_of: dict[str, str]) -> tuple[Any, ...]:
    rejected = m.rejected
    row = inbox_row(m, municipality_of.get(rejected.device_id or "") if rejected else None)
    payload: bytes = row[3]
    size = row[12] if row[12] is not None else len(payload)
    digest = row[13] if row[13] is not None else payload_digest(payload)
    identity = None if m.identity is Identity.NEW else str(m.identity)
    events: str | None = row[10]
    if events is not None and "\\u0000" in events:
        events = events.replace("\\u0000", "\\ufffd")
    return (
        fingerprint_key(row[0]),
        m.raw.received_at,
        row[2],
        payload,
        *(text(v) for v in row[4:10]),
        events,
        identity,
        size,
        digest,
    )


async def write_batch(
    conn: Any,
    effects: BatchEffects,
    municipality_of: dict[str, str],
    decided: Sequence[DecidedRow] = (),
    grant: Fence | None = None,
) -> list[bool]:
    """One batch's rows in the caller's transaction, with its new alarms' first steps,
    fenced by `grant` (leases.check_fence, in the first statement); two statements.

    Per decided row whether it was recorded now (IngestStore.commit_batch). When every
    inbox row of the batch is there already, this batch was committed by an earlier
    attempt whose COMMIT's answer was lost with the connection: its alarms, timeline,
    devices and first steps were committed with it, and writing the timeline again
    would show each entry twice. Then nothing else is written, and each step counts as
    recorded: it is stored as this batch decided it, and nobody announced it yet.

    The devices heard from are updated in the first statement, before the alarms: a
    registry write that moves a device locks the same rows before it reads the
    device's open alarms (reads.check_moves), so it waits for this batch's alarms and
    sees them. Should the two still lock rows in opposite orders, PostgreSQL aborts
    one (a StoreError) and the gate retries the batch. A device moved since the batch
    was decided with it (committed before this statement, or while it waited for the
    row) is not updated there: DeviceMovedError, and nothing is committed.
    """
    seen = sorted(effects.device_seen.items())
    inbox = inbox_columns(effects, municipality_of)
    # One instant for all of a batch's steps (daemon/escalator.py first_steps).
    at = decided[0].decided_at if decided else None
    fence = (grant.name, grant.holder, grant.epoch) if grant is not None else (None, None, None)
    first = await conn.fetchrow(
        BATCH_FIRST,
        *fence,
        [d for d, _ in seen],
        [a for _, a in seen],
        *_decided_where(effects.decided_with, seen),
        *inbox,
        *decided_args(decided, at),
    )
    if not first[0]:
        assert grant is not None
        raise LeaseLostError(grant.name, grant.holder, grant.epoch)
    if inbox[0] and first[1] == 0:
        return [True] * len(decided)
    await _devices_where_decided(conn, effects, updated=int(first[5]))
    fresh = set(zip(first[2] or (), first[3] or (), first[4] or (), strict=True))
    recorded = recorded_now(decided, fresh)
    kept = [r for r, now in zip(decided, recorded, strict=True) if now]
    escalated = {r.alarm_id: r.alarm for r in kept if r.alarm is not None}
    alarms = [escalated.get(i, a) for i, a in effects.alarms.items()]
    timeline = [*effects.timeline, *(e for r in kept for e in r.timeline)]
    outbox = outbox_rows(kept)
    if alarms or timeline or outbox:
        columns = alarm_columns(alarms) or [[] for _ in ALARM_COLUMNS]
        written = await conn.fetchrow(
            BATCH_SECOND,
            *columns,
            *notify_args(columns),
            *timeline_columns(timeline),
            *([list(c) for c in zip(*outbox, strict=True)] or [[] for _ in range(5)]),
            at,
        )
        check_written(columns, int(written[0]))
    return recorded


def _decided_where(
    decided_with: Mapping[str, Device], seen: Sequence[tuple[str, Any]]
) -> tuple[list[str | None], list[str | None]]:
    """SEEN's municipality and resident arrays: where each device heard from was decided."""
    where = [decided_with.get(dev) for dev, _ in seen]
    return (
        [d.municipality if d is not None else None for d in where],
        [d.resident if d is not None else None for d in where],
    )


async def _devices_where_decided(conn: Any, effects: BatchEffects, *, updated: int) -> None:
    """DeviceMovedError if a device of the batch moved since it was read (rolled back).

    SQLite's check (store/sqlite/batch_rows.py); the devices heard from were updated
    in the batch's first statement, only where they were decided with (SEEN), so the
    rows are read only when that came up short or a device was not heard from.
    """
    used = effects.decided_with
    ids = [dev for dev in used if dev not in effects.device_seen]
    if updated != len(effects.device_seen):
        ids += list(effects.device_seen)
    if not ids:
        return
    rows = await conn.fetch(WHERE_NOW, ids)
    moved = moved_since(used, [(r[0], r[1], r[2]) for r in rows])
    if moved:
        raise DeviceMovedError(moved)


__all__ = ["inbox_columns", "select_priors", "write_batch"]
