"""Scenario suite: residents' nights scripted on the virtual clock against the real hub.

In the spirit of Alertmanager's acceptance tests ("at T send X; at T' expect Y"),
a scenario drives the real in-process daemon (`AlarmHub`) with a `FakeClock`:
messages go over a real Mosquitto (the `broker` fixture) through the real
decode -> dedup -> rules -> commit path into the real SQLite store; people act
through the real HTTP API (in-process ASGI client, real tokens and tenancy).

    from tests.scenario import door, pendant, scenario  # noqa: F401 - `scenario` is the fixture

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
second), and the registry refresh (devices, silences) at every stop. The harness
owns those three loops (their real-time versions are switched off), so nothing
depends on how fast the machine is: the clock does not move while a message is
in flight, and ``send`` returns only when its batch has been committed.

The DSL (``s.at(t).<method>(…)`` moves to `t` first; ``s.<method>(…)`` acts now;
``await s.at(t)`` only moves):

Devices (``devices=[…]`` of the fixture; ``await s.register(spec)`` later):
  ``pendant(id, resident=, heartbeat_s=, municipality=)``, ``fall_sensor(…)``,
  ``door(id, night="22:00-07:00", …)``, ``tracker(id, geofence=(lat, lon, radius_m),
  max_accuracy_m=)``, ``dispenser(id, doses=("08:00", "20:00"), window_min=60)``,
  or ``device(id, kind, settings={…})`` with the API's settings JSON. Municipality:
  the scenario's (``municipality="0301"``) unless given.
Messages (native protocol, ``ts`` = the virtual time unless given; returns the msg id):
  ``send(device, type, msg_id=None, ts=None, **fields)``, ``press(dev)``,
  ``fall(dev)``, ``door_opened(dev)``, ``door_closed(dev)``, ``fix(dev, lat, lon,
  accuracy_m=10)``, ``dose_taken(dev)``, ``heartbeat(dev)``; ``resend(device, msg_id)``
  sends the same message again (a redelivery); ``publish(topic, payload)`` for
  vendor formats (Zigbee2MQTT, OwnTracks) and malformed input. There is no
  pendant "cancel" event in the protocol today; ``send`` takes any new type.
People (through the HTTP API, as ``op<NNNN>`` operators / ``madm<NNNN>`` municipality
  admins; ``by=`` another user, ``expect_status=`` for a refusal such as 409):
  ``acknowledge(dev, kind)``, ``dispatch``, ``on_site``, ``escalate``,
  ``resolve(dev, kind, outcome="helped", note=None)``, ``note(dev, kind, text)``,
  ``silence(device=None, municipality=None, until="06:00", starts=None,
  reason=…) -> id``, ``end_silence(id)``, ``resolve_incident(municipality, outcome=…)``.
Expectations (all read the committed store or the API, never in-memory state):
  ``expect_alarm(dev, kind, status=, priority=, level=, escalated_to=,
  suppressed_by=, suppression_reason=, **any_api_field) -> dict`` (the newest alarm
  of that device and kind, as the API shows it), ``expect_no_alarm(dev, kind=None,
  active_only=True)``, ``expect_alarm_count(dev, kind, n)``,
  ``expect_timeline(dev, kind, *types, exact=True)``, ``expect_escalations(dev, kind,
  [(target, "HH:MM:SS"), …])`` (steps that escalated, with their times),
  ``expect_queue(municipality, [(dev, kind, state), …])`` (the active alarms an
  operator of that municipality sees, in queue order), ``expect_receipt(dev,
  msg_id, status, **fields)`` (polled with a ceiling: receipts are asynchronous),
  ``expect_inbox(dev, msg_id, verdict=, reason=, events=[…])``, ``expect_dead_letter(dev, reason)``.
Helpers for your own assertions: ``alarm(dev, kind)``, ``alarms(dev, kind)``,
``timeline(dev, kind)``, ``escalations(dev, kind)``, ``queue(municipality)``,
``inbox(dev)``, ``s.now`` / ``s.local_now``, ``s.hub``, ``s.db``, ``s.api(user)``.

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
import re
import time as wall_time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import orjson
import pytest

from alarmhub.app import AlarmHub
from alarmhub.clock import FakeClock
from alarmhub.core.model import Device, DeviceKind
from alarmhub.device_settings import parse_settings
from alarmhub.escalator import Escalator
from alarmhub.mosquitto import LocalBroker
from alarmhub.store import accounts
from alarmhub.store.accounts import Role
from alarmhub.supervise import STEP_S, Supervision
from alarmhub.web.api import create_app
from tests.support import REPO, Publisher, db_rows, hub_settings

OSLO = ZoneInfo("Europe/Oslo")
DAY = date(2026, 11, 20)
NOON = time(12)
CEILING_S = 20.0  # how long to wait for asynchronous delivery before failing (never a timing claim)
MAX_STOPS = 100_000  # a runaway timer fails the scenario instead of hanging it
_PASSWORD_HASH: list[str] = []  # argon2 is slow: hashed once per session


class ScenarioError(AssertionError):
    """A scenario that cannot go on (time backwards, unknown device, a delivery that never came)."""


def default_rules() -> str:
    """The built-in rules' text, to extend with a municipality section or a rule."""
    return (REPO / "config" / "rules.toml").read_text()


# --- devices ---------------------------------------------------------------------------


@dataclass(frozen=True)
class DeviceSpec:
    id: str
    kind: DeviceKind
    municipality: str | None = None
    resident: str | None = None
    heartbeat_s: int | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    profile: str | None = None

    def device(self, municipality: str) -> Device:
        return Device(
            self.id,
            self.kind,
            self.municipality or municipality,
            profile=self.profile,
            heartbeat_interval_s=self.heartbeat_s,
            resident=self.resident,
            settings=parse_settings(self.settings),
        )


def device(
    id: str,  # noqa: A002 - the protocol's word
    kind: DeviceKind | str,
    *,
    municipality: str | None = None,
    resident: str | None = None,
    heartbeat_s: int | None = None,
    settings: dict[str, Any] | None = None,
    profile: str | None = None,
) -> DeviceSpec:
    return DeviceSpec(
        id, DeviceKind(kind), municipality, resident, heartbeat_s, settings or {}, profile
    )


def pendant(id: str, **kw: Any) -> DeviceSpec:  # noqa: A002
    return device(id, DeviceKind.SAFETY_ALARM, **kw)


def fall_sensor(id: str, **kw: Any) -> DeviceSpec:  # noqa: A002
    return device(id, DeviceKind.FALL_SENSOR, **kw)


def door(id: str, *, night: str | None = None, **kw: Any) -> DeviceSpec:  # noqa: A002
    """A door sensor; `night="23:00-06:00"` gives it its own night window."""
    settings = dict(kw.pop("settings", None) or {})
    if night is not None:
        start, end = night.split("-")
        settings.setdefault("windows", {})["night"] = [start, end]
    return device(id, DeviceKind.DOOR_SENSOR, settings=settings, **kw)


def tracker(
    id: str,  # noqa: A002
    *,
    geofence: tuple[float, float, float] | None = None,
    max_accuracy_m: float | None = None,
    **kw: Any,
) -> DeviceSpec:
    settings = dict(kw.pop("settings", None) or {})
    if geofence is not None:
        settings["geofence"] = {"lat": geofence[0], "lon": geofence[1], "radius_m": geofence[2]}
    if max_accuracy_m is not None:
        settings["max_accuracy_m"] = max_accuracy_m
    return device(id, DeviceKind.GPS_TRACKER, settings=settings, **kw)


def dispenser(
    id: str,  # noqa: A002
    *,
    doses: Iterable[str] = (),
    window_min: int = 60,
    **kw: Any,
) -> DeviceSpec:
    settings = dict(kw.pop("settings", None) or {})
    if doses:
        settings["dose_schedule"] = {"times": list(doses), "window_min": window_min}
    return device(id, DeviceKind.MEDICATION_DISPENSER, settings=settings, **kw)


# --- time --------------------------------------------------------------------------------

_CLOCK = re.compile(r"^(?:\+(\d+)d\s+)?(\d{1,2}):(\d{2})(?::(\d{2}))?$")
_RELATIVE = re.compile(r"^\+(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")


def resolve_time(when: str | datetime, now: datetime, day: date = DAY) -> datetime:
    """A scenario time (see the module docstring) as an aware UTC datetime."""
    if isinstance(when, datetime):
        if when.tzinfo is None:
            raise ScenarioError(f"{when!r}: give an aware datetime")
        return when.astimezone(UTC)
    text = when.strip()
    if (m := _RELATIVE.match(text)) and any(m.groups()):
        h, mi, s = (int(g or 0) for g in m.groups())
        return now + timedelta(hours=h, minutes=mi, seconds=s)
    if m := _CLOCK.match(text):
        days, hh, mm, ss = int(m[1] or 0), int(m[2]), int(m[3]), int(m[4] or 0)
        t = time(hh, mm, ss)
        d = day + timedelta(days=days + (0 if t >= NOON else 1))
        return datetime.combine(d, t, tzinfo=OSLO).astimezone(UTC)
    raise ScenarioError(f"{when!r}: not a scenario time (HH:MM[:SS], +Nd HH:MM, +5m, +90s)")


def local(t: datetime) -> str:
    """How a scenario names an instant: local time, with the date when it is not obvious."""
    return t.astimezone(OSLO).strftime("%Y-%m-%d %H:%M:%S")


def _parse(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


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


class Scenario:
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
        self.receipts: list[tuple[str, dict[str, Any]]] = []

    # --- lifecycle ------------------------------------------------------------------

    @property
    def hub(self) -> AlarmHub:
        if self._hub is None:
            raise ScenarioError("the hub has not started: await something on the scenario first")
        return self._hub

    @property
    def now(self) -> datetime:
        return self.clock.now()

    @property
    def local_now(self) -> datetime:
        return self.clock.now().astimezone(OSLO)

    async def start(self) -> None:
        if self._hub is not None:
            return
        started: asyncio.Future[AlarmHub] = asyncio.get_running_loop().create_future()

        async def run() -> None:
            try:
                async with AlarmHub(self.settings, clock=self.clock, serve_http=False) as hub:
                    started.set_result(hub)
                    await self._stop.wait()
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
        self._pub = Publisher(self.broker.port, client_id=f"{self.client_id}-pub")
        self._pub.subscribe("alarmhub/v1/+/receipts")
        self._app = create_app(hub)
        await hub.register_devices([s.device(self.municipality) for s in self.specs.values()])
        self._make_users()
        await self._settle()

    async def close(self) -> None:
        self._stop.set()
        if self._runner is not None:
            await self._runner
        if self._pub is not None:
            self._pub.close()

    def _make_users(self) -> None:
        """root (admin), and for each municipality opNNNN (operator) and madmNNNN (its admin)."""
        if not _PASSWORD_HASH:
            _PASSWORD_HASH.append(accounts.hash_password("scenario password, never used"))
        munis = {self.municipality} | {s.municipality for s in self.specs.values() if s.municipality}
        with accounts.connect(self.db) as conn:
            if "root" not in self._tokens:
                accounts.create_user(conn, "root", Role.ADMIN, [], _PASSWORD_HASH[0], self.now)
                self._tokens["root"] = accounts.create_token(conn, "root", self.now, None)
            for m in sorted(munis - {k.removeprefix("op") for k in self._tokens}):
                for name, role in ((f"op{m}", Role.OPERATOR), (f"madm{m}", Role.MUNICIPALITY_ADMIN)):
                    accounts.create_user(conn, name, role, [m], _PASSWORD_HASH[0], self.now)
                    self._tokens[name] = accounts.create_token(conn, name, self.now, None)

    def api(self, user: str = "root") -> httpx.AsyncClient:
        """An HTTP client of the real API, in-process, as `user` (root, opNNNN, madmNNNN)."""
        if user not in self._tokens:
            raise ScenarioError(f"no user {user!r}; there are {sorted(self._tokens)}")
        return httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self._app),
            base_url="http://scenario",
            headers={"Authorization": f"Bearer {self._tokens[user]}"},
        )

    async def register(self, *specs: DeviceSpec) -> None:
        """Register (or change) devices now, through the hub's registration path."""
        await self.start()
        for spec in specs:
            self.specs[spec.id] = spec
        await self.hub.register_devices([s.device(self.municipality) for s in specs])
        self._make_users()
        await self._settle()

    # --- time -----------------------------------------------------------------------

    def at(self, when: str | datetime) -> At:
        return At(self, when)

    async def advance_to(self, when: str | datetime) -> None:
        """Move the virtual clock to `when`, running every timer due on the way at its instant."""
        await self.start()
        target = resolve_time(when, self.now, self.day)
        if target < self.now:
            raise ScenarioError(f"time goes forward only: {when!r} is {local(target)}, "
                                f"it is already {local(self.now)}")
        await self._settle()
        for _ in range(MAX_STOPS):
            nxt = self._next_timer()
            if nxt is None or nxt > target:
                break
            # A heap's head may be early (a device heard since): never stand still.
            self.clock.advance(max(nxt - self.now, timedelta(microseconds=1)))
            await self._settle()
        else:
            raise ScenarioError(f"more than {MAX_STOPS} timer stops before {local(target)}")
        if target > self.now:
            self.clock.advance(target - self.now)
        await self._settle()

    def _next_timer(self) -> datetime | None:
        hub = self.hub
        times = []
        if (e := hub.escalator.next_due()) is not None:
            times.append(e)
        if (s := hub.supervision.next_due()) is not None:
            # Overdue strictly after the deadline; the daemon's step runs every STEP_S.
            times.append(s + timedelta(seconds=STEP_S))
        return min(times, default=None)

    async def _settle(self) -> None:
        """Run what is due at this instant until nothing is: registry, escalation, supervision."""
        hub = self.hub
        for _ in range(1000):
            self._check_running()
            await hub.refresh_registry()
            await hub.escalator.fire_due()
            raised = await hub.supervision.step()
            due = hub.escalator.next_due()
            if raised == 0 and (due is None or due > self.now):
                return
        raise ScenarioError(f"timers never settled at {local(self.now)}")

    def _check_running(self) -> None:
        if self._runner is not None and self._runner.done():
            self._runner.result()  # raises what stopped the hub
            raise ScenarioError("the hub stopped")

    # --- messages ---------------------------------------------------------------------

    async def publish(self, topic: str, payload: bytes | str | dict[str, Any]) -> None:
        """Publish anything (QoS 1) and return when its batch is committed and settled."""
        await self.start()
        assert self._pub is not None
        before = self.hub.batches_committed
        self._pub.publish(topic, payload)
        deadline = wall_time.monotonic() + CEILING_S
        while self.hub.batches_committed == before:
            self._check_running()
            if wall_time.monotonic() > deadline:
                raise ScenarioError(f"no batch committed for {topic} within {CEILING_S} s "
                                    "(is the topic one alarmhub subscribes to?)")
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
        when = self.now if ts is None else resolve_time(ts, self.now, self.day)
        body = {"id": msg_id, "ts": when.astimezone(OSLO).isoformat(), "type": etype, **fields}
        topic, payload = f"alarmhub/v1/{device_id}/events", orjson.dumps(body)
        self._sent[device_id, msg_id] = (topic, payload)
        await self.publish(topic, payload)
        return msg_id

    async def resend(self, device_id: str, msg_id: str) -> None:
        """The same message again, byte for byte (a device that got no receipt)."""
        topic, payload = self._sent[device_id, msg_id]
        await self.publish(topic, payload)

    async def press(self, device_id: str, **kw: Any) -> str:
        return await self.send(device_id, "button.pressed", **kw)

    async def fall(self, device_id: str, **kw: Any) -> str:
        return await self.send(device_id, "fall.detected", **kw)

    async def door_opened(self, device_id: str, **kw: Any) -> str:
        return await self.send(device_id, "door.opened", **kw)

    async def door_closed(self, device_id: str, **kw: Any) -> str:
        return await self.send(device_id, "door.closed", **kw)

    async def fix(self, device_id: str, lat: float, lon: float, accuracy_m: float = 10, **kw: Any) -> str:
        return await self.send(device_id, "location", lat=lat, lon=lon, accuracy_m=accuracy_m, **kw)

    async def dose_taken(self, device_id: str, **kw: Any) -> str:
        return await self.send(device_id, "dose.taken", **kw)

    async def heartbeat(self, device_id: str, **kw: Any) -> str:
        return await self.send(device_id, "heartbeat", **kw)

    # --- people -----------------------------------------------------------------------

    def _muni(self, device_id: str) -> str:
        spec = self.specs.get(device_id)
        if spec is None:
            if device_id.startswith("municipality:"):
                return device_id.removeprefix("municipality:")
            raise ScenarioError(f"unknown device {device_id!r}")
        return spec.municipality or self.municipality

    async def _call(
        self, user: str, method: str, path: str, expect_status: int, json: Any = None
    ) -> Any:
        async with self.api(user) as client:
            r = await client.request(method, path, json=json)
        if r.status_code != expect_status:
            raise AssertionError(f"{method} {path} as {user}: {r.status_code} {r.text}, "
                                 f"expected {expect_status}")
        await self._settle()
        return r.json() if r.content else None

    async def act(
        self,
        device_id: str,
        kind: str,
        action: str,
        *,
        by: str | None = None,
        body: dict[str, Any] | None = None,
        expect_status: int = 200,
    ) -> Any:
        """An operator's action on the newest alarm of (device, kind), through the API."""
        alarm = await self.alarm(device_id, kind)
        user = by or f"op{alarm['municipality']}"
        return await self._call(user, "POST", f"/api/v1/alarms/{alarm['id']}/{action}",
                                expect_status, body)

    async def acknowledge(self, device_id: str, kind: str, **kw: Any) -> Any:
        return await self.act(device_id, kind, "acknowledge", **kw)

    async def escalate(self, device_id: str, kind: str, **kw: Any) -> Any:
        return await self.act(device_id, kind, "escalate", **kw)

    async def dispatch(self, device_id: str, kind: str, **kw: Any) -> Any:
        return await self.act(device_id, kind, "dispatch", **kw)

    async def on_site(self, device_id: str, kind: str, **kw: Any) -> Any:
        return await self.act(device_id, kind, "on-site", **kw)

    async def resolve(
        self, device_id: str, kind: str, outcome: str = "helped", note: str | None = None, **kw: Any
    ) -> Any:
        body = {"outcome": outcome} | ({"note": note} if note else {})
        return await self.act(device_id, kind, "resolve", body=body, **kw)

    async def note(self, device_id: str, kind: str, text: str, **kw: Any) -> Any:
        return await self.act(device_id, kind, "notes", body={"note": text}, **kw)

    async def resolve_incident(self, municipality: str | None = None, **kw: Any) -> Any:
        """Resolve the municipality's open outage incident (kind from the rules' [storm])."""
        m = municipality or self.municipality
        storm = self.hub.rules.storm
        kind = storm.incident_kind if storm is not None else "incident"
        return await self.resolve(f"municipality:{m}", kind, **kw)

    async def silence(
        self,
        device: str | None = None,
        *,
        municipality: str | None = None,
        until: str | datetime = "+1h",
        starts: str | datetime | None = None,
        reason: str = "scenario maintenance",
        by: str | None = None,
        expect_status: int = 201,
    ) -> str:
        """A silence of one device (or the whole municipality) from now (or `starts`); its id."""
        await self.start()
        m = municipality or (self._muni(device) if device else self.municipality)
        body = {
            "municipality": m,
            "device_id": device,
            "starts_at": (self.now if starts is None else resolve_time(starts, self.now, self.day)).isoformat(),
            "ends_at": resolve_time(until, self.now, self.day).isoformat(),
            "reason": reason,
        }
        out = await self._call(by or f"madm{m}", "POST", "/api/v1/silences", expect_status, body)
        return str(out["id"]) if out and "id" in out else ""

    async def end_silence(self, silence_id: str, *, municipality: str | None = None,
                          by: str | None = None, expect_status: int = 204) -> None:
        m = municipality or self.municipality
        await self._call(by or f"madm{m}", "DELETE", f"/api/v1/silences/{silence_id}", expect_status)

    # --- reading --------------------------------------------------------------------------

    async def alarms(self, device_id: str, kind: str | None = None) -> list[dict[str, Any]]:
        """Every alarm of the device (of that kind), oldest first, as the API shows them."""
        await self.start()
        m = self._muni(device_id)
        items: list[dict[str, Any]] = []
        cursor: str | None = None
        async with self.api("root") as client:
            while True:
                params: dict[str, Any] = {"municipality": m, "limit": 500}
                if cursor:
                    params["cursor"] = cursor
                page = (await client.get("/api/v1/alarms", params=params)).json()
                items += page["items"]
                cursor = page.get("next_cursor")
                if not cursor:
                    break
        found = [a for a in items if a["device_id"] == device_id and kind in (None, a["kind"])]
        return sorted(found, key=lambda a: (a["raised_at"], a["id"]))

    async def alarm(self, device_id: str, kind: str) -> dict[str, Any]:
        found = await self.alarms(device_id, kind)
        if not found:
            every = [(a["kind"], a["state"]) for a in await self.alarms(device_id)]
            raise AssertionError(f"{local(self.now)}: no {kind} alarm of {device_id}; it has {every}")
        return found[-1]

    async def timeline(self, device_id: str, kind: str) -> list[dict[str, Any]]:
        """The newest alarm's timeline: dicts with `at` (aware datetime), type, actor, detail."""
        alarm = await self.alarm(device_id, kind)
        async with self.api("root") as client:
            detail = (await client.get(f"/api/v1/alarms/{alarm['id']}")).json()
        return [{**e, "at": _parse(e["at"])} for e in detail["timeline"]]

    async def escalations(self, device_id: str, kind: str) -> list[dict[str, Any]]:
        """Every decided escalation row of the newest alarm (escalated or skipped), in order."""
        alarm = await self.alarm(device_id, kind)
        rows = db_rows(self.db, "SELECT round, step, reason, level, target, due_at, decided_at "
                       "FROM escalations WHERE alarm_id = ? ORDER BY decided_at, round, step",
                       (alarm["id"],))
        keys = ("round", "step", "reason", "level", "target", "due_at", "decided_at")
        return [dict(zip(keys, r, strict=True)) for r in rows]

    async def queue(self, municipality: str | None = None, user: str | None = None) -> list[dict[str, Any]]:
        """The active alarms an operator of the municipality sees, in the queue's order."""
        await self.start()
        m = municipality or self.municipality
        async with self.api(user or f"op{m}") as client:
            items: list[dict[str, Any]] = []
            for state in ("open", "acknowledged"):
                r = await client.get("/api/v1/alarms", params={"state": state, "limit": 500})
                items += r.json()["items"]
        return sorted(items, key=lambda a: (a["priority"], a["raised_at"], a["id"]))

    def inbox(self, device_id: str) -> list[dict[str, Any]]:
        """The device's stored messages, in order: msg_id, verdict (the message's:
        logged, redelivery, rejected), reason, detail, received_at, and `events`,
        each a dict with its own `verdict` (new, repeat, cleared, logged, …), rule, alarm_id."""
        rows = db_rows(self.db, "SELECT msg_id, verdict, reason, detail, received_at, events "
                       "FROM inbox WHERE device_id = ? ORDER BY seq", (device_id,))
        keys = ("msg_id", "verdict", "reason", "detail", "received_at", "events")
        out = [dict(zip(keys, r, strict=True)) for r in rows]
        for row in out:
            row["events"] = orjson.loads(row["events"]) if row["events"] else []
        return out

    # --- expectations ----------------------------------------------------------------

    async def expect_alarm(
        self,
        device_id: str,
        kind: str,
        *,
        status: str | None = None,
        priority: int | None = None,
        level: int | None = None,
        escalated_to: str | Iterable[str] | None = None,
        suppressed_by: str | None = None,
        suppression_reason: str | None = None,
        **fields: Any,
    ) -> dict[str, Any]:
        """The newest alarm of (device, kind) exists and matches; returns it as the API shows it.

        `status` is the state (open, acknowledged, resolved); `escalated_to` a target
        (or several) that an escalation step was sent to; `suppressed_by` the kind of
        suppression ("silence", "inhibited", "incident") or the full tag, or "" for
        "not suppressed"; any other keyword is an API field compared exactly.
        """
        alarm = await self.alarm(device_id, kind)
        where = f"{local(self.now)}: {kind} alarm of {device_id}"
        expected: dict[str, Any] = dict(fields)
        if status is not None:
            expected["state"] = status
        if priority is not None:
            expected["priority"] = priority
        if level is not None:
            expected["escalation_level"] = level
        wrong = {k: (alarm.get(k, "<no such field>"), v) for k, v in expected.items() if alarm.get(k, object()) != v}
        assert not wrong, f"{where}: (got, expected) {wrong}"
        if escalated_to is not None:
            targets = [escalated_to] if isinstance(escalated_to, str) else list(escalated_to)
            fired = [e["target"] for e in await self.escalations(device_id, kind) if e["reason"] == "escalate"]
            missing = [t for t in targets if t not in fired]
            assert not missing, f"{where}: not escalated to {missing}; escalated to {fired}"
        if suppressed_by is not None:
            tag = alarm["suppressed_by"] or ""
            ok = tag == suppressed_by or tag.split(":", 1)[0] == suppressed_by
            assert ok, f"{where}: suppressed_by is {tag!r}, expected {suppressed_by!r}"
        if suppression_reason is not None:
            reasons = [e["detail"].get("reason") for e in await self.timeline(device_id, kind)
                       if e["type"] == "suppressed"]
            assert suppression_reason in reasons, f"{where}: suppression reasons {reasons}"
        return alarm

    async def expect_no_alarm(self, device_id: str, kind: str | None = None, *, active_only: bool = True) -> None:
        found = [a for a in await self.alarms(device_id, kind)
                 if not active_only or a["state"] != "resolved"]
        what = "active " if active_only else ""
        assert not found, (f"{local(self.now)}: expected no {what}{kind or ''} alarm of {device_id}, "
                           f"found {[(a['kind'], a['state'], a['suppressed_by']) for a in found]}")

    async def expect_alarm_count(self, device_id: str, kind: str, n: int) -> list[dict[str, Any]]:
        found = await self.alarms(device_id, kind)
        assert len(found) == n, f"{local(self.now)}: {len(found)} {kind} alarms of {device_id}, expected {n}"
        return found

    async def expect_timeline(self, device_id: str, kind: str, *types: str, exact: bool = True) -> list[dict[str, Any]]:
        """The newest alarm's timeline types are `types` (exact) or contain them in order."""
        entries = await self.timeline(device_id, kind)
        got = [e["type"] for e in entries]
        if exact:
            assert got == list(types), f"{local(self.now)}: timeline {got}, expected {list(types)}"
        else:
            it = iter(got)
            assert all(t in it for t in types), f"{local(self.now)}: timeline {got} lacks {list(types)} in order"
        return entries

    async def expect_escalations(
        self, device_id: str, kind: str, expected: Iterable[tuple[str, str | datetime]]
    ) -> None:
        """Exactly these steps escalated: (target, time), time as a scenario time."""
        fired = [(e["target"], local(_parse(e["decided_at"]) or self.now))
                 for e in await self.escalations(device_id, kind) if e["reason"] == "escalate"]
        want = [(target, local(resolve_time(t, self.now, self.day))) for target, t in expected]
        assert fired == want, f"{local(self.now)}: escalations {fired}, expected {want}"

    async def expect_queue(
        self, municipality: str | None, expected: Iterable[tuple[str, str, str]], *, user: str | None = None
    ) -> list[dict[str, Any]]:
        """The operator's queue, as (device, kind, state), in queue order."""
        items = await self.queue(municipality, user)
        got = [(a["device_id"], a["kind"], a["state"]) for a in items]
        assert got == list(expected), f"{local(self.now)}: queue {got}, expected {list(expected)}"
        return items

    async def expect_receipt(self, device_id: str, msg_id: str, status: str, **fields: Any) -> dict[str, Any]:
        """A receipt for the message arrives (polled with a ceiling: receipts are asynchronous)."""
        await self.start()
        assert self._pub is not None
        topic = f"alarmhub/v1/{device_id}/receipts"
        want = {"ref": msg_id, "status": status, **fields}

        def match() -> dict[str, Any] | None:
            for t, payload in list(self._pub.received):  # type: ignore[union-attr]
                body = orjson.loads(payload)
                if t == topic and all(body.get(k) == v for k, v in want.items()):
                    return dict(body)
            return None

        deadline = wall_time.monotonic() + CEILING_S
        while (found := match()) is None:
            if wall_time.monotonic() > deadline:
                got = [orjson.loads(p) for t, p in self._pub.received if t == topic]
                raise AssertionError(f"no receipt {want} on {topic}; got {got}")
            await asyncio.sleep(0.01)
        return found

    async def expect_inbox(
        self,
        device_id: str,
        msg_id: str,
        *,
        verdict: str | None = None,
        reason: str | None = None,
        events: list[str] | None = None,
    ) -> dict[str, Any]:
        """The message's newest inbox row: the message `verdict`, its dead-letter `reason`,
        and `events`, the verdicts of its events in order (e.g. ["new"], ["logged"])."""
        rows = [r for r in self.inbox(device_id) if r["msg_id"] == msg_id]
        assert rows, f"no inbox row for {device_id}/{msg_id}; has {self.inbox(device_id)}"
        row = rows[-1]
        if events is not None:
            got = [e["verdict"] for e in row["events"]]
            assert got == events, f"{device_id}/{msg_id}: event verdicts {got}, expected {events}"
        if verdict is not None:
            assert row["verdict"] == verdict, f"{device_id}/{msg_id}: verdict {row['verdict']}, expected {verdict}"
        if reason is not None:
            assert row["reason"] == reason, f"{device_id}/{msg_id}: reason {row['reason']}, expected {reason}"
        return row

    async def expect_dead_letter(self, device_id: str, reason: str) -> dict[str, Any]:
        rows = [r for r in self.inbox(device_id) if r["verdict"] == "rejected"]
        reasons = [r["reason"] for r in rows]
        assert reason in reasons, f"{device_id}: dead letters {reasons}, expected one {reason!r}"
        return rows[reasons.index(reason)]


@pytest.fixture
async def scenario(
    tmp_path: Path, broker: LocalBroker, client_id: str, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Callable[..., Scenario]]:
    """`scenario(municipality=, devices=, rules=, settings=, day=, start=)` -> a Scenario.

    The hub starts at the first awaited step. Its escalator, supervision and registry
    loops are switched off: the scenario runs their steps itself, in virtual time.
    """

    async def idle(self: Any) -> None:
        hub = getattr(self, "_hub", self)
        await hub.wait_stopped()

    monkeypatch.setattr(Escalator, "run", idle)
    monkeypatch.setattr(Supervision, "run", idle)
    monkeypatch.setattr(AlarmHub, "_registry_loop", idle)
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
            with contextlib.suppress(ScenarioError):
                await s.close()
