"""Simulated operators at work: they watch the queue and act through the HTTP API.

The demo's operators are real users with bearer tokens of their own, so every
acknowledgement, dispatch and resolution goes through the same route, lock,
timeline and audit log as a person's click, and is shown under the operator's
name (`simulated-operator-N`). What they do and when is decided by the pure
policy in :mod:`alarmhub.sim.operators`; this module only polls the queue,
waits and posts.

An alarm someone else took first (a person working the demo queue, or the
sensor that cleared it) answers 409: the simulated operator leaves it alone.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx

from alarmhub.clock import Clock
from alarmhub.core.actions import Action
from alarmhub.sim.model import seeded
from alarmhub.sim.operators import Response, Step, respond, scaled

POLL_S = 2.0
HTTP_TIMEOUT_S = 10.0
QUEUE_LIMIT = 500


@dataclass(slots=True)
class StaffStats:
    acknowledged: int = 0
    dispatched: int = 0
    on_site: int = 0
    resolved: int = 0
    taken_by_others: int = 0  # 409 or 404: someone or something else had it
    errors: int = 0

    def count(self, action: Action) -> None:
        if action is Action.ACKNOWLEDGE:
            self.acknowledged += 1
        elif action is Action.DISPATCH:
            self.dispatched += 1
        elif action is Action.ON_SITE:
            self.on_site += 1
        elif action is Action.RESOLVE:
            self.resolved += 1


@dataclass(frozen=True, slots=True)
class Acted:
    """One action done, for the demo's terminal line."""

    operator: str
    action: Action
    alarm: Mapping[str, Any]
    after_s: float  # since the alarm was raised


class SimulatedStaff:
    """Operators with tokens, a seed and a speed; :meth:`run` until `stop` is set."""

    def __init__(
        self,
        base_url: str,
        tokens: Mapping[str, str],
        clock: Clock,
        *,
        seed: int,
        speed: float = 1.0,
        poll_s: float = POLL_S,
        on_action: Callable[[Acted], None] | None = None,
    ) -> None:
        if not tokens:
            raise ValueError("simulated staff needs at least one operator")
        self._base = base_url
        self._tokens = dict(tokens)
        self._clock = clock
        self._seed = seed
        self._speed = speed
        self._poll_s = poll_s
        self._on_action = on_action
        self._planned: set[str] = set()
        self.stats = StaffStats()

    def plan(self, alarm: Mapping[str, Any]) -> Response:
        rng = seeded(f"{self._seed}:operators:{alarm['id']}")
        response = respond(str(alarm["kind"]), int(alarm["priority"]), rng, list(self._tokens))
        return scaled(response, self._speed)

    async def run(self, stop: asyncio.Event) -> StaffStats:
        watcher = next(iter(self._tokens.values()))
        async with (
            httpx.AsyncClient(base_url=self._base, timeout=HTTP_TIMEOUT_S) as client,
            asyncio.TaskGroup() as tg,
        ):
            while not stop.is_set():
                for alarm in await self._open_alarms(client, watcher):
                    if alarm["id"] in self._planned or alarm.get("suppressed_by"):
                        continue  # a suppressed alarm is not in the queue until its cause ends
                    self._planned.add(alarm["id"])
                    tg.create_task(
                        self._carry_out(client, alarm, stop), name=f"sim-staff-{alarm['id']}"
                    )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self._poll_s)
        return self.stats

    async def _open_alarms(self, client: httpx.AsyncClient, token: str) -> list[dict[str, Any]]:
        try:
            resp = await client.get(
                "/api/v1/alarms",
                params={"state": "open", "limit": QUEUE_LIMIT},
                headers=_auth(token),
            )
        except httpx.HTTPError:
            self.stats.errors += 1
            return []
        if resp.status_code != 200:
            self.stats.errors += 1
            return []
        items: list[dict[str, Any]] = resp.json()["items"]
        return items

    async def _carry_out(
        self, client: httpx.AsyncClient, alarm: Mapping[str, Any], stop: asyncio.Event
    ) -> None:
        response = self.plan(alarm)
        raised = datetime.fromisoformat(str(alarm["raised_at"]))
        for step in response.steps:
            wait = step.after_s - (self._clock.now() - raised).total_seconds()
            if wait > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), wait)
            if stop.is_set() or not await self._post(client, response.operator, alarm, step):
                return
            if self._on_action is not None:
                after = (self._clock.now() - raised).total_seconds()
                self._on_action(Acted(response.operator, step.action, alarm, after))

    async def _post(
        self, client: httpx.AsyncClient, operator: str, alarm: Mapping[str, Any], step: Step
    ) -> bool:
        """Do one step; False ends the plan (taken by someone else, gone, or an error)."""
        body: dict[str, str] = {}
        if step.outcome is not None:
            body["outcome"] = step.outcome
        if step.note is not None:
            body["note"] = step.note
        try:
            resp = await client.post(
                f"/api/v1/alarms/{alarm['id']}/{step.action.value}",
                json=body or None,
                headers=_auth(self._tokens[operator]),
            )
        except httpx.HTTPError:
            self.stats.errors += 1
            return False
        if resp.status_code == 200:
            self.stats.count(step.action)
            return True
        if resp.status_code in (404, 409):
            self.stats.taken_by_others += 1
        else:
            self.stats.errors += 1
        return False


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
