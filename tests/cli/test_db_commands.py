"""`alarmhub db status`, `alarmhub db migrate`, and `alarmhub run` refusing a schema it does not know.

Through the real entry point (a subprocess), on real SQLite files and on a real
PostgreSQL database of each test's own. Older SQLite databases are made the way
an older alarmhub left them: the first migrations only. `run` is pointed at a
broker port where nothing listens: had it gone past the schema check it would
be reconnecting for ever instead of exiting.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import asyncpg
import orjson
import pytest

from alarmhub.dev.mosquitto import free_port
from alarmhub.settings import parse_database_url
from alarmhub.store import versions
from alarmhub.store.postgres.migrations import KNOWN_VERSION as PG_KNOWN
from alarmhub.store.schema_state import SchemaState, SchemaVersionError
from alarmhub.store.sqlite import migrations as lite
from alarmhub.store.sqlite.schema import MIGRATIONS
from tests.support.helpers import REPO, run_cli

SQLITE_KNOWN = len(MIGRATIONS)
OLDER = 9  # an alarmhub from before migrations 10 and 11


def env_for(url: str) -> dict[str, str]:
    # A broker port nobody listens on: `run` must refuse before it would connect.
    return {"ALARMHUB_DATABASE_URL": url, "ALARMHUB_MQTT_URL": f"mqtt://127.0.0.1:{free_port()}"}


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


def older_sqlite(path: Path, upto: int = OLDER) -> None:
    """A file as an older alarmhub left it: migrations 1..`upto` applied, no WAL."""
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE schema_version (version INTEGER)")
    for version, script in enumerate(MIGRATIONS[:upto], start=1):
        conn.executescript(script)
        conn.execute("INSERT INTO schema_version VALUES (?)", (version,))
    conn.commit()
    conn.close()


def sqlite_versions(path: Path) -> list[int]:
    conn = sqlite3.connect(path)
    try:
        return [r[0] for r in conn.execute("SELECT version FROM schema_version ORDER BY version")]
    finally:
        conn.close()


def journal_mode(path: Path) -> str:
    conn = sqlite3.connect(path)
    try:
        return str(conn.execute("PRAGMA journal_mode").fetchone()[0])
    finally:
        conn.close()


def status_json(env: dict[str, str]) -> tuple[int, dict[str, object]]:
    r = run_cli(["db", "status", "--json"], env)
    return r.returncode, orjson.loads(r.stdout)


def applying(stdout: str) -> list[int]:
    """The versions `db migrate` said it was applying, in order."""
    return [
        int(line.removeprefix("applying version ").split()[0])
        for line in stdout.splitlines()
        if line.startswith("applying version ")
    ]


def assert_run_refuses(env: dict[str, str], expected: str) -> None:
    r = run_cli(["run"], env, timeout=120)
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert r.stderr.strip().splitlines() == [f"alarmhub: {expected}"]


# --- SQLite ------------------------------------------------------------------


def test_status_of_a_missing_file_says_empty_and_creates_nothing(tmp_path: Path) -> None:
    db = tmp_path / "none.db"
    env = env_for(sqlite_url(db))
    r = run_cli(["db", "status"], env)
    assert r.returncode == 3, r.stderr
    assert "store:    sqlite" in r.stdout
    assert "version 0 found, this alarmhub knows" in r.stdout
    assert "empty" in r.stdout
    assert not db.exists()


def test_migrate_a_fresh_file_then_again_applies_nothing(tmp_path: Path) -> None:
    db = tmp_path / "fresh.db"
    env = env_for(sqlite_url(db))
    first = run_cli(["db", "migrate"], env)
    assert first.returncode == 0, first.stderr
    assert applying(first.stdout) == list(range(1, SQLITE_KNOWN + 1))
    assert f"the schema is now version {SQLITE_KNOWN}" in first.stdout
    second = run_cli(["db", "migrate"], env)
    assert second.returncode == 0, second.stderr
    assert applying(second.stdout) == []
    assert f"the schema is current (version {SQLITE_KNOWN}): nothing to apply" in second.stdout
    assert sqlite_versions(db) == list(range(1, SQLITE_KNOWN + 1))
    assert journal_mode(db) == "wal"  # as the store would have left it
    code, body = status_json(env)
    assert (code, body["state"], body["found"], body["known"]) == (
        0,
        "current",
        SQLITE_KNOWN,
        SQLITE_KNOWN,
    )
    assert body["store"] == "sqlite"


def test_an_older_file_is_refused_by_run_untouched_then_migrated(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    older_sqlite(db)
    env = env_for(sqlite_url(db))
    code, body = status_json(env)
    assert (code, body["state"], body["found"]) == (3, "behind", OLDER)
    assert_run_refuses(
        env,
        f"the database schema is version {OLDER}, this alarmhub needs {SQLITE_KNOWN}: "
        'run "alarmhub db migrate" first',
    )
    # Refused before anything was written: not even SQLite's switch to WAL.
    assert sqlite_versions(db) == list(range(1, OLDER + 1))
    assert journal_mode(db) == "delete"
    r = run_cli(["db", "migrate"], env)
    assert r.returncode == 0, r.stderr
    assert applying(r.stdout) == list(range(OLDER + 1, SQLITE_KNOWN + 1))
    assert sqlite_versions(db) == list(range(1, SQLITE_KNOWN + 1))
    assert status_json(env)[0] == 0


def test_a_newer_file_is_refused_by_migrate_and_run_and_left_as_it_was(tmp_path: Path) -> None:
    db = tmp_path / "new.db"
    env = env_for(sqlite_url(db))
    assert run_cli(["db", "migrate"], env).returncode == 0
    conn = sqlite3.connect(db)
    conn.execute("INSERT INTO schema_version VALUES (99)")
    conn.commit()
    conn.close()
    code, body = status_json(env)
    assert (code, body["state"], body["found"], body["known"]) == (4, "ahead", 99, SQLITE_KNOWN)
    r = run_cli(["db", "migrate"], env)
    assert r.returncode == 4
    [line] = r.stderr.strip().splitlines()
    assert line.startswith("alarmhub: the database schema is version 99, newer than this")
    assert "never downgrades" in line
    assert applying(r.stdout) == []
    assert_run_refuses(
        env,
        f"the database schema is version 99, newer than this alarmhub knows ({SQLITE_KNOWN}): "
        "upgrade alarmhub or point it at another database",
    )
    assert sqlite_versions(db) == [*range(1, SQLITE_KNOWN + 1), 99]


def test_a_file_that_is_no_database_is_one_line_and_exit_1(tmp_path: Path) -> None:
    db = tmp_path / "junk.db"
    db.write_bytes(b"not a database at all" * 100)
    r = run_cli(["db", "status"], env_for(sqlite_url(db)))
    assert r.returncode == 1
    [line] = r.stderr.strip().splitlines()
    assert line.startswith("alarmhub: cannot read the schema version of")


async def test_run_check_passes_an_empty_database_without_creating_it(tmp_path: Path) -> None:
    """An empty database is `run`'s to create (the tests and the demo rely on it)."""
    db = tmp_path / "sub" / "fresh.db"
    await versions.check_runnable(parse_database_url(sqlite_url(db)))
    assert not db.exists()
    older_sqlite(tmp_path / "old.db")
    with pytest.raises(SchemaVersionError) as refused:
        await versions.check_runnable(parse_database_url(sqlite_url(tmp_path / "old.db")))
    assert refused.value.status.state is SchemaState.BEHIND


async def test_two_migrations_of_one_file_at_once_apply_each_version_once(tmp_path: Path) -> None:
    db = tmp_path / "race.db"
    target = parse_database_url(sqlite_url(db))
    seen: list[int] = []
    both = await asyncio.gather(
        versions.migrate(target, seen.append), versions.migrate(target, seen.append)
    )
    assert sorted(both[0] + both[1]) == list(range(1, SQLITE_KNOWN + 1))
    assert sorted(seen) == list(range(1, SQLITE_KNOWN + 1))
    assert sqlite_versions(db) == list(range(1, SQLITE_KNOWN + 1))


# --- PostgreSQL --------------------------------------------------------------


async def pg_versions(url: str) -> list[int]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch("SELECT version FROM schema_version ORDER BY version")
    finally:
        await conn.close()
    return [int(r["version"]) for r in rows]


@pytest.mark.postgres
async def test_pg_status_migrate_and_migrate_again(pg_url: str) -> None:
    env = env_for(pg_url)
    code, body = status_json(env)
    assert (code, body["state"], body["found"], body["known"]) == (3, "empty", 0, PG_KNOWN)
    assert body["store"] == "postgresql"
    assert body["database"] == pg_url  # no password in it to hide
    first = run_cli(["db", "migrate"], env)
    assert first.returncode == 0, first.stderr
    assert applying(first.stdout) == list(range(1, PG_KNOWN + 1))
    second = run_cli(["db", "migrate"], env)
    assert second.returncode == 0, second.stderr
    assert applying(second.stdout) == []
    assert "nothing to apply" in second.stdout
    assert await pg_versions(pg_url) == list(range(1, PG_KNOWN + 1))
    assert status_json(env)[:1] == (0,)


@pytest.mark.postgres
async def test_pg_newer_schema_is_refused_by_migrate_and_run(pg_url: str) -> None:
    env = env_for(pg_url)
    assert run_cli(["db", "migrate"], env).returncode == 0
    conn = await asyncpg.connect(pg_url)
    try:
        await conn.execute("INSERT INTO schema_version (version) VALUES (99)")
    finally:
        await conn.close()
    code, body = status_json(env)
    assert (code, body["state"], body["found"]) == (4, "ahead", 99)
    r = run_cli(["db", "migrate"], env)
    assert r.returncode == 4
    assert "never downgrades" in r.stderr
    assert_run_refuses(
        env,
        f"the database schema is version 99, newer than this alarmhub knows ({PG_KNOWN}): "
        "upgrade alarmhub or point it at another database",
    )
    assert await pg_versions(pg_url) == [*range(1, PG_KNOWN + 1), 99]


@pytest.mark.postgres
@pytest.mark.skipif(PG_KNOWN < 2, reason="PostgreSQL has one schema version: none older exists")
async def test_pg_older_schema_is_refused_by_run_then_migrated(pg_url: str) -> None:
    conn = await asyncpg.connect(pg_url)
    try:
        older = parse_database_url(pg_url)
        await versions.migrate(older)
        # Take the newest version back out: what an alarmhub one release older left.
        await conn.execute("DELETE FROM schema_version WHERE version = $1", PG_KNOWN)
    finally:
        await conn.close()
    env = env_for(pg_url)
    assert status_json(env)[1]["state"] == "behind"
    assert_run_refuses(
        env,
        f"the database schema is version {PG_KNOWN - 1}, this alarmhub needs {PG_KNOWN}: "
        'run "alarmhub db migrate" first',
    )


@pytest.mark.postgres
async def test_pg_two_concurrent_migrate_commands_both_succeed_applying_once(
    pg_url: str,
) -> None:
    env = env_for(pg_url)
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("ALARMHUB_")} | env
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "alarmhub.cli", "db", "migrate"],
            env=full_env,
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    said = sorted(applying(outputs[0][0]) + applying(outputs[1][0]))
    assert said == list(range(1, PG_KNOWN + 1))
    assert await pg_versions(pg_url) == list(range(1, PG_KNOWN + 1))


@pytest.mark.postgres
async def test_pg_two_migrations_in_one_process_at_once_apply_each_version_once(
    pg_url: str,
) -> None:
    target = parse_database_url(pg_url)
    both = await asyncio.gather(versions.migrate(target), versions.migrate(target))
    assert sorted(both[0] + both[1]) == list(range(1, PG_KNOWN + 1))
    assert await pg_versions(pg_url) == list(range(1, PG_KNOWN + 1))


class LockedFor:
    """A connection whose journal-mode switch is refused "locked" the first `times`."""

    def __init__(self, times: int, message: str = "database is locked") -> None:
        self.left, self.message, self.calls = times, message, 0

    def execute(self, sql: str) -> None:
        assert sql == "PRAGMA journal_mode=WAL"
        self.calls += 1
        if self.left > 0:
            self.left -= 1
            raise sqlite3.OperationalError(self.message)


def test_a_wal_switch_refused_by_a_concurrent_one_is_tried_again_within_the_busy_timeout() -> None:
    """SQLite refuses one of two concurrent switches at once, without its busy handler
    (CI: two `db migrate` of one new file, one failed "database is locked")."""
    now = [0.0]

    def sleep(s: float) -> None:
        now[0] += s

    conn = LockedFor(3)
    lite.use_wal(conn, 5.0, sleep=sleep, monotonic=lambda: now[0])  # type: ignore[arg-type]
    assert conn.calls == 4
    stuck = LockedFor(10_000)
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        lite.use_wal(stuck, 5.0, sleep=sleep, monotonic=lambda: now[0])  # type: ignore[arg-type]
    assert now[0] >= 5.0  # gave up at the busy timeout, not before
    other = LockedFor(1, "disk I/O error")
    with pytest.raises(sqlite3.OperationalError, match="disk"):
        lite.use_wal(other, 5.0, sleep=sleep, monotonic=lambda: now[0])  # type: ignore[arg-type]
    assert other.calls == 1  # only a lock is waited out
