"""The scenario suite's outages: alarmhub stopped and started, the broker gone and back.

A mixin of tests/scenarios/scenario.py's Scenario. While alarmhub is stopped, time passes
with nothing of it running and messages wait at the broker (alarmhub's persistent
session); while the broker is down, alarmhub notices and devices cannot publish.
Each returns only when alarmhub has noticed what happened, polled with a ceiling.
"""

from __future__ import annotations

import asyncio
import time as wall_time
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from tests.scenarios.expect import CEILING_S
from tests.scenarios.world import ScenarioError
from tests.support.helpers import Publisher

if TYPE_CHECKING:
    from alarmhub.app import AlarmHub


class Outages:
    """stop_hub, start_hub, restart, broker_down, broker_up; needs Scenario's lifecycle."""

    _hub: Any
    _pub: Publisher | None
    _broker_up: bool
    broker: Any
    client_id: str
    _app: Any
    _stop: asyncio.Event
    _runner: asyncio.Task[None] | None

    if TYPE_CHECKING:  # Scenario's, declared here so that mypy checks the calls

        @property
        def hub(self) -> AlarmHub: ...

        async def start(self) -> None: ...
        async def _start_hub(self) -> None: ...
        async def _settle(self) -> None: ...
        async def advance_to(self, when: str | datetime) -> None: ...
        def _check_running(self) -> None: ...

    async def stop_hub(self) -> None:
        """Stop alarmhub (as SIGTERM does). Until `start_hub`, time passes with no timer
        of the hub running, messages wait at the broker (its persistent session), and
        only the store can be read (inbox, escalations); the API is down with it."""
        await self.start()
        if self._hub is None:
            raise ScenarioError("alarmhub is already stopped")
        self._stop.set()
        assert self._runner is not None
        await self._runner
        self._hub = self._runner = self._app = None

    async def start_hub(self) -> None:
        """Start alarmhub again on the same store, rules and broker session, at the current
        virtual time; returns when what waited at the broker is committed and it settled."""
        if self._hub is not None:
            raise ScenarioError("alarmhub is running")
        await self._start_hub()
        await self._settle()

    async def restart(self, *, down_until: str | datetime | None = None) -> None:
        """`stop_hub`, let time pass until `down_until` (if given), `start_hub`."""
        await self.stop_hub()
        if down_until is not None:
            await self.advance_to(down_until)
        await self.start_hub()

    async def broker_down(self) -> None:
        """The broker goes away (a network or broker outage): alarmhub notices and waits."""
        await self.start()
        self.broker.stop()
        self._broker_up = False
        await self._until(
            lambda: self._hub is None or not self.hub.mqtt_connected,
            "alarmhub never noticed the broker go",
        )
        await self._settle()

    async def broker_up(self) -> None:
        """The broker is back (same port, its persistence kept): alarmhub reconnects."""
        self.broker.start()
        self._broker_up = True
        if self._pub is not None:  # a fresh device-side client; the receipts seen so far stay
            old = self._pub
            old.close()
            self._pub = Publisher(self.broker.port, client_id=f"{self.client_id}-pub")
            self._pub.received = old.received
            self._pub.subscribe("alarmhub/v1/+/receipts")
        await self._until(
            lambda: self._hub is None or self.hub.mqtt_connected,
            "alarmhub never reconnected to the broker",
        )
        await self._settle()

    async def _until(self, check: Callable[[], bool], failure: str) -> None:
        deadline = wall_time.monotonic() + CEILING_S
        while not check():
            self._check_running()
            if wall_time.monotonic() > deadline:
                raise ScenarioError(f"{failure} within {CEILING_S} s")
            await asyncio.sleep(0.005)
