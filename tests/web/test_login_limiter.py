"""Login slow-down (issue 13 item 7): failures only, per (user name, address), never evicted.

The first three run the real app in-process over HTTP, on the virtual clock the
limiter reads its time from; the last is a table of plain values for the limiter.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from alarmhub.clock import FakeClock
from alarmhub.dev.mosquitto import LocalBroker
from alarmhub.web import context
from alarmhub.web.context import LoginLimiter
from tests.support.api_harness import login, stack

T0 = datetime(2026, 11, 22, 8, 0, tzinfo=UTC)


@pytest.mark.broker
async def test_successful_logins_are_never_counted(
    tmp_path: Path, broker: LocalBroker, client_id: str
) -> None:
    # An operator logs in many times a shift (new tab, new machine, after a logout).
    async with (
        stack(tmp_path, broker, client_id, alarms=False, clock=FakeClock(T0)) as s,
        s.client() as c,
    ):
        codes = [(await login(c, "op0301")).status_code for _ in range(12)]
        assert codes == [303] * 12


@pytest.mark.broker
async def test_failures_slow_down_one_pair_and_nobody_else(
    tmp_path: Path, broker: LocalBroker, client_id: str
) -> None:
    clock = FakeClock(T0)
    async with stack(tmp_path, broker, client_id, alarms=False, clock=clock) as s, s.client() as c:
        codes = [(await login(c, "op0301", "wrong-password")).status_code for _ in range(5)]
        assert codes == [401] * 5
        slowed = await login(c, "op0301")  # even the right password waits its turn
        assert (slowed.status_code, slowed.json()["error"]["code"]) == (429, "rate_limited")
        assert slowed.headers["Retry-After"] == "1"
        # Another user name from the same address (a response centre behind one NAT).
        assert (await login(c, "op4601")).status_code == 303

        # Slower with each failure, never more than a minute: a slow-down, not a lock-out.
        waits = []
        for _ in range(10):
            clock.advance(timedelta(seconds=61))
            assert (await login(c, "op0301", "wrong-password")).status_code == 401
            waits.append(int((await login(c, "op0301")).headers["Retry-After"]))
        assert waits == [2, 4, 8, 16, 32, 60, 60, 60, 60, 60]

        clock.advance(timedelta(seconds=60))
        assert (await login(c, "op0301")).status_code == 303  # and the count starts over
        codes = [(await login(c, "op0301", "wrong-password")).status_code for _ in range(5)]
        assert codes == [401] * 5


@pytest.mark.broker
async def test_a_flood_of_junk_names_resets_no_count(
    tmp_path: Path, broker: LocalBroker, client_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(context, "MAX_TRACKED_KEYS", 20)  # the default is 10,000: same logic
    clock = FakeClock(T0)
    async with stack(tmp_path, broker, client_id, alarms=False, clock=clock) as s, s.client() as c:
        for _ in range(5):
            await login(c, "op0301", "wrong-password")
        assert (await login(c, "op0301")).status_code == 429
        # Junk user names from one address (uvicorn takes X-Forwarded-For from a proxy on
        # 127.0.0.1) fill the table and more, each a failed login of its own pair.
        attacker = {"X-Forwarded-For": "10.9.0.1"}
        for i in range(30):
            junk = await login(c, f"junk-{i}", "x", **attacker)
            assert junk.status_code in (401, 429)
        assert (await login(c, "op0301")).status_code == 429  # still counted
        # A fresh pair that finds the table full shares its address's overflow count:
        # filling the table first does not buy unlimited guesses under a new name...
        assert (await login(c, "madm0301", "wrong-password", **attacker)).status_code == 429
        # ...but the overflow is the attacker's address's, not everyone's: madm0301 at
        # her own desk logs in (one count for all made every fresh login wait behind
        # the attacker's guesses).
        assert (await login(c, "madm0301")).status_code == 303
        clock.advance(timedelta(minutes=15))  # every count forgotten: room again
        assert (await login(c, "op0301")).status_code == 303


def test_the_overflow_counts_are_per_address_and_bounded() -> None:
    limiter = LoginLimiter(max_keys=100)  # room for 10 addresses' overflow counts
    for i in range(100):  # the table is full of live counts
        limiter.failed(limiter.key(f"junk-{i}", "10.9.0.1"), 0.0)
    guess = limiter.key("kari", "10.9.0.1")  # a fresh pair from the attacker's address
    for _ in range(6):
        assert guess not in limiter._failures
        limiter.failed(guess, 1.0)
    assert limiter.wait(guess, 1.0) == pytest.approx(2.0)
    desk = limiter.key("ola", "10.0.0.7")
    assert limiter.wait(desk, 1.0) is None  # another address is not slowed
    # Overflow counts from many addresses stay bounded; beyond them one count is shared.
    for i in range(1000):
        limiter.failed(limiter.key("x", f"10.1.{i // 256}.{i % 256}"), 2.0)
    assert len(limiter) <= 100 + 10 + 1  # the table, the addresses, the shared count
    assert limiter.wait(limiter.key("y", "10.2.0.1"), 2.0) is not None  # shared, slowed
    assert limiter.wait(guess, 2.0) is not None  # the attacker's own count is kept


def test_the_table_is_bounded_and_keeps_live_counts() -> None:
    limiter = LoginLimiter(max_keys=100)
    target = limiter.key("kari", "10.0.0.7")
    for _ in range(5):
        limiter.failed(target, 0.0)
    for i in range(10_000):
        junk = limiter.key(f"junk-{i}", f"10.1.{i // 256}.{i % 256}")
        if limiter.wait(junk, 0.5) is None:
            limiter.failed(junk, 0.5)
    assert len(limiter) <= 100 + 10 + 1  # the table, overflow addresses, the shared count
    assert limiter.wait(target, 0.5) == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("failures", "since_last_s", "wait"),
    [
        (4, 0.0, None),  # the first five are free
        (5, 0.0, 1.0),
        (5, 0.4, 0.6),
        (5, 1.0, None),
        (6, 0.0, 2.0),
        (10, 0.0, 32.0),
        (11, 0.0, 60.0),  # capped
        (50, 0.0, 60.0),
        (50, 899.0, None),
        (50, 900.0, None),  # forgotten after 15 minutes
    ],
)
def test_wait_after_failures(failures: int, since_last_s: float, wait: float | None) -> None:
    limiter = LoginLimiter()
    key = limiter.key("Kari", "10.0.0.7")
    for _ in range(failures):
        limiter.failed(key, 100.0)
    got = limiter.wait(key, 100.0 + since_last_s)
    assert got == (pytest.approx(wait) if wait is not None else None)
    assert limiter.wait(limiter.key("kari", "10.0.0.8"), 100.0) is None  # another address
    assert limiter.wait(limiter.key("KARI", "10.0.0.7"), 100.0 + since_last_s) == got
    limiter.succeeded(key)
    assert limiter.wait(key, 100.0 + since_last_s) is None
