"""The traffic model: a plan of (time, topic, payload) from a seed and a start time.

Pure: no clock, no network. The same homes, scenario, seed and start give the
same plan byte for byte, so tests check it as data and the publisher only
paces it. Each device has its own random generator (seeded by the run's seed
and the device id), so adding a home does not change what the others do.

The plan is produced lazily, in the order messages are sent: a day for a
thousand homes is millions of messages, and a generator per device merged by
time keeps memory to one pending item per device.

Rates are a busy shift, not a quiet week: a pendant is pressed about every
three hours, so a demo with a couple of dozen homes shows alarms within
minutes at `--speed 10`. They are the constants below.
"""

from __future__ import annotations

import dataclasses
import hashlib
import heapq
import math
import random
from collections.abc import Generator, Iterable, Iterator
from datetime import UTC, datetime, time, timedelta

from alarmhub.core.model import DeviceKind
from alarmhub.sim import wire
from alarmhub.sim.homes import METRES_PER_DEGREE, ZIGBEE, Home, SimDevice, Wire
from alarmhub.sim.model import Cut, DevState, Intent, Planned, Scenario, World, seeded
from alarmhub.sim.render import power_messages, render

HOUR = 3600.0
PRESS_MEAN_S = 3 * HOUR  # a pendant press, per pendant
PRESS_REPEAT_P = 0.35  # a distressed resident presses again, 1-4 more times
FALL_MEAN_S = 12 * HOUR
DAY_DOOR_MEAN_S = 1.5 * HOUR  # daytime comings and goings: logged, not alarmed
NIGHT_DOOR_MEAN_S = 2 * HOUR  # only for residents who wander at night
TAMPER_MEAN_S = 48 * HOUR
FAULT_MEAN_S = 72 * HOUR
WALK_MEAN_S = 8 * HOUR  # a GPS-tracked resident walks out of the safe zone
AT_HOME_REPORT_S = 300.0
WALK_REPORT_S = 60.0
DOSE_TAKEN_P = 0.85
LOW_START_P = 0.06  # devices whose battery is already low when the run starts
SILENT_P = 0.03  # devices that stop reporting some time during the run
NIGHT = (time(22, 0), time(7, 0))


def build_world(
    homes: Iterable[Home], start: datetime, duration: timedelta, scenario: Scenario, seed: int
) -> World:
    """Decide the run's shared facts once: when cuts happen, where, which devices die."""
    homes = tuple(homes)
    rng = seeded(f"{seed}:world:{scenario.value}")
    begin = start + _clamp(duration * 0.2, timedelta(seconds=60), timedelta(minutes=10))
    power_cut = network_cut = None
    if scenario is Scenario.POWER_OUTAGE:
        length = _clamp(duration * 0.3, timedelta(minutes=2), timedelta(minutes=30))
        power_cut = Cut(begin, begin + length, frozenset(h.number for h in homes if h.area == 0))
    if scenario is Scenario.NETWORK_OUTAGE:
        length = _clamp(duration * 0.25, timedelta(minutes=1), timedelta(minutes=20))
        affected = frozenset(h.number for h in homes if rng.random() < 0.4)
        network_cut = Cut(begin, begin + length, affected)
    silent: dict[str, datetime] = {}
    if scenario is not Scenario.RESTART:
        for home in homes:
            for dev in home.devices:
                if rng.random() < SILENT_P:
                    silent[dev.id] = start + duration * rng.random()
    run = hashlib.blake2b(f"{seed}:{start.isoformat()}".encode(), digest_size=4).hexdigest()
    return World(
        homes, start, start + duration, scenario, seed, run, power_cut, network_cut, silent
    )


def plan(world: World) -> Iterator[Planned]:
    """Every message of the run, in the order it is sent (ties: home, then device order)."""
    streams = [_device_stream(world, h, d) for h in world.homes for d in h.devices]
    for item in heapq.merge(*streams, key=lambda p: p.at):
        if item.at >= world.end:
            return
        yield item


def is_night(ts: datetime) -> bool:
    local = ts.astimezone(wire.OSLO).time()
    return local >= NIGHT[0] or local < NIGHT[1]


def distance_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Haversine distance: degrees are not metres at 60° N."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * 6_371_008.8 * math.asin(math.sqrt(a))


# --- one device --------------------------------------------------------------


def _device_stream(world: World, home: Home, dev: SimDevice) -> Iterator[Planned]:
    rng = seeded(f"{world.seed}:{dev.id}:battery")
    low = world.scenario is not Scenario.RESTART and rng.random() < LOW_START_P
    battery0 = rng.uniform(8, 14) if low else rng.uniform(35, 100)
    d = DevState(world, home, dev, battery0)
    intents = heapq.merge(*_behaviour(d), key=lambda i: i.t)
    return _deliver(d, _render(d, intents))


def _behaviour(d: DevState) -> list[Iterator[Intent]]:
    w, dev, kind = d.world, d.dev, d.dev.kind
    calm = w.scenario is Scenario.RESTART  # no tamper or faults: only healthy traffic
    procs: list[Iterator[Intent]] = []
    if kind is not DeviceKind.GPS_TRACKER:
        procs.append(_every(d, dev.heartbeat_s))
    if not calm and kind is not DeviceKind.GPS_TRACKER:
        procs.append(_poisson(d, "tamper", TAMPER_MEAN_S))
    if kind is DeviceKind.SAFETY_ALARM:
        procs.append(_presses(d))
    elif kind is DeviceKind.FALL_SENSOR:
        procs.append(_poisson(d, "fall", FALL_MEAN_S))
    elif kind is DeviceKind.DOOR_SENSOR:
        procs.append(_door(d))
    elif kind is DeviceKind.GPS_TRACKER:
        procs.append(_tracker(d))
    elif kind is DeviceKind.MEDICATION_DISPENSER:
        procs.append(_doses(d))
        if not calm:
            procs.append(_poisson(d, "fault", FAULT_MEAN_S))
    return procs


def _arrivals(
    rng: random.Random, start: datetime, end: datetime, mean_s: float
) -> Iterator[datetime]:
    t = start
    while True:
        t += timedelta(seconds=rng.expovariate(1 / mean_s))
        if t >= end:
            return
        yield t


def _every(d: DevState, interval_s: float) -> Iterator[Intent]:
    rng = d.rng("heartbeat")
    t = d.world.start + timedelta(seconds=rng.uniform(0, interval_s))
    while t < d.world.end:
        yield Intent(t, "heartbeat", "heartbeat")
        t += timedelta(seconds=interval_s * rng.uniform(0.9, 1.1))


def _poisson(d: DevState, what: str, mean_s: float) -> Iterator[Intent]:
    for t in _arrivals(d.rng(what), d.world.start, d.world.end, mean_s):
        yield Intent(t, what, what)


def _presses(d: DevState) -> Iterator[Intent]:
    rng = d.rng("press")
    busy_until = d.world.start
    for first in _arrivals(rng, d.world.start, d.world.end, PRESS_MEAN_S):
        if first < busy_until:
            continue
        yield Intent(first, "press", "press")
        t = first
        if rng.random() < PRESS_REPEAT_P:
            for _ in range(rng.randint(1, 4)):
                t += timedelta(seconds=rng.uniform(5, 40))
                yield Intent(t, "press", "press-repeat")
        busy_until = t


def _door(d: DevState) -> Iterator[Intent]:
    rng = d.rng("door")
    w = d.world
    day = (t for t in _arrivals(rng, w.start, w.end, DAY_DOOR_MEAN_S) if not is_night(t))
    streams: list[Iterable[tuple[datetime, str]]] = [((t, "day-door") for t in day)]
    if d.home.wanders_at_night:
        nights = _arrivals(d.rng("night-door"), w.start, w.end, NIGHT_DOOR_MEAN_S)
        streams.append((t, "night-door") for t in nights if is_night(t))
    closed_at = w.start
    for t, tag in heapq.merge(*streams):
        if t < closed_at:
            continue
        yield Intent(t, "door-open", tag)
        closed_at = t + timedelta(seconds=rng.uniform(20, 180 if tag == "day-door" else 600))
        yield Intent(closed_at, "door-close", "door-close")


def _doses(d: DevState) -> Iterator[Intent]:
    rng = d.rng("doses")
    w = d.world
    day = w.start.astimezone(wire.OSLO).date()
    while True:
        for slot in d.home.doses:
            due = datetime.combine(day, slot, wire.OSLO).astimezone(UTC)
            if due >= w.end:
                return
            if due < w.start:
                continue
            dose_id = f"{day.isoformat()}T{slot.strftime('%H:%M')}"
            if rng.random() < DOSE_TAKEN_P:
                taken = due + timedelta(minutes=rng.uniform(0, 20))
                yield Intent(taken, "dose-taken", "dose", dose_id=dose_id)
                continue
            yield Intent(due + timedelta(minutes=30), "dose-missed", "dose-missed", dose_id=dose_id)
            if rng.random() < 0.5:
                late = due + timedelta(minutes=rng.uniform(40, 90))
                yield Intent(late, "dose-taken", "dose-late", dose_id=dose_id)
        day += timedelta(days=1)


def _tracker(d: DevState) -> Iterator[Intent]:
    """Reports from home; now and then a walk well outside the safe zone, and back."""
    rng = d.rng("tracker")
    home, w = d.home, d.world
    t = w.start + timedelta(seconds=rng.uniform(0, AT_HOME_REPORT_S))
    walks = _arrivals(d.rng("walk"), w.start, w.end, WALK_MEAN_S)
    next_walk = next(walks, w.end)
    while t < w.end:
        if t >= next_walk:
            t = yield from _walk(rng, t, home)
            next_walk = next((x for x in walks if x > t), w.end)
            yield Intent(t, "loc", "wander-back", position=_near(rng, home, 20))
            t += timedelta(seconds=AT_HOME_REPORT_S)
            continue
        yield Intent(t, "loc", "location", position=_near(rng, home, 20))
        t += timedelta(seconds=AT_HOME_REPORT_S * rng.uniform(0.9, 1.1))


def _walk(rng: random.Random, t: datetime, home: Home) -> Generator[Intent, None, datetime]:
    """A walk out to 0.5-1.5 km, a pause there, and back; returns when it ended."""
    far = rng.uniform(500, 1500)  # metres: with GPS accuracy, clearly outside 250 m
    bearing = rng.uniform(0, 2 * math.pi)
    speed = rng.uniform(0.8, 1.3)  # metres per second: an elderly walking pace
    out_steps = max(2, math.ceil(far / speed / WALK_REPORT_S))
    dwell = round(rng.uniform(300, 900) / WALK_REPORT_S)
    path = (
        [far * k / out_steps for k in range(1, out_steps + 1)]
        + [far] * dwell
        + [far * k / out_steps for k in range(out_steps - 1, 0, -1)]
    )
    for dist in path:
        t += timedelta(seconds=WALK_REPORT_S)
        lat = home.lat + dist * math.cos(bearing) / METRES_PER_DEGREE
        lon = home.lon + dist * math.sin(bearing) / (
            METRES_PER_DEGREE * math.cos(math.radians(home.lat))
        )
        fix = (round(lat, 6), round(lon, 6), rng.randint(8, 25))
        yield Intent(t, "loc", "wander", position=fix)
    return t + timedelta(seconds=WALK_REPORT_S)


def _near(rng: random.Random, home: Home, radius_m: float) -> tuple[float, float, int]:
    dlat = rng.uniform(-radius_m, radius_m) / METRES_PER_DEGREE
    dlon = rng.uniform(-radius_m, radius_m) / (METRES_PER_DEGREE * math.cos(math.radians(home.lat)))
    return (round(home.lat + dlat, 6), round(home.lon + dlon, 6), rng.randint(5, 30))


# --- rendering and delivery --------------------------------------------------------


def _render(d: DevState, intents: Iterable[Intent]) -> Iterator[Planned]:
    for intent in intents:
        yield from render(d, intent)


def _deliver(d: DevState, items: Iterator[Planned]) -> Iterator[Planned]:
    """Apply the world to one device's messages: silence, power and network cuts.

    Buffered messages are sent later than their device time, so the output is
    re-ordered by send time through a small heap. Safe because a message is
    only ever delayed: anything still to come from `items` is sent no earlier
    than its own device time, which is no earlier than the current one's.
    """
    w, home, dev = d.world, d.home, d.dev
    silent = w.silent_from.get(dev.id)
    pending: list[tuple[datetime, int, Planned]] = []
    seq = 0
    extra = power_messages(d) if dev.mains else iter(())
    net_rng = d.rng("network")
    burst_at: datetime | None = None  # when the next buffered message goes out
    for item in heapq.merge(items, extra, key=lambda p: p.device_ts):
        if silent is not None and item.device_ts >= silent:
            break
        out = _through_cuts(w, home, dev, item)
        if out is None:
            continue
        if out is not item:  # buffered: sent in order, 50 ms apart, once the link is back
            if burst_at is None:
                burst_at = out.at + timedelta(seconds=net_rng.uniform(0, 30))
            burst_at += timedelta(milliseconds=50)
            out = _resend(out, burst_at)
        seq += 1
        heapq.heappush(pending, (out.at, seq, out))
        while pending and pending[0][0] <= item.device_ts:
            yield heapq.heappop(pending)[2]
    while pending:
        yield heapq.heappop(pending)[2]


def _through_cuts(w: World, home: Home, dev: SimDevice, item: Planned) -> Planned | None:
    """None: the message is never sent. Otherwise the item, or a copy sent at the cut's end."""
    ts = item.device_ts
    pc = w.power_cut
    zigbee = dev.wire in ZIGBEE
    # The home's Zigbee coordinator has no power: its sensors' reports go nowhere.
    if pc and zigbee and home.number in pc.homes and pc.start <= ts < pc.end:
        return None
    nc = w.network_cut
    if nc and home.number in nc.homes and nc.start <= ts < nc.end:
        if item.tag == "heartbeat" and dev.wire is Wire.NATIVE:
            return None  # a native device sends a fresh heartbeat, not stale ones
        return _resend(item, nc.end)
    return item


def _resend(item: Planned, at: datetime) -> Planned:
    return dataclasses.replace(item, at=at)


def _clamp(value: timedelta, lo: timedelta, hi: timedelta) -> timedelta:
    return max(lo, min(hi, value))
