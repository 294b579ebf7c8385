"""The inbox after issue 12 item 12: one fingerprint may have several rows, and a
database made before the change keeps every row and keeps working."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

from alarmhub.core.dedup import Identity, Prior
from alarmhub.core.model import Device, DeviceKind, RawMessage, Verdict
from alarmhub.core.pipeline import BatchEffects, MessageOutcome
from alarmhub.store.sqlite.schema import MIGRATIONS
from alarmhub.store.sqlite.store import SqliteStore

T0 = datetime(2026, 11, 22, 1, 0, tzinfo=UTC)
PENDANT = Device("pend-1", DeviceKind.SAFETY_ALARM, "0301")
FP = "m:pend-1\x007"
# The migration that lifted the inbox's UNIQUE(fingerprint): found by what it does,
# so migrations added later by others do not shift it.
REBUILD = next(i for i, m in enumerate(MIGRATIONS) if "inbox_v5" in m)


def old_database(path: Path) -> None:
    """A database as alarmhub made it before the change, with one message in it."""
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE schema_version (version INTEGER)")
    for version, script in enumerate(MIGRATIONS[:REBUILD], start=1):
        conn.executescript(script)
        conn.execute("INSERT INTO schema_version VALUES (?)", (version,))
    for seq in (1, 2, 40):  # gaps in seq must survive: it orders the dead letters
        conn.execute(
            "INSERT INTO inbox (seq, fingerprint, received_at, topic, payload, device_id, "
            "municipality, msg_id, verdict, events) VALUES (?,?,?,?,?,?,?,?,?,?)",
            (
                seq,
                FP if seq == 40 else f"m:pend-1\x00old-{seq}",
                T0.isoformat(timespec="microseconds"),
                "alarmhub/v1/pend-1/events",
                b"first",
                "pend-1",
                "0301",
                "7",
                "logged",
                '[{"type": "button.pressed", "verdict": "new", "alarm_id": "a-1"}]',
            ),
        )
    conn.commit()
    conn.close()


def message(payload: bytes, at: datetime, identity: Identity) -> MessageOutcome:
    raw = RawMessage("alarmhub/v1/pend-1/events", payload, at)
    return MessageOutcome(raw, FP, Verdict.LOGGED, PENDANT, "7", identity=identity)


async def test_an_old_database_keeps_its_inbox_and_stores_a_reused_id_beside_it(
    tmp_path: Path,
) -> None:
    db = tmp_path / "old.db"
    old_database(db)
    store = await SqliteStore.open(db)
    try:
        assert await store.latest_messages([FP, "m:pend-1\x00never"]) == {
            FP: Prior(T0, b"first", ("a-1",))
        }
        later = T0 + timedelta(days=30)
        # Before the change this second row broke UNIQUE(fingerprint): the commit
        # failed for ever, and the daemon retried it without end.
        effects = BatchEffects(messages=[message(b"second", later, Identity.ID_REUSED)])
        await store.commit_batch(effects, {})
        assert await store.latest_messages([FP]) == {FP: Prior(later, b"second", ())}
    finally:
        await store.close()
    conn = sqlite3.connect(db)
    try:
        rows = conn.execute("SELECT seq, msg_id, identity FROM inbox ORDER BY seq").fetchall()
        version = conn.execute("SELECT max(version) FROM schema_version").fetchone()[0]
    finally:
        conn.close()
    # Every old row kept with its seq; the new one after them, flagged.
    assert rows == [(1, "7", None), (2, "7", None), (40, "7", None), (41, "7", "id_reused")]
    assert version == len(MIGRATIONS)
