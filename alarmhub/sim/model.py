"""The simulator's plain data: scenarios, the world of one run, and planned messages."""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from alarmhub.core.model import EventType
from alarmhub.sim.homes import Home, SimDevice

DRAIN_PCT_PER_HOUR = 0.2


def seeded(key: str) -> random.Random:
    """A reproducible generator: a simulation must replay exactly from its seed."""
    return random.Random(key)  # noqa: S311 - reproducibility, not secrecy, is the point


class Scenario(StrEnum):
    NORMAL = "normal"
    POWER_OUTAGE = "power-outage"  # one area loses power within minutes
    NETWORK_OUTAGE = "network-outage"  # homes go silent, then send what they buffered
    RESTART = "restart"  # healthy traffic only: any offline alarm after a restart is false


@dataclass(frozen=True, slots=True)
class Planned:
    at: datetime  # when the message is sent, in simulated time (UTC)
    device_ts: datetime  # the device's own time of the event; earlier than `at` if buffered
    topic: str
    payload: bytes
    device_id: str
    events: tuple[EventType, ...]  # what alarmhub's decoder should make of it
    tag: str  # why the model sent it: heartbeat, press, night-door, wander, dose-missed, …


@dataclass(frozen=True, slots=True)
class Cut:
    """A power or network cut: from `start` to `end`, in these homes (by number)."""

    start: datetime
    end: datetime
    homes: frozenset[int]


@dataclass(frozen=True, slots=True)
class World:
    homes: tuple[Home, ...]
    start: datetime
    end: datetime
    scenario: Scenario
    seed: int
    run: str  # distinguishes this run's native message ids from an earlier run's
    power_cut: Cut | None = None
    network_cut: Cut | None = None
    silent_from: Mapping[str, datetime] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Intent:
    """Something that happens to a device, before it is rendered as a message."""

    t: datetime
    what: str  # heartbeat, press, fall, door-open, door-close, loc, dose-*, fault, tamper
    tag: str
    dose_id: str | None = None
    position: tuple[float, float, int] | None = None  # lat, lon, accuracy in metres


@dataclass(slots=True)
class DevState:
    """One device's state while its messages are rendered in time order."""

    world: World
    home: Home
    dev: SimDevice
    battery0: float
    sent: int = 0
    presses: int = 0
    last_ts: datetime | None = None
    last_low: datetime | None = None
    door_open: bool = False

    def rng(self, purpose: str) -> random.Random:
        """Seeded by run and device, so one device's draws never shift another's."""
        return seeded(f"{self.world.seed}:{self.dev.id}:{purpose}")

    def battery(self, t: datetime) -> int:
        hours = (t - self.world.start).total_seconds() / 3600
        return max(1, round(self.battery0 - DRAIN_PCT_PER_HOUR * hours))

    def msg_id(self) -> str:
        self.sent += 1
        return f"{self.world.run}-{self.sent}"
