"""kill -9 of `alarmhub run` between an alarm's resolve and its journal delivery (issue 17).

alarmhub as a process (a real Mosquitto, SQLite on disk, HTTP on a free port), a local
HelseID token endpoint with 0301's client registered, and a journal server on loopback
that checks the DPoP-bound token and proof of every request (tests/support/
helseid_server.py) and counts notes by Bundle identifier. Two crashes:

- the journal is down when the alarm is resolved, so the export is pending (its failed
  attempts on the row); kill -9; the journal comes up; restart → one note, confirmed.
- the journal takes the POST (the note is filed) and alarmhub is killed before it hears
  the 202 (the server kills it from inside the request), so the row still says
  `pending`; restart → the same Bundle identifier is posted again, the journal
  recognises it: two posts, one note, confirmed.
"""

from __future__ import annotations

import asyncio
import base64
import json
import signal
import subprocess
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from alarmhub.clock import SystemClock
from alarmhub.core.national_id import NationalId, parse_national_id
from alarmhub.core.people import AuditEntry, Role
from alarmhub.dev.mosquitto import LocalBroker, free_port
from alarmhub.store.residents import ResidentRegister
from alarmhub.store.sealing import Keyring
from alarmhub.store.sqlite import accounts
from alarmhub.store.sqlite.residents import SqliteResidentRows
from tests.support.helpers import (
    Publisher,
    async_wait_until,
    db_rows,
    native,
    run_cli,
    spawn_daemon,
)
from tests.support.helseid_server import HelseIdServer, registered_client
from tests.support.journal_server import JournalServer
from tests.support.national_ids import KARI

pytestmark = pytest.mark.broker
KEY = bytes(range(32))
DEVICE = "osl-pend-1"


@dataclass
class Rig:
    db: Path
    env: dict[str, str]
    log: Path
    base: str
    token: str
    journal: JournalServer
    broker: LocalBroker

    def start(self) -> subprocess.Popen[bytes]:
        return spawn_daemon(self.env, self.log)

    async def ready(self, daemon: subprocess.Popen[bytes]) -> None:
        async with httpx.AsyncClient(timeout=2) as h:

            async def up() -> bool:
                try:
                    return (await h.get(f"{self.base}/readyz")).status_code == 200
                except httpx.HTTPError:
                    return False

            for _ in range(300):  # a ceiling of about 30 s
                if daemon.poll() is not None:
                    raise AssertionError(self.log.read_text()[-3000:])
                if await up():
                    return
                await asyncio.sleep(0.1)
        raise AssertionError(f"not ready:\n{self.log.read_text()[-3000:]}")

    async def resolved_alarm(self) -> str:
        pub = Publisher(self.broker.port, client_id="journal-crash-pub")
        try:
            pub.publish(*native(DEVICE, "press-1", "button.pressed"))
        finally:
            pub.close()
        sql = "SELECT id FROM alarms WHERE device_id = ?"
        assert await async_wait_until(lambda: bool(db_rows(self.db, sql, (DEVICE,))), 15)
        alarm = str(db_rows(self.db, sql, (DEVICE,))[0][0])
        body = {"outcome": "helped", "cause": "needed_help", "action_taken": "home_care"}
        headers = {"Authorization": f"Bearer {self.token}"}
        async with httpx.AsyncClient(base_url=self.base, headers=headers, timeout=10) as c:
            r = await c.post(f"/api/v1/alarms/{alarm}/resolve", json=body)
        assert r.status_code == 200, r.text
        return alarm

    def export(self, alarm: str) -> tuple[Any, ...]:
        sql = "SELECT state, attempts, location, last_error FROM journal_exports WHERE alarm_id = ?"
        [row] = db_rows(self.db, sql, (alarm,))
        return row

    async def shown(self, alarm: str) -> dict[str, Any]:
        """The alarm's journal state on its detail, once it is confirmed (20 s ceiling)."""
        headers = {"Authorization": f"Bearer {self.token}"}
        async with httpx.AsyncClient(base_url=self.base, headers=headers, timeout=10) as c:
            for _ in range(200):
                journal: dict[str, Any] = (await c.get(f"/api/v1/alarms/{alarm}")).json()["journal"]
                if journal["state"] == "confirmed":
                    return journal
                await asyncio.sleep(0.1)
        raise AssertionError(f"journal still {journal}\n{self.log.read_text()[-3000:]}")


def killed(daemon: subprocess.Popen[bytes]) -> None:
    if daemon.poll() is None:
        daemon.send_signal(signal.SIGKILL)
    daemon.wait(10)
    assert daemon.returncode == -signal.SIGKILL


def stopped(daemon: subprocess.Popen[bytes], log: Path) -> None:
    daemon.send_signal(signal.SIGTERM)
    daemon.wait(15)
    assert daemon.returncode == 0, log.read_text()[-2000:]


@pytest.fixture
def helseid() -> Iterator[HelseIdServer]:
    server = HelseIdServer(SystemClock().now)
    yield server
    server.close()


@pytest.fixture
async def rig(
    tmp_path: Path, broker: LocalBroker, client_id: str, helseid: HelseIdServer
) -> AsyncIterator[Rig]:
    db = tmp_path / "alarmhub.db"
    db_url = f"sqlite:///{db}"
    add = ["devices", "register", "--id", DEVICE, "--kind", "safety_alarm"]
    ran = run_cli(
        [*add, "--municipality", "0301", "--resident", "r-17"], {"ALARMHUB_DATABASE_URL": db_url}
    )
    assert ran.returncode == 0, ran.stderr
    clock = SystemClock()
    with accounts.connect(db) as conn:
        accounts.create_user(
            conn, "op", Role.OPERATOR, ["0301"], accounts.hash_password("x" * 12), clock.now(), ()
        )
        token = accounts.create_token(conn, "op", clock.now(), None, ())
    register = ResidentRegister(SqliteResidentRows(db), Keyring((KEY,)), clock)
    nid = parse_national_id(KARI)
    assert isinstance(nid, NationalId)
    audit = AuditEntry("madm", "resident.national_id_set", clock.now(), municipality="0301")
    await register.set_national_id("0301", "r-17", nid, "madm", [audit])
    journal = JournalServer()
    journal.guard_with(helseid.guard())
    await journal.start()
    port = free_port()
    env = {
        "ALARMHUB_DATABASE_URL": db_url,
        "ALARMHUB_MQTT_URL": broker.url,
        "ALARMHUB_MQTT_CLIENT_ID": client_id,
        "ALARMHUB_HTTP_LISTEN": f"127.0.0.1:{port}",
        "ALARMHUB_RESIDENT_KEY": base64.b64encode(KEY).decode(),
        "ALARMHUB_JOURNAL_URL": journal.url,
        "ALARMHUB_JOURNAL_HELSEID": json.dumps(
            {"0301": registered_client(helseid, tmp_path, "0301")}
        ),
        "ALARMHUB_JOURNAL_ORGANISATION_NAME": "Responssenteret i Oslo",
        "ALARMHUB_JOURNAL_ORGANISATION_NUMBER": "974778807",
        "ALARMHUB_JOURNAL_POLL_S": "0.1",
        "ALARMHUB_JOURNAL_RETRY_BASE_S": "0.1",
        "ALARMHUB_JOURNAL_RETRY_MAX_S": "0.3",
        "ALARMHUB_JOURNAL_TIMEOUT_S": "2",
    }
    try:
        yield Rig(
            db, env, tmp_path / "daemon.log", f"http://127.0.0.1:{port}", token, journal, broker
        )
    finally:
        await journal.stop()


async def test_kill_9_while_the_export_is_pending_then_delivered_once_after_restart(
    rig: Rig, helseid: HelseIdServer
) -> None:
    await rig.journal.stop()  # down: its port known, nothing listening
    daemon = rig.start()
    try:
        await rig.ready(daemon)
        alarm = await rig.resolved_alarm()
        # Pending, its delivery already tried and failed: the crash lands in between.
        assert await async_wait_until(lambda: rig.export(alarm)[1] >= 2, 15), rig.export(alarm)
        state, _, location, last_error = rig.export(alarm)
        assert (state, location) == ("pending", None)
        assert last_error.startswith("ConnectError")
        killed(daemon)
        await rig.journal.start()  # up again, on the same port
        daemon = rig.start()
        await rig.ready(daemon)
        shown = await rig.shown(alarm)
        assert shown["sent_at"] is not None
        assert shown["finished_at"] is not None
        assert list(rig.journal.note_count().values()) == [1]
        assert len(rig.journal.posts) == 1
        status = run_cli(["journal", "status", "--json"], rig.env)
        assert status.returncode == 0, status.stderr
        assert '"confirmed"' in status.stdout
        assert alarm in status.stdout
        stopped(daemon, rig.log)
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait(10)
    assert helseid.log.issued  # every post and poll went out with a HelseID token


async def test_kill_9_after_the_journal_took_the_note_resends_it_as_the_same_note(
    rig: Rig,
) -> None:
    processes: list[subprocess.Popen[bytes]] = []

    async def crash(_identifier: str) -> None:
        # The note is filed; alarmhub dies before it hears the 202 (only the first time).
        rig.journal.after_post = None
        processes[-1].send_signal(signal.SIGKILL)

    rig.journal.after_post = crash
    processes.append(rig.start())
    try:
        await rig.ready(processes[-1])
        alarm = await rig.resolved_alarm()
        assert await async_wait_until(lambda: processes[-1].poll() is not None, 15)
        killed(processes[-1])
        state, _, location, _ = rig.export(alarm)
        assert (state, location) == ("pending", None)  # the 202 was never recorded
        assert len(rig.journal.notes) == 1
        processes.append(rig.start())
        await rig.ready(processes[-1])
        await rig.shown(alarm)
        [identifier] = rig.journal.note_count()
        # Sent again after the restart: the same Bundle identifier, recognised: one note.
        assert rig.journal.posts == [identifier, identifier]
        assert list(rig.journal.note_count().values()) == [1]
        stopped(processes[-1], rig.log)
    finally:
        for p in processes:
            if p.poll() is None:
                p.kill()
                p.wait(10)
