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
    # 2: people: accounts, API tokens, browser sessions, the audit log, silences.
    # Secrets (tokens, session ids) are stored as sha256 digests only, so a copy of
    # the database does not let anyone log in. The audit log is append-only: no
    # code path updates or deletes its rows.
    """
    CREATE TABLE users (
        name TEXT PRIMARY KEY,
        role TEXT NOT NULL,
        municipalities TEXT NOT NULL DEFAULT '[]',
        password_hash TEXT NOT NULL,
        active INTEGER NOT NULL DEFAULT 1,
        created_at TEXT NOT NULL
    );

    CREATE TABLE api_tokens (
        token_hash TEXT PRIMARY KEY,
        user_name TEXT NOT NULL REFERENCES users(name),
        created_at TEXT NOT NULL,
        expires_at TEXT
    );
    CREATE INDEX api_tokens_user ON api_tokens(user_name);

    CREATE TABLE sessions (
        id_hash TEXT PRIMARY KEY,
        user_name TEXT NOT NULL REFERENCES users(name),
        csrf TEXT NOT NULL,
        created_at TEXT NOT NULL,
        expires_at TEXT NOT NULL
    );
    CREATE INDEX sessions_expiry ON sessions(expires_at);

    CREATE TABLE audit (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        at TEXT NOT NULL,
        actor TEXT NOT NULL,
        action TEXT NOT NULL,
        alarm_id TEXT,
        device_id TEXT,
        municipality TEXT,
        address TEXT,
        detail TEXT NOT NULL DEFAULT '{}'
    );
    CREATE INDEX audit_municipality ON audit(municipality, id);

    CREATE TABLE silences (
        id TEXT PRIMARY KEY,
        municipality TEXT NOT NULL,
        device_id TEXT,
        starts_at TEXT NOT NULL,
        ends_at TEXT NOT NULL,
        reason TEXT NOT NULL,
        created_by TEXT NOT NULL,
        created_at TEXT NOT NULL,
        deleted_at TEXT,
        deleted_by TEXT
    );
    CREATE INDEX silences_active ON silences(ends_at, starts_at) WHERE deleted_at IS NULL;
    CREATE INDEX silences_municipality ON silences(municipality, starts_at);
    """,
    # 3: the rule engine — residents and device settings, escalation rows, outbox
    """
    ALTER TABLE devices ADD COLUMN resident TEXT;
    ALTER TABLE devices ADD COLUMN settings TEXT NOT NULL DEFAULT '{}';
    ALTER TABLE alarms ADD COLUMN resident TEXT;
    ALTER TABLE alarms ADD COLUMN policy TEXT;
    CREATE INDEX alarms_resident ON alarms(resident) WHERE resident IS NOT NULL;

    -- One row per escalation deadline decided, whatever the decision: with the
    -- alarm's effects in the same transaction, a step fires exactly once.
    CREATE TABLE escalations (
        alarm_id TEXT NOT NULL,
        round INTEGER NOT NULL,
        step INTEGER NOT NULL,
        due_at TEXT NOT NULL,
        decided_at TEXT NOT NULL,
        reason TEXT NOT NULL,
        level INTEGER NOT NULL,
        target TEXT NOT NULL,
        PRIMARY KEY (alarm_id, round, step)
    );

    -- Notifications to send, kept until the receiver accepted them.
    CREATE TABLE outbox (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        alarm_id TEXT NOT NULL,
        target TEXT NOT NULL,
        channel TEXT NOT NULL,
        address TEXT NOT NULL,
        payload TEXT NOT NULL,
        created_at TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at TEXT NOT NULL,
        last_error TEXT,
        sent_at TEXT
    );
    CREATE INDEX outbox_pending ON outbox(next_attempt_at) WHERE sent_at IS NULL;
    """,
    # 4: issue 12 (items 3, 4, 5): a fresh escalation for a reopened or re-alerted
    # alarm, "escalation exhausted", and the device event that would have cleared a
    # person alarm that now waits for an operator.
    """
    ALTER TABLE alarms ADD COLUMN escalation_from TEXT;
    ALTER TABLE alarms ADD COLUMN escalation_generation INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE alarms ADD COLUMN escalation_exhausted_at TEXT;
    ALTER TABLE alarms ADD COLUMN clearing_event TEXT;
    ALTER TABLE alarms ADD COLUMN clearing_at TEXT;
    """,
    # 5: issue 12 item 12: a message id is the same message only within a window
    # and with the same content, so one fingerprint may now have several rows (a
    # pendant reusing ids after a battery change; a redelivery is still never
    # stored twice). SQLite cannot drop a column's UNIQUE: the table is rebuilt,
    # every row and its seq kept, and `identity` records what dedup decided for a
    # message stored beside an earlier one of the same fingerprint (core/dedup.py).
    """
    CREATE TABLE inbox_v5 (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        fingerprint TEXT NOT NULL,
        received_at TEXT NOT NULL,
        topic TEXT NOT NULL,
        payload BLOB NOT NULL,
        device_id TEXT,
        municipality TEXT,
        msg_id TEXT,
        verdict TEXT NOT NULL,
        reason TEXT,
        detail TEXT,
        events TEXT,
        identity TEXT
    );
    INSERT INTO inbox_v5 (seq, fingerprint, received_at, topic, payload, device_id,
        municipality, msg_id, verdict, reason, detail, events)
        SELECT seq, fingerprint, received_at, topic, payload, device_id,
        municipality, msg_id, verdict, reason, detail, events FROM inbox ORDER BY seq;
    DROP TABLE inbox;
    ALTER TABLE inbox_v5 RENAME TO inbox;
    CREATE INDEX inbox_fingerprint ON inbox(fingerprint);
    CREATE INDEX inbox_device ON inbox(device_id, seq);
    CREATE INDEX inbox_rejected ON inbox(verdict, seq) WHERE verdict = 'rejected';
    """,
    # 6: issue 12 item 8: a silence hides a priority 1 alarm only when it says so.
    """
    ALTER TABLE silences ADD COLUMN include_priority_1 INTEGER NOT NULL DEFAULT 0;
    """,
    # 7: issue 12 item 17: each missed dose is an alarm of its own, found by the dose
    # it is about. An open dose alarm from before names its first dose only in the
    # msg id of its raising entry ("dose:<scheduled>", supervise.py): copied here so
    # a late take of that dose still finds it. NULL: keyed on (device, kind) as before.
    """
    ALTER TABLE alarms ADD COLUMN scheduled_at TEXT;
    UPDATE alarms SET scheduled_at = (
        SELECT substr(json_extract(t.detail, '$.msg_id'), 6) FROM timeline t
        WHERE t.alarm_id = alarms.id AND t.type = 'raised'
            AND json_extract(t.detail, '$.event') = 'dose.overdue'
            AND json_extract(t.detail, '$.msg_id') LIKE 'dose:%'
        ORDER BY t.id LIMIT 1
    ) WHERE state != 'resolved';
    """,
    # 8: issue 13 item 9: the Zigbee2MQTT bridge a Zigbee device is paired with; its
    # messages are believed only through that bridge's base topic. Not backfilled:
    # NULL is believed from no bridge (core/bridges.py) until an operator sets it.
    """
    ALTER TABLE devices ADD COLUMN bridge TEXT;
    """,
    # 9: issue 13 item 6: a token can be listed and revoked, so it needs a
    # printable id that is not the secret (the primary key is the secret's digest).
    # Existing tokens get a random id; a revoked token's row stays, with who and when.
    """
    ALTER TABLE api_tokens ADD COLUMN id TEXT;
    ALTER TABLE api_tokens ADD COLUMN revoked_at TEXT;
    ALTER TABLE api_tokens ADD COLUMN revoked_by TEXT;
    UPDATE api_tokens SET id = 'tok_' || lower(hex(randomblob(8))) WHERE id IS NULL;
    CREATE UNIQUE INDEX api_tokens_id ON api_tokens(id);
    """,
    # 10: issue 13 items 1 and 2. A dead letter's payload is kept as its first bytes,
    # its size and its sha256 (NULL: stored whole), so a device publishing huge
    # messages cannot fill the disk; a redelivery is still recognised by the hash.
    # The pruner (alarmhub/daemon/pruner.py) finds rows past their retention by the
    # time they arrived: one partial index per retention, each row in exactly one.
    """
    ALTER TABLE inbox ADD COLUMN payload_bytes INTEGER;
    ALTER TABLE inbox ADD COLUMN payload_sha256 TEXT;
    CREATE INDEX inbox_kept_received ON inbox(received_at) WHERE verdict != 'rejected';
    CREATE INDEX inbox_rejected_received ON inbox(received_at) WHERE verdict = 'rejected';
    """,
    # 11: issue 13 item 4: the audit log is append-only in the database itself, so
    # no code path (nor a stray `sqlite3` session) can rewrite who did what.
    # Inserts stay allowed: every change appends its row in its own transaction.
    """
    CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only: no UPDATE'); END;
    CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only: no DELETE'); END;
    """,
    # 12: issue 15: an alarm's revision (core/model.py Alarm.rev). A write names the
    # revision it was decided on and is refused if the row moved on, so a process
    # that read an alarm before another changed it decides again instead of
    # overwriting the change. Existing rows start at 0, as the daemon reads them.
    # And the newer alarm a trigger raised beside this one (Alarm.superseded_by): not
    # backfilled, since the daemon's index finds the newest of a key by its time.
    """
    ALTER TABLE alarms ADD COLUMN rev INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE alarms ADD COLUMN superseded_by TEXT;
    """,
    # 13: issue 17, the resident register and the resolve step.
    # The register's national identity numbers, sealed in the shell (store/sealing.py):
    # the key's id, the nonce and the AES-GCM output, never the number. And the cause
    # and action taken an operator records on resolving (core/resolution.py).
    """
    CREATE TABLE residents (
        municipality TEXT NOT NULL,
        resident TEXT NOT NULL,
        key_id TEXT NOT NULL,
        nonce BLOB NOT NULL,
        sealed BLOB NOT NULL,
        updated_at TEXT NOT NULL,
        updated_by TEXT NOT NULL,
        PRIMARY KEY (municipality, resident)
    );
    ALTER TABLE alarms ADD COLUMN cause TEXT;
    ALTER TABLE alarms ADD COLUMN cause_text TEXT;
    ALTER TABLE alarms ADD COLUMN action_taken TEXT;
    ALTER TABLE alarms ADD COLUMN action_text TEXT;
    """,
    # 14: issue 16: what SIP digest needs of a SCAIP device (alarmhub devices
    # credentials, PUT /api/v1/devices/{id}/credentials): HA1 = H(id:realm:password)
    # for MD5 and for SHA-256, never the password, and the realm they were made in
    # (a changed realm setting needs the credentials set again).
    """
    CREATE TABLE device_credentials (
        device_id TEXT PRIMARY KEY REFERENCES devices(id),
        realm TEXT NOT NULL,
        ha1_md5 TEXT NOT NULL,
        ha1_sha256 TEXT NOT NULL,
        updated_at TEXT NOT NULL
    );
    """,
    # 15: issue 17, journal delivery: one export per resolved alarm, written in the
    # resolve's own transaction (no answered alarm lost), then delivered off the hot
    # path (daemon/journal.py). The document is built at delivery time: no national
    # identity number is ever stored here, only states, times, the journal's status
    # URL and reasons (redacted).
    """
    CREATE TABLE journal_exports (
        alarm_id TEXT PRIMARY KEY REFERENCES alarms(id),
        municipality TEXT NOT NULL,
        state TEXT NOT NULL,
        reason TEXT,
        location TEXT,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_at TEXT NOT NULL,
        created_at TEXT NOT NULL,
        sent_at TEXT,
        finished_at TEXT,
        last_error TEXT
    );
    CREATE INDEX journal_exports_due ON journal_exports (state, next_at);
    """,
    # 16: issue 17, the journal note's author: a user's HPR number (Helsepersonell-
    # registeret, core/hpr.py), optional. The note names its author by it when the
    # resolving operator has one, else by alarmhub's user name (docs/journal.md).
    """
    ALTER TABLE users ADD COLUMN hpr TEXT;
    """,
    # 17: the device time of the event that raised or last re-triggered an alarm
    # (Alarm.trigger_ts): a clearing event from before it, a buffered GPS fix
    # delivered late, must not clear the alarm. NULL on older rows: not checked.
    """
    ALTER TABLE alarms ADD COLUMN trigger_ts TEXT;
    """,
    # 18: the municipality a SCAIP device's credentials were set in. They keep working
    # when the device moves (its genuine alarms must not be refused), but whoever in
    # the old municipality knows the password could then send alarms and resets as
    # the device into the new one's queue: a device listing says `set_before_move`
    # until the new municipality sets them again. Existing rows: where the device is.
    """
    ALTER TABLE device_credentials ADD COLUMN municipality TEXT;
    UPDATE device_credentials SET municipality =
        (SELECT municipality FROM devices WHERE devices.id = device_credentials.device_id);
    """,
    # 19: issue 17, a pseudonym given to another person while a note waited sent that
    # note to the other person's journal (the number is read at delivery). When the
    # number behind each pseudonym last changed (replaced by another number, removed),
    # kept apart from the register's row so a removal is remembered too; a note whose
    # alarm is not older than that is held (core/journal/identity.py). And the number
    # an administrator released a held note for, sealed as the register's are (bound
    # to the municipality and the alarm), until the note is done. Existing rows: no
    # change known, nothing held.
    """
    CREATE TABLE resident_changes (
        municipality TEXT NOT NULL,
        resident TEXT NOT NULL,
        changed_at TEXT NOT NULL,
        PRIMARY KEY (municipality, resident)
    );
    ALTER TABLE journal_exports ADD COLUMN release_key_id TEXT;
    ALTER TABLE journal_exports ADD COLUMN release_nonce BLOB;
    ALTER TABLE journal_exports ADD COLUMN release_sealed BLOB;
    """,
    # 20: a new Zigbee2MQTT bridge is assigned to its municipality by a system admin
    # (`alarmhub bridges assign`), so no municipality admin can claim it by registering
    # the first device on it (core/bridges.py judge_bridges). Existing bridges are
    # assigned where their devices are, as of the first one's registration; a bridge
    # shared by two municipalities from before the check stays unassigned: it gains no
    # device either way, and its devices stay editable.
    """
    CREATE TABLE bridges (
        id TEXT PRIMARY KEY,
        municipality TEXT NOT NULL,
        assigned_at TEXT NOT NULL,
        assigned_by TEXT NOT NULL
    );
    INSERT INTO bridges (id, municipality, assigned_at, assigned_by)
        SELECT bridge, min(municipality), min(registered_at), 'migration' FROM devices
        WHERE bridge IS NOT NULL GROUP BY bridge HAVING count(DISTINCT municipality) = 1;
    """,
]
