"""An answered alarm's journal export, end to end in-process with the real auth (issue 17).

The real stack (tests/support/api_harness.py: Mosquitto, the hub, SQLite, HTTP on
loopback), a HelseID token endpoint on loopback with the municipality's client
registered under a key made as `alarmhub journal keygen` makes it, and a journal server
that takes only what a DPoP resource server takes (tests/support/helseid_server.py
ResourceGuard: the token's signature and expiry, the proof's signature, htm/htu, ath,
the cnf.jkt binding, no replayed jti, its own nonce demanded). Export is on for 0301
because its HelseID client is configured, and for nothing else.

The resolve over the API writes the export row in its own transaction, the owner's
journal worker delivers it, and the alarm's detail shows its state. Notes are counted
by Bundle identifier: exactly once is a count of one.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from structlog.testing import capture_logs

from alarmhub.clock import SystemClock
from alarmhub.dev.mosquitto import LocalBroker
from tests.support.api_harness import Stack, stack
from tests.support.helpers import REPO, db_rows
from tests.support.helseid_server import HelseIdServer, ResourceGuard, registered_client
from tests.support.journal_server import JournalServer
from tests.support.national_ids import KARI, OLA

pytestmark = pytest.mark.broker
KEY = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="  # base64 of bytes 0..31


@pytest.fixture
def helseid() -> Iterator[HelseIdServer]:
    server = HelseIdServer(SystemClock().now, lifetime_s=300)
    yield server
    server.close()


@pytest.fixture
def guard(helseid: HelseIdServer) -> ResourceGuard:
    return helseid.guard()


@pytest.fixture
async def journal(guard: ResourceGuard) -> AsyncIterator[JournalServer]:
    server = JournalServer()
    server.guard_with(guard)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def settings(
    tmp_path: Path, helseid: HelseIdServer, server: JournalServer, **more: Any
) -> dict[str, Any]:
    return {
        "resident_key": KEY,
        "journal_url": server.url,
        "journal_helseid": {"0301": registered_client(helseid, tmp_path, "0301")},
        "journal_organisation_name": "Responssenteret i Oslo",
        "journal_organisation_number": "974778807",
        "journal_poll_s": 0.05,
        "journal_retry_base_s": 0.05,
        "journal_retry_max_s": 0.2,
        **more,
    }


async def answered(s: Stack, c: httpx.AsyncClient) -> str:
    async with s.client("root") as root:
        r = await root.patch("/api/v1/devices/osl-pend-1", json={"resident": "r-17"})
        assert r.status_code == 200, r.text
    async with s.client("madm0301") as admin:
        r = await admin.put(
            "/api/v1/residents/r-17", json={"municipality": "0301", "national_id": KARI}
        )
        assert r.status_code == 201, r.text
    alarm = await s.raise_alarm("osl-pend-1", "o1")  # raised for r-17: the resident is on it
    body = {"outcome": "helped", "cause": "needed_help", "action_taken": "home_care"}
    r = await c.post(f"/api/v1/alarms/{alarm}/resolve", json=body)
    assert r.status_code == 200, r.text
    return alarm


async def journal_state(c: httpx.AsyncClient, alarm: str, *states: str) -> dict[str, Any]:
    """The detail's journal field once it reaches one of `states` (a ceiling of 15 s)."""
    for _ in range(300):
        shown: dict[str, Any] = (await c.get(f"/api/v1/alarms/{alarm}")).json()["journal"]
        if shown["state"] in states:
            return shown
        await asyncio.sleep(0.05)
    raise AssertionError(f"journal still {shown}")


async def failing_with(c: httpx.AsyncClient, alarm: str, error: str) -> dict[str, Any]:
    """The detail's journal field once its last attempt failed with `error` (15 s ceiling)."""
    for _ in range(300):
        shown: dict[str, Any] = (await c.get(f"/api/v1/alarms/{alarm}")).json()["journal"]
        if error in (shown["last_error"] or ""):
            return shown
        await asyncio.sleep(0.05)
    raise AssertionError(f"journal still {shown}")


async def test_a_resolved_alarm_is_journaled_once_with_one_token_and_shown_confirmed(
    tmp_path: Path,
    broker: LocalBroker,
    client_id: str,
    helseid: HelseIdServer,
    guard: ResourceGuard,
    journal: JournalServer,
) -> None:
    journal.polls_to_confirm = 3
    conf = settings(tmp_path, helseid, journal)
    async with stack(tmp_path, broker, client_id, alarms=False, settings=conf) as s:
        assert s.hub.settings.journal_exporting() == frozenset({"0301"})
        async with s.client("madm0301") as admin:  # the operator's HPR number: the author
            r = await admin.put("/api/v1/users/op0301/hpr", json={"hpr": "1234567"})
            assert r.status_code == 200, r.text
        async with s.client("op0301") as c:
            alarm = await answered(s, c)
            shown = await journal_state(c, alarm, "confirmed")
        assert shown["sent_at"] is not None
        assert shown["finished_at"] is not None
        assert list(journal.note_count().values()) == [1]
        [note] = journal.notes.values()
        practitioner = note.bundle["entry"][4]["resource"]  # type: ignore[index]
        assert practitioner["identifier"] == [
            {"system": "urn:oid:2.16.578.1.12.4.1.4.4", "value": "1234567"}
        ]
        assert s.hub.metrics.journal_confirmations._value.get() == 1
        # The export row came with the resolve.
        assert db_rows(s.db, "SELECT alarm_id FROM journal_exports") == [(alarm,)]
        reads = db_rows(s.db, "SELECT actor FROM audit WHERE action = 'resident.national_id_read'")
        assert reads == [("journal-export",)]
    # One token served the post and every poll: HelseID issued one, after demanding its
    # nonce once; the journal demanded its own once, and refused nothing else.
    assert len(helseid.log.issued) == 1
    assert helseid.log.refusals == ["use_dpop_nonce"]
    assert helseid.log.issued[0]["client_id"] == "alarmhub-0301"
    assert [r.split(":")[0] for r in guard.refusals] == ["use_dpop_nonce"]
    assert guard.accepted >= 1 + journal.polls_to_confirm  # the post, then each poll


async def test_a_journal_down_timing_out_then_failing_delays_the_note_and_loses_nothing(
    tmp_path: Path,
    broker: LocalBroker,
    client_id: str,
    helseid: HelseIdServer,
    journal: JournalServer,
) -> None:
    """One answered alarm through three faults in turn: the journal down (stopped, then
    started again on its port), hanging past the client's timeout, answering 500. Each
    is waited for on the alarm's detail (pending, its last error), then the next comes;
    at the end the note is confirmed, once."""
    conf = settings(tmp_path, helseid, journal, journal_timeout_s=0.3)
    async with stack(tmp_path, broker, client_id, alarms=False, settings=conf) as s:
        await journal.stop()
        async with s.client("op0301") as c:
            alarm = await answered(s, c)
            down = await failing_with(c, alarm, "ConnectError")
            journal.hang_s = 1.0  # past the client's 0.3 s: each attempt gives up
            await journal.start()
            hung = await failing_with(c, alarm, "Timeout")
            # Until a 500 was seen; a post still hanging may take one of them.
            journal.fail_next, journal.hang_s = 1_000_000, 0.0
            failed = await failing_with(c, alarm, "the journal answered 500")
            journal.fail_next = 0
            shown = await journal_state(c, alarm, "confirmed")
        for during in (down, hung, failed):
            assert during["state"] == "pending", during
        assert shown["attempts"] > failed["attempts"] > hung["attempts"] > down["attempts"] > 0
        assert shown["last_error"] is None
        assert s.hub.metrics.journal_sends.labels("retry")._value.get() >= 3
        assert s.hub.metrics.journal_confirmations._value.get() == 1
    # A post the journal took after the client had given up (the hang) came again with
    # the same identifier: still one note.
    assert list(journal.note_count().values()) == [1]
    assert len(set(journal.posts)) == 1


async def test_a_refusal_is_shown_with_its_reason_and_counted(
    tmp_path: Path,
    broker: LocalBroker,
    client_id: str,
    helseid: HelseIdServer,
    journal: JournalServer,
) -> None:
    journal.refuse = "pasienten finnes ikke i EPJ"
    conf = settings(tmp_path, helseid, journal)
    async with stack(tmp_path, broker, client_id, alarms=False, settings=conf) as s:
        async with s.client("op0301") as c:
            alarm = await answered(s, c)
            shown = await journal_state(c, alarm, "refused")
        assert shown["reason"] == "pasienten finnes ikke i EPJ"
        assert shown["finished_at"] is not None
        refusals = s.hub.metrics.journal_refusals.labels("journal")._value.get()
        assert refusals == 1
        async with httpx.AsyncClient() as h:
            text = (await h.get(f"{s.base}/metrics")).text
        # AlarmhubJournalRefusals (deploy/prometheus) fires on this series; its promtool
        # unit test is in deploy/prometheus/alarmhub.rules.test.yml.
        assert 'alarmhub_journal_refusals_total{reason="journal"} 1.0' in text


async def test_export_only_where_a_client_is_and_a_reload_cannot_unmap_its_kinds(
    tmp_path: Path,
    broker: LocalBroker,
    client_id: str,
    helseid: HelseIdServer,
    journal: JournalServer,
) -> None:
    rules = tmp_path / "rules.toml"
    text = (REPO / "config" / "rules.toml").read_text()
    rules.write_text(text)
    conf = settings(tmp_path, helseid, journal, rules=rules)
    async with stack(tmp_path, broker, client_id, alarms=False, settings=conf) as s:
        alarm = await s.raise_alarm("brg-pend-1", "b1")  # Bergen: no HelseID client
        async with s.client("op4601") as c:
            r = await c.post(f"/api/v1/alarms/{alarm}/resolve", json={"outcome": "helped"})
            assert r.status_code == 200, r.text
            shown = (await c.get(f"/api/v1/alarms/{alarm}")).json()["journal"]
        assert shown["state"] == "not_applicable", shown
        assert db_rows(s.db, "SELECT alarm_id FROM journal_exports") == []
        # A reload that would leave 0301's `button` alarms without a note is refused
        # whole, as at start; the rules in force stay.
        version = s.hub.rules.version
        lines = text.split("\n")
        start, end = lines.index("[journal.button]"), lines.index("[journal.fall]")
        rules.write_text("\n".join(lines[:start] + lines[end:]))
        with capture_logs() as logs:
            assert s.hub.reload_rules() is False
        assert s.hub.rules.version == version
        [failed] = [e for e in logs if e["event"] == "rules.reload_failed"]
        assert "alarm kind 'button' has no [journal.button] section" in failed["error"]
        assert "municipality 0301" in failed["error"]
        rules.write_text(text + "\n# changed\n")
        assert s.hub.reload_rules() is True  # a complete file is taken
    assert journal.posts == []
    assert helseid.log.issued == []


async def held_after_a_swap(s: Stack, journal: JournalServer) -> str:
    """Kari's (r-17) alarm answered with the journal down; r-17 given to Ola meanwhile;
    the journal back: the note is shown held, and nothing reached the journal."""
    await journal.stop()
    async with s.client("op0301") as c:
        alarm = await answered(s, c)  # r-17 is Kari's, registered before the press
        await failing_with(c, alarm, "ConnectError")
    async with s.client("madm0301") as admin:
        r = await admin.put(
            "/api/v1/residents/r-17", json={"municipality": "0301", "national_id": OLA}
        )
        assert r.status_code == 200, r.text  # replaced: r-17 is Ola now
    await journal.start()
    async with s.client("op0301") as c:
        shown = await journal_state(c, alarm, "held")
    assert shown["reason"] == "national id changed since the alarm"
    assert shown["finished_at"] is None
    assert journal.posts == []
    return alarm


async def test_a_note_held_for_a_changed_number_is_released_by_its_municipality_only(
    tmp_path: Path,
    broker: LocalBroker,
    client_id: str,
    helseid: HelseIdServer,
    journal: JournalServer,
) -> None:
    """The note of an alarm whose pseudonym was given to another person went to that
    person's journal. Held now; Oslo's administrator releases it naming Kari's number;
    Bergen's cannot touch it, an operator may not, a second release finds nothing held."""
    conf = settings(tmp_path, helseid, journal)
    async with stack(tmp_path, broker, client_id, alarms=False, settings=conf) as s:
        alarm = await held_after_a_swap(s, journal)
        release, cancel = (f"/api/v1/alarms/{alarm}/journal/{v}" for v in ("release", "cancel"))
        async with s.client("madm4601") as bergen:
            for path in (release, cancel):
                r = await bergen.post(path, json={"national_id": OLA} if path == release else {})
                assert r.status_code == 404, r.text
        async with s.client("op0301") as c:
            r = await c.post(release, json={"national_id": KARI})
            assert r.status_code == 403, r.text
        async with s.client("madm0301") as admin:
            r = await admin.post(release, json={"national_id": KARI[:-1] + "0"})
            assert r.status_code == 422, r.text
            assert KARI[6:-1] not in r.text  # a wrong number is not echoed
            r = await admin.post(release, json={"national_id": KARI})
            assert r.status_code == 200, r.text
            assert r.json()["state"] == "pending"
            assert KARI[6:] not in r.text
            r = await admin.post(release, json={"national_id": KARI})
            assert r.status_code == 409, r.text
            assert r.json()["error"]["code"] == "journal_not_held"
        async with s.client("op0301") as c:
            await journal_state(c, alarm, "confirmed")
        assert list(journal.note_count().values()) == [1]
        [note] = journal.notes.values()
        assert note.bundle["entry"][3]["resource"]["identifier"][0]["value"] == KARI  # type: ignore[index]
        audit = "SELECT actor, municipality, alarm_id, detail FROM audit WHERE action = ?"
        [(actor, municipality, alarm_id, detail)] = db_rows(s.db, audit, ("journal.released",))
        assert (actor, municipality, alarm_id) == ("madm0301", "0301", alarm)
        assert KARI[6:] not in detail
        assert s.hub.metrics.journal_holds._value.get() == 1
        async with httpx.AsyncClient() as h:
            text = (await h.get(f"{s.base}/metrics")).text
        assert "alarmhub_journal_holds_total 1.0" in text
        assert "alarmhub_journal_held 0.0" in text


async def test_a_held_note_cancelled_is_never_sent(
    tmp_path: Path,
    broker: LocalBroker,
    client_id: str,
    helseid: HelseIdServer,
    journal: JournalServer,
) -> None:
    conf = settings(tmp_path, helseid, journal)
    async with stack(tmp_path, broker, client_id, alarms=False, settings=conf) as s:
        alarm = await held_after_a_swap(s, journal)
        async with httpx.AsyncClient() as h:
            text = (await h.get(f"{s.base}/metrics")).text
        assert "alarmhub_journal_held 1.0" in text  # AlarmhubJournalHeld fires on it
        async with s.client("madm0301") as admin:
            r = await admin.post(
                f"/api/v1/alarms/{alarm}/journal/cancel", json={"reason": "Kari flyttet"}
            )
            assert r.status_code == 200, r.text
            assert (r.json()["state"], r.json()["reason"]) == ("cancelled", "Kari flyttet")
            r = await admin.post(f"/api/v1/alarms/{alarm}/journal/cancel")
            assert r.status_code == 409, r.text
        async with s.client("op0301") as c:
            shown = await journal_state(c, alarm, "cancelled")
        assert shown["finished_at"] is not None
        assert journal.posts == []
        audit = "SELECT actor, alarm_id FROM audit WHERE action = ?"
        assert db_rows(s.db, audit, ("journal.cancelled",)) == [("madm0301", alarm)]
