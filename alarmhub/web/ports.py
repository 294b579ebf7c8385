"""What the web reaches of the daemon: exactly this, so web/ imports neither app.py nor daemon/.

`alarmhub.app.AlarmHub` satisfies :class:`DaemonPort`; the web is handed it at
start (web/server.py) and never learns more. A handler that needs something
else of the daemon adds it here first, where a reader sees the whole surface.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol

from alarmhub.clock import Clock
from alarmhub.core.actions import Action, Conflict
from alarmhub.core.decode import Catalog
from alarmhub.core.model import Alarm, Device, ScaipVoice
from alarmhub.core.people import AuditEntry
from alarmhub.core.resolution import Resolution
from alarmhub.core.rules import RuleSet
from alarmhub.observability.metrics import Metrics
from alarmhub.settings import Settings
from alarmhub.store.journal_outbox import JournalOutbox
from alarmhub.store.ports import Directory
from alarmhub.store.residents import Residents


class LiveChange(Protocol):
    """One change of the feed (daemon/fanout.py's Change). `wire` caches its bytes on the wire."""

    seq: int
    kind: str
    data: dict[str, Any]
    wire: bytes | None


class LiveListener(Protocol):
    """One stream's place in the feed (daemon/fanout.py's Listener)."""

    @property
    def ended(self) -> bool: ...
    def end(self) -> None: ...
    async def next_batch(self, wait_s: float | None, limit: int) -> Sequence[LiveChange]: ...


class LiveFeed(Protocol):
    """The alarm changes feed (daemon/fanout.py's Broadcaster) as the SSE stream uses it."""

    @property
    def seq(self) -> int: ...
    def listening(
        self, last_seq: int | None = None, name: str = ""
    ) -> AbstractContextManager[LiveListener]: ...


class Silences(Protocol):
    async def reload(self) -> None: ...
    async def end_silence(
        self, silence_id: str, by: str, *, audit: Sequence[AuditEntry]
    ) -> bool: ...


class DaemonPort(Protocol):
    @property
    def settings(self) -> Settings: ...
    @property
    def clock(self) -> Clock: ...
    @property
    def metrics(self) -> Metrics: ...
    @property
    def catalog(self) -> Catalog: ...
    @property
    def rules(self) -> RuleSet: ...
    @property
    def live(self) -> LiveFeed: ...
    @property
    def suppression(self) -> Silences: ...
    @property
    def mqtt_connected(self) -> bool: ...
    @property
    def mqtt_broker(self) -> str | None: ...
    @property
    def owns(self) -> list[str]: ...
    @property
    def directory(self) -> Directory: ...
    @property
    def residents(self) -> Residents: ...
    @property
    def journal_outbox(self) -> JournalOutbox: ...  # the alarm detail's journal state

    http_port: int | None
    # Set once the daemon has started (logged `alarmhub.started`): not ready before.
    ready: asyncio.Event

    async def wait_stopped(self) -> None: ...
    async def act(
        self,
        alarm_id: str,
        action: Action,
        actor: str,
        *,
        outcome: str | None = None,
        note: str | None = None,
        resolution: Resolution | None = None,
        voice: ScaipVoice | None = None,
        audit: Sequence[AuditEntry],
    ) -> Alarm | Conflict | None: ...
    async def register_new_device(
        self, device: Device, *, audit: Sequence[AuditEntry], assign_bridges: bool = False
    ) -> bool: ...
    async def register_devices(
        self,
        devices: list[Device],
        keep: frozenset[str] = frozenset(),
        *,
        audit: Sequence[AuditEntry],
        existing_in: frozenset[str] | None = None,
        assign_bridges: bool = False,
    ) -> list[str]: ...
