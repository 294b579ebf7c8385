"""Scenario suite: residents' nights scripted on the virtual clock against the real hub.

In the spirit of Alertmanager's acceptance tests ("at T send X; at T' expect Y"),
a scenario drives the real in-process daemon (`AlarmHub`) with a `FakeClock`:
messages go over a real Mosquitto (the `broker` fixture) through the real
decode -> dedup -> rules -> commit path into the real SQLite store; people act
through the real HTTP API (in-process ASGI client, real tokens and tenancy).

    from tests.scenarios.scenario import door  # the `scenario` fixture is in every test (conftest.py)

    async def test_night_door_closed_behind_resident(scenario):
        s = scenario(devices=[door("door-1", resident="r-17", night="22:00-07:00")])
        await s.at("02:00").send("door-1", "door.opened")
        await s.at("02:00:20").send("door-1", "door.closed")
        await s.at("02:05").expect_alarm("door-1", "door_open_night", status="open",
                                         escalated_to="supervisor")

Time
----
A scenario starts at noon, 12:00 Europe/Oslo, on 2026-11-20 (`scenario(date=…,
start="HH:MM")` changes either). A *scenario day* runs noon to noon, so a night
reads naturally:

- ``"22:30"`` is 2026-11-20 22:30 local; ``"02:00"`` is 02:00 that night (the 21st);
  ``"11:59"`` is the next morning; ``"+1d 02:00"`` is 02:00 of the following night.
- ``"+90s"``, ``"+5m"``, ``"+1h30m"``: after the current virtual time.
- an aware ``datetime`` as is.

Time only goes forward (an earlier time fails the scenario). Moving to a time runs
every timer due on the way *at its own instant*, in order: escalation steps at
their deadline (the escalator's `fire_due`), silent devices and missed doses one
second after their deadline (supervision's `step`, which the daemon runs once a
second), silences at their end (the silence keeper's sweep), and the
registry refresh (devices, silences) at every stop. The harness owns those loops
(their real-time versions are switched off; tests/scenarios/timers.py lists them,
and a new timed loop of the hub belongs there), so nothing depends on how fast
the machine is: the clock does not move while a message is in flight, and
``send`` returns only when its batch has been committed.

The DSL (``s.at(t).<method>(…)`` moves to `t` first; ``s.<method>(…)`` acts now;
``await s.at(t)`` only moves):

Devices (``devices=[…]`` of the fixture; ``await s.register(spec)`` later):
  ``pendant(id, resident=, heartbeat_s=, municipality=)``, ``fall_sensor(…)``,
  ``door(id, night="22:00-07:00", …)``, ``tracker(id, geofence=(lat, lon, radius_m),
  max_accuracy_m=)``, ``dispenser(id, doses=("08:00", "20:00"), window_min=60)``,
  or ``device(id, kind, settings={…})`` with the API's settings JSON. Municipality:
  the scenario's (``municipality="0301"``) unless given.
Messages (native protocol; ``ts`` is the virtual time unless given as a scenario
time, or as RFC 3339 text sent verbatim, bad or not; returns the msg id):
  ``send(device, type, msg_id=None, ts=None, **fields)``, ``press(dev)``,
  ``cancel(dev)`` (``button.cancelled``), ``fall(dev)``, ``door_opened(dev)``,
  ``door_closed(dev)``, ``fix(dev, lat, lon, accuracy_m=10)``, ``dose_taken(dev)``,
  ``heartbeat(dev)``; ``resend(device, msg_id)`` sends the same message again (a
  redelivery); ``publish(topic, payload)`` for vendor formats (Zigbee2MQTT,
  OwnTracks) and malformed input (on a topic alarmhub subscribes to).
People (through the HTTP API, as ``op<NNNN>`` operators / ``madm<NNNN>`` municipality
  admins; ``by=`` another user, ``expect_status=`` for a refusal such as 409):
  ``acknowledge(dev, kind)``, ``dispatch``, ``on_site``, ``escalate``,
  ``resolve(dev, kind, outcome="helped", note=None)``, ``note(dev, kind, text)``,
  ``silence(device=None, municipality=None, until="06:00", starts=None, reason=…,
  **more_body_fields) -> id``, ``end_silence(id)``,
  ``resolve_incident(municipality, outcome=…)``.
  An outage incident is the alarm of device ``"municipality:NNNN"``, kind ``"incident"``.
alarmhub itself: ``stop_hub()`` (time passes with nothing of alarmhub running; messages
  sent meanwhile wait at the broker), ``start_hub()`` (same store and broker session;
  returns when they are committed), ``restart(down_until="03:00")``; the broker:
  ``broker_down()`` and ``broker_up()`` (alarmhub notices, reconnects; devices cannot
  publish meanwhile).
Expectations (all read the committed store or the API, never in-memory state):
  ``expect_alarm(dev, kind, status=, priority=, level=, escalated_to=,
  suppressed_by=, suppression_reason=, **any_api_field) -> dict`` (the newest alarm
  of that device and kind, as the API shows it), ``expect_no_alarm(dev, kind=None,
  active_only=True)``, ``expect_alarm_count(dev, kind, n)``,
  ``expect_timeline(dev, kind, *types, exact=True)``, ``expect_escalations(dev, kind,
  [(target, "HH:MM:SS"), …])`` (steps that escalated, with their times),
  ``expect_notified(dev, kind, [target, …])`` (notices to targets beyond the queue),
  ``expect_queue(municipality, [(dev, kind, state), …], ordered=True)`` (the active alarms an
  operator of that municipality sees, in queue order), ``expect_receipt(dev,
  msg_id, status, **fields)`` (polled with a ceiling: receipts are asynchronous),
  ``expect_inbox(dev, msg_id, verdict=, reason=, events=[…])``, ``expect_dead_letter(dev, reason)``.
Helpers for your own assertions: ``alarm(dev, kind)``, ``alarms(dev, kind)``,
``timeline(dev, kind)``, ``escalations(dev, kind)``, ``notifications(dev, kind)``,
``queue(municipality)``,
``inbox(dev)``, ``s.now`` / ``s.local_now``, ``s.hub``, ``s.db``, ``s.api(user)``;
``describe()`` is the night as recorded (every alarm and its timeline, local times),
printed at the end of every scenario: pytest shows it when one fails.

Rules: ``rules=`` a TOML string (``default_rules() + extra`` to add to the built-in
rules, e.g. a ``[municipalities."0301"]`` section) or a path; settings overrides:
``settings={"content_dedup_window_s": 30}``. Scenarios that need the flow of a
night should stay bounded: each stop is a few milliseconds, each message a round
trip through the broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time as wall_time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from alarmhub.app import AlarmHub
from alarmhub.clock import FakeClock
from alarmhub.dev.mosquitto import LocalBroker
from alarmhub.web.api import create_app
from tests.scenarios.expect import CEILING_S, Expectations
from tests.scenarios.outages import Outages
from tests.scenarios.people import People
from tests.scenarios.timers import timers
from tests.scenarios.world import (
    DAY,
    OSLO,
    DeviceMessages,
    DeviceSpec,
    ScenarioError,
    default_rules,
    device,
    dispenser,
    door,
    fall_sensor,
    local,
    pendant,
    resolve_time,
    tracker,
)
from tests.support.helpers import Publisher, db_count, hub_settings

__all__ = [
    "DAY",
    "OSLO",
    "DeviceSpec",
    "Scenario",
    "ScenarioError",
    "default_rules",
    "device",
    "dispenser",
    "door",
    "fall_sensor",
    "pendant",
    "resolve_time",
    "scenario",
    "tracker",
]


def inbox_count(db: Path, payload: bytes) -> int:
    """How many times this exact payload is in the inbox (0 before the schema exists)."""
    return db_count(db, "SELECT count(*) FROM inbox WHERE payload = ?", (payload,))


MAX_STOPS = 100_000  # a runaway timer fails the scenario instead of hanging it


# --- the scenario ------------------------------------------------------------------------


class At:
    """`s.at(t)`: awaitable (move to t), or `.method(…)` of the scenario, run at t."""

    def __init__(self, scenario: Scenario, when: str | datetime) -> None:
        self._s = scenario
        self._when = when

    def __await__(self) -> Iterator[Any]:
        return self._s.advance_to(self._when).__await__()

    def __getattr__(self, name: str) -> Callable[..., Any]:
        target = getattr(self._s, name)
        if not callable(target):
            raise AttributeError(name)  # noqa: TRY004 - attribute lookup's own error

        async def at_then(*args: Any, **kwargs: Any) -> Any:
            await self._s.advance_to(self._when)
            result = target(*args, **kwargs)
            return await result if asyncio.iscoroutine(result) else result

        return at_then


class Scenario(Outages, DeviceMessages, People, Expectations):
    def __init__(
        self,
        tmp_path: Path,
        broker: LocalBroker,
        client_id: str,
        *,
        municipality: str = "0301",
        devices: Iterable[DeviceSpec] = (),
        rules: str | Path | None = None,
        settings: dict[str, Any] | None = None,
        day: date = DAY,
        start: str = "12:00",
    ) -> None:
        self.tmp_path = tmp_path
        self.broker = broker
        self.client_id = client_id
        self.municipality = municipality
        self.specs = {d.id: d for d in devices}
        self.day = day
        t0 = resolve_time(start, datetime.min.replace(tzinfo=UTC), day)
        self.clock = FakeClock(t0)
        self.db = tmp_path / "alarmhub.db"
        if isinstance(rules, str):
            path = tmp_path / "rules.toml"
            path.write_text(rules)
            rules = path
        extra = dict(settings or {})
        if rules is not None:
            extra["rules"] = rules
        self.settings = hub_settings(tmp_path, broker.url, client_id, **extra)
        self._hub: AlarmHub | None = None
        self._runner: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self._seq = itertools.count(1)
        self._sent: dict[tuple[str, str], tuple[str, bytes]] = {}
        self._tokens: dict[str, str] = {}
        self._app: Any = None
        self._pub: Publisher | None = None
        self._timers = timers()
        self._started = False
        self._broker_up = True
        self._queued: list[tuple[bytes, int]] = []  # sent while down: (payload, inbox count due)

    # --- lifecycle ------------------------------------------------------------------

    @property
    def hub(self) -> AlarmHub:
        if self._hub is None:
            state = "is stopped (stop_hub)" if self._started else "has not started"
            raise ScenarioError(f"alarmhub {state}")
        return self._hub

    @property
    def now(self) -> datetime:
        return self.clock.now()

    @property
    def local_now(self) -> datetime:
        return self.clock.now().astimezone(OSLO)

    async def start(self) -> None:
        """Start the hub and register the devices, once; every step calls it."""
        if self._started:
            return
        self._started = True
        await self._start_hub()
        # As a system admin registers them: a first device assigns its bridge.
        await self.hub.register_devices(
            [s.device(self.municipality) for s in self.specs.values()],
            audit=(),
            assign_bridges=True,
        )
        self._make_users()
        await self._settle()

    async def _start_hub(self) -> None:
        started: asyncio.Future[AlarmHub] = asyncio.get_running_loop().create_future()
        stop = self._stop = asyncio.Event()

        async def run() -> None:
            try:
                async with AlarmHub(self.settings, clock=self.clock, serve_http=False) as hub:
                    started.set_result(hub)
                    await stop.wait()
            except BaseException as exc:
                if not started.done():
                    started.set_exception(exc)
                raise

        self._runner = asyncio.create_task(run(), name="scenario-hub")
        hub = await started
        assert hub.ingest is not None
        if not await hub.ingest.wait_connected(CEILING_S):
            raise ScenarioError("the hub did not connect to the broker")
        self._hub = hub
        if self._pub is None:
            self._pub = Publisher(self.broker.port, client_id=f"{self.client_id}-pub")
            self._pub.subscribe("alarmhub/v1/+/receipts")
        self._app = create_app(hub)
        await self._until_queued_committed()

    async def _until_queued_committed(self) -> None:
        """Messages published while alarmhub was down: wait until each new one is in the inbox."""
        deadline = wall_time.monotonic() + CEILING_S
        while self._queued:
            payload, count = self._queued[0]
            if inbox_count(self.db, payload) >= count:
                self._queued.pop(0)
                continue
            self._check_running()
            if wall_time.monotonic() > deadline:
                raise ScenarioError(
                    f"{len(self._queued)} messages sent while alarmhub was down "
                    f"never reached the inbox within {CEILING_S} s"
                )
            await asyncio.sleep(0.005)

    async def close(self) -> None:
        self._stop.set()
        if self._runner is not None:
            await self._runner
        if self._pub is not None:
            self._pub.close()

    async def register(self, *specs: DeviceSpec) -> None:
        """Register (or change) devices now, through the hub's registration path."""
        await self.start()
        for spec in specs:
            self.specs[spec.id] = spec
        await self.hub.register_devices(
            [s.device(self.municipality) for s in specs], audit=(), assign_bridges=True
        )
        self._make_users()
        await self._settle()

    # --- time -----------------------------------------------------------------------

    def at(self, when: str | datetime) -> At:
        return At(self, when)

    async def advance_to(self, when: str | datetime) -> None:
        """Move the virtual clock to `when`, running every timer due on the way at its instant.

        While alarmhub is stopped (stop_hub), time just passes.
        """
        await self.start()
        target = resolve_time(when, self.now, self.day)
        if target < self.now:
            raise ScenarioError(
                f"time goes forward only: {when!r} is {local(target)}, "
                f"it is already {local(self.now)}"
            )
        if self._hub is None:
            self.clock.advance(target - self.now)
            return
        await self._settle()
        for _ in range(MAX_STOPS):
            nxt = self._next_timer()
            if nxt is None or nxt > target:
                break
            self.clock.advance(nxt - self.now)
            await self._settle()
        else:
            raise ScenarioError(f"more than {MAX_STOPS} timer stops before {local(target)}")
        if target > self.now:
            self.clock.advance(target - self.now)
        await self._settle()

    def _next_timer(self) -> datetime | None:
        """The next instant after now at which a timer may have work.

        A timer whose work is overdue but declined (supervision while the broker is
        down) is asked again at every later stop; it is no reason to stop now.
        """
        now = self.now
        return min(
            (
                t
                for timer in self._timers
                if (t := timer.next_due(self.hub)) is not None and t > now
            ),
            default=None,
        )

    async def _settle(self) -> None:
        """Run every timer's step at this instant until none has anything left to do."""
        if self._hub is None:
            return  # stopped: nothing of alarmhub runs
        for _ in range(1000):
            self._check_running()
            busy = [bool(await timer.step(self.hub)) for timer in self._timers]
            if not any(busy):
                return
        raise ScenarioError(f"timers never settled at {local(self.now)}")

    def _check_running(self) -> None:
        if self._runner is not None and self._runner.done():
            self._runner.result()  # raises what stopped the hub
            raise ScenarioError("the hub stopped")

    # --- messages ---------------------------------------------------------------------

    async def publish(self, topic: str, payload: bytes | str | dict[str, Any]) -> None:
        """Publish anything (QoS 1) and return when its batch is committed and settled.

        While alarmhub is stopped the broker keeps it; `start_hub` waits for it.
        """
        await self.start()
        assert self._pub is not None
        if not self._broker_up:
            raise ScenarioError("the broker is down (broker_down): devices cannot publish")
        data = orjson.dumps(payload) if isinstance(payload, dict) else payload
        data = data.encode() if isinstance(data, str) else data
        if self._hub is None:
            # The same bytes again (a resend) are a redelivery, which adds no inbox row:
            # only new payloads are waited for; the broker delivers in order.
            if inbox_count(self.db, data) == 0 and all(p != data for p, _ in self._queued):
                self._queued.append((data, 1))
            self._pub.publish(topic, data)
            return
        before = self.hub.batches_committed
        self._pub.publish(topic, data)
        deadline = wall_time.monotonic() + CEILING_S
        while self.hub.batches_committed == before:
            self._check_running()
            if wall_time.monotonic() > deadline:
                raise ScenarioError(
                    f"no batch committed for {topic} within {CEILING_S} s "
                    "(is the topic one alarmhub subscribes to?)"
                )
            await asyncio.sleep(0.005)
        await self._settle()

    async def send(
        self,
        device_id: str,
        etype: str,
        *,
        msg_id: str | None = None,
        ts: str | datetime | None = None,
        **fields: Any,
    ) -> str:
        """A native message from `device_id`, stamped now (or `ts`); returns its msg id."""
        await self.start()
        msg_id = msg_id or f"{device_id}-{next(self._seq)}"
        if isinstance(ts, str) and "T" in ts:
            stamp = ts  # an RFC 3339 text as the device sends it, verbatim (bad ones too)
        else:
            when = self.now if ts is None else resolve_time(ts, self.now, self.day)
            stamp = when.astimezone(OSLO).isoformat()
        body = {"id": msg_id, "ts": stamp, "type": etype, **fields}
        topic, payload = f"alarmhub/v1/{device_id}/events", orjson.dumps(body)
        self._sent[device_id, msg_id] = (topic, payload)
        await self.publish(topic, payload)
        return msg_id

    async def resend(self, device_id: str, msg_id: str) -> None:
        """The same message again, byte for byte (a device that got no receipt)."""
        topic, payload = self._sent[device_id, msg_id]
        await self.publish(topic, payload)


@pytest.fixture
async def scenario(
    tmp_path: Path, broker: LocalBroker, client_id: str, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Callable[..., Scenario]]:
    """`scenario(municipality=, devices=, rules=, settings=, day=, start=)` -> a Scenario.

    The hub starts at the first awaited step. Its timed loops (tests/scenarios/timers.py)
    are switched off: the scenario runs their steps itself, in virtual time.
    """

    async def idle(self: Any) -> None:
        # Until stop: the hub cancels the loops it wraps then, and the registry poll
        # (which ends by itself at stop) watches the same stop event.
        stopping = getattr(self, "_stopping", None)
        await (stopping if stopping is not None else asyncio.Event()).wait()

    for timer in timers():
        monkeypatch.setattr(*timer.loop, idle)
    made: list[Scenario] = []

    def make(**kw: Any) -> Scenario:
        if made:
            raise ScenarioError("one scenario per test")
        s = Scenario(tmp_path, broker, client_id, **kw)
        made.append(s)
        return s

    try:
        yield make
    finally:
        for s in made:
            if s._app is not None:  # shown by pytest only when the scenario failed
                with contextlib.suppress(Exception):
                    print(await s.describe())
            with contextlib.suppress(ScenarioError):
                await s.close()
