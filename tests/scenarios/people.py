"""The scenario suite's people: operators and municipality staff acting through the real API.

A mixin of tests/scenarios/scenario.py's Scenario: every action is an HTTP request of the
real API (in-process), as the user a response centre would be, and the scenario
settles (runs what is due) after it.
"""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from alarmhub.core.people import Role
from alarmhub.store.sqlite import accounts
from tests.scenarios.world import ScenarioError, resolve_time

if TYPE_CHECKING:
    from alarmhub.app import AlarmHub
    from tests.scenarios.world import DeviceSpec

_PASSWORD_HASH: list[str] = []  # argon2 is slow: hashed once per session


class People:
    """Users, the API, and people's actions; needs Scenario's start/alarm/_settle."""

    _app: Any
    _started: bool
    _tokens: dict[str, str]
    db: Path
    day: date
    municipality: str
    specs: dict[str, DeviceSpec]

    if TYPE_CHECKING:  # Scenario's and Expectations', declared here so that mypy checks the calls

        @property
        def hub(self) -> AlarmHub: ...
        @property
        def now(self) -> datetime: ...
        async def start(self) -> None: ...
        async def _settle(self) -> None: ...
        async def alarm(self, device_id: str, kind: str) -> dict[str, Any]: ...

    def api(self, user: str = "root") -> httpx.AsyncClient:
        """An HTTP client of the real API, in-process, as `user` (root, opNNNN, madmNNNN)."""
        if self._app is None:
            raise ScenarioError(
                f"the API is down: alarmhub {'is stopped' if self._started else 'has not started'}"
            )
        if user not in self._tokens:
            raise ScenarioError(f"no user {user!r}; there are {sorted(self._tokens)}")
        return httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self._app),
            base_url="http://scenario",
            headers={"Authorization": f"Bearer {self._tokens[user]}"},
        )

    def _make_users(self) -> None:
        """root (admin), and for each municipality opNNNN (operator) and madmNNNN (its admin)."""
        if not _PASSWORD_HASH:
            _PASSWORD_HASH.append(accounts.hash_password("scenario password, never used"))
        munis = {self.municipality} | {
            s.municipality for s in self.specs.values() if s.municipality
        }
        with accounts.connect(self.db) as conn:
            if "root" not in self._tokens:
                accounts.create_user(conn, "root", Role.ADMIN, [], _PASSWORD_HASH[0], self.now, ())
                self._tokens["root"] = accounts.create_token(conn, "root", self.now, None, ())
            for m in sorted(munis - {k.removeprefix("op") for k in self._tokens}):
                for name, role in (
                    (f"op{m}", Role.OPERATOR),
                    (f"madm{m}", Role.MUNICIPALITY_ADMIN),
                ):
                    accounts.create_user(conn, name, role, [m], _PASSWORD_HASH[0], self.now, ())
                    self._tokens[name] = accounts.create_token(conn, name, self.now, None, ())

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
            raise AssertionError(
                f"{method} {path} as {user}: {r.status_code} {r.text}, expected {expect_status}"
            )
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
        return await self._call(
            user, "POST", f"/api/v1/alarms/{alarm['id']}/{action}", expect_status, body
        )

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
        until: str | datetime | None = "+1h",
        starts: str | datetime | None = None,
        reason: str = "scenario maintenance",
        by: str | None = None,
        expect_status: int = 201,
        **fields: Any,
    ) -> str:
        """A silence of one device (or the whole municipality) from now (or `starts`); its id.

        `until=None` sends no end; other keywords are more fields of the API's body.
        """
        await self.start()
        m = municipality or (self._muni(device) if device else self.municipality)
        body: dict[str, Any] = {
            "municipality": m,
            "device_id": device,
            "starts_at": (
                self.now if starts is None else resolve_time(starts, self.now, self.day)
            ).isoformat(),
            "reason": reason,
            **fields,
        }
        if until is not None:
            body["ends_at"] = resolve_time(until, self.now, self.day).isoformat()
        out = await self._call(by or f"madm{m}", "POST", "/api/v1/silences", expect_status, body)
        return str(out["id"]) if out and "id" in out else ""

    async def end_silence(
        self,
        silence_id: str,
        *,
        municipality: str | None = None,
        by: str | None = None,
        expect_status: int = 204,
    ) -> None:
        m = municipality or self.municipality
        await self._call(
            by or f"madm{m}", "DELETE", f"/api/v1/silences/{silence_id}", expect_status
        )
