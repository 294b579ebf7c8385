"""Simulated homes on MQTT: the traffic model, paced onto a broker.

`alarmhub simulate` and `make demo` both go through :class:`Simulation`. The
traffic model (:mod:`alarmhub.sim.traffic`) is pure; this module picks the
simulated start time and hands the plan to the publisher.

Why a run at `--speed` above 1 replays the past: alarmhub refuses device times
more than five minutes ahead of its clock, and rightly so. A simulated clock
that runs faster than the wall clock would soon be hours ahead. So a run of
D real seconds at speed X covers the X*D simulated seconds that end at the
run's end: device times start in the past and catch up with the wall clock as
the run ends, like devices sending what happened recently. Such a run needs a
length; without `--duration` it lasts an hour.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TextIO

from alarmhub.clock import Clock
from alarmhub.core.model import Device
from alarmhub.settings import MqttTarget
from alarmhub.sim.homes import Home, build_homes, registrations
from alarmhub.sim.model import Planned, Scenario, World
from alarmhub.sim.publisher import Pace, SimulatorError, Stats, publish
from alarmhub.sim.traffic import build_world, plan

DEFAULT_REPLAY_S = 3600.0  # a run at speed > 1 without --duration
FOREVER = timedelta(days=3650)

__all__ = [
    "DEFAULT_REPLAY_S",
    "Planned",
    "Scenario",
    "Simulation",
    "SimulationConfig",
    "SimulatorError",
    "Stats",
]


@dataclass(frozen=True, slots=True)
class SimulationConfig:
    homes: int
    municipality: str = "0301"
    scenario: Scenario = Scenario.NORMAL
    seed: int = 1
    speed: float = 1.0  # simulated seconds per real second
    duration_s: float | None = None  # real seconds; None: until stopped

    @property
    def real_duration_s(self) -> float | None:
        if self.duration_s is not None:
            return self.duration_s
        return DEFAULT_REPLAY_S if self.speed > 1 else None

    def window(self, now: datetime) -> tuple[datetime, timedelta]:
        """The simulated start and span: a replay ending at the run's end when speed > 1."""
        real = self.real_duration_s
        if real is None:
            return now, FOREVER
        lead = timedelta(seconds=max(0.0, self.speed - 1) * real)
        return now - lead, timedelta(seconds=real * self.speed)


class Simulation:
    """The homes of one run (fixed by the seed) and the means to send their traffic."""

    def __init__(self, config: SimulationConfig) -> None:
        self.config = config
        self.homes: list[Home] = build_homes(config.homes, config.municipality, config.seed)

    def devices(self) -> list[Device]:
        return registrations(self.homes)

    def world(self, now: datetime) -> World:
        start, span = self.config.window(now)
        return build_world(self.homes, start, span, self.config.scenario, self.config.seed)

    async def run(
        self,
        target: MqttTarget,
        clock: Clock,
        stop: asyncio.Event,
        *,
        client_id: str,
        progress: TextIO | None = None,
    ) -> Stats:
        """Publish the run's plan; returns when it is done, its time is up, or `stop` is set."""
        world = self.world(clock.now())
        t0 = clock.monotonic()
        real = self.config.real_duration_s
        pace = Pace(world.start, t0, self.config.speed, None if real is None else t0 + real)
        return await publish(
            plan(world), target, pace, clock, stop, client_id=client_id, progress=progress
        )
