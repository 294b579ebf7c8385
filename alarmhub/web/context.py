"""What every request handler needs from the daemon, as one typed object.

Database work for the web runs on short-lived connections in worker threads
(`store.accounts.run`): never on the ingest writer's connection, and never
blocking the event loop that also carries MQTT ingest.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from fastapi import Request

from alarmhub.store import accounts

if TYPE_CHECKING:
    from alarmhub.app import AlarmHub

T = TypeVar("T")
MAX_TRACKED_KEYS = 10_000


class RateLimiter:
    """At most `limit` attempts per key in a sliding `window_s`; memory is bounded."""

    def __init__(self, limit: int = 5, window_s: float = 60.0) -> None:
        self.limit = limit
        self.window_s = window_s
        self._hits: dict[str, deque[float]] = {}

    def hit(self, keys: list[str], now: float) -> float | None:
        """Record an attempt for every key; return seconds to wait if any key is over."""
        wait = 0.0
        for key in keys:
            hits = self._hits.get(key)
            if hits is None:
                if len(self._hits) >= MAX_TRACKED_KEYS:
                    self._hits.pop(next(iter(self._hits)))  # the oldest-tracked key
                hits = self._hits[key] = deque()
            while hits and hits[0] <= now - self.window_s:
                hits.popleft()
            if len(hits) >= self.limit:
                wait = max(wait, hits[0] + self.window_s - now)
        if wait > 0:
            return wait
        for key in keys:
            self._hits[key].append(now)
        return None


@dataclass
class WebContext:
    hub: AlarmHub
    db_path: Path
    login_limiter: RateLimiter = field(default_factory=RateLimiter)

    async def db(self, fn: Callable[..., T], *args: Any) -> T:
        return await accounts.run(self.db_path, fn, *args)

    async def audit(
        self,
        request: Request,
        actor: str,
        action: str,
        *,
        alarm_id: str | None = None,
        device_id: str | None = None,
        municipality: str | None = None,
        detail: dict[str, Any] | None = None,
    ) -> None:
        entry = accounts.AuditEntry(
            actor=actor,
            action=action,
            at=self.hub.clock.now(),
            address=client_address(request),
            alarm_id=alarm_id,
            device_id=device_id,
            municipality=municipality,
            detail=detail,
        )
        await self.db(accounts.audit, entry)


def client_address(request: Request) -> str | None:
    return request.client.host if request.client else None


def web(request: Request) -> WebContext:
    ctx = request.app.state.web
    assert isinstance(ctx, WebContext)
    return ctx
