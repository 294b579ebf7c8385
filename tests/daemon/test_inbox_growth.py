"""Issue 13 items 1 and 2: the inbox no longer grows without bound.

Real Mosquitto, real SQLite, the hub in-process. Item 1: a rejected payload is
stored as its first 512 bytes, its size and its hash, and a redelivery of it is
still recognised. Item 2: the pruner deletes inbox rows and dead letters past
their retention (a FakeClock moves the days) and never alarms, timelines, audit
rows, or the message behind an alarm still active.
"""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from alarmhub.app import AlarmHub
from alarmhub.clock import FakeClock
from alarmhub.core.actions import Action
from alarmhub.core.dedup import Prior
from alarmhub.core.model import PayloadCut
from alarmhub.core.pipeline import rejected_fingerprint
from alarmhub.core.retention import RetainedTable, Retention
from alarmhub.daemon.pruner import Pruner
from alarmhub.dev.mosquitto import LocalBroker
from alarmhub.mqtt.client import Delivery, MqttIngest
from alarmhub.observability.metrics import Metrics
from alarmhub.settings import SettingsError, parse_mqtt_url
from alarmhub.store.sqlite.retention_rows import candidates_sql, oldest_sql
from alarmhub.store.sqlite.store import SqliteStore
from tests.support.helpers import (
    Publisher,
    async_wait_until,
    db_count,
    db_rows,
    hub_settings,
    native,
    register,
    sqlite_at,
)

T0 = datetime(2026, 11, 25, 13, 0, tzinfo=UTC)
DAY = timedelta(days=1)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "alarmhub.db"
    register(
        f"sqlite:///{path}",
        [
            ("pend-1", "safety_alarm", "0301"),
            ("pend-2", "safety_alarm", "0301"),
            ("ola/phone", "gps_tracker", "0301"),
        ],
        tmp_path,
    )
    return path


def _oversized(n: int, tail: bytes = b"") -> bytes:
    body = b'{"id":"big-1","ts":"2026-11-25T13:00:00Z","type":"button.pressed","pad":"'
    return body + b"a" * (n - len(body) - len(tail) - 2) + tail + b'"}'


@pytest.mark.broker
async def test_an_oversized_dead_letter_is_kept_as_head_size_and_hash_and_its_redelivery_is_recognised(
    tmp_path: Path, broker: LocalBroker, client_id: str, db: Path
) -> None:
    big = _oversized(600_000)  # within the broker's max_packet_size, over max_payload_bytes
    other = _oversized(600_000, tail=b"different end")  # the same first 512 bytes
    topic = "alarmhub/v1/pend-1/events"
    pub = Publisher(broker.port)
    try:
        async with AlarmHub(hub_settings(tmp_path, broker.url, client_id), serve_http=False) as hub:
            assert hub.ingest is not None
            assert await hub.ingest.wait_connected(5)
            pub.publish(topic, big)
            assert await async_wait_until(
                lambda: db_count(db, "SELECT count(*) FROM inbox") == 1, 30
            )
            [(reason, stored, size, digest)] = db_rows(
                db, "SELECT reason, payload, payload_bytes, payload_sha256 FROM inbox"
            )
            assert reason == "oversized"
            assert stored == big[:512]
            assert (size, digest) == (len(big), hashlib.sha256(big).hexdigest())

            # The broker redelivers (or the device resends) the same bytes in a later batch:
            # only the hash is stored to compare with, and it must still be recognised.
            pub.publish(topic, big)
            dedup = hub.metrics.messages_deduplicated.labels("safety_alarm")
            assert await async_wait_until(lambda: dedup._value.get() == 1, 30)
            # Other bytes behind the same first 512 are another message, not a redelivery.
            pub.publish(topic, other)
            assert await async_wait_until(
                lambda: db_count(db, "SELECT count(*) FROM inbox") == 2, 30
            )
            dead = hub.metrics.messages_dead_lettered.labels("oversized", "safety_alarm")
            # Counted after the commit the count above was read from.
            assert await async_wait_until(lambda: dead._value.get() == 2, 30)
            assert db_count(db, "SELECT count(*) FROM alarms") == 0
            assert db_count(db, "SELECT sum(length(payload)) FROM inbox") == 2 * 512
            # What the CLI shows (`alarmhub dead-letters`) still gives the whole size.
            listed = await hub.reader.dead_letters()
            assert [d["payload_bytes"] for d in listed] == [len(other), len(big)]
    finally:
        pub.close()


@pytest.mark.broker
async def test_ingest_cuts_an_oversized_payload_on_arrival(
    broker: LocalBroker, client_id: str
) -> None:
    """The whole payload is not held until its batch commits: only 512 bytes and its hashes."""
    topic = "alarmhub/v1/pend-1/events"
    big, small = _oversized(300_000), native("pend-1", "m1", "button.pressed")[1]
    ingest = MqttIngest(
        parse_mqtt_url(broker.url), client_id, ["alarmhub/v1/+/events"], FakeClock(T0).now,
        max_payload_bytes=65536,
    )  # fmt: skip
    pub = Publisher(broker.port)
    try:
        async with ingest:
            assert await ingest.wait_connected(5)
            pub.publish(topic, big)
            pub.publish(topic, small)
            batches = ingest.batches(100, 0)
            got: list[Delivery] = []
            while len(got) < 2:
                got += await asyncio.wait_for(anext(batches), 30)
    finally:
        pub.close()
    cut, whole = (d.raw for d in got)
    assert cut.payload == big[:512]
    assert cut.cut == PayloadCut(
        len(big), hashlib.sha256(big).hexdigest(), rejected_fingerprint(topic, big)
    )
    assert cut.size == len(big)
    assert (whole.payload, whole.cut) == (small, None)


@pytest.mark.broker
async def test_the_pruner_deletes_what_is_past_retention_and_keeps_the_record(
    tmp_path: Path, broker: LocalBroker, client_id: str, db: Path
) -> None:
    clock = FakeClock(T0)
    pub = Publisher(broker.port)
    settings = hub_settings(
        tmp_path, broker.url, client_id, inbox_retention_days=14, dead_letter_retention_days=30
    )
    position = {
        "_type": "location",
        "lat": 59.91,
        "lon": 10.75,
        "acc": 12,
        "tst": int(T0.timestamp()),
    }
    try:
        async with AlarmHub(settings, clock=clock, serve_http=False) as hub:
            assert hub.ingest is not None
            assert await hub.ingest.wait_connected(5)
            pub.publish("owntracks/ola/phone", orjson.dumps(position))
            pub.publish(*native("pend-1", "open-1", "button.pressed"))  # its alarm stays open
            pub.publish(*native("pend-2", "done-1", "button.pressed"))  # its alarm is resolved
            pub.publish("alarmhub/v1/pend-1/events", b"{not json")  # a dead letter
            assert await async_wait_until(
                lambda: db_count(db, "SELECT count(*) FROM inbox") == 4, 30
            )
            assert await async_wait_until(lambda: len(hub.state.alarms.by_id) == 2, 30)
            [resolved] = [a.id for a in hub.state.alarms.by_id.values() if a.device_id == "pend-2"]
            await hub.act(resolved, Action.RESOLVE, "op-1", outcome="false_alarm", audit=())
            with sqlite_at(db) as conn:  # an audit row as old as the messages
                conn.execute(
                    "INSERT INTO audit (at, actor, action, detail) VALUES (?, 'op-1', 'test', '{}')",
                    (T0.isoformat(),),
                )

            clock.advance(15 * DAY)
            position["tst"] = int(clock.now().timestamp())
            pub.publish("owntracks/ola/phone", orjson.dumps(position))
            assert await async_wait_until(
                lambda: db_count(db, "SELECT count(*) FROM inbox") == 5, 30
            )
            alarms = db_rows(db, "SELECT * FROM alarms ORDER BY id")
            timeline = {r[0] for r in db_rows(db, "SELECT id FROM timeline")}
            audit = {r[0] for r in db_rows(db, "SELECT id FROM audit")}

            deleted = await hub.pruner.prune_once()

            assert deleted == {RetainedTable.INBOX: 2, RetainedTable.DEAD_LETTERS: 0}
            kept = db_rows(db, "SELECT device_id, msg_id, verdict FROM inbox ORDER BY seq")
            assert [(d, v) for d, _, v in kept] == [
                ("pend-1", "logged"),  # raised the alarm still open: the "handled" receipt needs it
                ("pend-1", "rejected"),  # a dead letter: 30 days
                ("ola/phone", "logged"),  # the new position
            ]
            age = hub.metrics.oldest_row_age
            assert age.labels("inbox")._value.get() == (15 * DAY).total_seconds()
            assert age.labels("dead_letters")._value.get() == (15 * DAY).total_seconds()

            clock.advance(16 * DAY)
            assert await hub.pruner.prune_once() == {
                RetainedTable.INBOX: 1,
                RetainedTable.DEAD_LETTERS: 1,
            }
            assert db_count(db, "SELECT count(*) FROM inbox WHERE verdict = 'rejected'") == 0
            assert age.labels("dead_letters")._value.get() == 0
            # The record stays: every alarm as it was, every timeline and audit row.
            assert db_rows(db, "SELECT * FROM alarms ORDER BY id") == alarms
            assert timeline <= {r[0] for r in db_rows(db, "SELECT id FROM timeline")}
            assert audit <= {r[0] for r in db_rows(db, "SELECT id FROM audit")}
    finally:
        pub.close()


@pytest.mark.broker
async def test_the_daemon_prunes_by_itself(
    tmp_path: Path, broker: LocalBroker, client_id: str, db: Path
) -> None:
    """The pruning task is the daemon's own: started with it, a first pass at start."""
    pub = Publisher(broker.port)
    position = {
        "_type": "location",
        "lat": 59.91,
        "lon": 10.75,
        "acc": 12,
        "tst": int(T0.timestamp()),
    }
    settings = hub_settings(tmp_path, broker.url, client_id)
    try:
        async with AlarmHub(settings, clock=FakeClock(T0), serve_http=False) as hub:
            assert hub.ingest is not None
            assert await hub.ingest.wait_connected(5)
            pub.publish("owntracks/ola/phone", orjson.dumps(position))
            assert await async_wait_until(
                lambda: db_count(db, "SELECT count(*) FROM inbox") == 1, 30
            )
        async with AlarmHub(settings, clock=FakeClock(T0 + 15 * DAY), serve_http=False):
            assert await async_wait_until(
                lambda: db_count(db, "SELECT count(*) FROM inbox") == 0, 30
            )
    finally:
        pub.close()


async def test_the_pruner_deletes_in_small_batches(tmp_path: Path) -> None:
    """1,234 rows past retention go in transactions of at most 500, the newer one stays."""
    store = await SqliteStore.open(tmp_path / "a.db")
    try:
        rows = [
            (
                f"r:{i}",
                (T0 + timedelta(seconds=i)).isoformat(),
                "t",
                b"x",
                "d",
                "0301",
                None,
                "logged",
                None,
                None,
                None,
                None,
                None,
                None,
            )
            for i in range(1234)
        ]
        rows.append(
            (
                "r:new",
                (T0 + 20 * DAY).isoformat(),
                "t",
                b"x",
                "d",
                "0301",
                None,
                "logged",
                None,
                None,
                None,
                None,
                None,
                None,
            )
        )
        conn = sqlite3.connect(tmp_path / "a.db")
        with conn:
            conn.executemany(
                "INSERT INTO inbox (fingerprint, received_at, topic, payload, device_id, municipality, "
                "msg_id, verdict, reason, detail, events, identity, payload_bytes, payload_sha256) "
                "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                rows,
            )
        conn.close()
        calls: list[int] = []

        class Counting:
            async def prune(self, table: RetainedTable, before: datetime, limit: int) -> int:
                n = await store.prune(table, before, limit)
                calls.append(n)
                return n

            async def oldest_received(self, table: RetainedTable) -> datetime | None:
                return await store.oldest_received(table)

        clock = FakeClock(T0 + 21 * DAY)
        pruner = Pruner(
            Counting(),
            clock,
            Retention(14 * DAY, 30 * DAY),
            asyncio.Lock(),
            Metrics().oldest_row_age,
        )
        assert await pruner.prune_once() == {
            RetainedTable.INBOX: 1234,
            RetainedTable.DEAD_LETTERS: 0,
        }
        assert calls == [500, 500, 234, 0]
        assert db_rows(tmp_path / "a.db", "SELECT fingerprint FROM inbox") == [("r:new",)]
    finally:
        await store.close()


@pytest.mark.parametrize("name", ["inbox_retention_days", "dead_letter_retention_days"])
def test_retention_shorter_than_the_dedup_window_is_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(SettingsError, match=name.upper()):
        hub_settings(
            tmp_path, "mqtt://127.0.0.1:1883", "x", message_id_dedup_window_h=72, **{name: 2}
        )
    assert (
        getattr(
            hub_settings(
                tmp_path, "mqtt://127.0.0.1:1883", "x", message_id_dedup_window_h=72, **{name: 3}
            ),
            name,
        )
        == 3
    )


_BIG = _oversized(100_000)
_TWIN = _oversized(100_000, tail=b"other end")  # the same first 512 bytes, other content


def _sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


@pytest.mark.parametrize(
    ("prior", "payload", "digest", "same"),
    [
        (Prior(T0, _BIG[:512], (), _sha(_BIG)), _BIG, None, True),  # stored cut, arrives whole
        (Prior(T0, _BIG[:512], (), _sha(_BIG)), _TWIN, None, False),
        (Prior(T0, _BIG[:512], (), _sha(_BIG)), _BIG[:512], _sha(_BIG), True),  # both cut
        (Prior(T0, _BIG[:512], (), _sha(_BIG)), _TWIN[:512], _sha(_TWIN), False),  # same head only
        (
            Prior(T0, _BIG),
            _BIG[:512],
            _sha(_BIG),
            True,
        ),  # stored whole (before migration 10), arrives cut
        (Prior(T0, _BIG), _TWIN[:512], _sha(_TWIN), False),
        (Prior(T0, b"abc"), b"abc", None, True),
        (Prior(T0, b"abc"), b"abd", None, False),
    ],
)
def test_a_payload_kept_in_part_is_compared_by_its_hash(
    prior: Prior, payload: bytes, digest: str | None, same: bool
) -> None:
    assert prior.same_content(payload, digest) is same


@pytest.mark.parametrize("table", list(RetainedTable))
async def test_pruning_reads_only_its_own_index(tmp_path: Path, table: RetainedTable) -> None:
    """However many rows the inbox holds, a batch reads the oldest few from the index.

    For dead letters SQLite chose the older inbox_rejected (verdict, seq) index on
    its own, reading every dead letter and sorting them on each batch.
    """
    store = await SqliteStore.open(tmp_path / "a.db")
    await store.close()
    index = "inbox_kept_received" if table is RetainedTable.INBOX else "inbox_rejected_received"
    for sql, params in ((candidates_sql(table), ("x", 500)), (oldest_sql(table), ())):
        plan = [r[3] for r in db_rows(tmp_path / "a.db", f"EXPLAIN QUERY PLAN {sql}", params)]
        assert f"USING INDEX {index}" in plan[0], plan
        assert not any("TEMP B-TREE" in step for step in plan), plan
