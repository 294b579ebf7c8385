"""The inbox row both stores write, column by column (INSERT_INBOX's order).

What of a message the inbox keeps (the events' JSON, a dead letter's first bytes,
size and hash) is the same decision in SQLite and PostgreSQL: made once here, so
neither store imports the other's modules.
"""

from __future__ import annotations

from typing import Any

import orjson

from alarmhub.core.dedup import DEAD_LETTER_KEPT_BYTES, Identity, payload_digest
from alarmhub.core.fields import PARTIAL, dropped_detail
from alarmhub.core.model import RawMessage
from alarmhub.core.pipeline import MessageOutcome
from alarmhub.store.accounts import ts


def inbox_row(m: MessageOutcome, registry_municipality: str | None) -> tuple[Any, ...]:
    # StrEnum members are bound and serialised as their text; `.value` is a
    # descriptor call per use, and this runs for every message stored.
    events = None
    if m.events:
        events = orjson.dumps(
            [
                {
                    "type": e.event.type,
                    "ts": ts(e.event.ts),
                    "fields": e.event.fields,
                    "verdict": e.verdict,
                    "alarm_id": e.alarm_id,
                    "rule": e.rule,
                    # Where `ts` came from; the device's skew when it was clamped (#12 item 11).
                    "ts_source": e.event.ts_source,
                    "clock_skew_s": e.event.clock_skew_s,
                }
                for e in m.events
            ]
        ).decode()
    rejected = m.rejected
    device_id = m.device.id if m.device else (rejected.device_id if rejected else None)
    payload, size, digest = _stored_payload(m.raw, rejected=rejected is not None)
    return (
        m.fingerprint,
        ts(m.raw.received_at),
        m.raw.topic,
        payload,
        device_id,
        m.device.municipality if m.device else (m.municipality or registry_municipality),
        m.msg_id,
        m.verdict,
        # A message stored with fields left out says so where dead letters do (#12 item 10).
        rejected.reason if rejected else (PARTIAL if m.dropped else None),
        rejected.detail if rejected else (dropped_detail(m.dropped) if m.dropped else None),
        events,
        # What dedup decided, when it is news: an id reused, a window passed (core/dedup.py).
        None if m.identity is Identity.NEW else m.identity,
        size,
        digest,
    )


def _stored_payload(raw: RawMessage, *, rejected: bool) -> tuple[bytes, int | None, str | None]:
    """What of a payload the inbox keeps: (bytes, whole size, sha256), size and hash when cut.

    A dead letter keeps its first DEAD_LETTER_KEPT_BYTES, its size and its hash
    (issue 13 item 1): fifteen rejected 2 MB payloads grew the database by 60 MB,
    and a device with valid credentials could fill the disk for every
    municipality. The first bytes show an operator what it was; the hash is what
    dedup recognises a redelivery by (core/dedup.py, Prior.same_content). A
    message that was used is stored whole: it is at most max_payload_bytes. An
    oversized message arrives cut already (ingest/mqtt.py, _cut).
    """
    if raw.cut is not None:
        return raw.payload, raw.cut.size, raw.cut.sha256
    payload = raw.payload
    if not rejected or len(payload) <= DEAD_LETTER_KEPT_BYTES:
        return payload, None, None
    return payload[:DEAD_LETTER_KEPT_BYTES], len(payload), payload_digest(payload)
