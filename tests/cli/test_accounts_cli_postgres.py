"""The account commands on PostgreSQL (issue 15): `ALARMHUB_DATABASE_URL=postgresql://…`.

The real CLI, one process per command as an administrator runs it, against a
database of the test's own that starts empty: the first command migrates it,
the others find it migrated. Every change must leave its audit row, read back
both through `alarmhub audit list` and from the table itself.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from alarmhub.core.people import Role, User
from alarmhub.store.postgres.directory import opened_directory
from tests.support.helpers import run_cli

pytestmark = pytest.mark.postgres


async def test_users_and_tokens_commands_work_on_postgresql_and_audit_every_change(
    pg_url: str,
) -> None:
    env = {"ALARMHUB_DATABASE_URL": pg_url}

    def cli(*args: str) -> str:
        result = run_cli(list(args), env)
        assert result.returncode == 0, result.stderr
        return result.stdout

    assert "created admin root" in cli("users", "create", "--name", "root", "--role", "admin")
    cli("users", "create", "--name", "kari", "--role", "operator", "--municipality", "0301")
    again = run_cli(["users", "create", "--name", "kari", "--role", "admin"], env)
    assert again.returncode == 1
    assert "already exists" in again.stderr
    assert cli("users", "disable", "--name", "kari").strip() == "kari disabled"
    assert cli("users", "disable", "--name", "kari").strip() == "kari was already disabled"
    assert cli("users", "set-hpr", "--name", "kari", "--hpr", "1234567") == (
        "kari: HPR number 1234567\n"
    )
    users = json.loads(cli("users", "list", "--json"))
    assert [(u["name"], u["role"], u["municipalities"], u["active"], u["hpr"]) for u in users] == [
        ("kari", "operator", ["0301"], False, "1234567"),
        ("root", "admin", [], True, None),
    ]

    token = cli("tokens", "create", "--user", "root", "--expires", "7").strip().splitlines()[-1]
    [listed] = json.loads(cli("tokens", "list", "--json"))
    assert (listed["user"], listed["state"]) == ("root", "active")
    async with opened_directory(pg_url) as directory:  # what the API would authenticate
        now = datetime.now(UTC)
        assert await directory.user_for_token(token, now) == User("root", Role.ADMIN, ())
    assert f"token {listed['id']} of root revoked" in cli("tokens", "revoke", listed["id"])
    [listed] = json.loads(cli("tokens", "list", "--json", "--user", "root"))
    assert listed["state"] == "revoked"
    missing = run_cli(["tokens", "create", "--user", "nobody"], env)
    assert missing.returncode == 1
    assert "no user 'nobody'" in missing.stderr

    audit = json.loads(cli("audit", "list", "--json"))
    assert [r["action"] for r in audit] == [
        "token.revoked",
        "token.created",
        "user.hpr_set",
        "user.disabled",
        "user.created",
        "user.created",
    ]
    assert all(r["actor"].startswith("cli:") for r in audit)
    assert audit[0]["detail"] == {"token_id": listed["id"], "user": "root"}
    assert audit[2]["detail"] == {"user": "kari", "hpr": "1234567"}
    assert audit[3]["detail"] == {"user": "kari"}

    async with opened_directory(pg_url) as directory:
        assert await directory.user_for_token(token, now) is None
        assert await directory.password_hash_of("kari") == (None, None)
        assert await directory.list_audit() == audit


def test_run_names_an_unreachable_postgresql_in_one_line_without_its_password() -> None:
    url = "postgresql://alarmhub:s3cret@127.0.0.1:9/none"
    result = run_cli(["run"], {"ALARMHUB_DATABASE_URL": url})
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert "127.0.0.1:9" in lines[0]
    assert "s3cret" not in result.stderr
