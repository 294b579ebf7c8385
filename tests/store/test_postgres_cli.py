"""The CLI on a PostgreSQL URL: the same commands, one line when the server is out of reach."""

from __future__ import annotations

import orjson
import pytest

from alarmhub.dev.mosquitto import free_port
from tests.support.helpers import run_cli


def test_a_server_out_of_reach_is_one_line_without_the_password() -> None:
    url = f"postgresql://alarmhub:s3cret@127.0.0.1:{free_port()}/alarmhub"
    result = run_cli(["alarms", "list"], {"ALARMHUB_DATABASE_URL": url})
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "out of reach" in lines[0]
    assert "s3cret" not in result.stderr


@pytest.mark.postgres
def test_alarm_and_dead_letter_lists_on_an_empty_postgresql_database(pg_url: str) -> None:
    env = {"ALARMHUB_DATABASE_URL": pg_url}
    listed = run_cli(["alarms", "list", "--json"], env)
    assert listed.returncode == 0, listed.stderr
    assert orjson.loads(listed.stdout) == []
    letters = run_cli(["dead-letters", "list"], env)
    assert letters.returncode == 0, letters.stderr
