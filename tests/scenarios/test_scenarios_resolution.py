"""Scenarios for issue 12 items 3-6: resolution, merging and escalation policy.

One resident's night per item, on the virtual clock against the real hub, broker and
store (tests/scenarios/scenario.py says how). Each is the issue's own story of a lost alarm,
told the way it must end now.
"""

from __future__ import annotations

import pytest

from tests.scenarios.scenario import default_rules, dispenser, door, pendant

pytestmark = pytest.mark.broker


async def test_item3_a_door_closing_behind_the_resident_does_not_close_the_alarm(scenario):
    s = scenario(devices=[door("door-1", resident="r-17", night="22:00-07:00")])
    await s.at("02:00").door_opened("door-1")
    await s.at("02:00:20").door_closed("door-1")
    await s.expect_alarm("door-1", "door_open_night", status="open", clearing_event="door.closed")
    await s.at("02:05").expect_alarm(
        "door-1", "door_open_night", status="open", escalated_to="supervisor"
    )
    await s.expect_timeline(
        "door-1", "door_open_night", "raised", "escalated", "event", "escalated"
    )
    await s.expect_queue("0301", [("door-1", "door_open_night", "open")])
    # A person closes it.
    await s.at("02:06").resolve("door-1", "door_open_night", outcome="resident found, back in bed")
    await s.expect_queue("0301", [])


async def test_item3_the_pendants_own_cancel_waits_for_an_operator(scenario):
    s = scenario(devices=[pendant("pend-1")])
    await s.at("03:00").press("pend-1")
    await s.at("03:00:10").cancel("pend-1")
    await s.at("03:01").expect_alarm(
        "pend-1",
        "button",
        status="open",
        clearing_event="button.cancelled",
        escalated_to="supervisor",
    )


async def test_item4_a_test_press_left_open_never_swallows_a_real_press_a_week_later(scenario):
    s = scenario(devices=[pendant("pend-1", resident="r-1")])
    # Maintenance: a silence on the pendant, and a test press during it, never resolved.
    await s.at("13:00").silence(
        device="pend-1", until="15:00", reason="battery change", include_priority_1=True
    )
    await s.at("13:30").press("pend-1")
    await s.expect_alarm("pend-1", "button", suppressed_by="silence")
    # A week later, at night, the real press.
    await s.at("+7d 02:00").press("pend-1")
    real = await s.expect_alarm("pend-1", "button", status="open", suppressed_by="", repeat_count=0)
    assert real["raised_at"].startswith("2026-11-28T01:00")  # 02:00 Oslo, a week on
    await s.expect_alarm_count("pend-1", "button", 2)
    await s.at("+7d 02:01").expect_alarm("pend-1", "button", escalated_to="supervisor")


async def test_item4_pressing_again_after_acknowledgement_re_alerts_the_queue(scenario):
    s = scenario(devices=[pendant("pend-1", resident="r-1")])
    await s.at("02:00").press("pend-1")
    await s.at("02:00:30").acknowledge("pend-1", "button")
    await s.at("02:10").press("pend-1")
    # Back in the queue as open, still naming who took it; a fresh escalation from 02:10.
    await s.expect_alarm(
        "pend-1", "button", status="open", acknowledged_by="op0301", repeat_count=1
    )
    await s.expect_queue("0301", [("pend-1", "button", "open")])
    await s.at("02:11").expect_escalations(
        "pend-1",
        "button",
        [("operator_queue", "02:00"), ("operator_queue", "02:10"), ("supervisor", "02:11")],
    )
    await s.expect_alarm_count("pend-1", "button", 1)
    # Taken again: the response time counted is still the first acknowledgement's.
    await s.at("02:11:30").acknowledge("pend-1", "button")
    await s.expect_alarm("pend-1", "button", status="acknowledged")
    counted = s.hub.metrics.registry.get_sample_value(
        "alarmhub_time_to_acknowledge_seconds_count", {"priority": "1", "municipality": "0301"}
    )
    assert counted == 1


async def test_item5_an_unanswered_dose_alarm_says_its_escalation_ran_out(scenario):
    s = scenario(devices=[dispenser("disp-1")])
    await s.at("12:30").send("disp-1", "dose.missed")
    # p3: the queue at once, the supervisor after 900 s; then nobody is left to tell.
    await s.at("12:45").expect_alarm(
        "disp-1", "dose_missed", status="open", escalated_to="supervisor"
    )
    alarm = await s.expect_alarm("disp-1", "dose_missed")
    assert alarm["escalation_exhausted_at"] is not None
    assert alarm["escalation_exhausted_at"].startswith("2026-11-20T11:45")  # 12:45 Oslo
    entries = await s.expect_timeline(
        "disp-1", "dose_missed", "raised", "escalated", "escalated", "escalation_exhausted"
    )
    assert entries[-1]["detail"]["policy"] == "p3"
    exhausted = s.hub.metrics.registry.get_sample_value(
        "alarmhub_escalations_exhausted_total", {"priority": "3"}
    )
    assert exhausted == 1


async def test_item6_a_reload_that_drops_an_open_alarms_policy_is_refused(scenario):
    s = scenario(devices=[pendant("pend-1")], rules=default_rules())
    await s.at("02:00").press("pend-1")
    kept = s.hub.rules.version
    renamed = (
        default_rules()
        .replace("[policies.p1]", "[policies.urgent]")
        .replace(
            'alarm = "button"\npriority = 1', 'alarm = "button"\npriority = 1\npolicy = "urgent"'
        )
        .replace('alarm = "fall"\npriority = 1', 'alarm = "fall"\npriority = 1\npolicy = "urgent"')
    )
    s.settings.rules.write_text(renamed)
    assert s.hub.reload_rules() is False
    assert s.hub.rules.version == kept
    # The open alarm keeps escalating under the rules in force.
    await s.at("02:01").expect_alarm("pend-1", "button", escalated_to="supervisor")
    await s.at("02:03").expect_alarm("pend-1", "button", escalated_to="external_responder")
