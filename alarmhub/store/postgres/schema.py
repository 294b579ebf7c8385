"""The PostgreSQL schema, versioned. Migrations are appended, never edited.

The tables mirror the SQLite store's (alarmhub/store/sqlite/schema.py at its
version 11) in PostgreSQL's own types: times are `timestamptz`, JSON is `jsonb`
(exchanged with asyncpg as text, like SQLite's), payloads are `bytea`, flags are
`boolean`. It starts at version 1 because no PostgreSQL deployment predates it.

The keys the API pages and lists by (devices' municipality and id, alarm ids,
user names, token ids) are `COLLATE "C"`: byte order, as SQLite's, whatever
locale the database was created with, so a keyset page is the same in both
stores and its index serves the directory's `ORDER BY … COLLATE "C"` (with the
database's collation instead, a deep device page of 200,000 was a sequential
scan and sort, ~77 ms, against ~0.8 ms by the index).

What SQLite leaves to its single writer process, PostgreSQL enforces itself,
because several instances share it (issue 15):
- one inbox row per message: `inbox_message` is unique on (fingerprint, the
  payload's sha256, occurrence), so a redelivery committed twice is a conflict,
  not a second row (`INSERT … ON CONFLICT DO NOTHING`); `occurrence` counts
  identical messages the dedup window nevertheless judged new (core/dedup.py);
- at most one active alarm per (device, kind, scheduled dose): `alarms_one_active`;
- an escalation step decided once: the primary key of `escalations`;
- optimistic concurrency on alarms: `rev` goes up by one with every write, and a
  write names the `rev` it read, so an instance never overwrites a change
  another instance made (an operator's acknowledgement through another instance);
- the audit log is append-only (a trigger), as in SQLite;
- who may act: `leases` (one row per piece of work that must have one owner at a
  time, with a fencing epoch) and `instances` (each process's heartbeat and what
  it owns, for `alarmhub cluster status`).
"""

from __future__ import annotations

MIGRATIONS: list[str] = [
    # 1: everything SQLite reached by its version 11, plus the coordination tables.
    """
    CREATE TABLE devices (
        id text COLLATE "C" PRIMARY KEY,
        kind text NOT NULL,
        municipality text COLLATE "C" NOT NULL,
        profile text,
        heartbeat_interval_s integer,
        label text,
        active boolean NOT NULL DEFAULT true,
        registered_at timestamptz NOT NULL,
        updated_at timestamptz NOT NULL,
        last_seen_at timestamptz,
        resident text,
        settings jsonb NOT NULL DEFAULT '{}',
        bridge text
    );
    CREATE INDEX devices_municipality ON devices (municipality, id);
    CREATE INDEX devices_updated ON devices (updated_at);

    CREATE TABLE inbox (
        seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        fingerprint text NOT NULL,
        received_at timestamptz NOT NULL,
        topic text NOT NULL,
        payload bytea NOT NULL,
        device_id text,
        municipality text,
        msg_id text,
        verdict text NOT NULL,
        reason text,
        detail text,
        events jsonb,
        identity text,
        -- The size and digest of the whole payload: always set here (SQLite sets
        -- them only for a payload kept in part), since the digest is in the key.
        payload_bytes integer NOT NULL,
        payload_sha256 text NOT NULL,
        occurrence integer NOT NULL DEFAULT 0,
        CONSTRAINT inbox_message UNIQUE (fingerprint, payload_sha256, occurrence)
    );
    CREATE INDEX inbox_fingerprint ON inbox (fingerprint, seq);
    CREATE INDEX inbox_device ON inbox (device_id, seq);
    CREATE INDEX inbox_rejected ON inbox (seq) WHERE verdict = 'rejected';
    CREATE INDEX inbox_kept_received ON inbox (received_at) WHERE verdict <> 'rejected';
    CREATE INDEX inbox_rejected_received ON inbox (received_at) WHERE verdict = 'rejected';

    CREATE TABLE alarms (
        id text COLLATE "C" PRIMARY KEY,
        device_id text NOT NULL,
        municipality text NOT NULL,
        kind text NOT NULL,
        priority integer NOT NULL,
        state text NOT NULL,
        raised_at timestamptz NOT NULL,
        last_seen_at timestamptz NOT NULL,
        repeat_count integer NOT NULL DEFAULT 0,
        escalation_level integer NOT NULL DEFAULT 0,
        acknowledged_at timestamptz,
        acknowledged_by text,
        dispatched_at timestamptz,
        on_site_at timestamptz,
        resolved_at timestamptz,
        resolved_by text,
        outcome text,
        rules_version text NOT NULL DEFAULT '',
        suppressed_by text,
        resident text,
        policy text,
        escalation_from timestamptz,
        escalation_generation integer NOT NULL DEFAULT 0,
        escalation_exhausted_at timestamptz,
        clearing_event text,
        clearing_at timestamptz,
        scheduled_at timestamptz,
        superseded_by text,
        rev bigint NOT NULL DEFAULT 0
    );
    -- An alarm a trigger could not join stays active beside the newer one it raised,
    -- set aside (superseded_by): the key is the newer one's (core/index.py).
    CREATE UNIQUE INDEX alarms_one_active
        ON alarms (device_id, kind, coalesce(scheduled_at, 'epoch'::timestamptz))
        WHERE state <> 'resolved' AND superseded_by IS NULL;
    CREATE INDEX alarms_queue ON alarms (state, priority, raised_at);
    CREATE INDEX alarms_municipality ON alarms (municipality, state, priority, raised_at);
    CREATE INDEX alarms_resolved ON alarms (resolved_at) WHERE state = 'resolved';
    CREATE INDEX alarms_resident ON alarms (resident) WHERE resident IS NOT NULL;

    CREATE TABLE timeline (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        alarm_id text NOT NULL,
        at timestamptz NOT NULL,
        type text NOT NULL,
        actor text,
        detail jsonb NOT NULL DEFAULT '{}'
    );
    CREATE INDEX timeline_alarm ON timeline (alarm_id, id);

    CREATE TABLE users (
        name text COLLATE "C" PRIMARY KEY,
        role text NOT NULL,
        municipalities jsonb NOT NULL DEFAULT '[]',
        password_hash text NOT NULL,
        active boolean NOT NULL DEFAULT true,
        created_at timestamptz NOT NULL
    );

    CREATE TABLE api_tokens (
        token_hash text PRIMARY KEY,
        id text COLLATE "C" NOT NULL UNIQUE,
        user_name text NOT NULL REFERENCES users (name),
        created_at timestamptz NOT NULL,
        expires_at timestamptz,
        revoked_at timestamptz,
        revoked_by text
    );
    CREATE INDEX api_tokens_user ON api_tokens (user_name);

    CREATE TABLE sessions (
        id_hash text PRIMARY KEY,
        user_name text NOT NULL REFERENCES users (name),
        csrf text NOT NULL,
        created_at timestamptz NOT NULL,
        expires_at timestamptz NOT NULL
    );
    CREATE INDEX sessions_expiry ON sessions (expires_at);

    CREATE TABLE audit (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        at timestamptz NOT NULL,
        actor text NOT NULL,
        action text NOT NULL,
        alarm_id text,
        device_id text,
        municipality text,
        address text,
        detail jsonb NOT NULL DEFAULT '{}'
    );
    CREATE INDEX audit_municipality ON audit (municipality, id);
    CREATE FUNCTION audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION 'the audit log is append-only: no %', TG_OP;
    END $$;
    CREATE TRIGGER audit_no_change BEFORE UPDATE OR DELETE ON audit
        FOR EACH ROW EXECUTE FUNCTION audit_append_only();
    CREATE TRIGGER audit_no_truncate BEFORE TRUNCATE ON audit
        FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only();

    CREATE TABLE silences (
        id text PRIMARY KEY,
        municipality text NOT NULL,
        device_id text,
        starts_at timestamptz NOT NULL,
        ends_at timestamptz NOT NULL,
        reason text NOT NULL,
        created_by text NOT NULL,
        created_at timestamptz NOT NULL,
        deleted_at timestamptz,
        deleted_by text,
        include_priority_1 boolean NOT NULL DEFAULT false
    );
    CREATE INDEX silences_active ON silences (ends_at, starts_at) WHERE deleted_at IS NULL;
    CREATE INDEX silences_municipality ON silences (municipality, starts_at);

    CREATE TABLE escalations (
        alarm_id text NOT NULL,
        round integer NOT NULL,
        step integer NOT NULL,
        due_at timestamptz NOT NULL,
        decided_at timestamptz NOT NULL,
        reason text NOT NULL,
        level integer NOT NULL,
        target text NOT NULL,
        PRIMARY KEY (alarm_id, round, step)
    );

    CREATE TABLE outbox (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        alarm_id text NOT NULL,
        target text NOT NULL,
        channel text NOT NULL,
        address text NOT NULL,
        payload text NOT NULL,
        created_at timestamptz NOT NULL,
        attempts integer NOT NULL DEFAULT 0,
        next_attempt_at timestamptz NOT NULL,
        last_error text,
        sent_at timestamptz
    );
    CREATE INDEX outbox_pending ON outbox (next_attempt_at) WHERE sent_at IS NULL;

    -- One row per piece of work that must have a single owner at a time (intake,
    -- deadlines). `epoch` goes up with every change of holder: a write fenced by
    -- the epoch it was granted fails once another instance has taken over.
    CREATE TABLE leases (
        name text PRIMARY KEY,
        holder text NOT NULL,
        epoch bigint NOT NULL,
        acquired_at timestamptz NOT NULL,
        expires_at timestamptz NOT NULL
    );

    -- Every instance's heartbeat and what it owns, for `alarmhub cluster status`;
    -- `stopped_at` is set by a clean shutdown (a crash leaves a stale heartbeat).
    CREATE TABLE instances (
        id text PRIMARY KEY,
        host text NOT NULL,
        pid integer NOT NULL,
        version text NOT NULL,
        started_at timestamptz NOT NULL,
        heartbeat_at timestamptz NOT NULL,
        stopped_at timestamptz,
        owns jsonb NOT NULL DEFAULT '[]'
    );
    """,
    # 2: issue 17, SQLite's 13: the resident register and the resolve step.
    """
    CREATE TABLE residents (
        municipality text COLLATE "C" NOT NULL,
        resident text COLLATE "C" NOT NULL,
        key_id text NOT NULL,
        nonce bytea NOT NULL,
        sealed bytea NOT NULL,
        updated_at timestamptz NOT NULL,
        updated_by text NOT NULL,
        PRIMARY KEY (municipality, resident)
    );
    ALTER TABLE alarms ADD COLUMN cause text;
    ALTER TABLE alarms ADD COLUMN cause_text text;
    ALTER TABLE alarms ADD COLUMN action_taken text;
    ALTER TABLE alarms ADD COLUMN action_text text;
    """,
    # 3: issue 16, SQLite's 14: a SCAIP device's digest credentials (HA1 per algorithm
    # and the realm they were made in, never the password).
    """
    CREATE TABLE device_credentials (
        device_id text COLLATE "C" PRIMARY KEY REFERENCES devices (id),
        realm text NOT NULL,
        ha1_md5 text NOT NULL,
        ha1_sha256 text NOT NULL,
        updated_at timestamptz NOT NULL
    );
    """,
    # 4: issue 17, SQLite's 15: journal delivery, one export per resolved alarm,
    # written in the resolve's transaction; never a national identity number.
    """
    CREATE TABLE journal_exports (
        alarm_id text COLLATE "C" PRIMARY KEY REFERENCES alarms (id),
        municipality text COLLATE "C" NOT NULL,
        state text NOT NULL,
        reason text,
        location text,
        attempts integer NOT NULL DEFAULT 0,
        next_at timestamptz NOT NULL,
        created_at timestamptz NOT NULL,
        sent_at timestamptz,
        finished_at timestamptz,
        last_error text
    );
    CREATE INDEX journal_exports_due ON journal_exports (state, next_at);
    """,
    # 5: issue 17, SQLite's 16: a user's HPR number, the journal note's author.
    """
    ALTER TABLE users ADD COLUMN hpr text;
    """,
    # 6: SQLite's 17: the device time of the event that raised or last re-triggered an
    # alarm (Alarm.trigger_ts); NULL on older rows.
    """
    ALTER TABLE alarms ADD COLUMN trigger_ts timestamptz;
    """,
    # 7: SQLite's 18: the municipality a SCAIP device's credentials were set in, so a
    # device moved since shows `set_before_move` until the new municipality rotates them.
    """
    ALTER TABLE device_credentials ADD COLUMN municipality text COLLATE "C";
    UPDATE device_credentials c SET municipality = d.municipality
        FROM devices d WHERE d.id = c.device_id;
    """,
    # 8: issue 17, SQLite's 19: when the number behind each pseudonym last changed
    # (replaced, removed: a waiting note of an older alarm is held), and the number an
    # administrator released a held note for, sealed, until the note is done.
    """
    CREATE TABLE resident_changes (
        municipality text COLLATE "C" NOT NULL,
        resident text COLLATE "C" NOT NULL,
        changed_at timestamptz NOT NULL,
        PRIMARY KEY (municipality, resident)
    );
    ALTER TABLE journal_exports ADD COLUMN release_key_id text;
    ALTER TABLE journal_exports ADD COLUMN release_nonce bytea;
    ALTER TABLE journal_exports ADD COLUMN release_sealed bytea;
    """,
    # 9: SQLite's 20: a new bridge is assigned to its municipality by a system admin;
    # existing bridges where their devices are, a shared one left unassigned.
    """
    CREATE TABLE bridges (
        id text COLLATE "C" PRIMARY KEY,
        municipality text COLLATE "C" NOT NULL,
        assigned_at timestamptz NOT NULL,
        assigned_by text NOT NULL
    );
    INSERT INTO bridges (id, municipality, assigned_at, assigned_by)
        SELECT bridge, min(municipality), min(registered_at), 'migration' FROM devices
        WHERE bridge IS NOT NULL GROUP BY bridge HAVING count(DISTINCT municipality) = 1;
    """,
]
