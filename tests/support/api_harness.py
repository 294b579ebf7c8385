"""The real stack for API tests: Mosquitto, the hub in-process, SQLite, HTTP over a socket.

Users are created through the real account store (one argon2 hash shared by
all test users, to keep set-up fast); alarms arrive over MQTT like any other.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from alarmhub.app import AlarmHub
from alarmhub.clock import Clock, SystemClock
from alarmhub.core.people import Role
from alarmhub.dev.mosquitto import LocalBroker
from alarmhub.store.sqlite import accounts
from tests.support.helpers import (
    Publisher,
    async_wait_until,
    db_rows,
    hub_settings,
    native,
    register,
)

PASSWORD = "correct horse battery staple"
_HASH = accounts.hash_password(PASSWORD)

# name -> (role, municipalities)
USERS: dict[str, tuple[Role, list[str]]] = {
    "op0301": (Role.OPERATOR, ["0301"]),
    "op0301b": (Role.OPERATOR, ["0301"]),
    "madm0301": (Role.MUNICIPALITY_ADMIN, ["0301"]),
    "op4601": (Role.OPERATOR, ["4601"]),
    "madm4601": (Role.MUNICIPALITY_ADMIN, ["4601"]),
    "root": (Role.ADMIN, []),
}
# Distinctive strings of Bergen's data: none may appear in a 0301 user's responses.
BERGEN_LABEL = "Bergen-resident-Fjellveien"
DEVICES = [
    ("osl-pend-1", "safety_alarm", "0301", "Oslo-resident-1"),
    ("osl-door-1", "door_sensor", "0301", "Oslo-door"),
    ("brg-pend-1", "safety_alarm", "4601", BERGEN_LABEL),
    ("brg-fall-1", "fall_sensor", "4601", BERGEN_LABEL + "-fall"),
]


@dataclass
class Stack:
    hub: AlarmHub
    db: Path
    base: str
    pub: Publisher
    tokens: dict[str, str] = field(default_factory=dict)
    alarms: dict[str, str] = field(default_factory=dict)  # device id -> alarm id

    def client(self, user: str | None = None, **kw: object) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {self.tokens[user]}"} if user else {}
        return httpx.AsyncClient(base_url=self.base, headers=headers, timeout=10, **kw)  # type: ignore[arg-type]

    async def raise_alarm(self, device: str, msg_id: str, etype: str = "button.pressed") -> str:
        self.pub.publish(*native(device, msg_id, etype))
        sql = "SELECT id FROM alarms WHERE device_id = ? ORDER BY raised_at DESC"
        assert await async_wait_until(lambda: bool(db_rows(self.db, sql, (device,))), 10)
        alarm_id = str(db_rows(self.db, sql, (device,))[0][0])
        self.alarms[device] = alarm_id
        return alarm_id


def _register(db: Path, tmp_path: Path) -> None:
    register(f"sqlite:///{db}", [(d, k, m) for d, k, m, _ in DEVICES], tmp_path)
    with accounts.connect(db) as conn:
        for dev, _, _, label in DEVICES:
            conn.execute("UPDATE devices SET label = ? WHERE id = ?", (label, dev))


@contextlib.asynccontextmanager
async def stack(
    tmp_path: Path,
    broker: LocalBroker,
    client_id: str,
    *,
    alarms: bool = True,
    clock: Clock | None = None,
    settings: dict[str, Any] | None = None,
) -> AsyncIterator[Stack]:
    db = tmp_path / "alarmhub.db"
    _register(db, tmp_path)
    now = SystemClock().now()
    tokens: dict[str, str] = {}
    with accounts.connect(db) as conn:
        for name, (role, ms) in USERS.items():
            accounts.create_user(conn, name, role, ms, _HASH, now, ())
            tokens[name] = accounts.create_token(conn, name, now, None, ())
    pub = Publisher(broker.port, client_id=f"{client_id}-pub")
    try:
        hs = hub_settings(tmp_path, broker.url, client_id, **(settings or {}))
        async with AlarmHub(hs, clock=clock) as hub:
            assert hub.ingest is not None
            assert await hub.ingest.wait_connected(20)  # a ceiling; a loaded CI machine is slow
            scheme = "https" if hs.http_tls else "http"
            s = Stack(hub, db, f"{scheme}://127.0.0.1:{hub.http_port}", pub, tokens)
            if alarms:
                await s.raise_alarm("osl-pend-1", "o1")
                await s.raise_alarm("brg-pend-1", "b1")
                await s.raise_alarm("brg-fall-1", "b2", "fall.detected")
            yield s
    finally:
        pub.close()


async def login(
    client: httpx.AsyncClient, user: str, password: str = PASSWORD, **headers: str
) -> httpx.Response:
    return await client.post(
        "/login", data={"username": user, "password": password}, headers=headers
    )
