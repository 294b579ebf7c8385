"""Baseline scenarios: behaviour that is right today, so the scenario harness itself is proven.

Each scripts part of a resident's night on the virtual clock (tests/scenarios/scenario.py says how).
"""

from __future__ import annotations

import pytest

from tests.scenarios.scenario import dispenser, door, pendant, tracker

pytestmark = pytest.mark.broker


async def test_pendant_press_escalates_per_policy_until_acknowledged(scenario):
    s = scenario(devices=[pendant("pend-1", resident="r-1")])
    press = await s.at("02:00").press("pend-1")
    await s.expect_receipt("pend-1", press, "accepted")
    await s.expect_alarm("pend-1", "button", status="open", priority=1, level=1)
    await s.expect_queue("0301", [("pend-1", "button", "open")])
    # p1: the queue at once, the supervisor after 60 s, the external responder after 180 s.
    await s.at("02:00:59").expect_escalations("pend-1", "button", [("operator_queue", "02:00")])
    await s.at("02:01").expect_alarm("pend-1", "button", level=2, escalated_to="supervisor")
    await s.at("02:02:30").acknowledge("pend-1", "button")
    await s.expect_alarm("pend-1", "button", status="acknowledged", acknowledged_by="op0301")
    await s.expect_receipt("pend-1", press, "handled")
    # Acknowledged: the 180 s step and later rounds never fire.
    await s.at("02:20").expect_escalations(
        "pend-1", "button", [("operator_queue", "02:00"), ("supervisor", "02:01")]
    )
    await s.at("02:25").resolve("pend-1", "button", outcome="helped")
    await s.expect_alarm(
        "pend-1", "button", status="resolved", outcome="helped", resolved_by="op0301"
    )
    await s.expect_timeline(
        "pend-1", "button", "raised", "escalated", "escalated", "acknowledged", "resolved"
    )
    await s.expect_queue("0301", [])


async def test_unanswered_press_reaches_the_external_responder(scenario):
    s = scenario(devices=[pendant("pend-1")])
    await s.at("03:10").press("pend-1")
    await s.at("03:13").expect_alarm(
        "pend-1",
        "button",
        status="open",
        level=3,
        escalated_to=["supervisor", "external_responder"],
    )
    await s.expect_escalations(
        "pend-1",
        "button",
        [("operator_queue", "03:10"), ("supervisor", "03:11"), ("external_responder", "03:13")],
    )
    await s.expect_notified("pend-1", "button", ["supervisor", "external_responder"])


async def test_repeated_presses_and_a_redelivery_are_one_alarm(scenario):
    s = scenario(devices=[pendant("pend-1")])
    first = await s.at("01:00").press("pend-1")
    await s.at("01:00:05").resend("pend-1", first)  # no receipt reached the device: same message
    await s.expect_receipt("pend-1", first, "accepted", duplicate=True)
    await s.expect_inbox("pend-1", first, verdict="logged", events=["new"])
    await s.at("01:00:10").press("pend-1")  # pressed again
    alarm = await s.expect_alarm("pend-1", "button", status="open", repeat_count=1)
    assert alarm["raised_at"].startswith("2026-11-21T00:00:00")  # 01:00 local: the first press
    await s.expect_alarm_count("pend-1", "button", 1)


async def test_night_door_opening_raises_an_alarm_and_a_daytime_one_does_not(scenario):
    s = scenario(devices=[door("door-1", resident="r-17", night="22:00-07:00")])
    daytime = await s.at("14:00").door_opened("door-1")
    await s.expect_inbox("door-1", daytime, verdict="logged", events=["logged"])
    await s.expect_no_alarm("door-1", "door_open_night")
    await s.at("02:00").door_opened("door-1")
    await s.at("02:05").expect_alarm(
        "door-1", "door_open_night", status="open", priority=2, escalated_to="supervisor"
    )
    await s.expect_escalations(
        "door-1", "door_open_night", [("operator_queue", "02:00"), ("supervisor", "02:05")]
    )


async def test_heartbeats_keep_a_device_online_and_silence_raises_device_offline(scenario):
    s = scenario(devices=[pendant("pend-1", heartbeat_s=300)])
    for t in ("12:05", "12:10", "12:15", "12:20"):
        await s.at(t).heartbeat("pend-1")
    # Offline after 3 intervals without a message: silent since 12:20, overdue after 12:35.
    await s.at("12:35").expect_no_alarm("pend-1", "device_offline")
    await s.at("12:35:01").expect_alarm("pend-1", "device_offline", status="open", priority=4)
    await s.at("12:40").heartbeat("pend-1")  # heard again: the technical alarm clears itself
    await s.expect_alarm("pend-1", "device_offline", status="resolved", outcome="auto")
    await s.at("+1d 02:00").expect_alarm_count(
        "pend-1", "device_offline", 2
    )  # silent again since 12:40


async def test_operators_see_only_their_own_municipality(scenario):
    s = scenario(devices=[pendant("osl-1"), pendant("brg-1", municipality="4601")])
    await s.at("23:00").press("osl-1")
    await s.at("23:00:30").press("brg-1")
    await s.expect_queue("0301", [("osl-1", "button", "open")])
    await s.expect_queue("4601", [("brg-1", "button", "open")])
    await s.acknowledge("brg-1", "button", by="op0301", expect_status=404)


async def test_a_dose_not_taken_in_its_window_raises_dose_missed(scenario):
    s = scenario(devices=[dispenser("disp-1", doses=["20:00"], window_min=30)])
    await s.at("20:30").expect_no_alarm("disp-1", "dose_missed")
    await s.at("20:30:01").expect_alarm("disp-1", "dose_missed", status="open", priority=3)
    await s.at("21:10").dose_taken("disp-1")  # late: the dispenser says it was taken after all
    await s.expect_alarm("disp-1", "dose_missed", status="resolved")


async def test_a_silenced_device_s_technical_alarm_is_recorded_as_suppressed(scenario):
    s = scenario(devices=[pendant("pend-1")])
    await s.at("21:55").silence("pend-1", until="06:00", reason="new battery tomorrow")
    await s.at("23:00").send("pend-1", "battery.low", battery_pct=8)
    await s.expect_alarm("pend-1", "battery_low", status="open", suppressed_by="silence")
    await s.expect_escalations("pend-1", "battery_low", [])  # not escalated on its own
    await s.expect_timeline("pend-1", "battery_low", "raised", "suppressed", exact=False)


async def test_many_silent_devices_at_once_are_one_outage_incident(scenario):
    homes = [pendant(f"pend-{i}", heartbeat_s=60) for i in range(10)]
    s = scenario(devices=homes)
    for i in range(10):  # all heard at 12:01, then the mobile network goes down
        await s.at("12:01").heartbeat(f"pend-{i}")
    await s.at("12:30").expect_alarm("municipality:0301", "incident", status="open", priority=2)
    for i in range(10):
        await s.expect_alarm(f"pend-{i}", "device_offline", suppressed_by="incident")
    await s.expect_queue(
        "0301",
        [("municipality:0301", "incident", "open")]
        + [(f"pend-{i}", "device_offline", "open") for i in range(10)],
        ordered=False,
    )
    await s.at("12:45").resolve_incident(outcome="network restored")
    await s.expect_alarm(
        "municipality:0301", "incident", status="resolved", outcome="network restored"
    )


async def test_a_tracker_leaving_its_safe_zone_raises_an_alarm(scenario):
    s = scenario(devices=[tracker("gps-1", resident="r-3", geofence=(59.91, 10.75, 500))])
    inside = await s.at("15:00").fix("gps-1", 59.9105, 10.7505)
    await s.expect_inbox("gps-1", inside, events=["logged"])
    await s.at("15:20").fix("gps-1", 59.95, 10.75, accuracy_m=15)  # 4.4 km north
    await s.expect_alarm("gps-1", "left_safe_zone", status="open", priority=2)


async def test_bad_input_is_a_dead_letter_with_a_rejected_receipt(scenario):
    s = scenario(devices=[pendant("pend-1")])
    await s.at("02:00").publish("alarmhub/v1/pend-1/events", b'{"id": "m1", "ts": ')
    await s.expect_dead_letter("pend-1", "malformed_json")
    await s.at("02:00:10").send("pend-1", "button.smashed", msg_id="m2")
    await s.expect_dead_letter("pend-1", "unknown_type")
    await s.expect_receipt("pend-1", "m2", "rejected", reason="unknown_type")
    await s.send("nobody-9", "button.pressed")  # not registered
    await s.expect_dead_letter("nobody-9", "unknown_device")


async def test_a_press_while_alarmhub_is_down_is_raised_when_it_is_back(scenario):
    s = scenario(devices=[pendant("pend-1")])
    await s.at("02:00").stop_hub()
    press = await s.at("02:10").press("pend-1")  # waits at the broker (persistent session)
    assert s.inbox("pend-1") == []  # nothing of alarmhub runs (and the API is down with it)
    await s.at("02:30").start_hub()
    await s.expect_receipt("pend-1", press, "accepted")
    await s.expect_alarm("pend-1", "button", status="open", escalated_to="operator_queue")
    await s.at("02:31").expect_alarm("pend-1", "button", escalated_to="supervisor")


async def test_an_escalation_step_due_while_down_fires_once_on_start(scenario):
    s = scenario(devices=[pendant("pend-1")])
    await s.at("02:00").press("pend-1")
    await s.at("02:00:30").restart(down_until="02:05")
    # Down across the 02:01, 02:03 and 02:05 steps: each fires once, in order, at the start.
    await s.at("02:05:30").expect_escalations(
        "pend-1",
        "button",
        [
            ("operator_queue", "02:00"),
            ("supervisor", "02:05"),
            ("external_responder", "02:05"),
            ("operator_queue", "02:05"),
        ],
    )
