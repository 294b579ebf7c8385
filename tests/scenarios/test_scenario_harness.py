"""The scenario harness's own rules: how scenario times read, and that it refuses nonsense."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from tests.scenarios.scenario import ScenarioError, pendant, resolve_time

NOW = datetime(2026, 11, 20, 11, 0, tzinfo=UTC)  # 12:00 in Oslo (CET), when scenarios start


@pytest.mark.parametrize(
    ("when", "day", "expected"),
    [
        ("12:00", date(2026, 11, 20), datetime(2026, 11, 20, 11, 0, tzinfo=UTC)),
        ("22:30", date(2026, 11, 20), datetime(2026, 11, 20, 21, 30, tzinfo=UTC)),
        ("23:59:59", date(2026, 11, 20), datetime(2026, 11, 20, 22, 59, 59, tzinfo=UTC)),
        # After midnight is still that night: the next calendar day.
        ("00:00", date(2026, 11, 20), datetime(2026, 11, 20, 23, 0, tzinfo=UTC)),
        ("02:00", date(2026, 11, 20), datetime(2026, 11, 21, 1, 0, tzinfo=UTC)),
        ("02:00:20", date(2026, 11, 20), datetime(2026, 11, 21, 1, 0, 20, tzinfo=UTC)),
        ("11:59", date(2026, 11, 20), datetime(2026, 11, 21, 10, 59, tzinfo=UTC)),
        ("+1d 02:00", date(2026, 11, 20), datetime(2026, 11, 22, 1, 0, tzinfo=UTC)),
        ("+2d 14:00", date(2026, 11, 20), datetime(2026, 11, 22, 13, 0, tzinfo=UTC)),
        # Relative to the current virtual time.
        ("+90s", date(2026, 11, 20), datetime(2026, 11, 20, 11, 1, 30, tzinfo=UTC)),
        ("+5m", date(2026, 11, 20), datetime(2026, 11, 20, 11, 5, tzinfo=UTC)),
        ("+1h30m", date(2026, 11, 20), datetime(2026, 11, 20, 12, 30, tzinfo=UTC)),
        # Summer time: 22:00 CEST is 20:00 UTC; the autumn night's 02:30 is the first one.
        ("22:00", date(2026, 7, 1), datetime(2026, 7, 1, 20, 0, tzinfo=UTC)),
        ("02:30", date(2026, 10, 24), datetime(2026, 10, 25, 0, 30, tzinfo=UTC)),
        ("04:00", date(2026, 10, 24), datetime(2026, 10, 25, 3, 0, tzinfo=UTC)),
    ],
)
def test_scenario_times(when, day, expected):
    assert resolve_time(when, NOW, day) == expected


@pytest.mark.parametrize("when", ["2am", "25:00", "+", "+5x", "12:60", "tomorrow 02:00"])
def test_what_is_not_a_scenario_time(when):
    with pytest.raises((ScenarioError, ValueError)):
        resolve_time(when, NOW)


def test_a_naive_datetime_is_refused():
    with pytest.raises(ScenarioError):
        resolve_time(datetime(2026, 11, 20, 12, 0), NOW)  # naive: the point of the test


@pytest.mark.broker
async def test_time_goes_forward_only_and_wrong_expectations_fail(scenario):
    s = scenario(devices=[pendant("pend-1")])
    await s.at("02:00").press("pend-1")
    with pytest.raises(ScenarioError, match="forward only"):
        await s.at("01:00")
    with pytest.raises(AssertionError, match="state"):
        await s.expect_alarm("pend-1", "button", status="resolved")
    with pytest.raises(AssertionError, match="not escalated to"):
        await s.expect_alarm("pend-1", "button", escalated_to="supervisor")  # due at 02:01
    with pytest.raises(AssertionError, match="no fall alarm"):
        await s.expect_alarm("pend-1", "fall")
    # A jump ahead still runs each step at its own instant, not at the jump's end.
    await s.at("02:04").expect_escalations(
        "pend-1",
        "button",
        [("operator_queue", "02:00"), ("supervisor", "02:01"), ("external_responder", "02:03")],
    )


@pytest.mark.broker
async def test_the_broker_can_go_away_and_come_back(scenario):
    s = scenario(devices=[pendant("pend-1")])
    await s.at("02:00").broker_down()
    assert not s.hub.mqtt_connected
    with pytest.raises(ScenarioError, match="broker is down"):
        await s.press("pend-1")
    await s.at("02:10").broker_up()
    press = await s.press("pend-1")
    await s.expect_receipt("pend-1", press, "accepted")
    await s.expect_alarm("pend-1", "button", status="open")
