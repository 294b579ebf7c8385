"""The database schema, versioned. Migrations are appended, never edited.

Times are stored as ISO 8601 text in UTC with a fixed format, so they sort as
text and read back as timezone-aware datetimes.
"""

from __future__ import annotations

MIGRATIONS: list[str] = [
    # 1: the alarm pipeline
    """
    CREATE TABLE devices (
        id TEXT PRIMARY KEY,
        kind TEXT NOT NULL,
        municipality TEXT NOT NULL,
        profile TEXT,
        heartbeat_interval_s INTEGER,
        label TEXT,
        active INTEGER NOT NULL DEFAULT 1,
        registered_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        last_seen_at TEXT
    );
    CREATE INDEX devices_municipality ON devices(municipality, id);
    CREATE INDEX devices_updated ON devices(updated_at);

    -- The append-only log of every message received, with what became of it.
    CREATE TABLE inbox (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        fingerprint TEXT NOT NULL UNIQUE,
        received_at TEXT NOT NULL,
        topic TEXT NOT NULL,
        payload BLOB NOT NULL,
        device_id TEXT,
        municipality TEXT,
        msg_id TEXT,
        verdict TEXT NOT NULL,
        reason TEXT,
        detail TEXT,
        events TEXT
    );
    CREATE INDEX inbox_device ON inbox(device_id, seq);
    CREATE INDEX inbox_rejected ON inbox(verdict, seq) WHERE verdict = 'rejected';

    CREATE TABLE alarms (
        id TEXT PRIMARY KEY,
        device_id TEXT NOT NULL,
        municipality TEXT NOT NULL,
        kind TEXT NOT NULL,
        priority INTEGER NOT NULL,
        state TEXT NOT NULL,
        raised_at TEXT NOT NULL,
        last_seen_at TEXT NOT NULL,
        repeat_count INTEGER NOT NULL DEFAULT 0,
        escalation_level INTEGER NOT NULL DEFAULT 0,
        acknowledged_at TEXT,
        acknowledged_by TEXT,
        dispatched_at TEXT,
        on_site_at TEXT,
        resolved_at TEXT,
        resolved_by TEXT,
        outcome TEXT,
        rules_version TEXT NOT NULL DEFAULT '',
        suppressed_by TEXT
    );
    CREATE INDEX alarms_queue ON alarms(state, priority, raised_at);
    CREATE INDEX alarms_device ON alarms(device_id, kind, state);
    CREATE INDEX alarms_municipality ON alarms(municipality, state, priority, raised_at);
    CREATE INDEX alarms_resolved ON alarms(resolved_at) WHERE state = 'resolved';

    CREATE TABLE timeline (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        alarm_id TEXT NOT NULL,
        at TEXT NOT NULL,
        type TEXT NOT NULL,
        actor TEXT,
        detail TEXT NOT NULL DEFAULT '{}'
    );
    CREATE INDEX timeline_alarm ON timeline(alarm_id, id);
    """,
]
