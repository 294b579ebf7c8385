from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from alarmhub.dev.mosquitto import LocalBroker, mosquitto_binary
from tests.scenarios.scenario import scenario  # noqa: F401 - the scenario suite's fixture, for every test
from tests.support.postgres import scratch_database

RAM_DISK = Path("/dev/shm")


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[LocalBroker]:
    """A real Mosquitto on a free loopback port, with persistence, owned by this test.

    Its store lives on a RAM disk where there is one. Saving on every change (as in
    production) rewrites the broker's whole store per queued message: on this
    machine's disk a 3,000-message flood took 9.5 s through the broker instead of
    1.6 s, and that decided timing-sensitive tests by the disk. A kill -9 of the
    broker keeps a RAM disk's files, so restart tests still test its persistence;
    alarmhub's own database stays on disk, where its fsync is what is under test.
    Its log is copied next to the test's other files at the end.
    """
    if mosquitto_binary() is None:
        pytest.fail("mosquitto is not installed: `apt-get install mosquitto` (CI installs it)")
    if not (RAM_DISK.is_dir() and os.access(RAM_DISK, os.W_OK)):
        with LocalBroker(tmp_path / "broker") as b:
            yield b
        return
    with tempfile.TemporaryDirectory(dir=RAM_DISK, prefix="alarmhub-test-broker-") as ram:
        try:
            with LocalBroker(Path(ram) / "broker") as b:
                yield b
        finally:
            kept = tmp_path / "broker"
            kept.mkdir(exist_ok=True)
            for log in Path(ram).glob("broker/*.log"):
                shutil.copy(log, kept / log.name)


@pytest.fixture
def client_id(request: pytest.FixtureRequest) -> str:
    """A persistent-session id unique to the test, derived from its name."""
    return "t-" + re.sub(r"[^A-Za-z0-9_-]", "-", request.node.name)[:80]


@pytest.fixture
async def pg_url() -> AsyncIterator[str]:
    """The URL of an empty PostgreSQL database of this test's own (tests/support/postgres.py)."""
    async with scratch_database() as url:
        yield url
