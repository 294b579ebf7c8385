"""Scenarios for suppression and its end (issue 12 items 1, 2, 7, 8), on the virtual clock.

Each scripts a resident's night against the real daemon, broker and store
(tests/scenarios/scenario.py says how), one per item: what a review found lost, now
reaching an operator.
"""

from __future__ import annotations

import pytest

from tests.scenarios.scenario import door, pendant, tracker

pytestmark = pytest.mark.broker

HOME = (59.9139, 10.7522, 500)  # a safe zone in Oslo; 60.0 N is well outside it


async def test_item1_a_press_in_bergen_does_not_silence_oslos_r17(scenario):
    # Two people, both "r-17" in their own municipality's register.
    s = scenario(
        devices=[
            pendant("pend-b", resident="r-17", municipality="4601"),
            door("door-o", resident="r-17"),
        ]
    )
    await s.at("02:00").press("pend-b")
    await s.at("02:00:30").door_opened("door-o")
    await s.expect_alarm("door-o", "door_open_night", status="open", suppressed_by="")
    # p2: the supervisor after 300 s, as for any night door.
    await s.at("02:05:30").expect_alarm("door-o", "door_open_night", escalated_to="supervisor")
    await s.expect_queue("0301", [("door-o", "door_open_night", "open")])


async def test_item2_a_press_resolved_as_a_mistake_releases_the_safe_zone_alarm(scenario):
    s = scenario(
        devices=[
            pendant("pend-1", resident="r-17"),
            tracker("gps-1", resident="r-17", geofence=HOME),
        ]
    )
    await s.at("02:00").press("pend-1")
    await s.at("02:01").fix("gps-1", 60.0, 10.75)
    await s.expect_alarm("gps-1", "left_safe_zone", status="open", suppressed_by="inhibited")
    await s.at("02:03").resolve("pend-1", "button", outcome="pressed by mistake")
    # Back in the queue as an ordinary alarm, at once, with the release on its record.
    await s.expect_alarm("gps-1", "left_safe_zone", status="open", suppressed_by="")
    await s.expect_timeline(
        "gps-1", "left_safe_zone", "raised", "suppressed", "released", "escalated", exact=False
    )
    await s.expect_queue("0301", [("gps-1", "left_safe_zone", "open")])
    # Escalation runs from the release (02:03): the supervisor at 02:08, not never.
    await s.at("02:07:59").expect_escalations(
        "gps-1", "left_safe_zone", [("operator_queue", "02:03")]
    )
    await s.at("02:08").expect_alarm("gps-1", "left_safe_zone", escalated_to="supervisor")
    # Response time still counts from when it was raised.
    alarm = await s.alarm("gps-1", "left_safe_zone")
    assert alarm["raised_at"].startswith("2026-11-21T01:01")


async def test_item7_an_outage_incident_escalates_and_resolving_it_lets_go(scenario):
    homes = [pendant(f"pend-{i}") for i in range(10)]
    s = scenario(devices=homes)
    for i in range(10):
        await s.at(f"02:00:{i * 5:02d}").send(f"pend-{i}", "power.lost")
    await s.expect_alarm("municipality:0301", "incident", status="open", priority=2)
    await s.expect_alarm("pend-3", "power_lost", suppressed_by="incident")
    # The incident (raised with the tenth, at 02:00:45) has a policy: the supervisor
    # hears of the outage 300 s later.
    await s.at("02:05:45").expect_alarm("municipality:0301", "incident", escalated_to="supervisor")
    await s.at("02:30").resolve_incident(outcome="power back, checked")
    # Resolved by hand: every home still without power is back in the queue.
    await s.expect_alarm("pend-3", "power_lost", status="open", suppressed_by="")
    await s.expect_timeline("pend-3", "power_lost", "raised", "suppressed", "released", exact=False)
    assert len([row for row in await s.queue("0301") if row["kind"] == "power_lost"]) == 10


async def test_item8_a_municipality_silence_hides_doors_not_presses_and_ends(scenario):
    s = scenario(devices=[door("door-1", resident="r-5"), pendant("pend-2", resident="r-6")])
    await s.at("01:00").silence(until="03:00", reason="network maintenance")
    await s.at("02:00").door_opened("door-1")
    await s.expect_alarm("door-1", "door_open_night", status="open", suppressed_by="silence")
    await s.at("02:10").press("pend-2")
    # A press is never hidden by a silence that does not say so: it escalates.
    await s.expect_alarm("pend-2", "button", suppressed_by="")
    await s.at("02:11").expect_alarm("pend-2", "button", escalated_to="supervisor")
    # The silence ends at 03:00: the night door comes back and escalates from then.
    await s.at("03:00").expect_alarm("door-1", "door_open_night", status="open", suppressed_by="")
    await s.expect_timeline(
        "door-1", "door_open_night", "raised", "suppressed", "released", exact=False
    )
    await s.at("03:05").expect_alarm("door-1", "door_open_night", escalated_to="supervisor")


async def test_item8_a_silence_deleted_early_releases_at_once(scenario):
    s = scenario(devices=[door("door-1")])
    silence = await s.at("01:00").silence("door-1", until="06:00", reason="sensor replaced")
    await s.at("02:00").door_opened("door-1")
    await s.expect_alarm("door-1", "door_open_night", suppressed_by="silence")
    await s.at("02:20").end_silence(silence)
    await s.expect_alarm("door-1", "door_open_night", status="open", suppressed_by="")
    timeline = await s.timeline("door-1", "door_open_night")
    released = [e for e in timeline if e["type"] == "released"]
    assert [e["detail"]["reason"] for e in released] == ["silence_deleted"]
    assert released[0]["actor"] == "madm0301"
