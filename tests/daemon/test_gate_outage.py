"""The write gate through a database outage: retried until it answers, logged once."""

from __future__ import annotations

import asyncio

from structlog.testing import capture_logs

from alarmhub.daemon.gate import WriteGate
from alarmhub.observability.metrics import Metrics
from alarmhub.store.errors import StoreUnavailableError


async def test_an_outage_is_retried_until_it_ends_and_logged_once() -> None:
    metrics = Metrics()
    gate = WriteGate(metrics.commit_failures, metrics.store_writable, asyncio.Event())
    attempts: list[int] = []

    async def commit() -> str:
        attempts.append(len(attempts))
        if len(attempts) <= 4:
            raise StoreUnavailableError("ConnectionRefusedError: connect call failed")
        return "committed"

    with capture_logs() as logs:
        assert await gate.until_committed(commit) == "committed"
        attempts.clear()
        assert await gate.until_committed(commit) == "committed"  # a second outage
    assert [e["event"] for e in logs] == [
        "store.unavailable",
        "store.recovered",
        "store.unavailable",
        "store.recovered",
    ]
    assert metrics.commit_failures._value.get() == 8
    assert metrics.store_writable._value.get() == 1
