"""deploy/postgresql/alarmhub.conf is a file PostgreSQL accepts, with the settings alarmhub needs.

A private server (tests/support/pg_server.py) includes the file and starts (an
unknown name stops it at start); the `pg_file_settings` view then names every
line PostgreSQL could not apply, which must be none. The commented example of
`synchronous_standby_names` is checked the same way, uncommented.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

import asyncpg
import pytest

from tests.support.pg_server import PgServer

pytestmark = pytest.mark.postgres

CONF = Path(__file__).resolve().parents[2] / "deploy" / "postgresql" / "alarmhub.conf"
EXAMPLE = "#synchronous_standby_names = 'ANY 1 (pg_b, pg_c)'"


async def settings_of(text: str) -> tuple[list[tuple[object, ...]], dict[str, str]]:
    """(the lines PostgreSQL refused, SHOW of a few names) for a server including `text`."""
    server = PgServer()
    try:
        copy = server.data / "alarmhub.conf"
        copy.write_text(text)
        with (server.data / "postgresql.conf").open("a") as conf:
            conf.write("\ninclude 'alarmhub.conf'\n")
        if os.geteuid() == 0:
            shutil.chown(copy, "postgres")
        await asyncio.to_thread(server.start)
        conn = await asyncpg.connect(server.url())
        try:
            errors = [
                tuple(r)
                for r in await conn.fetch(
                    "SELECT sourceline, name, error FROM pg_file_settings WHERE error IS NOT NULL"
                )
            ]
            names = (
                "synchronous_commit",
                "synchronous_standby_names",
                "wal_level",
                "max_connections",
                "idle_in_transaction_session_timeout",
                "tcp_keepalives_idle",
            )
            shown = {n: str(await conn.fetchval(f"SHOW {n}")) for n in names}
        finally:
            await conn.close()
        return errors, shown
    finally:
        server.close()


async def test_postgresql_accepts_every_line_and_alarmhub_gets_synchronous_commit() -> None:
    errors, shown = await settings_of(CONF.read_text())
    assert errors == []
    assert shown["synchronous_commit"] == "on"
    assert shown["wal_level"] == "replica"
    assert shown["idle_in_transaction_session_timeout"] == "1min"
    assert shown["tcp_keepalives_idle"] == "30"
    # The budget in the file's comment: three instances of 16 connections fit with room.
    assert int(shown["max_connections"]) >= 3 * 16 + 20


async def test_the_synchronous_standby_example_is_valid_and_a_typo_is_caught() -> None:
    text = CONF.read_text()
    assert EXAMPLE in text
    errors, shown = await settings_of(text.replace(EXAMPLE, EXAMPLE.lstrip("#")))
    assert errors == []
    assert shown["synchronous_standby_names"] == "ANY 1 (pg_b, pg_c)"
    # The check can fail: a misspelt name stops the server at start, with its name.
    with pytest.raises(RuntimeError, match='unrecognized configuration parameter "wal_levle"'):
        await settings_of(text.replace("wal_level", "wal_levle"))
