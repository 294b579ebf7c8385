from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from alarmhub.mosquitto import LocalBroker, mosquitto_binary


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[LocalBroker]:
    """A real Mosquitto on a free loopback port, with persistence, owned by this test."""
    if mosquitto_binary() is None:
        pytest.fail("mosquitto is not installed: `apt-get install mosquitto` (CI installs it)")
    with LocalBroker(tmp_path / "broker") as b:
        yield b


@pytest.fixture
def client_id(request: pytest.FixtureRequest) -> str:
    """A persistent-session id unique to the test, derived from its name."""
    return "t-" + re.sub(r"[^A-Za-z0-9_-]", "-", request.node.name)[:80]
