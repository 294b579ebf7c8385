"""The inbox row: as the ingest writes it (inbox_row), and as dedup reads it back.

Dedup wants the latest message stored under each fingerprint. A fingerprint
may have several rows (an id reused with other content, the same id again
after the window: core/dedup.py), so dedup looks at the newest one. The read
runs on the writer's thread, inside the ingest batch's single read.
"""

from __future__ import annotations

import sqlite3

import orjson

from alarmhub.core.dedup import Prior
from alarmhub.store.sqlite.rows import parse_ts

_LOOKUP_CHUNK = 500


def select_priors(conn: sqlite3.Connection, wanted: list[str]) -> dict[str, Prior]:
    """Per fingerprint: when its latest row arrived, its bytes and the alarms it touched.

    Only fingerprints that are stored are in the result; for a new message (the
    common case) the index answers without reading a row.
    """
    found: dict[str, Prior] = {}
    for i in range(0, len(wanted), _LOOKUP_CHUNK):
        chunk = wanted[i : i + _LOOKUP_CHUNK]
        marks = ",".join("?" * len(chunk))
        # From the index alone (it holds seq): most messages are new, and then no
        # row is read at all.
        sql = f"SELECT max(seq) FROM inbox WHERE fingerprint IN ({marks}) GROUP BY fingerprint"
        latest = [r[0] for r in conn.execute(sql, chunk)]
        if not latest:
            continue
        sql = (
            "SELECT fingerprint, received_at, payload, events, payload_sha256 FROM inbox "
            f"WHERE seq IN ({','.join('?' * len(latest))})"
        )
        for fp, received_at, payload, events, digest in conn.execute(sql, latest):
            at = parse_ts(received_at)
            assert at is not None  # NOT NULL column
            # A dead letter stored only in part is compared by its hash (core/dedup.py).
            found[fp] = Prior(at, bytes(payload), _alarm_ids(events), digest)
    return found


def _alarm_ids(events: str | None) -> tuple[str, ...]:
    if not events:
        return ()
    return tuple(e["alarm_id"] for e in orjson.loads(events) if e.get("alarm_id"))


INSERT_INBOX = (
    "INSERT INTO inbox (fingerprint, received_at, topic, payload, device_id, municipality, "
    "msg_id, verdict, reason, detail, events, identity, payload_bytes, payload_sha256) "
    "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
)
