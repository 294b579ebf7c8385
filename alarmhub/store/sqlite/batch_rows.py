"""One ingest batch's rows written in one transaction on the writer's thread.

SqliteStore.commit_batch builds the rows on the event loop (batch_rows) and hands
them here through `_in_writer_thread`: the whole BEGIN … executemany … COMMIT is
one hop to aiosqlite's thread instead of one per statement (docs/performance.md),
on the same single writer connection, so its ordering with every other write holds.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from alarmhub.core.model import Alarm, Device, Verdict
from alarmhub.core.moves import moved_since
from alarmhub.core.pipeline import BatchEffects
from alarmhub.store.accounts import ts
from alarmhub.store.errors import DeviceMovedError
from alarmhub.store.inbox import inbox_row
from alarmhub.store.ports import DecidedRow
from alarmhub.store.sqlite.escalation_rows import claim_decided, decided_payload, write_effects
from alarmhub.store.sqlite.inbox_rows import INSERT_INBOX
from alarmhub.store.sqlite.rows import INSERT_TIMELINE, alarm_row, timeline_row, upsert_alarms

__all__ = ["BatchRows", "batch_rows", "write_batch"]

# The devices heard from, each only where the batch was decided with it: a device
# another process moved meanwhile is not updated, and the count comes up short. A
# device the batch has no registry entry of (a batch built by hand) is not checked.
# Plain `?` placeholders, the municipality bound twice: a numbered one (`?3`) bound from a
# sequence is deprecated since Python 3.12 and refused from 3.14 (sqlite3), which would
# refuse every batch's commit.
SEEN = (
    "UPDATE devices SET last_seen_at = ? WHERE id = ? "
    "AND (? IS NULL OR (municipality = ? AND resident IS ?))"
)
_CHUNK = 500


@dataclass(frozen=True, slots=True)
class BatchRows:
    """What write_batch writes. `alarms`: the rows of the alarms without a step decided
    in the batch; `held`: the alarms with one, each written as its step's row (the alarm
    at its new level) when the step is recorded now, else as itself."""

    inbox: list[tuple[Any, ...]]
    alarms: list[tuple[Any, ...]]
    held: list[Alarm]
    timeline: list[tuple[Any, ...]]
    seen: list[tuple[str | None, str, str | None, str | None, str | None]]
    decided: list[Any]
    # The registry entries the batch was decided with, and those of its devices not
    # heard from (a dead letter's, an internal event's): checked by a read.
    decided_with: dict[str, Device]
    unheard: list[str]


def batch_rows(
    effects: BatchEffects, municipality_of: dict[str, str], decided: Sequence[DecidedRow]
) -> BatchRows:
    """The batch's rows, built on the loop; an alarm row only where it is written.

    A new alarm whose first step is decided in the batch has two candidate rows, its
    own and the step's; the step's is almost always the one written, so its own waits
    as the Alarm and is built on the writer's thread only if the claim is refused.
    """
    inbox = [
        inbox_row(m, municipality_of.get(m.rejected.device_id or "") if m.rejected else None)
        for m in effects.messages
        if m.verdict is not Verdict.REDELIVERY
    ]
    stepped = {r.alarm_id for r in decided if r.alarm is not None}
    alarms: list[tuple[Any, ...]] = []
    held: list[Alarm] = []
    for a in effects.alarms.values():
        if a.id in stepped:
            held.append(a)
        else:
            alarms.append(alarm_row(a))
    used = effects.decided_with
    seen: list[tuple[str | None, str, str | None, str | None, str | None]] = []
    for dev, at in effects.device_seen.items():
        device = used.get(dev)
        if device is None:  # not decided by the pipeline (a test's batch): not checked
            seen.append((ts(at), dev, None, None, None))
        else:
            seen.append((ts(at), dev, device.municipality, device.municipality, device.resident))
    return BatchRows(
        inbox,
        alarms,
        held,
        [timeline_row(e) for e in effects.timeline],
        seen,
        decided_payload(decided, None),
        used,
        [dev for dev in used if dev not in effects.device_seen],
    )


def write_batch(conn: sqlite3.Connection, rows: BatchRows) -> list[bool]:
    """Commit one ingest batch's rows, or none of them: the batch is retried whole.

    `rows.decided`: the first escalation steps of its new alarms (escalation_rows.decided_payload),
    each claimed as the escalator's own transaction claims it; a recorded one's alarm row
    (the alarm at its new level) is written instead of the batch's, at the same revision.
    Nothing is written if a device of the batch moved since it was read (DeviceMovedError).
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        _devices_where_decided(conn, rows)
        if rows.inbox:
            conn.executemany(INSERT_INBOX, rows.inbox)
        recorded, escalated, steps, outbox = claim_decided(conn, rows.decided)
        alarms = rows.alarms
        if rows.held:
            alarms = alarms + [escalated.get(a.id) or alarm_row(a) for a in rows.held]
        if alarms:
            upsert_alarms(conn, alarms)
        if rows.timeline:
            conn.executemany(INSERT_TIMELINE, rows.timeline)
        write_effects(conn, steps, outbox)
        conn.execute("COMMIT")
    except BaseException:
        # The transaction may already be gone (SQLITE_FULL rolls back by itself).
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
        raise
    return recorded


def _devices_where_decided(conn: sqlite3.Connection, rows: BatchRows) -> None:
    """Update the devices heard from; DeviceMovedError if one moved since it was read.

    Inside the batch's BEGIN IMMEDIATE: no registry write (the CLI's, which never
    takes this instance's lock) comes between this check and the commit. A move
    committed before it is found here, and the batch is decided again on the device
    as stored (WriteGate.deciding), instead of raising its alarm in the old
    municipality until the registry's next poll. The rows are read only when the update
    came up short or a device was not heard from: on the hot path, no read.
    """
    changed = conn.executemany(SEEN, rows.seen).rowcount if rows.seen else 0
    ids = list(rows.unheard)
    if changed != len(rows.seen):
        ids += [row[1] for row in rows.seen]
    if not ids:
        return
    stored: list[tuple[str, str, str | None]] = []
    for i in range(0, len(ids), _CHUNK):
        chunk = ids[i : i + _CHUNK]
        marks = ",".join("?" * len(chunk))
        sql = f"SELECT id, municipality, resident FROM devices WHERE id IN ({marks})"
        stored += conn.execute(sql, chunk).fetchall()
    moved = moved_since(rows.decided_with, stored)
    if moved:
        raise DeviceMovedError(moved)
