"""Scenarios for message identity, unknown devices and moves (issue 12 items 12, 14, 9).

Each scripts part of a resident's night on the virtual clock (tests/scenarios/scenario.py says how).
"""

from __future__ import annotations

import pytest

from tests.scenarios.scenario import device, pendant

pytestmark = pytest.mark.broker

SOS = "0x00158d0001a2b3c4"  # a Zigbee2MQTT SOS button: no message ids of its own
BRIDGE = "z2m-home-1"  # its Zigbee2MQTT bridge


async def queued(s, municipality: str) -> set[tuple[str, str, str]]:
    """The (device, kind, state) rows an operator of the municipality sees. Silent
    devices of the scenario also show (device_offline), so rows are looked for."""
    return {(a["device_id"], a["kind"], a["state"]) for a in await s.queue(municipality)}


async def test_item_12_a_pendant_reusing_ids_after_a_battery_change_raises_new_alarms(scenario):
    s = scenario(devices=[pendant("pend-1", resident="r-1")])
    await s.at("22:00").send("pend-1", "button.pressed", msg_id="1")
    await s.at("22:10").resolve("pend-1", "button", outcome="false_alarm")
    # 01:30 new batteries: the pendant's counter starts over, and "1" is a new press.
    await s.at("02:00").send("pend-1", "button.pressed", msg_id="1")
    await s.expect_alarm_count("pend-1", "button", 2)
    await s.expect_alarm("pend-1", "button", status="open", repeat_count=0)
    # The device heard no receipt and sends the same message again: still one alarm.
    await s.at("02:00:05").resend("pend-1", "1")
    await s.expect_receipt("pend-1", "1", "accepted", duplicate=True)
    await s.expect_alarm("pend-1", "button", status="open", repeat_count=0)
    await s.at("02:01").expect_alarm("pend-1", "button", level=2, escalated_to="supervisor")
    await s.expect_alarm_count("pend-1", "button", 2)


async def test_item_12_a_second_identical_sos_press_after_the_first_was_resolved(scenario):
    s = scenario(devices=[device(SOS, "safety_alarm", bridge=BRIDGE)])
    await s.at("02:00").publish(f"zigbee2mqtt/{BRIDGE}/{SOS}", {"action": "emergency"})
    await s.expect_alarm(SOS, "button", status="open")
    await s.at("02:00:08").resolve(SOS, "button", outcome="false_alarm")
    # Pressed again, the same bytes within the 30 s content window: a new call for help.
    await s.at("02:00:15").publish(f"zigbee2mqtt/{BRIDGE}/{SOS}", {"action": "emergency"})
    await s.expect_alarm_count(SOS, "button", 2)
    await s.expect_alarm(SOS, "button", status="open")


async def test_item_14_a_press_from_a_decommissioned_pendant_reaches_its_own_queue(scenario):
    s = scenario(devices=[pendant("pend-old", municipality="4601", resident="r-9"),
                          pendant("osl-1")])  # fmt: skip
    await s.start()
    async with s.api("madm4601") as admin:
        assert (await admin.delete("/api/v1/devices/pend-old")).status_code == 200
    # Decommissioned by mistake; the resident still wears it, and falls at 02:00.
    await s.at("02:00").press("pend-old")
    await s.expect_dead_letter("pend-old", "decommissioned_device")
    await s.expect_alarm(
        "pend-old", "unregistered_device", status="open", priority=2, municipality="4601"
    )
    assert ("pend-old", "unregistered_device", "open") in await queued(s, "4601")
    assert not {row for row in await queued(s, "0301") if row[0] == "pend-old"}
    await s.at("02:05").expect_alarm("pend-old", "unregistered_device", escalated_to="supervisor")


async def test_item_14_a_press_from_an_unknown_pendant_reaches_the_fallback_queue(scenario):
    s = scenario(devices=[pendant("osl-1")], settings={"unknown_device_municipality": "0301"})
    body = {"id": "g1", "ts": "2026-11-21T01:00:00Z", "type": "button.pressed"}
    await s.at("02:00").publish("alarmhub/v1/ghost/events", body)
    assert ("ghost", "unregistered_device", "open") in await queued(s, "0301")


async def test_item_9_a_pendant_with_an_open_alarm_is_not_moved(scenario):
    s = scenario(devices=[pendant("pend-1"), pendant("brg-1", municipality="4601")])
    await s.at("02:00").press("pend-1")
    alarm = await s.expect_alarm("pend-1", "button", status="open")
    async with s.api("root") as admin:
        r = await admin.patch("/api/v1/devices/pend-1", json={"municipality": "4601"})
    assert r.status_code == 409
    assert r.json()["error"]["alarms"] == [alarm["id"]]
    # Not moved: the next press joins the alarm where the operators already have it.
    await s.at("02:01").press("pend-1")
    await s.expect_alarm("pend-1", "button", status="open", repeat_count=1, municipality="0301")
    await s.at("02:10").resolve("pend-1", "button", outcome="helped")
    async with s.api("root") as admin:
        r = await admin.patch("/api/v1/devices/pend-1", json={"municipality": "4601"})
    assert r.status_code == 200
    await s.at("03:00").press("pend-1")
    assert ("pend-1", "button", "open") in await queued(s, "4601")
    assert ("pend-1", "button", "open") not in await queued(s, "0301")
