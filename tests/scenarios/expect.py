"""The scenario suite's reading and expectations: a mixin of tests/scenarios/scenario.py's Scenario.

Everything here reads the committed store or the real API, never the hub's memory:
what an operator would see, and what the record says.
"""

from __future__ import annotations

import asyncio
import time as wall_time
from collections.abc import Iterable
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from tests.scenarios.world import local, resolve_time
from tests.support.helpers import db_rows

if TYPE_CHECKING:
    import httpx

    from tests.support.helpers import Publisher

CEILING_S = 20.0  # how long to wait for asynchronous delivery before failing (never a timing claim)


def _parse(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


class Expectations:
    """Reading (`alarm`, `timeline`, `queue`, …) and `expect_*`; needs Scenario's api/start/db."""

    db: Path
    day: date
    municipality: str
    _pub: Publisher | None

    if TYPE_CHECKING:  # Scenario's and People's, declared here so that mypy checks the calls

        @property
        def now(self) -> datetime: ...
        async def start(self) -> None: ...
        def api(self, user: str = "root") -> httpx.AsyncClient: ...
        def _muni(self, device_id: str) -> str: ...

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

    async def describe(self) -> str:
        """Every alarm and its timeline, in local time: printed when a scenario ends, so a
        failing one shows the night as alarmhub recorded it."""
        lines = [f"--- the night as recorded, at {local(self.now)} ---"]
        async with self.api("root") as client:
            items: list[dict[str, Any]] = []
            cursor: str | None = None
            while True:
                params: dict[str, Any] = {"limit": 500, **({"cursor": cursor} if cursor else {})}
                page = (await client.get("/api/v1/alarms", params=params)).json()
                items += page["items"]
                if not (cursor := page.get("next_cursor")):
                    break
            for a in sorted(items, key=lambda a: (a["raised_at"], a["id"])):
                hidden = f", suppressed by {a['suppressed_by']}" if a["suppressed_by"] else ""
                lines.append(
                    f"{a['device_id']} {a['kind']} p{a['priority']}: {a['state']}, "
                    f"level {a['escalation_level']}{hidden}"
                )
                detail = (await client.get(f"/api/v1/alarms/{a['id']}")).json()
                for e in detail.get("timeline", []):
                    at = local(_parse(e["at"]) or self.now)
                    lines.append(
                        f"    {at} {e['type']} {e['actor'] or ''} {e['detail'] or ''}".rstrip()
                    )
        return "\n".join(lines)

    async def alarm(self, device_id: str, kind: str) -> dict[str, Any]:
        found = await self.alarms(device_id, kind)
        if not found:
            every = [(a["kind"], a["state"]) for a in await self.alarms(device_id)]
            raise AssertionError(
                f"{local(self.now)}: no {kind} alarm of {device_id}; it has {every}"
            )
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
        rows = db_rows(
            self.db,
            "SELECT round, step, reason, level, target, due_at, decided_at "
            "FROM escalations WHERE alarm_id = ? ORDER BY decided_at, round, step",
            (alarm["id"],),
        )
        keys = ("round", "step", "reason", "level", "target", "due_at", "decided_at")
        return [dict(zip(keys, r, strict=True)) for r in rows]

    async def queue(
        self, municipality: str | None = None, user: str | None = None
    ) -> list[dict[str, Any]]:
        """The active alarms an operator of the municipality sees, in the queue's order."""
        await self.start()
        m = municipality or self.municipality
        async with self.api(user or f"op{m}") as client:
            items: list[dict[str, Any]] = []
            for state in ("open", "acknowledged"):
                r = await client.get("/api/v1/alarms", params={"state": state, "limit": 500})
                items += r.json()["items"]
        return sorted(items, key=lambda a: (a["priority"], a["raised_at"], a["id"]))

    async def notifications(self, device_id: str, kind: str) -> list[dict[str, Any]]:
        """What the newest alarm's escalation steps sent beyond the queue (the outbox,
        written with the step): target, channel, payload, in order."""
        alarm = await self.alarm(device_id, kind)
        rows = db_rows(
            self.db,
            "SELECT target, channel, payload FROM outbox WHERE alarm_id = ? ORDER BY id",
            (alarm["id"],),
        )
        return [{"target": t, "channel": c, "payload": orjson.loads(p)} for t, c, p in rows]

    def inbox(self, device_id: str) -> list[dict[str, Any]]:
        """The device's stored messages, in order: msg_id, verdict (the message's:
        logged, redelivery, rejected), reason, detail, received_at, and `events`,
        each a dict with its own `verdict` (new, repeat, cleared, logged, …), rule, alarm_id."""
        rows = db_rows(
            self.db,
            "SELECT msg_id, verdict, reason, detail, received_at, events "
            "FROM inbox WHERE device_id = ? ORDER BY seq",
            (device_id,),
        )
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
        wrong = {
            k: (alarm.get(k, "<no such field>"), v)
            for k, v in expected.items()
            if alarm.get(k, object()) != v
        }
        assert not wrong, f"{where}: (got, expected) {wrong}"
        if escalated_to is not None:
            targets = [escalated_to] if isinstance(escalated_to, str) else list(escalated_to)
            fired = [
                e["target"]
                for e in await self.escalations(device_id, kind)
                if e["reason"] == "escalate"
            ]
            missing = [t for t in targets if t not in fired]
            assert not missing, f"{where}: not escalated to {missing}; escalated to {fired}"
        if suppressed_by is not None:
            tag = alarm["suppressed_by"] or ""
            ok = tag == suppressed_by or tag.split(":", 1)[0] == suppressed_by
            assert ok, f"{where}: suppressed_by is {tag!r}, expected {suppressed_by!r}"
        if suppression_reason is not None:
            reasons = [
                e["detail"].get("reason")
                for e in await self.timeline(device_id, kind)
                if e["type"] == "suppressed"
            ]
            assert suppression_reason in reasons, f"{where}: suppression reasons {reasons}"
        return alarm

    async def expect_no_alarm(
        self, device_id: str, kind: str | None = None, *, active_only: bool = True
    ) -> None:
        found = [
            a
            for a in await self.alarms(device_id, kind)
            if not active_only or a["state"] != "resolved"
        ]
        what = " ".join(w for w in ("active" if active_only else "", kind or "", "alarm") if w)
        assert not found, (
            f"{local(self.now)}: expected no {what} of {device_id}, "
            f"found {[(a['kind'], a['state'], a['suppressed_by']) for a in found]}"
        )

    async def expect_alarm_count(self, device_id: str, kind: str, n: int) -> list[dict[str, Any]]:
        found = await self.alarms(device_id, kind)
        assert len(found) == n, (
            f"{local(self.now)}: {len(found)} {kind} alarms of {device_id}, expected {n}"
        )
        return found

    async def expect_timeline(
        self, device_id: str, kind: str, *types: str, exact: bool = True
    ) -> list[dict[str, Any]]:
        """The newest alarm's timeline types are `types` (exact) or contain them in order."""
        entries = await self.timeline(device_id, kind)
        got = [e["type"] for e in entries]
        if exact:
            assert got == list(types), f"{local(self.now)}: timeline {got}, expected {list(types)}"
        else:
            it = iter(got)
            assert all(t in it for t in types), (
                f"{local(self.now)}: timeline {got} lacks {list(types)} in order"
            )
        return entries

    async def expect_escalations(
        self, device_id: str, kind: str, expected: Iterable[tuple[str, str | datetime]]
    ) -> None:
        """Exactly these steps escalated: (target, time), time as a scenario time."""
        fired = [
            (e["target"], local(_parse(e["decided_at"]) or self.now))
            for e in await self.escalations(device_id, kind)
            if e["reason"] == "escalate"
        ]
        want = [(target, local(resolve_time(t, self.now, self.day))) for target, t in expected]
        assert fired == want, f"{local(self.now)}: escalations {fired}, expected {want}"

    async def expect_notified(self, device_id: str, kind: str, targets: Iterable[str]) -> None:
        """Exactly these targets were notified, in order (each step's MQTT/webhook notice)."""
        got = [n["target"] for n in await self.notifications(device_id, kind)]
        assert got == list(targets), f"{local(self.now)}: notified {got}, expected {list(targets)}"

    async def expect_queue(
        self,
        municipality: str | None,
        expected: Iterable[tuple[str, str, str]],
        *,
        user: str | None = None,
        ordered: bool = True,
    ) -> list[dict[str, Any]]:
        """The operator's queue, as (device, kind, state), in queue order (or in any order:
        alarms raised at one instant are ordered by their ids, which are hashes)."""
        items = await self.queue(municipality, user)
        got = [(a["device_id"], a["kind"], a["state"]) for a in items]
        want = list(expected)
        same = got == want if ordered else sorted(got) == sorted(want)
        assert same, f"{local(self.now)}: queue {got}, expected {want}"
        return items

    async def expect_receipt(
        self, device_id: str, msg_id: str, status: str, **fields: Any
    ) -> dict[str, Any]:
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
            assert row["verdict"] == verdict, (
                f"{device_id}/{msg_id}: verdict {row['verdict']}, expected {verdict}"
            )
        if reason is not None:
            assert row["reason"] == reason, (
                f"{device_id}/{msg_id}: reason {row['reason']}, expected {reason}"
            )
        return row

    async def expect_dead_letter(self, device_id: str, reason: str) -> dict[str, Any]:
        rows = [r for r in self.inbox(device_id) if r["verdict"] == "rejected"]
        reasons = [r["reason"] for r in rows]
        assert reason in reasons, f"{device_id}: dead letters {reasons}, expected one {reason!r}"
        return rows[reasons.index(reason)]
