"""OncePer: a repeating problem logged once per interval, and its keys bounded.

Keys can come from the wire (a dead letter's device id from its topic): 2,000 ghost
ids kept 2,000 keys for ever (found in review, 2026-12-06).
"""

from __future__ import annotations

from alarmhub.observability.logs import OncePer


def test_a_repeat_is_suppressed_and_counted_until_the_interval_passes() -> None:
    once = OncePer(interval_s=3600)
    assert once.should_log("k") == (True, 0)
    assert once.should_log("k") == (False, 0)
    assert once.should_log("k") == (False, 0)
    zero = OncePer(interval_s=0)
    assert zero.should_log("k") == (True, 0)
    assert zero.should_log("k") == (True, 0)


def test_keys_from_a_flood_of_new_ids_stay_bounded() -> None:
    once = OncePer(interval_s=3600, max_keys=100)
    for i in range(2000):
        assert once.should_log(f"dead_letter:unknown_device:ghost-{i}") == (True, 0)
    assert len(once) <= 100
    # A problem still repeating is kept, with its count, when it is among the newest.
    assert once.should_log("dead_letter:unknown_device:ghost-1999") == (False, 0)


def test_keys_past_their_interval_with_nothing_suppressed_are_forgotten_first() -> None:
    once = OncePer(interval_s=0, max_keys=10)
    for i in range(50):
        once.should_log(f"k{i}")
    assert len(once) <= 10
