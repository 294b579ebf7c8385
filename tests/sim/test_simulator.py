"""The simulator: its pure plan as data, and one short run through a real broker."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from alarmhub.app import AlarmHub
from alarmhub.clock import SystemClock
from alarmhub.config.profiles import load_catalog
from alarmhub.core.decode import DecodeLimits, decode
from alarmhub.core.model import Decoded, EventType, RawMessage
from alarmhub.dev.mosquitto import LocalBroker, free_port
from alarmhub.settings import parse_mqtt_url
from alarmhub.sim.homes import Wire
from alarmhub.sim.model import Planned, Scenario, World
from alarmhub.sim.publisher import Pace, Stats, publish
from alarmhub.sim.simulator import Simulation, SimulationConfig
from alarmhub.sim.traffic import build_world, distance_m, is_night, plan
from alarmhub.sim.wire import OSLO
from tests.support.helpers import REPO, db_count, db_rows, hub_settings, run_cli

START = datetime(2026, 3, 2, 11, 0, tzinfo=UTC)  # 12:00 in Oslo, a Monday
DAY = timedelta(hours=24)


def world(
    scenario: Scenario = Scenario.NORMAL, homes: int = 40, seed: int = 7
) -> tuple[Simulation, World]:
    sim = Simulation(SimulationConfig(homes=homes, scenario=scenario, seed=seed))
    return sim, build_world(sim.homes, START, DAY, scenario, seed)


def as_rows(items: list[Planned]) -> list[tuple[datetime, str, bytes]]:
    return [(p.at, p.topic, p.payload) for p in items]


def test_the_plan_is_the_same_for_the_same_seed_and_differs_for_another() -> None:
    _, w1 = world(seed=7)
    _, w2 = world(seed=7)
    _, w3 = world(seed=8)
    first = as_rows(list(plan(w1)))
    assert first == as_rows(list(plan(w2)))
    assert first != as_rows(list(plan(w3)))
    assert first == sorted(first, key=lambda r: r[0]), "sent in time order"


def test_a_normal_day_has_the_whole_mix_in_every_device_format() -> None:
    sim, w = world()
    items = list(plan(w))
    tags = Counter(p.tag for p in items)
    for tag in (
        "heartbeat",
        "press",
        "press-repeat",
        "fall",
        "day-door",
        "night-door",
        "door-close",
        "wander",
        "wander-back",
        "dose",
        "dose-missed",
        "battery-low",
        "tamper",
    ):
        assert tags[tag] > 0, tag
    topics = {p.topic.split("/")[0] for p in items}
    assert topics == {"alarmhub", "zigbee2mqtt", "owntracks"}
    wires = Counter(d.wire for h in sim.homes for d in h.devices)
    assert set(wires) == set(Wire)
    # Some devices go silent: no message from them after their time.
    assert w.silent_from
    for device_id, since in w.silent_from.items():
        assert all(p.device_ts < since for p in items if p.device_id == device_id)


def test_night_time_door_events_fall_between_22_and_07_oslo_time() -> None:
    _, w = world(homes=60)
    doors = [p for p in plan(w) if p.tag in ("night-door", "day-door")]
    night = [p for p in doors if p.tag == "night-door"]
    assert len(night) >= 5
    for p in night:
        local = p.device_ts.astimezone(OSLO).time()
        assert local.hour >= 22 or local.hour < 7, local
        assert orjson.loads(p.payload)["contact"] is False
    assert not any(is_night(p.device_ts) for p in doors if p.tag == "day-door")


@pytest.mark.parametrize("scenario", list(Scenario))
def test_every_planned_message_decodes_to_its_intended_events(scenario: Scenario) -> None:
    """A healthy simulated device never makes a dead letter, in any format."""
    sim, w = world(scenario, homes=30)
    registry = {d.id: d for d in sim.devices()}
    catalog = load_catalog(REPO / "devices")
    limits = DecodeLimits()
    items = list(plan(w))
    assert len(items) > 1000
    for p in items:
        result = decode(RawMessage(p.topic, p.payload, p.at), registry, catalog, limits)
        assert isinstance(result, Decoded), (p, result)
        assert sorted(e.type for e in result.events) == sorted(p.events), p
        for e in result.events:
            assert abs(e.ts - p.device_ts) < timedelta(seconds=1), p
    # Message ids are unique per device: nothing healthy is mistaken for a redelivery.
    keys = Counter(
        (d.device.id, d.msg_id)
        for d in (
            decode(RawMessage(p.topic, p.payload, p.at), registry, catalog, limits) for p in items
        )
        if isinstance(d, Decoded)
    )
    assert keys.most_common(1)[0][1] == 1


def test_gps_trackers_walk_out_of_their_safe_zone_and_back() -> None:
    sim, w = world(homes=80)
    homes = {d.id: h for h in sim.homes for d in h.devices if d.wire is Wire.OWNTRACKS}
    assert homes
    by_device: dict[str, list[tuple[str, dict]]] = {}
    for p in plan(w):
        if p.device_id in homes:
            by_device.setdefault(p.device_id, []).append((p.tag, orjson.loads(p.payload)))
    walked = 0
    for device_id, home in homes.items():
        fixes = by_device[device_id]
        dist = [
            (tag, distance_m(home.lat, home.lon, f["lat"], f["lon"]) - f["acc"]) for tag, f in fixes
        ]
        outside = [i for i, (_, d) in enumerate(dist) if d > home.zone_radius_m]
        if not outside:
            continue
        walked += 1
        assert all(dist[i][0] == "wander" for i in outside)
        back = [i for i, (tag, d) in enumerate(dist) if tag == "wander-back" and i > outside[0]]
        assert back, "a walk ends back home"
        assert dist[back[0]][1] + 40 < home.zone_radius_m
    assert walked >= 3


def test_power_outage_many_power_lost_in_one_area_within_minutes() -> None:
    sim, w = world(Scenario.POWER_OUTAGE, homes=300)
    cut = w.power_cut
    assert cut is not None
    items = list(plan(w))
    lost = [p for p in items if EventType.POWER_LOST in p.events]
    assert len(lost) >= 100
    area = {h.number: h.area for h in sim.homes}
    home_of = {d.id: h.number for h in sim.homes for d in h.devices}
    assert {area[home_of[p.device_id]] for p in lost} == {0}
    assert all(cut.start <= p.at <= cut.start + timedelta(minutes=3) for p in lost)
    restored = [p for p in items if EventType.POWER_RESTORED in p.events]
    assert len(restored) == len(lost)
    # Zigbee devices behind a coordinator without power say nothing during the cut.
    zigbee_in_cut = [
        p
        for p in items
        if p.topic.startswith("zigbee2mqtt/")
        and home_of[p.device_id] in cut.homes
        and cut.start <= p.at < cut.end
    ]
    assert zigbee_in_cut == []


def test_network_outage_sends_a_recovery_burst_with_old_device_times() -> None:
    _, w = world(Scenario.NETWORK_OUTAGE, homes=100)
    cut = w.network_cut
    assert cut is not None
    items = list(plan(w))
    home_of = {d.id: h.number for h in w.homes for d in h.devices}
    during = [p for p in items if home_of[p.device_id] in cut.homes and cut.start <= p.at < cut.end]
    assert during == []
    late = [p for p in items if p.at - p.device_ts > timedelta(seconds=30)]
    assert len(late) >= 20
    assert all(cut.end <= p.at < cut.end + timedelta(minutes=2) for p in late)
    assert all(cut.start <= p.device_ts < cut.end for p in late)


def test_restart_traffic_is_healthy_every_device_reports_to_the_end() -> None:
    sim, w = world(Scenario.RESTART, homes=40)
    items = list(plan(w))
    assert not w.silent_from
    assert not [p for p in items if p.tag in ("tamper", "battery-low", "fault")]
    last: dict[str, datetime] = {}
    for p in items:
        last[p.device_id] = p.at
    for d in sim.devices():
        assert d.heartbeat_interval_s is not None
        assert w.end - last[d.id] < timedelta(seconds=2 * d.heartbeat_interval_s), d.id


def test_speed_above_one_replays_the_past_so_no_device_clock_runs_ahead() -> None:
    config = SimulationConfig(homes=1, speed=60, duration_s=10)
    start, span = config.window(START)
    assert start + span == START + timedelta(seconds=10)
    assert span == timedelta(seconds=600)
    assert SimulationConfig(homes=1).window(START)[0] == START


async def run_whole_plan(sim: Simulation, broker_url: str, client_id: str) -> Stats:
    """Publish every message of the run's plan, paced as `Simulation.run` paces it.

    Without the wall-clock deadline `Simulation.run` sets: a publisher that falls behind
    there stops at the deadline with part of its plan unsent, so how much a run sends
    depended on how busy the machine was. Here the whole plan goes out, however long
    that takes, and what the hub gets is the same on any machine.
    """
    clock = SystemClock()
    world = sim.world(clock.now())
    pace = Pace(world.start, clock.monotonic(), sim.config.speed, None)
    return await publish(
        plan(world), parse_mqtt_url(broker_url), pace, clock, asyncio.Event(), client_id=client_id
    )


@pytest.mark.broker
async def test_a_short_simulation_through_a_real_broker_raises_alarms(
    tmp_path: Path, broker: LocalBroker, client_id: str
) -> None:
    sim = Simulation(SimulationConfig(homes=15, seed=5, speed=900, duration_s=3))
    db = tmp_path / "alarmhub.db"
    async with AlarmHub(hub_settings(tmp_path, broker.url, client_id), serve_http=False) as hub:
        assert hub.ingest is not None
        assert await hub.ingest.wait_connected(5)
        await hub.register_devices(sim.devices(), audit=(), assign_bridges=True)
        stats = await run_whole_plan(sim, broker.url, client_id + "-sim")
        assert stats.sent > 100
        assert stats.errors == 0
        deadline = asyncio.get_running_loop().time() + 10
        while db_count(db, "SELECT count(*) FROM inbox") < stats.sent:
            assert asyncio.get_running_loop().time() < deadline, "not everything arrived"
            await asyncio.sleep(0.05)  # polling, under the ceiling above
    assert db_count(db, "SELECT count(*) FROM inbox") == stats.sent
    assert db_count(db, "SELECT count(*) FROM inbox WHERE verdict = 'rejected'") == 0
    kinds = {k for (k,) in db_rows(db, "SELECT DISTINCT kind FROM alarms")}
    assert "button" in kinds, kinds


def test_cli_rejects_bad_arguments_and_names_an_unreachable_broker() -> None:
    bad = run_cli(["simulate", "--homes", "0"], {})
    assert bad.returncode == 2
    assert "--homes" in bad.stderr
    port = free_port()  # nothing listens here
    down = run_cli(
        ["simulate", "--homes", "2", "--broker", f"mqtt://127.0.0.1:{port}", "--duration", "2"], {}
    )
    assert down.returncode == 1
    assert f"cannot connect to the broker at 127.0.0.1:{port}" in down.stderr
    assert "Traceback" not in down.stderr
