"""`alarmhub journal export` and `alarmhub rules check`'s journal gate, through the CLI.

The alarm is stored in a real SQLite database by the store's own writes: the batch
the core pipeline made of a press, then the operator's actions. The commands run
in-process through `alarmhub.cli.main` (the entry point `alarmhub` runs), which keeps
this file fast; the exit codes and the output are the real ones.
"""

from __future__ import annotations

import asyncio
import base64
import importlib
import io
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from alarmhub.cli.main import main
from alarmhub.core.journal.document import timeline_entry
from alarmhub.core.journal_status import JournalState
from alarmhub.core.model import TimelineType
from alarmhub.core.pipeline import BatchEffects
from alarmhub.settings.helseid import new_private_key, private_pem
from alarmhub.store.journal_outbox import JournalExport
from alarmhub.store.sqlite.store import SqliteStore
from tests.support import vkp
from tests.support.helpers import REPO, db_rows
from tests.support.journal import NIN, PENDANT, PRESS, answered, raised_by_a_press
from tests.support.national_ids import OLA

cli_main = importlib.import_module("alarmhub.cli.main")  # the module, not the function
Run = Callable[[list[str], dict[str, str]], "Ran"]  # the `run` fixture
CENTRE_ENV = {
    "ALARMHUB_JOURNAL_ORGANISATION_NAME": "Responssenteret i Oslo",
    "ALARMHUB_JOURNAL_ORGANISATION_NUMBER": "974778807",
}


@dataclass(frozen=True)
class Ran:
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def run(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Run:
    """`alarmhub ARGS` in this process with exactly `env` as its ALARMHUB_ settings."""

    def go(args: list[str], env: dict[str, str]) -> Ran:
        with monkeypatch.context() as m:
            for name in [n for n in os.environ if n.startswith("ALARMHUB_")]:
                m.delenv(name)
            m.setenv("ALARMHUB_RULES", str(REPO / "config" / "rules.toml"))
            m.setenv("ALARMHUB_DEVICES_DIR", str(REPO / "devices"))
            m.chdir(REPO)
            # The CLI configures logging onto sys.stderr, which is capsys' stream here and
            # closed after this test: module loggers cache their stream on first use, so a
            # later test's log line would hit a closed file. Logging stays as it was.
            m.setattr(cli_main, "configure_logging", lambda *_a, **_k: None)
            for name, value in env.items():
                m.setenv(name, value)
            capsys.readouterr()
            code = main(args)
            out = capsys.readouterr()
        return Ran(code, out.out, out.err)

    return go


async def _store(path: Path, resolved: bool) -> str:
    store = await SqliteStore.open(path)
    try:
        await store.register_devices([PENDANT], PRESS, audit=[])
        alarm, raised = raised_by_a_press()
        await store.commit_batch(BatchEffects(alarms={alarm.id: alarm}, timeline=raised), {})
        if resolved:
            done, timeline = answered()
            stored = await store.get_alarm(alarm.id)
            assert stored is not None
            await store.save_alarms(
                [replace(done, rev=stored.rev)], timeline[len(raised) :], audit=()
            )
        return alarm.id
    finally:
        await store.close()


def seeded(tmp_path: Path, *, resolved: bool = True) -> tuple[str, dict[str, str]]:
    db = tmp_path / "a.db"
    alarm_id = asyncio.run(_store(db, resolved))
    return alarm_id, {"ALARMHUB_DATABASE_URL": f"sqlite:///{db}", **CENTRE_ENV}


def test_export_prints_the_note_and_says_it_has_no_national_id_yet(
    tmp_path: Path, run: Run
) -> None:
    alarm_id, env = seeded(tmp_path)
    result = run(["journal", "export", "--alarm", alarm_id], env)
    assert result.returncode == 1, result.stderr
    assert result.stderr.strip() == "journal: not applicable (no national id)"
    bundle = json.loads(result.stdout)
    composition = bundle["entry"][0]["resource"]
    assert [e["code"][0]["coding"][0]["code"] for e in composition["event"]] == [
        "0",
        "1",
        "4",
        "5",
        "6",
        "7",
        "3",
    ]
    # Only the patient's identifier is missing from the preview.
    assert vkp.problems(bundle) == ["Patient.identifier: needs a fødselsnummer or D-nummer"]
    again = run(["journal", "export", "--alarm", alarm_id], env)
    assert again.stdout == result.stdout  # byte-identical: a resend is the same document


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--alarm", "nope"], {}, "alarmhub: no alarm 'nope'"),
        (
            ["--alarm", "ALARM"],
            {"ALARMHUB_JOURNAL_ORGANISATION_NUMBER": None},
            "set ALARMHUB_JOURNAL_ORGANISATION_NAME and ALARMHUB_JOURNAL_ORGANISATION_NUMBER",
        ),
    ],
)
def test_export_failures_are_one_clear_line(
    tmp_path: Path, run: Run, args: list[str], env: dict[str, str | None], message: str
) -> None:
    alarm_id, base = seeded(tmp_path)
    full = {k: v for k, v in {**base, **env}.items() if v is not None}
    result = run(["journal", "export", *[a.replace("ALARM", alarm_id) for a in args]], full)
    assert (result.returncode, result.stdout) == (1, "")
    assert message in result.stderr


def test_export_of_an_open_alarm_says_when_its_note_is_written(tmp_path: Path, run: Run) -> None:
    alarm_id, env = seeded(tmp_path, resolved=False)
    result = run(["journal", "export", "--alarm", alarm_id], env)
    assert (result.returncode, result.stdout) == (1, "")
    assert "is open: its journal note is written when it is resolved" in result.stderr


def test_a_bad_organisation_number_is_a_bad_setting(tmp_path: Path, run: Run) -> None:
    _, env = seeded(tmp_path)
    env["ALARMHUB_JOURNAL_ORGANISATION_NUMBER"] = "974778808"
    result = run(["journal", "export", "--alarm", "x"], env)
    assert result.returncode == 2
    assert "ALARMHUB_JOURNAL_ORGANISATION_NUMBER" in result.stderr
    assert "mod-11" in result.stderr


def test_rules_check_refuses_an_unmapped_kind_where_export_is_on(tmp_path: Path, run: Run) -> None:
    text = (REPO / "config" / "rules.toml").read_text()
    cut = tmp_path / "rules.toml"
    cut.write_text(text.replace("[journal.fall]\n", "[journal.fallen_out]\n"))
    env = {"ALARMHUB_DATABASE_URL": f"sqlite:///{tmp_path / 'a.db'}"}
    refused = run(["rules", "check", str(cut)], env)
    assert refused.returncode == 1
    assert "journal.fallen_out: no rule raises alarm kind 'fallen_out'" in refused.stderr

    lines = text.split("\n")
    start = lines.index("[journal.fall]")
    end = lines.index("[journal.door_open_night]")
    cut.write_text("\n".join(lines[:start] + lines[end:]))
    # No municipality has export on: the gap is allowed.
    assert run(["rules", "check", str(cut)], env).returncode == 0
    by_flag = run(["rules", "check", str(cut), "--journal-municipalities", "0301"], env)
    assert by_flag.returncode == 1
    assert "alarm kind 'fall' has no [journal.fall] section" in by_flag.stderr
    # By default: the municipalities whose HelseID client is configured.
    by_setting = run(["rules", "check", str(cut)], {**env, **helseid_env(tmp_path, "4601", "0301")})
    assert by_setting.returncode == 1
    assert "municipality 0301" in by_setting.stderr
    assert "municipality 4601" in by_setting.stderr
    # The flag overrides the setting: none exporting, the gap is allowed.
    none = ["rules", "check", str(cut), "--journal-municipalities", ""]
    assert run(none, {**env, **helseid_env(tmp_path, "0301")}).returncode == 0


def helseid_env(tmp_path: Path, *municipalities: str) -> dict[str, str]:
    """ALARMHUB_JOURNAL_HELSEID with a client (and a real key file) for each municipality."""
    clients = {}
    for code in municipalities:
        path = tmp_path / f"helseid-{code}.pem"
        if not path.exists():
            path.write_bytes(private_pem(new_private_key("ec")))
        clients[code] = {
            "token_endpoint": "https://helseid-sts.test.nhn.no/connect/token",
            "client_id": f"alarmhub-{code}",
            "key_file": str(path),
        }
    return {
        "ALARMHUB_JOURNAL_URL": "https://jft.test.nhn.no",
        "ALARMHUB_JOURNAL_HELSEID": json.dumps(clients),
    }


def test_the_daemon_refuses_to_start_with_an_unmapped_kind_where_export_is_on(
    tmp_path: Path, run: Run
) -> None:
    lines = (REPO / "config" / "rules.toml").read_text().split("\n")
    start, end = lines.index("[journal.fall]"), lines.index("[journal.door_open_night]")
    cut = tmp_path / "rules.toml"
    cut.write_text("\n".join(lines[:start] + lines[end:]))
    env = {
        "ALARMHUB_DATABASE_URL": f"sqlite:///{tmp_path / 'a.db'}",
        "ALARMHUB_RULES": str(cut),
        **helseid_env(tmp_path, "0301"),
    }
    refused = run(["run"], env)
    assert refused.returncode == 1
    [line] = refused.stderr.strip().splitlines()  # one line: what is missing, and the fix
    assert str(cut) in line
    assert "alarm kind 'fall' has no [journal.fall] section" in line
    assert "municipality 0301 has journal export on" in line
    assert not (tmp_path / "a.db").exists()  # refused before anything was opened


def test_export_reads_the_number_from_the_register_and_audits_the_read(
    tmp_path: Path, run: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    alarm_id, env = seeded(tmp_path)
    env["ALARMHUB_RESIDENT_KEY"] = base64.b64encode(bytes(range(32))).decode()
    monkeypatch.setattr("sys.stdin", io.StringIO(NIN + "\n"))
    put = ["residents", "set", "--municipality", "0301", "--resident", "r-17"]
    assert run([*put, "--national-id-stdin"], env).returncode == 0
    result = run(["journal", "export", "--alarm", alarm_id], env)
    assert (result.returncode, result.stderr.strip()) == (0, "journal: ready (not sent)")
    assert NIN not in result.stderr
    bundle = json.loads(result.stdout)
    assert vkp.problems(bundle) == []
    patient = bundle["entry"][3]["resource"]
    assert patient["identifier"][0]["value"] == NIN
    reads = db_rows(
        tmp_path / "a.db", "SELECT actor FROM audit WHERE action = 'resident.national_id_read'"
    )
    assert [r[0] for r in reads] == ["journal-export"]
    # Without the key the number cannot be opened: one line that says which setting.
    del env["ALARMHUB_RESIDENT_KEY"]
    refused = run(["journal", "export", "--alarm", alarm_id], env)
    assert refused.returncode == 1
    assert "ALARMHUB_RESIDENT_KEY" in refused.stderr
    assert NIN not in refused.stderr + refused.stdout


def test_rekey_says_how_far_it_got(
    tmp_path: Path, run: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    _alarm_id, env = seeded(tmp_path)
    old, new = (base64.b64encode(bytes(range(a, a + 32))).decode() for a in (0, 32))
    env["ALARMHUB_RESIDENT_KEY"] = old
    monkeypatch.setattr("sys.stdin", io.StringIO(NIN + "\n"))
    put = ["residents", "set", "--municipality", "0301", "--resident", "r-17"]
    assert run([*put, "--national-id-stdin"], env).returncode == 0
    env |= {"ALARMHUB_RESIDENT_KEY": new, "ALARMHUB_RESIDENT_OLD_KEYS": old}
    done = run(["residents", "rekey"], env)
    assert (done.returncode, done.stderr) == (0, "resealed 1 so far, 0 skipped\n")
    assert done.stdout == "resealed 1 number(s) under the current key\n"


def test_users_set_hpr_and_the_export_names_the_author_by_it(tmp_path: Path, run: Run) -> None:
    alarm_id, env = seeded(tmp_path)  # kari resolved it

    def author() -> dict[str, str]:
        exported = run(["journal", "export", "--alarm", alarm_id], env)
        ident: dict[str, str] = json.loads(exported.stdout)["entry"][4]["resource"]["identifier"][0]
        return ident

    assert author() == {"system": "urn:alarmhub:user", "value": "kari"}  # no user record
    create = ["users", "create", "--name", "kari", "--role", "operator", "--municipality", "0301"]
    assert run(create, env).returncode == 0
    set_hpr = ["users", "set-hpr", "--name", "kari"]
    done = run([*set_hpr, "--hpr", "001234567"], env)
    assert (done.returncode, done.stdout) == (0, "kari: HPR number 1234567\n")  # zeros dropped
    again = run([*set_hpr, "--hpr", "1234567"], env)
    assert (again.returncode, again.stdout) == (0, "kari already had HPR number 1234567\n")
    assert author() == {"system": "urn:oid:2.16.578.1.12.4.1.4.4", "value": "1234567"}
    [listed] = json.loads(run(["users", "list", "--json"], env).stdout)
    assert listed["hpr"] == "1234567"
    assert "1234567" in run(["users", "list"], env).stdout

    for bad, why in (
        ("12-34567", "has only the digits 0-9"),
        ("1234567890", "has 1 to 9 digits"),
        ("000", "is not all zeros"),
    ):
        refused = run([*set_hpr, "--hpr", bad], env)
        assert (refused.returncode, refused.stderr) == (
            2,
            f"alarmhub: --hpr: an HPR number {why}\n",
        )
    nobody = run(["users", "set-hpr", "--name", "nosuch", "--hpr", "1"], env)
    assert (nobody.returncode, nobody.stderr.strip()) == (1, "alarmhub: no user 'nosuch'")
    with pytest.raises(SystemExit) as neither:  # --hpr or --remove, exactly one
        run(set_hpr, env)
    assert neither.value.code == 2

    removed = run([*set_hpr, "--remove"], env)
    assert (removed.returncode, removed.stdout) == (0, "kari: no HPR number\n")
    assert author() == {"system": "urn:alarmhub:user", "value": "kari"}
    audit = db_rows(
        tmp_path / "a.db",
        "SELECT actor, action, detail FROM audit WHERE action LIKE 'user.hpr%' ORDER BY id",
    )
    rows = [(a.split(":")[0], b, json.loads(c)) for a, b, c in audit]
    assert rows == [
        ("cli", "user.hpr_set", {"user": "kari", "hpr": "1234567"}),
        ("cli", "user.hpr_removed", {"user": "kari"}),
    ]


def test_stored_timeline_rows_read_back_as_the_core_s_entries() -> None:
    row = {"at": "2026-11-22T01:13:05.000000+00:00", "type": "resolved", "actor": "kari"}
    entry = timeline_entry("a-1", {**row, "detail": {"cause": "fall"}})
    assert (entry.at, entry.type, entry.detail) == (PRESS, TimelineType.RESOLVED, {"cause": "fall"})


def test_status_lists_the_exports_and_failed_lists_refusals_and_retries(
    tmp_path: Path, run: Run
) -> None:
    alarm_id, env = seeded(tmp_path)
    assert run(["journal", "status"], env).stdout.strip() == "(none)"
    asyncio.run(_export(tmp_path / "a.db", alarm_id))
    listed = run(["journal", "status", "--json"], env)
    assert listed.returncode == 0, listed.stderr
    [row] = json.loads(listed.stdout)
    assert (row["alarm_id"], row["state"], row["reason"]) == (alarm_id, "refused", "ukjent kode")
    failed = run(["journal", "status", "--failed"], env)
    assert "refused" in failed.stdout
    assert "ukjent kode" in failed.stdout
    assert alarm_id in failed.stdout


async def _export(path: Path, alarm_id: str) -> None:
    store = await SqliteStore.open(path)
    try:
        pending = JournalExport.new(alarm_id, "0301", PRESS)
        stored = await store.get_alarm(alarm_id)
        assert stored is not None
        await store.save_alarms([stored], [], audit=(), journal=[pending])
        refused = replace(pending, state=JournalState.REFUSED, reason="ukjent kode", attempts=1)
        await store.journal_save(refused)
    finally:
        await store.close()


async def _held(path: Path, alarm_id: str) -> None:
    """The alarm's export as delivery leaves it when the number changed since the alarm."""
    store = await SqliteStore.open(path)
    try:
        pending = JournalExport.new(alarm_id, "0301", PRESS)
        stored = await store.get_alarm(alarm_id)
        assert stored is not None
        await store.save_alarms([stored], [], audit=(), journal=[pending])
        held = replace(
            pending, state=JournalState.HELD, reason="national id changed since the alarm"
        )
        await store.journal_save(held)
    finally:
        await store.close()


def registered_then_given_to_ola(
    tmp_path: Path, run: Run, monkeypatch: pytest.MonkeyPatch
) -> tuple[str, dict[str, str]]:
    """Kari's (NIN) alarm, answered; r-17 given to Ola since (now, after the press)."""
    alarm_id, env = seeded(tmp_path)
    env["ALARMHUB_RESIDENT_KEY"] = base64.b64encode(bytes(range(32))).decode()
    put = ["residents", "set", "--municipality", "0301", "--resident", "r-17"]
    for number in (NIN, OLA):
        monkeypatch.setattr("sys.stdin", io.StringIO(number + "\n"))
        assert run([*put, "--national-id-stdin"], env).returncode == 0
    return alarm_id, env


def audit_rows(tmp_path: Path, action: str) -> list[tuple[str, str, str, str]]:
    sql = "SELECT actor, municipality, alarm_id, detail FROM audit WHERE action = ?"
    return db_rows(tmp_path / "a.db", sql, (action,))


def test_export_of_a_note_whose_number_changed_names_nobody_and_says_held(
    tmp_path: Path, run: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    alarm_id, env = registered_then_given_to_ola(tmp_path, run, monkeypatch)
    result = run(["journal", "export", "--alarm", alarm_id], env)
    assert result.returncode == 1
    assert result.stderr.startswith("journal: held (national id changed since the alarm)")
    assert f"alarmhub journal release --alarm {alarm_id} --municipality 0301" in result.stderr
    assert OLA not in result.stdout  # the preview is nobody's: the note may be Kari's
    assert "identifier" not in json.loads(result.stdout)["entry"][3]["resource"]


def test_release_a_held_note_for_a_number_in_its_own_municipality_only(
    tmp_path: Path, run: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    alarm_id, env = registered_then_given_to_ola(tmp_path, run, monkeypatch)
    release = ["journal", "release", "--alarm", alarm_id, "--national-id-stdin"]
    monkeypatch.setattr("sys.stdin", io.StringIO(NIN + "\n"))
    not_yet = run([*release, "--municipality", "0301"], env)  # pending: not held
    assert not_yet.returncode == 1
    assert "not held: it has no journal note" in not_yet.stderr
    asyncio.run(_held(tmp_path / "a.db", alarm_id))
    failed = run(["journal", "status", "--failed"], env)
    assert "held" in failed.stdout
    monkeypatch.setattr("sys.stdin", io.StringIO(NIN + "\n"))
    bergen = run([*release, "--municipality", "4601"], env)
    assert (bergen.returncode, bergen.stderr.strip()) == (
        1,
        f"alarmhub: no alarm '{alarm_id}' in municipality 4601",
    )
    monkeypatch.setattr("sys.stdin", io.StringIO(NIN[:-1] + "0\n"))
    wrong = run([*release, "--municipality", "0301"], env)
    assert wrong.returncode == 1
    assert "check digit" in wrong.stderr
    assert audit_rows(tmp_path, "journal.released") == []

    monkeypatch.setattr("sys.stdin", io.StringIO(NIN + "\n"))
    done = run([*release, "--municipality", "0301"], env)
    assert done.returncode == 0, done.stderr
    assert (
        done.stdout == f"released the journal note of alarm {alarm_id}: it goes to {NIN[:6]}*****\n"
    )
    [row] = json.loads(run(["journal", "status", "--json"], env).stdout)
    assert (row["state"], row["reason"]) == ("pending", None)
    [(actor, municipality, alarm, detail)] = audit_rows(tmp_path, "journal.released")
    assert (actor.split(":")[0], municipality, alarm) == ("cli", "0301", alarm_id)
    assert json.loads(detail) == {"resident": "r-17", "kind": "fodselsnummer", "synthetic": True}
    # The preview is now the note as it goes: Kari's, whatever the register says.
    exported = run(["journal", "export", "--alarm", alarm_id], env)
    assert (exported.returncode, exported.stderr.strip()) == (0, "journal: ready (not sent)")
    patient = json.loads(exported.stdout)["entry"][3]["resource"]
    assert patient["identifier"][0]["value"] == NIN
    monkeypatch.setattr("sys.stdin", io.StringIO(NIN + "\n"))
    again = run([*release, "--municipality", "0301"], env)
    assert again.returncode == 1
    assert "not held: its journal state is pending" in again.stderr
    assert len(audit_rows(tmp_path, "journal.released")) == 1


def test_rekey_reseals_a_released_note_s_number_so_the_old_key_can_go(
    tmp_path: Path, run: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A key rotation as docs/journal.md gives it, with a released note waiting: rekey,
    then drop the old key. Rekey resealed only the register, so the note's number stayed
    under the dropped key and the note could never be built again (fourth session of
    2026-12-06)."""
    alarm_id, env = registered_then_given_to_ola(tmp_path, run, monkeypatch)
    asyncio.run(_held(tmp_path / "a.db", alarm_id))
    monkeypatch.setattr("sys.stdin", io.StringIO(NIN + "\n"))
    release = ["journal", "release", "--alarm", alarm_id, "--municipality", "0301"]
    assert run([*release, "--national-id-stdin"], env).returncode == 0
    new = base64.b64encode(bytes(range(32, 64))).decode()
    env |= {
        "ALARMHUB_RESIDENT_KEY": new,
        "ALARMHUB_RESIDENT_OLD_KEYS": env["ALARMHUB_RESIDENT_KEY"],
    }
    done = run(["residents", "rekey"], env)
    del env["ALARMHUB_RESIDENT_OLD_KEYS"]
    exported = run(["journal", "export", "--alarm", alarm_id], env)
    assert (exported.returncode, exported.stderr.strip()) == (0, "journal: ready (not sent)")
    assert json.loads(exported.stdout)["entry"][3]["resource"]["identifier"][0]["value"] == NIN
    # One progress line per committed chunk: the register's, then the released notes'.
    progress = "resealed 1 so far, 0 skipped\nresealed 2 so far, 0 skipped\n"
    assert (done.returncode, done.stderr) == (0, progress)
    assert done.stdout == "resealed 2 number(s) under the current key\n"
    [(_actor, municipality, alarm, _detail)] = [
        r for r in audit_rows(tmp_path, "resident.rekeyed") if r[2] is not None
    ]
    assert (municipality, alarm) == ("0301", alarm_id)


def test_cancel_a_held_note(tmp_path: Path, run: Run, monkeypatch: pytest.MonkeyPatch) -> None:
    alarm_id, env = registered_then_given_to_ola(tmp_path, run, monkeypatch)
    asyncio.run(_held(tmp_path / "a.db", alarm_id))
    cancel = ["journal", "cancel", "--alarm", alarm_id]
    assert run([*cancel, "--municipality", "4601"], env).returncode == 1
    bad = run([*cancel, "--municipality", "Oslo"], env)
    assert bad.returncode == 2
    done = run([*cancel, "--municipality", "0301", "--reason", "Kari flyttet"], env)
    assert (done.returncode, done.stdout) == (
        0,
        f"cancelled the journal note of alarm {alarm_id}: it is never sent\n",
    )
    [row] = json.loads(run(["journal", "status", "--json"], env).stdout)
    assert (row["state"], row["reason"]) == ("cancelled", "Kari flyttet")
    assert row["finished_at"] is not None
    [(_actor, municipality, alarm, detail)] = audit_rows(tmp_path, "journal.cancelled")
    assert (municipality, alarm) == ("0301", alarm_id)
    assert json.loads(detail) == {"resident": "r-17", "reason": "Kari flyttet"}
    assert run([*cancel, "--municipality", "0301"], env).returncode == 1
