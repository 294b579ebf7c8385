"""`alarmhub cluster status` against a database with two instances, one of them stale."""

from __future__ import annotations

import json
from pathlib import Path

import asyncpg
import pytest

from alarmhub.cli.cluster import SINGLE
from alarmhub.store.cluster import InstanceInfo
from alarmhub.store.postgres.coordination import PgCoordination
from alarmhub.store.postgres.migrations import migrate
from tests.support.helpers import run_cli


async def _two_instances(url: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await migrate(conn)
    finally:
        await conn.close()
    coord = await PgCoordination.open(url)
    try:
        live = InstanceInfo("inst-live", "host-a", 101, "1.2.3")
        gone = InstanceInfo("inst-gone", "host-b", 202, "1.2.3")
        await coord.register_instance(gone)
        await coord.register_instance(live)
        assert await coord.acquire("intake", "inst-live", 600) is not None
        await coord.heartbeat(live, ["intake"])
    finally:
        await coord.close()
    conn = await asyncpg.connect(url)
    try:  # inst-gone's last heartbeat a minute ago: longer than the failover time
        await conn.execute(
            "UPDATE instances SET heartbeat_at = now() - interval '60 seconds' "
            "WHERE id = 'inst-gone'"
        )
    finally:
        await conn.close()


@pytest.mark.postgres
async def test_cluster_status_lists_instances_leases_and_marks_the_stale_one(
    pg_url: str,
) -> None:
    await _two_instances(pg_url)
    env = {"ALARMHUB_DATABASE_URL": pg_url, "ALARMHUB_FAILOVER_S": "15"}

    result = run_cli(["cluster", "status", "--json"], env)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    by_id = {i["id"]: i for i in out["instances"]}
    assert by_id["inst-live"]["state"] == "live"
    assert by_id["inst-live"]["owns"] == ["intake"]
    assert (by_id["inst-live"]["host"], by_id["inst-live"]["pid"]) == ("host-a", 101)
    assert by_id["inst-gone"]["state"] == "stale"
    assert by_id["inst-gone"]["heartbeat_age_s"] >= 60
    assert by_id["inst-gone"]["owns"] == []
    [lease] = out["leases"]
    assert (lease["name"], lease["holder"], lease["epoch"]) == ("intake", "inst-live", 1)
    assert 0 < lease["expires_in_s"] <= 600

    plain = run_cli(["cluster", "status"], env)
    assert plain.returncode == 0, plain.stderr
    lines = plain.stdout.splitlines()
    gone = next(line for line in lines if line.startswith("inst-gone"))
    live = next(line for line in lines if line.startswith("inst-live"))
    assert " stale " in gone
    assert " live " in live
    assert "intake" in live
    assert any(line.startswith("intake") and "inst-live" in line for line in lines)


def test_cluster_status_on_sqlite_says_one_instance_owns_everything(tmp_path: Path) -> None:
    env = {"ALARMHUB_DATABASE_URL": f"sqlite:///{tmp_path / 'a.db'}"}
    result = run_cli(["cluster", "status"], env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == SINGLE


@pytest.mark.postgres
async def test_cluster_status_on_an_unmigrated_database_says_what_to_do(pg_url: str) -> None:
    result = run_cli(["cluster", "status"], {"ALARMHUB_DATABASE_URL": pg_url})
    assert result.returncode == 1
    assert "alarmhub db migrate" in result.stderr
